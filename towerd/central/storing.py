"""The reference central's store batching and replies: decoded messages queued,
stored in one transaction when the store batches, and each acknowledged only once it is
committed (ERROR ``central.store_failed`` and no ACK otherwise)."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import zmq

from towerd.central.storetypes import Pending, StoreResult
from towerd.errors import OutboxError
from towerd.icd import EVENT_OUTBOX_DROPPED, FLAG_REPLAY, MsgType, encode_ack, encode_error

if TYPE_CHECKING:  # the peers module's types, for annotations only
    from towerd.central.peers import _Held, _Peer


class StoringMixin:
    """The part of :class:`~towerd.central.server.CentralServer` that stores and
    acknowledges."""

    def _store_held(self, peer: _Peer, held: _Held) -> None:
        """Spend the tower's rates and queue the message for :meth:`_flush`."""
        peer.records.spend(held.records)
        peer.bytes.spend(held.size)
        msg, tower_id = held.msg, held.tower_id
        replay = bool(msg.flags & FLAG_REPLAY)
        if msg.type == MsgType.TRACKS:
            item = Pending(tower_id, msg.stream_id, replay, records=held.payload)
        elif msg.type == MsgType.IDENTITY:
            item = Pending(tower_id, msg.stream_id, replay, identities=held.payload)
        else:
            item = Pending(tower_id, msg.stream_id, replay, events=held.payload, event_json=held.event_json)
            for ev in held.payload:
                if ev["code"] == EVENT_OUTBOX_DROPPED:
                    self._limited(logging.WARNING, "dropped", "central: tower %s announces %s records lost from "
                                  "its full outbox, seq %s..%s", tower_id, str(ev.get("count"))[:40],
                                  str(ev.get("first_seq"))[:40], str(ev.get("last_seq"))[:40])
        self._queue(held.rid, held.first, held.last, item)

    def _queue(self, rid: bytes, first: int, last: int, item: Pending) -> None:
        """Hold a decoded message for :meth:`_flush` (at once when the store does not batch)."""
        self._pending.append((rid, first, last, item))
        self._pending_records += item.size
        if self._store.batch_records <= 0:
            self._flush()

    def _flush(self) -> None:
        """Store the held messages (one transaction when the store batches), then ACK each
        one that is committed; the others get ERROR and no ACK. With a store writer
        (:mod:`towerd.central.writer`) the batch is handed to it when it is idle (else it
        keeps growing until it is) and acknowledged in :meth:`_collect`."""
        if not self._pending:
            return
        if self._writer is not None:
            if self._writer.idle:
                self._writer.submit(self._take_batch())
            return
        pending, self._pending, self._pending_records = self._pending, [], 0
        internal = False
        try:
            results: list[StoreResult] = self._store.store_many([p for _, _, _, p in pending])
        except OutboxError as exc:
            results = [exc] * len(pending)
        except Exception:  # last resort: a defect is loud, never an outage (and never an ACK)
            self._limited.exception("internal", "central: storing %d messages failed (not acknowledged; "
                                    "a defect, please report)", len(pending))
            results, internal = [OutboxError("internal error while storing")] * len(pending), True
        self._answer(pending, results, internal)

    def _take_batch(self) -> list:
        """The oldest held messages, up to about ``batch_records`` records (at least one):
        what waited while the writer was busy may be far more (a round takes up to 1000
        messages of up to 100 records), and one huge transaction would delay every ACK in it."""
        n = records = 0
        limit = self._store.batch_records
        for n, (_rid, _first, _last, item) in enumerate(self._pending, 1):
            records += item.size
            if records >= limit:
                break
        batch, self._pending = self._pending[:n], self._pending[n:]
        self._pending_records -= records
        return batch

    def _collect(self) -> None:
        """ACK (or ERROR) the batches the store writer has finished, and hand it the next."""
        if self._writer is None:
            return
        for pending, results, internal in self._writer.results():
            self._answer(pending, results, internal)
        self._flush()

    def _answer(self, pending: list, results: list[StoreResult], internal: bool) -> None:
        if internal:
            self._stats["internal_errors"] += 1
        for (rid, first, last, item), result in zip(pending, results):
            if isinstance(result, OutboxError):
                self._store_failed(rid, item.tower_id, item.stream_id, result)
                continue
            self._stats["stored_identities" if item.identities is not None else
                        "stored_tracks" if item.records is not None else "stored_events"] += result
            self._stats["duplicates"] += item.size - result
            self._ack(rid, item.tower_id, item.stream_id, first, last)

    def _store_failed(self, rid: bytes, tower_id: str, stream_id: int, exc: Exception) -> None:
        self._stats["store_errors"] += 1
        self._limited(logging.ERROR, "store_failed", "central: storing from %s failed, not acknowledged: %s",
                      tower_id, exc)
        self._reply(rid, tower_id, encode_error(stream_id, "central.store_failed", "records not stored; send again"))

    def _ack(self, rid: bytes, tower_id: str, stream_id: int, first: int, last: int) -> None:
        if self._reply(rid, tower_id, encode_ack(stream_id, first, last)):
            self._stats["acks_sent"] += 1

    def _reply(self, rid: bytes, tower_id: str, frame: bytes) -> bool:
        try:
            self._sock.send_multipart([rid, frame], zmq.NOBLOCK)
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
