"""The reference central's store batching and replies: decoded messages queued,
stored in one transaction when the store batches, and each acknowledged only once it is
committed (ERROR ``central.store_failed`` and no ACK otherwise)."""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING

import zmq

from towerd.central.storetypes import Pending, StoreResult
from towerd.errors import OutboxError
from towerd.icd import EVENT_OUTBOX_DROPPED, FLAG_REPLAY, MsgType, encode_ack, encode_error

_NOBLOCK = int(zmq.NOBLOCK)  # plain ints: pyzmq's enum arithmetic costs per reply
_SNDMORE_NOBLOCK = int(zmq.NOBLOCK | zmq.SNDMORE)

if TYPE_CHECKING:  # the peers module's types, for annotations only
    from towerd.central.peers import _Held, _Peer


class StoringMixin:
    """The part of :class:`~towerd.central.server.CentralServer` that stores and
    acknowledges."""

    def _store_held(self, peer: _Peer, held: _Held) -> None:
        """Spend the tower's rates and queue a message held back for :meth:`_flush`."""
        msg = held.msg
        self._store_now(peer, held.rid, held.tower_id, msg.type, msg.stream_id, msg.flags, held.payload, held.records,
                        held.size, held.first, held.last, held.event_json)

    def _store_now(self, peer: _Peer, rid: bytes, tower_id: str, mtype: int, stream_id: int, flags: int, payload,
                   records: int, size: int, first: int, last: int, event_json: tuple[str, ...] | None,
                   queued: float | None = None) -> None:
        """Spend the tower's rates and queue the message for the store (``queued``: its
        ``time.monotonic()`` for the ACK timing, when the caller has it)."""
        peer.records.spend(records)
        peer.bytes.spend(size)
        replay = bool(flags & FLAG_REPLAY)
        if mtype == MsgType.TRACKS:
            item = Pending(tower_id, stream_id, replay, records=payload, first_seq=first, last_seq=last)
        elif mtype == MsgType.IDENTITY:
            item = Pending(tower_id, stream_id, replay, identities=payload)
        else:
            item = Pending(tower_id, stream_id, replay, events=payload, event_json=event_json)
            for ev in payload:
                if ev["code"] == EVENT_OUTBOX_DROPPED:
                    self._limited(logging.WARNING, "dropped", "central: tower %s announces %s records lost from "
                                  "its full outbox, seq %s..%s", tower_id, str(ev.get("count"))[:40],
                                  str(ev.get("first_seq"))[:40], str(ev.get("last_seq"))[:40])
        self._queue(rid, first, last, item, queued)

    def _queue(self, rid: bytes, first: int, last: int, item: Pending, queued: float | None = None) -> None:
        """Hand a decoded message to the store writer, or store it at once when the store
        does not batch."""
        if self._writer is not None:
            self._handover.append((rid, first, last, item, time.monotonic() if queued is None else queued))
            return
        self._pending.append((rid, first, last, item, 0.0))
        self._flush()

    def _flush(self) -> None:
        """Without a store writer: store the held messages, then ACK each one that is
        committed; the others get ERROR and no ACK."""
        if not self._pending:
            return
        pending, self._pending = self._pending, []
        internal = False
        try:
            results: list[StoreResult] = self._store.store_many([e[3] for e in pending])
        except OutboxError as exc:
            results = [exc] * len(pending)
        except Exception:  # last resort: a defect is loud, never an outage (and never an ACK)
            self._limited.exception("internal", "central: storing %d messages failed (not acknowledged; "
                                    "a defect, please report)", len(pending))
            results, internal = [OutboxError("internal error while storing")] * len(pending), True
        self._answer(pending, results, internal)

    def _hand_over(self) -> None:
        """Give the store writer the messages decoded since the last call (at the end of
        a poll round, and during one whenever the writer is idle: one lock and one
        wake-up per round rather than per message)."""
        if self._handover:
            self._writer.put(self._handover)
            self._handover = []

    def _collect(self) -> None:
        """ACK (or ERROR) the batches the store writer has finished."""
        if self._writer is None:
            return
        for pending, results, internal, started, finished in self._writer.results():
            self._answer(pending, results, internal, started, finished)

    def _answer(self, pending: list, results: list[StoreResult], internal: bool, started: float = 0.0,
                finished: float = 0.0) -> None:
        stats = self._stats
        if internal:
            stats["internal_errors"] += 1
        timed: list[float] | None = [] if finished else None
        acked = time.monotonic()  # once per batch: its ACKs leave together
        for (rid, first, last, item, queued), result in zip(pending, results):
            if isinstance(result, OutboxError):
                self._store_failed(rid, item.tower_id, item.stream_id, result)
                continue
            size = item.size
            stats["stored_tracks" if item.records is not None else
                  "stored_identities" if item.identities is not None else "stored_events"] += result
            if size != result:
                stats["duplicates"] += size - result
            self._ack(rid, item.tower_id, item.stream_id, first, last)
            if timed is not None:
                timed.append(queued)
        if timed:
            self._timing.add_batch(timed, started, finished, acked)

    def _ack(self, rid: bytes, tower_id: str, stream_id: int, first: int, last: int) -> None:
        if self._reply(rid, tower_id, encode_ack(stream_id, first, last)):
            self._stats["acks_sent"] += 1

    def _store_failed(self, rid: bytes, tower_id: str, stream_id: int, exc: Exception) -> None:
        self._stats["store_errors"] += 1
        self._limited(logging.ERROR, "store_failed", "central: storing from %s failed, not acknowledged: %s",
                      tower_id, exc)
        self._reply(rid, tower_id, encode_error(stream_id, "central.store_failed", "records not stored; send again"))

    def _reply(self, rid: bytes, tower_id: str, frame: bytes) -> bool:
        try:
            sock = self._sock
            sock.send(rid, _SNDMORE_NOBLOCK)  # a ROUTER refuses (HWM, unroutable) on the first frame
            sock.send(frame, _NOBLOCK)
        except zmq.Again:
            self._stats["reply_dropped"] += 1
            self._limited(logging.WARNING, "reply_hwm", "central: reply to %s dropped (queue full); "
                          "it will send again", tower_id)
            return False
        except zmq.ZMQError as exc:
            if exc.errno == zmq.EHOSTUNREACH:
                self._stats["unroutable"] += 1
                self._limited(logging.WARNING, "unroutable", "central: %s is gone, reply not delivered "
                              "(it will send again)", tower_id)
            else:
                self._stats["reply_dropped"] += 1
                self._limited(logging.ERROR, "reply_error", "central: reply to %s failed: %s", tower_id, exc)
            return False
        return True
