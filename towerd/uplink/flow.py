"""The uplink's flow control: the window of messages in flight, live before
backlog, the paced replay of the backlog, resending after an ACK timeout, and what an
ACK releases.

Order after an outage (ICD "Sequence numbers, acknowledgements, delivery"): when the link
comes up, the outbox's committed high-water mark B splits the records. Records from B on
are *live*: sent as soon as they are committed, oldest first, with no flag. Records below
B that this central has not acknowledged are the *backlog*: sent oldest first with the
REPLAY flag, paced by a token bucket at ``replay_rate_rps`` records per second (bursts of
at most a quarter of a second's worth, or one message), with at most ``replay_window``
backlog messages in flight so that the rest of the ``window`` is always free for live
reports. Live messages are placed before backlog messages in every poll, so a live report
never waits behind the backlog in this process. The same split is made again after every
reconnect, so whatever was in flight when the link fell is re-sent as backlog.
"""

from __future__ import annotations

import logging

import zmq

from towerd.uplink.batching import _Message


class FlowMixin:
    """The part of :class:`~towerd.uplink.client.UplinkClient` that decides what is sent
    when."""

    def _restart_flow(self, now: float, why: str) -> None:
        """Split the outbox anew into live (seq >= B) and backlog (seq < B, REPLAY) and
        forget what is in flight (it is re-sent as backlog; late ACKs for it still count)."""
        for msg in self._inflight.values():
            self._remember(msg.first, msg.last)
        resend = len(self._inflight)
        self._inflight.clear()
        self._unsent = False
        self._backlog_inflight = 0
        self._held = None
        self._verdicts = {}
        self._boundary = self._outbox.sendable_next_seq
        self._live_cursor = self._boundary - 1
        self._backlog_cursor = 0
        self._backlog_done = False
        self._backlog_started = now
        self._tokens = self._bucket
        self._tokens_mono = now
        self._progress_mono = now
        self._rto_backoff = 1.0
        self._seen_generation = self._outbox.generation
        self._identity.restart()  # the identity stream's own flow (towerd.uplink.identity)
        self._stats["flow_restarts"] += 1
        self._log.info("uplink %s: %s; records below seq %d not yet acknowledged are replayed (%d messages were in "
                 "flight), live records first", self._settings.name, why, self._boundary, resend)

    def _remember(self, first: int, last: int) -> None:
        self._recent[(first, last)] = None
        while len(self._recent) > 4 * self._settings.window:
            self._recent.popitem(last=False)

    def _on_ack(self, first: int, last: int, now: float) -> None:
        """An ACK deletes (marks) exactly a message this client sent: one in flight, or
        one in flight before the last flow restart (a late ACK from the old link)."""
        pending = self._inflight.get(first)
        if pending is not None and pending.last == last:
            del self._inflight[first]
            if pending.replay:
                self._backlog_inflight -= 1
            if pending.sends == 1 and pending.sent_mono is not None:
                self._ack_timer.sample(now - pending.sent_mono)
        elif (first, last) in self._recent:
            del self._recent[(first, last)]
            self._stats["late_acks"] += 1
        else:
            # A second ACK for a message sent twice: already handled.
            self._stats["unmatched_acks"] += 1
            self._log.debug("uplink %s: ACK %d..%d matches nothing sent", self._settings.name, first, last)
            return
        self._outbox.ack(first, last, self._settings.name)
        self._stats["acked_records"] += last - first + 1
        self._stats["last_ack_mono"] = now
        self._progress_mono = now

    def _send(self, frame: bytes) -> bool:
        assert self._sock is not None
        try:
            self._sock.send(frame, zmq.NOBLOCK)
        except zmq.Again:
            return False
        except zmq.ZMQError as exc:
            self._limited(logging.WARNING, "send", "uplink %s: send failed: %s", self._settings.name, exc)
            return False
        self._stats["sent_msgs"] += 1
        return True

    def _send_msg(self, msg: _Message, now: float) -> bool:
        if not self._send(msg.frame):
            return False
        if msg.sends:
            self._stats["resent_msgs"] += 1
        elif msg.replay:
            self._stats["replay_msgs"] += 1
            self._stats["replay_records"] += msg.count
        else:
            self._stats["live_msgs"] += 1
        msg.sends += 1
        msg.sent_mono = now
        return True

    def _pump(self, now: float) -> None:
        if self._next_health is not None and now >= self._next_health:
            self._send_health(now)
        if self._outbox.generation != self._seen_generation:
            self._check_outbox(now)
        # A message is due again once neither it was sent nor any ACK came within the
        # timeout: while ACKs keep arriving the central is working through its queue,
        # and sending again would only add duplicates to that queue (as TCP restarts its
        # retransmission timer on every ACK of new data).
        # Nothing can be due while the last ACK is younger than the timeout, unless a
        # message could not be sent at all (then its sent_mono is None): no scan.
        if self._unsent or (self._inflight and now - self._progress_mono >= self.ack_timeout()):
            self._resend_due(now)
            if self._unsent:
                return  # HWM reached or link gone: try again at the next poll
        window = self._settings.window
        # Live rows are those after the live cursor below the outbox's sendable mark:
        # none there, no query (most polls come between two commits).
        while len(self._inflight) < window and self._live_cursor + 1 < self._outbox.sendable_next_seq:
            msg, _ = self._next_message(live=True)
            if msg is None:
                break
            self._inflight[msg.first] = msg
            if not self._send_msg(msg, now):
                self._unsent = True
                return
        if not self._backlog_done:
            self._pump_backlog(now)

    def _resend_due(self, now: float) -> None:
        """Send again what is in flight and due (see :meth:`_pump`); ``_unsent`` stays
        set when a message could not be sent."""
        timeout = self.ack_timeout()
        timed_out = False
        self._unsent = False
        for msg in self._inflight.values():
            if msg.sent_mono is not None and now - max(msg.sent_mono, self._progress_mono) < timeout:
                continue
            if msg.sent_mono is not None and not timed_out:
                timed_out = True
                self._stats["ack_timeouts"] += 1
                self._rto_backoff = min(2 * self._rto_backoff, self._settings.ack_timeout_max_s)
            if not self._send_msg(msg, now):
                self._unsent = True
                return

    def _pump_backlog(self, now: float) -> None:
        s = self._settings
        self._tokens = min(self._bucket, self._tokens + (now - self._tokens_mono) * s.replay_rate_rps)
        self._tokens_mono = now
        while (not self._backlog_done and self._backlog_inflight < s.replay_window
               and len(self._inflight) < s.window):
            msg = self._held
            if msg is None:
                msg, exhausted = self._next_message(live=False)
                if msg is None:
                    if exhausted:
                        self._backlog_done = True
                        took = now - self._backlog_started if self._backlog_started is not None else 0.0
                        self._log.info("uplink %s: backlog read out in %.1f s (%d records replayed so far)",
                                 s.name, took, self._stats["replay_records"])
                    return
            if self._tokens < msg.count:
                self._held = msg
                return
            self._held = None
            self._tokens -= msg.count
            self._inflight[msg.first] = msg
            self._backlog_inflight += 1
            if not self._send_msg(msg, now):
                self._unsent = True
                return

    def _check_outbox(self, now: float) -> None:
        """After a rollback or a change of centrals this client's view of what is
        acknowledged may be stale: start the flow again from what the outbox holds."""
        if self._outbox.generation != self._seen_generation:
            self._restart_flow(now, "the outbox changed under it (a rolled back transaction or new centrals)")
