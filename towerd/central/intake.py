"""The reference central's intake: one received message checked (routing id,
sender's key, size limits per tower), decoded, and routed; a malformed one counted,
logged at a bounded rate and answered with ERROR ``malformed.<reason>``."""

from __future__ import annotations

import logging
import struct
import time

import zmq

from towerd.central.storetypes import event_json
from towerd.errors import FrameError
from towerd.icd import (
    EVENT_OUTBOX_DROPPED,
    FLAG_REPLAY,
    HEADER_SIZE,
    INT64_MIN,
    KNOWN_FLAGS,
    MAGIC,
    RECORD_SIZE,
    TOWER_ID_RE,
    TRACK_RECORD_DTYPE,
    VERSION,
    Message,
    MessageError,
    MsgType,
    decode,
    decode_events,
    decode_health,
    decode_identities,
    decode_tracks,
    encode_error,
    encode_health_ack,
)
from towerd.seqranges import SEQ_MAX

Received = tuple[bytes, "zmq.Frame | None", "bytes | memoryview | int"]
"""One message as a poll round reads it: (routing id, its one message frame, that
frame's bytes, or a view of a large frame); a message of several frames is (routing id, None, how many)."""

_REPLAY_BYTE = 14
"""The REPLAY flag's byte in the header (the flags are a little-endian u16 at 14..15)."""
assert FLAG_REPLAY < 0x100


def is_replay(data: bytes) -> bool:
    """Whether a received frame carries the REPLAY flag (peeked in the header; the
    message is checked in full when it is handled)."""
    return len(data) >= HEADER_SIZE and bool(data[_REPLAY_BYTE] & FLAG_REPLAY)


_TRACKS_PREFIX = MAGIC + bytes((VERSION, MsgType.TRACKS))
_HEAD = struct.Struct("<4xQHH")
_FAST_COUNT = 16
_SEQS = [struct.Struct("<" + f"Q{RECORD_SIZE - 8}x" * n) for n in range(_FAST_COUNT + 1)]
assert TRACK_RECORD_DTYPE.fields["seq"][1] == 0 and TRACK_RECORD_DTYPE.fields["seq"][0].str == "<u8"


def tracks_head(data: bytes) -> tuple[int, int, int, int, int] | None:
    """``(stream_id, count, flags, first seq, last seq)`` of a TRACKS frame of at most 16
    records whose framing is what the ICD asks (magic, version, known flags, count >= 1,
    stream_id not 0, a body of ``count`` records whose seqs start at 1 or more and are
    consecutive ascending); None for anything else, which :func:`towerd.icd.decode` then
    checks and names. The usual live message costs a few struct unpacks here instead of
    decode's NumPy views and Message object (the records themselves are checked with
    the others of the round)."""
    if data[:4] != _TRACKS_PREFIX or len(data) < HEADER_SIZE:
        return None
    stream_id, count, flags = _HEAD.unpack_from(data)
    if (not 0 < count <= _FAST_COUNT or flags & ~KNOWN_FLAGS or not stream_id
            or len(data) != HEADER_SIZE + count * RECORD_SIZE):
        return None
    seqs = _SEQS[count].unpack_from(data, HEADER_SIZE)
    first = seqs[0]
    if not first or seqs != tuple(range(first, first + count)):
        return None
    return stream_id, count, flags, first, seqs[-1]


class IntakeMixin:
    """The part of :class:`~towerd.central.server.CentralServer` that handles one
    received message up to storing it."""

    def _handle(self, rid: bytes, frame: zmq.Frame | None, data: bytes | memoryview | int) -> None:
        """One received message (:data:`Received`; a large frame's ``data`` is a view of it,
        copied only once its size is within the tower's limit)."""
        self._stats["received"] += 1
        if frame is None:
            self._malformed("frames", repr(rid[:64]), f"{data} message frames, expected 1")
            return
        assert isinstance(data, (bytes, memoryview))
        tower_id = self._tower_ids.get(rid)
        if tower_id is None:
            try:
                tower_id = rid.decode("ascii")
            except UnicodeDecodeError:
                tower_id = ""
            if not TOWER_ID_RE.fullmatch(tower_id):
                self._malformed("routing_id", repr(rid[:64]), "routing id is not a tower id")
                return
            if len(self._tower_ids) >= self._limits.max_peers:
                self._tower_ids.clear()
            self._tower_ids[rid] = tower_id
        if self._auth is not None:
            try:
                user_id = frame.get("User-Id")
            except zmq.ZMQError:
                user_id = None
            reason = self._auth.check_sender(tower_id, user_id)
            if reason is not None:
                self._refused(reason, tower_id, user_id)
                return
        peer = self._peer(tower_id)
        limits = peer.limits
        if len(data) <= limits.max_message_bytes:
            if type(data) is not bytes:
                data = bytes(data)
            head = tracks_head(data)
            if head is not None:  # its records are checked with the others of the round
                self._tracks_waiting.append((rid, tower_id, peer, data, head))
                return
        if len(data) >= HEADER_SIZE:
            stream_id = int.from_bytes(data[4:12], "little")
            limit = limits.max_health_bytes + HEADER_SIZE if data[3] == MsgType.HEALTH else limits.max_message_bytes
            if len(data) > limit:
                self._malformed("too_large", tower_id, f"{len(data)} bytes, this tower may send {limit}", rid,
                                stream_id)
                return
        if type(data) is not bytes:
            data = bytes(data)  # within a HEALTH limit larger than max_message_bytes
        try:
            msg = decode(data)
            if msg.type == MsgType.TRACKS:  # its records are checked with the others of the round
                body = msg.body
                self._tracks_waiting.append((rid, tower_id, peer, data, (
                    msg.stream_id, msg.count, msg.flags, int.from_bytes(body[:8], "little"),
                    int.from_bytes(body[len(body) - RECORD_SIZE:][:8], "little"))))
            elif msg.type == MsgType.EVENTS:
                events = decode_events(msg)
                texts = []
                for ev in events:
                    if ev["code"] == EVENT_OUTBOX_DROPPED and any(
                            isinstance(ev.get(k), int) and not INT64_MIN <= ev[k] <= SEQ_MAX
                            for k in ("first_seq", "last_seq", "count")):
                        raise MessageError("seq_range", f"outbox.dropped event seq {ev['seq']}: a seq or count "
                                           "beyond what this central stores")
                    text = event_json(ev)  # as stored: encoded once, for the limit and the store
                    size = len(text.encode())
                    if size > limits.max_event_bytes:
                        raise MessageError("event_size", f"event seq {ev['seq']} is {size} bytes, this tower may "
                                           f"send {limits.max_event_bytes}")
                    texts.append(text)
                self._on_records(rid, tower_id, msg, events, tuple(texts))
            elif msg.type == MsgType.IDENTITY:
                if not self._identity:  # told to be an ICD v1 central: an unknown type, as v1 says
                    raise MessageError("type", f"unknown type 0x{int(msg.type):02x}")
                self._on_records(rid, tower_id, msg, decode_identities(msg))
            elif msg.type == MsgType.HEALTH:
                health = decode_health(msg, max_nodes=limits.max_health_values)
                self._keep_health(tower_id, msg.body)
                (self._writer or self._store).record_health(tower_id, health)
                self._stats["health_received"] += 1
                self._reply(rid, tower_id, encode_health_ack(msg.stream_id))
            else:
                self._malformed("direction", tower_id, f"{msg.type.name} is not sent by a tower", rid, msg.stream_id)
        except FrameError as exc:
            stream_id = int.from_bytes(data[4:12], "little") if len(data) >= HEADER_SIZE else 0
            self._malformed(getattr(exc, "reason", "decode"), tower_id, str(exc), rid, stream_id)

    def _decode_waiting(self) -> None:
        """Check the records of the TRACKS messages :meth:`_handle` has put aside (their
        headers and seqs already checked) and pass them on: all of them with one
        :func:`~towerd.icd.decode_tracks` over their bodies joined (its NumPy checks cost
        per call, not per record), and only when that finds a bad value, message by message,
        so that a malformed one is refused alone. A message whose tower is within its
        rates goes straight to the store (:meth:`_store_now`); the others through
        :meth:`_on_records` (held back, or refused)."""
        waiting, self._tracks_waiting = self._tracks_waiting, []
        if not waiting:
            return
        records = None
        if len(waiting) > 1:
            try:
                records = decode_tracks(Message(MsgType.TRACKS, 0, sum(w[4][1] for w in waiting), 0,
                                                b"".join([w[3][HEADER_SIZE:] for w in waiting])))
            except MessageError:
                records = None  # one of them: found below
        offset = 0
        now, queued = self._clock.monotonic(), time.monotonic()
        for rid, tower_id, peer, data, (stream_id, count, flags, first, last) in waiting:
            try:
                if records is not None:
                    payload = records[offset:offset + count]
                    offset += count
                else:
                    payload = decode_tracks(Message(MsgType.TRACKS, stream_id, count, flags, data[HEADER_SIZE:]))
                size = len(data)
                if last <= SEQ_MAX and not peer.deferred and peer.ready(count, size, now):
                    self._store_now(peer, rid, tower_id, MsgType.TRACKS, stream_id, flags, payload, count, size,
                                    first, last, None, queued)
                else:  # held back by its rates, or refused
                    self._on_records(rid, tower_id, Message(MsgType.TRACKS, stream_id, count, flags,
                                                            data[HEADER_SIZE:]), payload, peer=peer)
            except FrameError as exc:
                self._malformed(getattr(exc, "reason", "decode"), tower_id, str(exc), rid, stream_id)
            except Exception:  # last resort: a defect is loud, never an outage
                self._internal_error(rid)

    def _count(self, key: str, reason: str) -> None:
        self._stats[key] += 1
        by_reason = self._stats[f"{key}_by_reason"]
        by_reason[reason] = by_reason.get(reason, 0) + 1

    def _malformed(self, reason: str, peer: str, detail: str, rid: bytes | None = None,
                   stream_id: int = 0) -> None:
        """Drop a malformed message: count it (per reason, and per tower when the routing
        id is one), log rate-limited, and answer ERROR ``malformed.<reason>``."""
        self._count("malformed", reason)
        if rid is not None:
            self._peer_count(peer, "malformed." + reason)
        self._limited(logging.WARNING, reason, "central: dropped malformed message from %s: %s", peer, detail[:300])
        if rid is not None:
            self._error_reply(rid, peer, stream_id, "malformed." + reason, detail[:300])

    def _error_reply(self, rid: bytes, tower_id: str, stream_id: int, code: str, text: str) -> None:
        """ERROR to a tower, at most its ``error_replies_per_s`` (the rest are counted)."""
        bucket = self._peer(tower_id).errors
        if not bucket.ready(1, self._clock.monotonic()):
            self._stats["errors_unanswered"] += 1
            return
        bucket.spend(1)
        self._reply(rid, tower_id, encode_error(stream_id, code, text))

    def _refused(self, reason: str, tower_id: str, user_id: str | None) -> None:
        self._count("refused", reason)
        key_tower = user_id.split(" ", 1)[0] if user_id else "?"
        # An impostor is counted under the tower its key belongs to, not the one it claims.
        self._peer_count(key_tower if reason == "identity" else tower_id, "refused." + reason)
        what = {
            "identity": f"sent with routing id {tower_id!r} by the key of tower {key_tower!r} (a tower cannot speak "
                        "for another; the key is quarantined)",
            "revoked": f"from {tower_id!r}: its key is no longer on the allow-list for tower {key_tower!r}",
            "no_user_id": f"from {tower_id!r}: the connection was not admitted by the allow-list",
        }[reason]
        self._limited(logging.ERROR, "refused:" + reason, "central: dropped a message %s", what)
