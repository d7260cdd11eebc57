"""The uplink's identity flow (ICD v1.1 IDENTITY) to one central, beside its records.

The outbox's identity stream (:mod:`towerd.outbox.identity`) is sent over the same
DEALER as the records but with its own cursor, its own small window
(``IDENTITY_WINDOW`` messages), its own ACK timeout and its own ACKs (they carry the
identity stream's id): nothing that happens to identities can hold up, gap or lose a
TRACKS/EVENTS record.

What the central is, as far as identity goes (``capability``):

- ``unknown`` until it answers an IDENTITY message; ``supported`` after its first ACK on
  the identity stream.
- ``unsupported``: it answered an IDENTITY message with ERROR (echoing the identity
  stream's id) whose code is not a passing condition (``central.busy``,
  ``central.store_failed``): an ICD v1 central drops the unknown type and answers
  ``malformed.type``. Logged once, at WARNING; from then on, for as long as this uplink
  runs, no identity is sent to it and every identity row held or added is marked done
  for it (withheld, as a sharing rule excludes records).
- What was learnt is kept in the outbox per central with the central's server key (its
  CURVE public key, or the endpoint of a plain link) and the time: a restart starts from
  it (logged once), so a v1 central is not probed at every start. ``unsupported`` is
  asked again (back to ``unknown``, the next identity is sent) after
  ``share.identity.recheck_after_s``, and at once when the central's server key is not
  the one it was learnt with (another or an upgraded central): an upgraded central gets
  identities again without configuration.
- ``disabled``: the sharing rule says ``identity: {enabled: false}``; nothing is sent,
  every identity row is done for this central.

When the central's sharing rule filters tracks (categories, statuses, threats, zones),
an identity is sent only for a track it has been sent a TRACKS record of (remembered for
the last ``SHARED_TRACKS`` track ids since the uplink started); an identity waits until
the records added before it (its ``records_mark``) have been judged by the rule, then is
sent or withheld. After a restart, an identity still held whose track's records were all
acknowledged before the restart is withheld from such a central (it errs on the side of
not sharing).

The identity stream's ACK timeout is its own :class:`~towerd.uplink.acktimer.AckTimer`,
adaptive as the records' (srtt + 4 rttvar of its own ACK round trips, between
``ack_timeout_s`` and ``ack_timeout_max_s``, doubled at each timeout until a fresh ACK).
A central that drops IDENTITY without answering leaves its capability ``unknown``: the
messages are sent again after each timeout, which costs a few bytes and never delays a
record.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Callable

import numpy as np

from towerd.clock import Clock, SystemClock
from towerd.icd import FLAG_REPLAY, IDENTITY_RECORD_SIZE
from towerd.icd_identity import IDENTITY_RECORD_DTYPE, check_identity_records, encode_identities
from towerd.outbox.sqlite import Outbox
from towerd.uplink.acktimer import AckTimer
from towerd.uplink.batching import _Message
from towerd.uplink.sharing import SharingRule, share_identities


IDENTITY_WINDOW = 8
"""IDENTITY messages in flight at most, per central."""
TRANSIENT_ERRORS = ("central.busy", "central.store_failed")
"""ERROR codes that say "later", not "never": they do not make a central unsupported."""

SHARED_TRACKS = 65_536
"""Track ids remembered per central as shared (for a rule that filters tracks)."""

UNKNOWN, SUPPORTED, UNSUPPORTED, DISABLED = "unknown", "supported", "unsupported", "disabled"


class IdentityFlow:
    """Sends one central the identity rows it still needs (see the module doc).

    ``send(frame) -> bool`` puts one frame on the uplink's socket (False: not now).
    Driven by the uplink from the daemon's loop thread: :meth:`restart` at each link up
    (and outbox rollback), :meth:`pump` in every poll while the link is up,
    :meth:`on_ack` / :meth:`on_error` for replies on the identity stream."""

    def __init__(self, name: str, outbox: Outbox, rule: SharingRule, send: Callable[[bytes], bool], *,
                 logger: logging.LoggerAdapter, batch_records: int, ack_timeout_s: float,
                 ack_timeout_max_s: float, filters_tracks: bool = False,
                 records_judged_below: Callable[[], int] | None = None, clock: Clock | None = None,
                 server_key: str = "") -> None:
        self._name = name
        self._outbox = outbox
        self._rule = rule
        self._send = send
        self._log = logger
        self._batch = batch_records
        self.timer = AckTimer(ack_timeout_s, ack_timeout_max_s)  # adaptive, as the records' (acktimer)
        self.capability = UNKNOWN if rule.identity.enabled else DISABLED
        self._clock: Clock = clock or SystemClock()
        self._server_key = server_key
        self.learnt_us: int | None = None  # UTC µs when the capability was learnt (maybe before a restart)
        self._recheck_mono: float | None = None  # when an unsupported central is asked again
        if rule.identity.enabled:
            self._recall()
        self._inflight: dict[int, _Message] = {}
        self._cursor = 0
        self._boundary = 1
        self._withheld_to = 0  # identity seqs below this are marked done (unsupported/disabled)
        self._filters_tracks = filters_tracks
        self._judged_below = records_judged_below
        self._shared: OrderedDict[int, None] = OrderedDict()  # track ids sent to this central
        self.stats = {"identity_sent_msgs": 0, "identity_acked_records": 0, "identity_resent_msgs": 0,
                      "identity_withheld_records": 0, "identity_bad_rows": 0, "identity_errors": 0}

    # ---------------------------------------------------------------- driven by the uplink

    def restart(self) -> None:
        """The link came up (or the outbox rolled back): everything not acknowledged is
        sent again, rows below the current mark flagged REPLAY."""
        self._inflight.clear()
        self._boundary = self._outbox.identity_sendable_next_seq
        self._cursor = 0
        self.timer.backoff = 1.0

    def pump(self, now: float) -> None:
        if self.capability == UNSUPPORTED and self._recheck_mono is not None and now >= self._recheck_mono:
            self.capability, self._recheck_mono = UNKNOWN, None
            self._log.info("uplink %s: asking the central again whether it takes identities (it did not %.0f h "
                           "ago)", self._name, self._rule.identity.recheck_after_s / 3600.0)
        if self.capability in (UNSUPPORTED, DISABLED):
            self._withhold()
            return
        if not self._inflight and self._cursor + 1 >= self._outbox.identity_sendable_next_seq:
            return  # nothing in flight, nothing new: the usual poll
        timeout, timed_out = self.timer.timeout(), False
        for msg in self._inflight.values():
            if msg.sent_mono is not None and now - msg.sent_mono < timeout:
                continue
            if msg.sent_mono is not None:
                if not timed_out:  # one doubling per round of timeouts, not per message
                    timed_out = True
                    self.timer.expired()
                self.stats["identity_resent_msgs"] += 1
            if not self._send(msg.frame):
                return
            msg.sends += 1
            msg.sent_mono = now
        while len(self._inflight) < IDENTITY_WINDOW:
            msg = self._next_message()
            if msg is None:
                return
            self._inflight[msg.first] = msg
            if not self._send(msg.frame):
                return
            msg.sends, msg.sent_mono = 1, now
            self.stats["identity_sent_msgs"] += 1

    def on_ack(self, first: int, last: int) -> None:
        msg = self._inflight.get(first)
        if msg is None or msg.last != last:
            return  # a late or second ACK: the rows were marked the first time, or are re-sent
        del self._inflight[first]
        if msg.sends == 1 and msg.sent_mono is not None:
            self.timer.sample(self._clock.monotonic() - msg.sent_mono)
        self._outbox.ack_identities(first, last, self._name)
        self.stats["identity_acked_records"] += last - first + 1
        if self.capability == UNKNOWN:
            self.capability = SUPPORTED
            self._remember()
            self._log.info("uplink %s: the central takes identities (ICD v1.1 IDENTITY acknowledged)", self._name)

    def on_error(self, code: str, text: str) -> None:
        """An ERROR echoing the identity stream's id."""
        self.stats["identity_errors"] += 1
        if code in TRANSIENT_ERRORS or self.capability in (UNSUPPORTED, DISABLED):
            return
        self.capability = UNSUPPORTED
        self._remember()
        self._inflight.clear()
        self._log.warning("uplink %s: the central does not take identities (it answered an ICD v1.1 IDENTITY "
                          "message with ERROR %s: %s): it is treated as an ICD v1 central, identities are withheld "
                          "from it from now on; its tracks and events are not affected", self._name, code, text)
        self._withhold()

    def note_shared_tracks(self, track_ids: np.ndarray) -> None:
        """The uplink's rule passed TRACKS records of these track ids to this central."""
        if not self._filters_tracks:
            return
        for tid in track_ids.tolist():
            self._shared[tid] = None
            self._shared.move_to_end(tid)
        while len(self._shared) > SHARED_TRACKS:
            self._shared.popitem(last=False)

    def health(self) -> dict:
        """HEALTH's ``identity`` object for this central: ``capability`` (as this tower
        sees the central) and the identity ``stream_id`` (16 hex digits)."""
        return {"capability": self.capability, "stream_id": f"{self._outbox.identity_stream_id:016x}"}

    def recheck_in_s(self, now: float) -> float | None:
        """Seconds until an unsupported central is asked again (None: not waiting)."""
        if self.capability != UNSUPPORTED or self._recheck_mono is None:
            return None
        return max(0.0, self._recheck_mono - now)

    def _recall(self) -> None:
        """Start from what the outbox remembers of this central (same server key only)."""
        stored = self._outbox.identity_capability(self._name)
        if stored is None:
            return
        key, capability, learnt_us = stored
        if key != self._server_key:
            self._log.info("uplink %s: the central's server key changed since it was found %s as to identities: "
                           "asking it again", self._name, capability)
            return
        if capability not in (SUPPORTED, UNSUPPORTED):
            return
        self.capability, self.learnt_us = capability, learnt_us
        if capability == SUPPORTED:
            self._log.info("uplink %s: the central takes identities (remembered)", self._name)
            return
        now = self._clock.monotonic()
        age_s = max(0.0, (self._clock.utc_us(now) - learnt_us) / 1e6)
        self._recheck_mono = now + max(0.0, self._rule.identity.recheck_after_s - age_s)
        self._log.warning("uplink %s: the central does not take identities (remembered: it refused ICD v1.1 "
                          "IDENTITY %.1f h ago): identities are withheld from it; asked again in %.1f h; its tracks "
                          "and events are not affected", self._name, age_s / 3600.0,
                          (self._recheck_mono - now) / 3600.0)

    def _remember(self) -> None:
        now = self._clock.monotonic()
        self.learnt_us = self._clock.utc_us(now)
        if self.capability == UNSUPPORTED:
            self._recheck_mono = now + self._rule.identity.recheck_after_s
        self._outbox.set_identity_capability(self._name, self._server_key, self.capability, self.learnt_us)

    # ---------------------------------------------------------------- internals

    def _withhold(self) -> None:
        """Mark every sendable identity row done for this central (it will never take them)."""
        hi = self._outbox.identity_sendable_next_seq
        if hi > self._withheld_to:
            self.stats["identity_withheld_records"] += self._outbox.ack_identities(self._withheld_to, hi - 1,
                                                                                   self._name)
            self._withheld_to = hi

    def _next_message(self) -> _Message | None:
        """The next run of consecutive identity rows after the cursor (at most
        ``batch_records``), as this central's sharing rule lets it see them; rows it may
        not see are withheld (marked done for it) on the way."""
        rows = self._outbox.pending_identities(self._cursor, self._batch, central=self._name)
        judged = self._judged_below() if self._filters_tracks and self._judged_below is not None else None
        good: list[tuple[int, bytes]] = []
        for seq, payload, mark in rows:
            if judged is not None and mark > judged:
                break  # the records added before it are not judged yet: it waits for them
            if good and seq != good[-1][0] + 1:
                break
            if len(payload) != IDENTITY_RECORD_SIZE or int.from_bytes(payload[:8], "little") != seq:
                self._bad(seq)
            elif judged is not None and int.from_bytes(payload[24:28], "little") not in self._shared:
                self.stats["identity_withheld_records"] += self._outbox.ack_identities(seq, seq, self._name)
            else:
                good.append((seq, payload))
                continue
            if good:
                break
            self._cursor = seq  # consumed without sending
        if not good:
            return None
        records = np.frombuffer(b"".join(p for _, p in good), dtype=IDENTITY_RECORD_DTYPE)
        first, last = good[0][0], good[-1][0]
        flags = FLAG_REPLAY if last < self._boundary else 0
        try:
            frame = encode_identities(self._outbox.identity_stream_id, share_identities(records, self._rule), flags)
        except ValueError:
            for seq, payload in good:  # rare (a damaged row): judge each on its own
                try:
                    check_identity_records(np.frombuffer(payload, dtype=IDENTITY_RECORD_DTYPE))
                except ValueError:
                    self._bad(seq)
            return None
        self._cursor = last
        return _Message(first=first, last=last, count=len(good), frame=frame, replay=bool(flags))

    def _bad(self, seq: int) -> None:
        self.stats["identity_bad_rows"] += 1
        self._log.error("uplink %s: outbox identity row seq %d cannot be encoded; it is not sent (lost)",
                        self._name, seq)
        self._outbox.ack_identities(seq, seq, self._name)
