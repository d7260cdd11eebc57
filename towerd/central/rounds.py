"""The reference central's poll round: wait on the ROUTER (and the store writer, the ZAP
handler, the handshake monitor), take what the towers sent, handle it live before backlog,
hand the decoded messages to the store writer and send the ACKs of the commits that
returned. The part of :class:`~towerd.central.server.CentralServer` that drives the others.

Cost per round matters as much as per message: a central that keeps up handles a few
messages per round, so a round does no work it does not need (the pollers are made once;
the writer's results, the ZAP socket and the handshake monitor are read only when they
say something is there), and the TRACKS records of a round are checked together
(:meth:`~towerd.central.intake.IntakeMixin._decode_waiting`).
"""

from __future__ import annotations

import math
import threading
import time

import zmq

from towerd.central.intake import Received, is_replay
from towerd.errors import UplinkError

_COPY_MAX = 1 << 16
"""A received frame up to this size is copied into bytes at once; a larger one stays a
view of its frame until _handle has checked it against the tower's limits, so a round of
oversized messages (a hostile peer's) does not hold each twice."""

_MAX_MESSAGES_PER_POLL = 1000
_NOBLOCK = int(zmq.NOBLOCK)
_QUEUED_RECORDS_FACTOR = 40
"""With a store writer, the server keeps reading its socket (answering the towers'
heartbeats) while up to this many batches' worth of records wait for the writer; the
towers' windows bound what they have in flight far below that in normal running."""
ROUND_INTERVAL_S = 0.005
_PACE_BELOW = 64
"""Round pacing (:meth:`RoundsMixin.serve_forever`): on a 2-core machine a poll round that
handles one TRACKS message costs about as much CPU as ten messages handled together (the
poll, the wake-ups, the hand-over to the writer, code not in the CPU's caches). A central
that keeps up would otherwise run a round for every message or two; waiting until 5 ms
after the previous round started (only after a round of fewer than 64 messages) gathers
them, and adds at most that to an ACK."""
_CHECK_WRITER_EVERY = 32
"""During a poll round, every this many messages: send the ACKs of commits that returned,
and hand what is decoded to the store writer if it is idle."""


class RoundsMixin:
    """Serving: :meth:`poll_once` and :meth:`serve_forever`."""

    def _poller(self, with_router: bool) -> zmq.Poller:
        """What a poll round waits on (made once): the ROUTER (unless the store writer's
        queue is full), the writer's results, the ZAP handler, the handshake monitor."""
        poller = zmq.Poller()
        if with_router:
            poller.register(self._sock, zmq.POLLIN)
        if self._writer is not None:
            poller.register(self._writer.fd, zmq.POLLIN)
        if self._auth is not None:
            poller.register(self._auth.socket, zmq.POLLIN)
        if self._handshakes is not None:
            poller.register(self._handshakes.socket, zmq.POLLIN)
        return poller

    def serve_forever(self, stop: threading.Event, reload: threading.Event | None = None) -> None:
        """Serve until ``stop`` is set (checked at least every 100 ms); re-read the
        allow-list whenever ``reload`` is set. With a store writer, a round that found
        only a few messages is followed by the next one no sooner than
        ``ROUND_INTERVAL_S`` after it started (:meth:`_pause`)."""
        monotonic = time.monotonic
        while not stop.is_set():
            if reload is not None and reload.is_set():
                reload.clear()
                self.reload_allow_list()
            started = monotonic()
            handled = self.poll_once(100)
            if self._writer is not None and 0 < handled < _PACE_BELOW:
                self._pause(started + ROUND_INTERVAL_S)

    def _pause(self, until: float) -> None:
        """Let the towers' messages gather in the socket until ``until`` (monotonic);
        meanwhile send the ACKs of the commits that return, and answer the ZAP handler."""
        writer = self._writer
        assert writer is not None
        while (rest := until - time.monotonic()) > 0:
            ready = dict(self._pollers[1].poll(max(1, math.ceil(rest * 1000))))
            if writer.has_results or writer.fd in ready:
                self._collect()
            if self._auth is not None and self._auth.socket in ready:
                self._auth.handle()

    def poll_once(self, timeout_ms: int) -> int:
        """Wait up to ``timeout_ms`` for messages, then handle those waiting (at most
        1000, after any pending CURVE handshakes; those without the REPLAY flag first),
        and store what the rates let through of the messages held back. With a batching
        store each decoded message is queued for the store writer, which commits what is
        queued as soon as its previous commit returns; the ACKs are sent when that commit
        is reported (during a later round, or this one). The socket is read on while up to
        ``_QUEUED_RECORDS_FACTOR`` batches wait, so that the towers' heartbeats are
        answered while the database is slow. Returns how many messages were received."""
        if self._closed:
            raise UplinkError("central is closed")
        writer = self._writer
        if writer is not None and writer.has_results:
            self._collect()
        if self._deferring:
            now = self._clock.monotonic()
            self._drain_deferred(now)
            wait = min(self._peers[t].wait_s(now) for t in self._deferring) if self._deferring else timeout_ms
            timeout_ms = min(timeout_ms, max(1, int(wait * 1000) + 1))
        if writer is not None:
            self._hand_over()
        handshakes = self._handshakes
        if handshakes is not None and handshakes.pending:
            timeout_ms = min(timeout_ms, 100)  # failed handshakes wait to be logged with their address
        full = writer is not None and writer.queued_records >= _QUEUED_RECORDS_FACTOR * self._store.batch_records
        if self._auth is not None:
            self._auth.maybe_reload()
        ready = dict(self._pollers[1 if full else 0].poll(timeout_ms))
        self._check_descriptors()
        if handshakes is not None and (handshakes.pending or handshakes.socket in ready):
            handshakes.poll()  # failed handshakes: logged with the peer's address
        if writer is not None and (writer.has_results or writer.fd in ready):
            self._collect()
        if self._auth is not None and self._auth.socket in ready:
            self._auth.handle()
        if full or self._sock not in ready:
            return 0
        # Everything waiting (up to the bound) is taken first, then handled live first:
        # after an outage the towers' REPLAY backlogs must not delay the live reports
        # that arrive in the same round (stored and acknowledged in the first batches).
        received: list[Received] = []
        replays: list[Received] = []
        recv = self._sock.recv
        while len(received) + len(replays) < _MAX_MESSAGES_PER_POLL:
            # The routing id as bytes, the message frame as a Frame (its User-Id says
            # which key sent it): two plain receives cost half of recv_multipart's
            # Frame objects and RCVMORE look-ups.
            try:
                rid = recv(_NOBLOCK)
            except zmq.Again:
                break
            frame = recv(_NOBLOCK, copy=False)  # a ROUTER message always has one after its routing id
            if frame.more:  # more than one frame: malformed, read to its end
                parts = 1
                while recv(_NOBLOCK, copy=False).more:
                    parts += 1
                received.append((rid, None, parts + 1))
                continue
            data = frame.bytes if len(frame) <= _COPY_MAX else frame.buffer  # a big one: copied once its size passes
            (replays if is_replay(data) else received).append((rid, frame, data))
        handled = len(received) + len(replays)
        self._stats["replays_received"] += len(replays)
        received += replays
        for n, (rid, frame, data) in enumerate(received):
            if n and not n % _CHECK_WRITER_EVERY:
                self._decode_waiting()
                if writer is not None:
                    if writer.has_results:
                        self._collect()  # ACK what was committed meanwhile, not only after the round
                    if not writer.busy:
                        self._hand_over()  # an idle writer takes what is decoded so far
            try:
                self._handle(rid, frame, data)
            except Exception:  # last resort: a defect is loud, never an outage
                self._internal_error(rid[:64])
        self._decode_waiting()
        if self._deferring:
            self._drain_deferred(self._clock.monotonic())
        if writer is not None:
            self._hand_over()
            if writer.has_results:
                self._collect()
        return handled

    def _internal_error(self, rid: bytes) -> None:
        """A message a defect failed on: dropped, counted, logged with its traceback."""
        self._stats["internal_errors"] += 1
        tower_id = rid[:64].decode("ascii", "replace")
        if tower_id in self._peers:
            self._peer_count(tower_id, "internal")
        self._limited.exception("internal", "central: a message from %r could not be handled and was "
                                "dropped (a defect, please report)", rid[:64])

