"""The uplink's adaptive ACK timeout.

ACK timeout (as TCP's RTO, RFC 6298): srtt + 4 rttvar of the measured ACK round trips
(only messages sent once are measured), never below ``ack_timeout_s`` (also the value
before the first ACK) nor above ``ack_timeout_max_s``, doubled at each timeout until a
fresh ACK. The timer runs from the later of a message's send and the last ACK received:
a central that is slow but acknowledging is never sent duplicates, which would multiply
its load just when it is behind (measured: 135,000 messages re-sent in one benchmark run
with a fixed 5 s timeout). A lost ACK is then recovered once ACKs stop (at the latest when
the window is full).
"""

from __future__ import annotations


class AckTimerMixin:
    """The part of :class:`~towerd.uplink.client.UplinkClient` that measures ACK round
    trips and derives the ACK timeout from them."""

    def _rtt_sample(self, rtt: float) -> None:
        """Fold one ACK round trip (of a message sent once: Karn) into srtt and rttvar
        (RFC 6298, alpha 1/8, beta 1/4); a fresh sample ends the timeout backoff."""
        rtt = max(0.0, rtt)
        if self._srtt is None:
            self._srtt, self._rttvar = rtt, rtt / 2
        else:
            self._rttvar = 0.75 * self._rttvar + 0.25 * abs(self._srtt - rtt)
            self._srtt = 0.875 * self._srtt + 0.125 * rtt
        self._rto_backoff = 1.0

    def ack_timeout(self) -> float:
        """Seconds without any ACK after which what is in flight is sent again:
        srtt + 4 rttvar of the measured ACK round trips (``ack_timeout_s`` before the
        first), at least ``ack_timeout_s``, doubled after each timeout until an ACK
        gives a fresh sample, at most ``ack_timeout_max_s``."""
        s = self._settings
        base = s.ack_timeout_s if self._srtt is None else self._srtt + 4 * self._rttvar
        return min(s.ack_timeout_max_s, max(s.ack_timeout_s, base) * self._rto_backoff)
