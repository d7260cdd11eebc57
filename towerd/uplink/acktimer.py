"""The uplink's adaptive ACK timeout, one per stream (records, identities).

ACK timeout (as TCP's RTO, RFC 6298): srtt + 4 rttvar of the measured ACK round trips
(only messages sent once are measured: Karn), never below ``ack_timeout_s`` (also the
value before the first ACK) nor above ``ack_timeout_max_s``, doubled at each timeout until
a fresh ACK. The records flow runs its timer from the later of a message's send and the
last ACK received: a central that is slow but acknowledging is never sent duplicates,
which would multiply its load just when it is behind (measured: 135,000 messages re-sent
in one benchmark run with a fixed 5 s timeout). A lost ACK is then recovered once ACKs
stop (at the latest when the window is full).
"""

from __future__ import annotations


class AckTimer:
    """srtt, rttvar and the timeout backoff of one stream's ACKs (see the module doc)."""

    def __init__(self, min_s: float, max_s: float) -> None:
        self.min_s, self.max_s = float(min_s), float(max_s)
        self.srtt: float | None = None
        self.rttvar = 0.0
        self.backoff = 1.0

    def sample(self, rtt: float) -> None:
        """Fold one ACK round trip (of a message sent once) into srtt and rttvar
        (RFC 6298, alpha 1/8, beta 1/4); a fresh sample ends the timeout backoff."""
        rtt = max(0.0, rtt)
        if self.srtt is None:
            self.srtt, self.rttvar = rtt, rtt / 2
        else:
            self.rttvar = 0.75 * self.rttvar + 0.25 * abs(self.srtt - rtt)
            self.srtt = 0.875 * self.srtt + 0.125 * rtt
        self.backoff = 1.0

    def expired(self) -> None:
        """A timeout ran out: the next one is twice as long (until a fresh sample)."""
        self.backoff = min(2.0 * self.backoff, self.max_s)

    def timeout(self) -> float:
        """Seconds after which what is in flight is sent again: srtt + 4 rttvar
        (``min_s`` before the first sample), at least ``min_s``, times the backoff, at
        most ``max_s``."""
        base = self.min_s if self.srtt is None else self.srtt + 4 * self.rttvar
        return min(self.max_s, max(self.min_s, base) * self.backoff)


class AckTimerMixin:
    """The records flow's names for the :class:`AckTimer` of
    :class:`~towerd.uplink.client.UplinkClient` (``self._ack_timer``)."""

    _ack_timer: AckTimer

    def ack_timeout(self) -> float:
        """Seconds without any ACK after which the records in flight are sent again
        (:meth:`AckTimer.timeout`)."""
        return self._ack_timer.timeout()

    @property
    def _srtt(self) -> float | None:
        return self._ack_timer.srtt

    @property
    def _rto_backoff(self) -> float:
        return self._ack_timer.backoff

    @_rto_backoff.setter
    def _rto_backoff(self, value: float) -> None:
        self._ack_timer.backoff = value
