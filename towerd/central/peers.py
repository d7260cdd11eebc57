"""What the reference central keeps per claimed tower id: its limits and rate
buckets, its last HEALTH, its refusal counts, and the messages its rates hold back
(deferral: a tower over its records or bytes per second has its messages stored and
acknowledged later; past a bound they are refused with ERROR ``central.busy``)."""

from __future__ import annotations

import logging
from collections import deque

from towerd.central.limits import TokenBucket, TowerLimits
from towerd.icd import HEADER_SIZE, Message, MsgType
from towerd.seqranges import SEQ_MAX


class _Peer:
    """What the central keeps per claimed tower id: its limits and rate buckets, the
    messages its rates hold back, its last HEALTH and its refusal counts."""

    __slots__ = ("limits", "records", "bytes", "errors", "deferred", "deferred_bytes", "deferred_keys", "counts")

    def __init__(self, limits: TowerLimits, now: float) -> None:
        self.limits = limits
        self.records = TokenBucket(limits.records_per_s, now)
        self.bytes = TokenBucket(limits.bytes_per_s, now)
        self.errors = TokenBucket(limits.error_replies_per_s, now, burst=max(50.0, limits.error_replies_per_s))
        self.deferred: deque[_Held] = deque()
        self.deferred_bytes = 0
        self.deferred_keys: set[tuple[int, int, int]] = set()
        self.counts: dict[str, int] = {}

    def ready(self, records: int, size: int, now: float) -> bool:
        return self.records.ready(records, now) and self.bytes.ready(size, now)

    def wait_s(self, now: float) -> float:
        if not self.deferred:
            return 0.0
        held = self.deferred[0]
        return max(self.records.wait_s(held.records, now), self.bytes.wait_s(held.size, now))


class _Held:
    """A decoded TRACKS or EVENTS message waiting to be stored and acknowledged (a plain
    slotted class: one is made per message received)."""

    __slots__ = ("rid", "tower_id", "msg", "payload", "records", "size", "first", "last", "event_json")

    def __init__(self, rid: bytes, tower_id: str, msg: Message, payload: object, records: int, size: int,
                 first: int, last: int, event_json: tuple[str, ...] | None = None) -> None:
        self.rid = rid
        self.tower_id = tower_id
        self.msg = msg
        self.payload = payload  # TRACKS records (ndarray) or EVENTS objects (list of dicts)
        self.records = records
        self.size = size
        self.first = first
        self.last = last
        self.event_json = event_json  # EVENTS: each object as stored, encoded once

    @property
    def key(self) -> tuple[int, int, int]:
        return (self.msg.stream_id, self.first, self.last)


class PeersMixin:
    """The part of :class:`~towerd.central.server.CentralServer` that keeps per-tower
    state and holds back the messages of a tower over its rates."""

    def _peer(self, tower_id: str) -> _Peer:
        """The state kept for a claimed tower id; the least recently heard beyond
        ``max_peers`` are forgotten (never one with messages held back)."""
        peer = self._peers.get(tower_id)
        if peer is not None:
            self._peers.move_to_end(tower_id)
            return peer
        if len(self._peers) >= self._limits.max_peers:
            for old in list(self._peers)[: len(self._peers) - self._limits.max_peers + 1]:
                if not self._peers[old].deferred:
                    del self._peers[old]
                    self._stats["peers_forgotten"] += 1
        peer = self._peers[tower_id] = _Peer(self._limits.for_tower(tower_id), self._clock.monotonic())
        return peer

    def _keep_health(self, tower_id: str, body: bytes) -> None:
        """Keep the last HEALTH body per tower, all of them within total_health_bytes
        (raw bytes: a parsed object would cost ten times as much)."""
        old = self._health.pop(tower_id, None)
        self._health_bytes += len(body) - (len(old) if old is not None else 0)
        self._health[tower_id] = body
        while self._health_bytes > self._limits.total_health_bytes and len(self._health) > 1:
            _tid, dropped = self._health.popitem(last=False)
            self._health_bytes -= len(dropped)
            self._stats["health_forgotten"] += 1

    def _peer_count(self, tower_id: str, reason: str) -> None:
        peer = self._peer(tower_id)
        peer.counts[reason] = peer.counts.get(reason, 0) + 1

    def _on_records(self, rid: bytes, tower_id: str, msg: Message, payload,
                    event_json: tuple[str, ...] | None = None, peer: _Peer | None = None) -> None:
        """TRACKS (records) or EVENTS (objects) that decoded: store and ACK now, or hold
        back while the tower is over its rates. ``peer``: the tower's state, when the
        caller has it."""
        if msg.type in (MsgType.TRACKS, MsgType.IDENTITY):  # fixed-size records, each starting with its u64 seq
            body = msg.body
            first = int.from_bytes(body[:8], "little")
            last = int.from_bytes(body[len(body) - len(body) // len(payload):][:8], "little")
        else:
            first, last = payload[0]["seq"], payload[-1]["seq"]
        if last > SEQ_MAX:
            self._malformed("seq_range", tower_id, f"seq {last} beyond what this central stores", rid, msg.stream_id)
            return
        if peer is None:
            peer = self._peer(tower_id)
        now = self._clock.monotonic()
        records, size = len(payload), len(msg.body) + HEADER_SIZE
        if not peer.deferred and peer.ready(records, size, now):
            self._store_now(peer, rid, tower_id, msg.type, msg.stream_id, msg.flags, payload, records, size, first, last,
                            event_json)
            return
        held = _Held(rid, tower_id, msg, payload, records, size, first, last, event_json)
        if held.key in peer.deferred_keys:
            self._stats["duplicates"] += held.records
            return  # sent again while held back: the ACK comes when the first copy is stored
        if (peer.deferred_bytes + held.size > peer.limits.max_deferred_bytes
                or self._deferred_total + held.size > self._limits.total_deferred_bytes):
            self._stats["busy"] += 1
            peer.counts["busy"] = peer.counts.get("busy", 0) + 1
            self._limited(logging.WARNING, "busy", "central: %s is over its rates (%g records/s, %g bytes/s) with "
                          "%d bytes held back: message not stored, not acknowledged (it will send again)",
                          tower_id, peer.limits.records_per_s, peer.limits.bytes_per_s, peer.deferred_bytes)
            self._error_reply(rid, tower_id, msg.stream_id, "central.busy",
                              "over this tower's rates; not stored, send again")
            return
        peer.deferred.append(held)
        peer.deferred_keys.add(held.key)
        peer.deferred_bytes += held.size
        self._deferred_total += held.size
        self._deferring.add(tower_id)
        self._stats["deferred"] += 1
        self._limited(logging.INFO, "deferred", "central: %s is over its rates (%g records/s, %g bytes/s): its "
                      "messages wait to be stored and acknowledged", tower_id, peer.limits.records_per_s,
                      peer.limits.bytes_per_s)

    def _drain_deferred(self, now: float) -> None:
        for tower_id in list(self._deferring):
            peer = self._peers[tower_id]
            while peer.deferred and peer.ready(peer.deferred[0].records, peer.deferred[0].size, now):
                held = peer.deferred.popleft()
                peer.deferred_keys.discard(held.key)
                peer.deferred_bytes -= held.size
                self._deferred_total -= held.size
                try:
                    self._store_held(peer, held)
                except Exception:
                    self._stats["internal_errors"] += 1
                    self._limited.exception("internal", "central: storing a held-back message from %s failed "
                                            "(dropped, not acknowledged; a defect, please report)", tower_id)
            if not peer.deferred:
                self._deferring.discard(tower_id)
