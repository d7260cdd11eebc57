"""ICD v1 wire format (docs/protocol.md, appendix) with the v1.1 IDENTITY message,
shared by uplink and central.

Everything little-endian and packed. This module is pure: bytes in, values out, no
sockets. The record layout is a NumPy structured dtype with explicit offsets so that
encoding many records is one ``tobytes()``. The IDENTITY record (v1.1) is in
:mod:`towerd.icd_identity`, the bounded parse of received JSON bodies and
:class:`MessageError` in :mod:`towerd.icd_json`; their names stay importable from here.
"""

from __future__ import annotations

import enum
import json
import re
import struct
import sys
from dataclasses import dataclass, field

import numpy as np

from towerd.icd_json import MAX_JSON_DEPTH  # noqa: F401 (re-exported)
from towerd.icd_json import MAX_JSON_NODES, MessageError, check_tree, parse_json

MAGIC = b"TW"
VERSION = 1
HEADER_SIZE = 16
RECORD_SIZE = 80
FLAG_REPLAY = 0x0001
LAT_LON_UNKNOWN = -(2**31)

TOWER_ID_RE = re.compile(r"[A-Za-z0-9._-]{1,64}")
"""ICD "Transport": a tower id (= the DEALER's ZeroMQ routing id) is 1 to 64 bytes of
``[A-Za-z0-9._-]``."""

EVENT_OUTBOX_DROPPED = "outbox.dropped"
"""ICD "Sequence numbers": the EVENTS code a tower emits, with ``first_seq``,
``last_seq`` and ``count``, when its full store drops its oldest records."""


class MsgType(enum.IntEnum):
    TRACKS = 0x01
    EVENTS = 0x02
    HEALTH = 0x03
    IDENTITY = 0x04  # ICD v1.1 (additive): a v1 receiver drops it as an unknown type
    ACK = 0x81
    HEALTH_ACK = 0x82
    ERROR = 0x8F


class Status(enum.IntEnum):
    TENTATIVE = 0
    CONFIRMED = 1
    COASTING = 2
    ENDED = 3


class Category(enum.IntEnum):
    UNKNOWN = 0
    UAS = 1
    BIRD = 2
    GROUND_VEHICLE = 3
    MANNED_AIRCRAFT = 4
    PERSON = 5


class Threat(enum.IntEnum):
    NONE = 0
    LOW = 1
    MEDIUM = 2
    HIGH = 3


SOURCE_RADAR = 0x01
SOURCE_RF = 0x02
SOURCE_REMOTE_ID = 0x04

HEADER_DTYPE = np.dtype(
    {
        "names": ["magic", "version", "type", "stream_id", "count", "flags"],
        "formats": ["S2", "u1", "u1", "<u8", "<u2", "<u2"],
        "offsets": [0, 2, 3, 4, 12, 14],
        "itemsize": HEADER_SIZE,
    }
)

TRACK_RECORD_DTYPE = np.dtype(
    {
        "names": [
            "seq", "time_us", "track_id", "status", "category", "confidence", "threat",
            "sources", "reserved", "hits", "lat_e7", "lon_e7", "alt_m", "range_m",
            "azimuth_deg", "elevation_deg", "vel_east_mps", "vel_north_mps", "vel_up_mps",
            "pos_sigma_m", "rf_freq_mhz", "rf_bw_mhz", "rf_power_dbm",
        ],
        "formats": [
            "<u8", "<i8", "<u4", "u1", "u1", "u1", "u1",
            "u1", "u1", "<u2", "<i4", "<i4", "<f4", "<f4",
            "<f4", "<f4", "<f4", "<f4", "<f4",
            "<f4", "<f4", "<f4", "<f4",
        ],
        "offsets": [0, 8, 16, 20, 21, 22, 23, 24, 25, 26, 28, 32, 36, 40, 44, 48, 52, 56, 60, 64, 68, 72, 76],
        "itemsize": RECORD_SIZE,
    }
)
"""One ICD v1 TRACKS record, 80 bytes, byte-exact."""
assert TRACK_RECORD_DTYPE.itemsize == RECORD_SIZE


IDENTITY_RECORD_SIZE = 112
"""ICD v1.1 IDENTITY record size (its layout and checks: :mod:`towerd.icd_identity`)."""


def empty_track_records(n: int = 0) -> np.ndarray:
    """Records with every optional field set to the ICD's 'unknown' value."""
    rec = np.zeros(n, dtype=TRACK_RECORD_DTYPE)
    rec["lat_e7"] = LAT_LON_UNKNOWN
    rec["lon_e7"] = LAT_LON_UNKNOWN
    for name in ("alt_m", "range_m", "azimuth_deg", "elevation_deg", "vel_east_mps",
                 "vel_north_mps", "vel_up_mps", "pos_sigma_m", "rf_freq_mhz", "rf_bw_mhz",
                 "rf_power_dbm"):
        rec[name] = np.nan
    return rec


# --------------------------------------------------------------------------------------
# Codec: one ZeroMQ frame <-> Message. Pure functions; errors are ValueError when a caller
# asks to encode something the ICD cannot carry, FrameError when received bytes are not a
# valid v1 message.
# --------------------------------------------------------------------------------------

_HEADER = struct.Struct("<2sBBQHH")
assert _HEADER.size == HEADER_SIZE
_ACK_BODY = struct.Struct("<QQ")

MAX_COUNT = 0xFFFF
"""``count`` is a u16: at most 65535 records per TRACKS or EVENTS message."""
U64_MAX = 2**64 - 1
KNOWN_FLAGS = FLAG_REPLAY
"""Flag bits defined by ICD v1. Any other bit set makes a message malformed."""
SEVERITIES = frozenset({"info", "warning", "error", "critical"})
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
_EVENT_REQUIRED = (("seq", int), ("time_us", int), ("code", str), ("severity", str), ("message", str))
_RECORD_TYPES = frozenset({MsgType.TRACKS, MsgType.EVENTS, MsgType.IDENTITY})


@dataclass(frozen=True)
class Message:
    """A decoded header plus the raw body (still to be interpreted by ``decode_*``)."""

    type: MsgType
    stream_id: int
    count: int
    flags: int
    body: bytes
    parsed: object = field(default=None, compare=False, repr=False)
    """The JSON body as :func:`decode` parsed and checked it (EVENTS, HEALTH, ERROR), so
    that ``decode_*`` do not parse it again; None for the other types."""


def _header(mtype: MsgType, stream_id: int, count: int, flags: int) -> bytes:
    if not 0 <= stream_id <= U64_MAX:
        raise ValueError(f"stream_id {stream_id} is not a u64")
    if mtype in _RECORD_TYPES or mtype == MsgType.ACK:
        if stream_id == 0:
            raise ValueError("stream_id 0 is reserved (ICD: never 0)")
    if not 0 <= flags <= 0xFFFF or flags & ~KNOWN_FLAGS:
        raise ValueError(f"flags 0x{flags:x} set bits undefined in ICD v1")
    if not 0 <= count <= MAX_COUNT:
        raise ValueError(f"count {count} does not fit the u16 header field")
    return _HEADER.pack(MAGIC, VERSION, int(mtype), stream_id, count, flags)


def _json_bytes(obj: object) -> bytes:
    # allow_nan=False: NaN/Infinity are not JSON and another team's parser may reject them.
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode("utf-8")


def _check_seq_values(values: list[int], what: str) -> None:
    """``values`` (the seqs as plain ints) start at >= 1 and are consecutive ascending."""
    if values and values[0] == 0:
        raise ValueError(f"{what}: seq starts at 1, got 0")
    if len(values) > 1 and values != list(range(values[0], values[0] + len(values))):
        raise ValueError(f"{what}: seq values are not consecutive ascending")


def _check_consecutive(seq: np.ndarray, what: str) -> None:
    # For the usual few records, plain ints; else the last minus the first is size - 1 and
    # every step is positive: consecutive ascending (no wrap past 2^64 either).
    if seq.size <= _SMALL_SEQ:
        _check_seq_values(seq.tolist(), what)
        return
    if seq[0] == 0:
        raise ValueError(f"{what}: seq starts at 1, got 0")
    if not bool(np.all(np.diff(seq.astype(np.uint64)) == 1)):
        raise ValueError(f"{what}: seq values are not consecutive ascending")


_SMALL_SEQ = 128


def _check_record_array(records: np.ndarray, dtype: np.dtype, what: str) -> None:
    """A fixed-size record body to encode: 1-D array of ``dtype``, 1..65535 records, seq
    consecutive ascending from >= 1 (ValueError otherwise)."""
    if not isinstance(records, np.ndarray) or records.dtype != dtype or records.ndim != 1:
        raise ValueError(f"records must be a 1-D array of {what}_RECORD_DTYPE")
    if records.size == 0:
        raise ValueError(f"a {what} message carries at least one record")
    if records.size > MAX_COUNT:
        raise ValueError(f"{records.size} records exceed {MAX_COUNT} per message")
    _check_consecutive(records["seq"], what)


def encode_tracks(stream_id: int, records: np.ndarray, flags: int = 0) -> bytes:
    """One TRACKS message. ``records``: 1-D array of TRACK_RECORD_DTYPE, shape (count,),
    with ``seq`` already assigned, consecutive and ascending; 1 <= count <= 65535."""
    _check_record_array(records, TRACK_RECORD_DTYPE, "TRACKS")
    return _header(MsgType.TRACKS, stream_id, records.size, flags) + np.ascontiguousarray(records).tobytes()


def _check_event(ev: object, index: int) -> None:
    if not isinstance(ev, dict):
        raise ValueError(f"event {index} is not an object")
    for key, typ in _EVENT_REQUIRED:
        val = ev.get(key)
        if not isinstance(val, typ) or isinstance(val, bool):
            raise ValueError(f"event {index}: {key!r} missing or not {typ.__name__}")


def check_event(ev: object, index: int = 0) -> None:
    """Raise ValueError unless ``ev`` is an event object :func:`encode_events` sends:
    the required keys and types, a known severity, a seq in 1..2^64-1."""
    _check_event(ev, index)
    assert isinstance(ev, dict)
    if ev["severity"] not in SEVERITIES:
        raise ValueError(f"event {index}: severity {ev['severity']!r} not one of {sorted(SEVERITIES)}")
    if not 1 <= ev["seq"] <= U64_MAX:
        raise ValueError(f"event {index}: seq {ev['seq']} out of range")


def encode_events(stream_id: int, events: list[dict], flags: int = 0) -> bytes:
    """One EVENTS message: a UTF-8 JSON array of event objects, each with at least
    ``seq``, ``time_us``, ``code``, ``severity`` (info|warning|error|critical) and
    ``message``; ``seq`` consecutive ascending, 1 <= len(events) <= 65535."""
    if not events:
        raise ValueError("an EVENTS message carries at least one event")
    if len(events) > MAX_COUNT:
        raise ValueError(f"{len(events)} events exceed {MAX_COUNT} per message")
    for i, ev in enumerate(events):
        check_event(ev, i)
    _check_consecutive(np.array([ev["seq"] for ev in events], dtype=np.uint64), "EVENTS")
    return _header(MsgType.EVENTS, stream_id, len(events), flags) + _json_bytes(events)


def encode_tracks_rows(stream_id: int, rows: list[bytes], flags: int = 0) -> bytes:
    """One TRACKS message from records already in wire form (each element RECORD_SIZE
    bytes, or a whole number of records back to back; ``seq`` set, consecutive and
    ascending): the bytes :func:`encode_tracks` makes of the same records, built with one
    copy (header and rows joined into the frame)."""
    size = sum(map(len, rows))
    count = size // RECORD_SIZE
    if not rows or not size:
        raise ValueError("a TRACKS message carries at least one record")
    if size % RECORD_SIZE or count < len(rows):
        raise ValueError(f"TRACKS rows are not {RECORD_SIZE} bytes each")
    if count > MAX_COUNT:
        raise ValueError(f"{count} records exceed {MAX_COUNT} per message")
    frame = b"".join((_header(MsgType.TRACKS, stream_id, count, flags), *rows))
    if sys.byteorder == "little":  # the seqs read through a memoryview: no NumPy on the uplink's path
        _check_seq_values(memoryview(frame)[HEADER_SIZE:].cast("Q")[::RECORD_SIZE // 8].tolist(), "TRACKS")
    else:
        _check_consecutive(np.frombuffer(frame, dtype=TRACK_RECORD_DTYPE, offset=HEADER_SIZE)["seq"], "TRACKS")
    return frame


def encode_events_json(stream_id: int, objects: list[bytes], flags: int = 0) -> bytes:
    """One EVENTS message from event objects already encoded as compact UTF-8 JSON (as
    :func:`encode_events` encodes them, each checked with :func:`check_event` and with
    consecutive ascending seq; the caller vouches for that): the same bytes, without
    encoding them again."""
    if not objects:
        raise ValueError("an EVENTS message carries at least one event")
    if len(objects) > MAX_COUNT:
        raise ValueError(f"{len(objects)} events exceed {MAX_COUNT} per message")
    return b"".join((_header(MsgType.EVENTS, stream_id, len(objects), flags), b"[", b",".join(objects), b"]"))


def encode_health(stream_id: int, health: dict) -> bytes:
    """One HEALTH message: the dict as a UTF-8 JSON object (sent as given)."""
    if not isinstance(health, dict):
        raise ValueError("health must be a dict")
    return _header(MsgType.HEALTH, stream_id, 0, 0) + _json_bytes(health)


def encode_ack(stream_id: int, first_seq: int, last_seq: int) -> bytes:
    """One ACK covering ``first_seq..last_seq`` of ``stream_id``."""
    if not 1 <= first_seq <= last_seq <= U64_MAX:
        raise ValueError(f"bad ACK range {first_seq}..{last_seq}")
    return _header(MsgType.ACK, stream_id, 0, 0) + _ACK_BODY.pack(first_seq, last_seq)


def encode_health_ack(stream_id: int) -> bytes:
    """One HEALTH_ACK (empty body)."""
    return _header(MsgType.HEALTH_ACK, stream_id, 0, 0)


def encode_error(stream_id: int, code: str, message: str) -> bytes:
    """One ERROR: ``{"code": str, "message": str}``."""
    if not isinstance(code, str) or not isinstance(message, str):
        raise ValueError("ERROR code and message must be strings")
    return _header(MsgType.ERROR, stream_id, 0, 0) + _json_bytes({"code": code, "message": message})


def decode(frame: bytes) -> Message:
    """Check one frame against ICD v1 and split it into header fields and body.

    Raises FrameError (the reason in its message) for: a frame shorter than the header;
    magic other than ``TW``; version other than 1; an unknown type; flag bits other than
    REPLAY (bit 0) (a sender that sets them speaks something other than v1, and guessing
    their meaning is worse than dropping; REPLAY on a message without records is
    accepted and means nothing); a body whose size does not match ``count`` (TRACKS 80 * count, ACK 16
    bytes with count 0, HEALTH_ACK empty with count 0); count 0 for TRACKS or EVENTS or
    nonzero for the other types; stream_id 0 on TRACKS, EVENTS or ACK; TRACKS seq values
    that are 0 or not consecutive ascending; EVENTS, HEALTH and ERROR bodies that are not
    UTF-8 JSON of the right shape (EVENTS: an array of exactly ``count`` objects).
    IDENTITY (v1.1) is framed like TRACKS with 112-byte records on the tower's identity
    stream; :func:`decode_identities` checks its fields.
    """
    frame = bytes(frame)
    if len(frame) < HEADER_SIZE:
        raise MessageError("short", f"short frame: {len(frame)} bytes < {HEADER_SIZE}-byte header")
    magic, version, mtype_raw, stream_id, count, flags = _HEADER.unpack_from(frame, 0)
    if magic != MAGIC:
        raise MessageError("magic", f"bad magic {magic!r}")
    if version != VERSION:
        raise MessageError("version", f"unknown version {version}")
    mtype = _MSG_TYPES.get(mtype_raw)
    if mtype is None:
        raise MessageError("type", f"unknown type 0x{mtype_raw:02x}")
    if flags & ~KNOWN_FLAGS:
        raise MessageError("flags", f"undefined flag bits 0x{flags & ~KNOWN_FLAGS:04x}")
    body = frame[HEADER_SIZE:]
    parsed: object = None
    if mtype in _RECORD_TYPES:
        if count == 0:
            raise MessageError("count", f"{mtype.name} with count 0")
        if stream_id == 0:
            raise MessageError("stream_id", f"{mtype.name} with stream_id 0")
    elif count != 0:
        raise MessageError("count", f"{mtype.name} with count {count}, expected 0")
    if mtype in _FIXED_RECORDS:
        size = _FIXED_RECORDS[mtype]
        if len(body) != size * count:
            raise MessageError("size", f"{mtype.name} body {len(body)} bytes, count {count} needs {size * count}")
        seq = np.frombuffer(body, dtype="<u8")[::size // 8]
        if int(seq[0]) + count - 1 > U64_MAX:
            raise MessageError("seq", f"{mtype.name} seq {int(seq[0])} + {count - 1} wraps past 2^64")
        try:
            _check_consecutive(seq, mtype.name)
        except ValueError as exc:
            raise MessageError("seq", str(exc)) from None
    elif mtype == MsgType.EVENTS:
        events = parsed = parse_json(body, "EVENTS")
        if not isinstance(events, list):
            raise MessageError("json_shape", "EVENTS body is not a JSON array")
        if len(events) != count:
            raise MessageError("count", f"EVENTS body holds {len(events)} objects, count says {count}")
        if not all(isinstance(ev, dict) for ev in events):
            raise MessageError("json_shape", "EVENTS array holds a non-object")
    elif mtype == MsgType.HEALTH:
        parsed = parse_json(body, "HEALTH")
        if not isinstance(parsed, dict):
            raise MessageError("json_shape", "HEALTH body is not a JSON object")
    elif mtype == MsgType.ACK:
        if stream_id == 0:
            raise MessageError("stream_id", "ACK with stream_id 0")
        if len(body) != _ACK_BODY.size:
            raise MessageError("size", f"ACK body {len(body)} bytes, expected {_ACK_BODY.size}")
        first, last = _ACK_BODY.unpack(body)
        if not 1 <= first <= last:
            raise MessageError("ack_range", f"ACK range {first}..{last} is empty or starts at 0")
    elif mtype == MsgType.HEALTH_ACK:
        if body:
            raise MessageError("size", f"HEALTH_ACK body {len(body)} bytes, expected 0")
    elif mtype == MsgType.ERROR:
        err = parsed = parse_json(body, "ERROR")
        if not (isinstance(err, dict) and isinstance(err.get("code"), str) and isinstance(err.get("message"), str)):
            raise MessageError("json_shape", 'ERROR body is not {"code": str, "message": str}')
    return Message(type=mtype, stream_id=stream_id, count=count, flags=flags, body=body, parsed=parsed)


def _parsed(msg: Message, what: str, max_nodes: int = MAX_JSON_NODES) -> object:
    """The JSON body of ``msg``: as :func:`decode` parsed it (walked again only for a
    lower ``max_nodes``), else parsed now."""
    if msg.parsed is None:
        return parse_json(msg.body, what, max_nodes)
    if max_nodes < MAX_JSON_NODES:
        check_tree(msg.parsed, what, max_nodes)
    return msg.parsed


_FIXED_RECORDS = {MsgType.TRACKS: RECORD_SIZE, MsgType.IDENTITY: IDENTITY_RECORD_SIZE}
_MSG_TYPES = {int(t): t for t in MsgType}
"""Message types whose body is ``count`` fixed-size records (bytes each, a multiple of 8)
starting with a u64 seq."""


def _expect(msg: Message, mtype: MsgType) -> None:
    if msg.type != mtype:
        raise MessageError("type", f"expected {mtype.name}, got {msg.type.name}")


def decode_tracks(msg: Message) -> np.ndarray:
    """The records of a decoded TRACKS message: a writable copy, TRACK_RECORD_DTYPE, shape (count,)."""
    _expect(msg, MsgType.TRACKS)
    # A copy through bytearray (a memcpy; a structured array's .copy() goes field by field),
    # checked through two views of it: the float words, and lat/lon as int32 words.
    records = np.frombuffer(bytearray(msg.body), dtype=TRACK_RECORD_DTYPE, count=msg.count)
    words = records.view("<f4").reshape(records.size, RECORD_SIZE // 4)
    if np.isinf(words[:, _FLOAT_WORDS]).any():
        name = next(n for n in _FLOAT_FIELDS if np.isinf(records[n]).any())
        raise MessageError("range", f"TRACKS {name} is infinite (unknown is NaN)")
    # |-2^31| stays -2^31 in int32, so the unknown value never exceeds a limit.
    if (np.abs(words[:, _LAT_LON_WORDS].view("<i4")) > _LAT_LON_LIMITS).any():
        for name, limit in (("lat_e7", 900_000_000), ("lon_e7", 1_800_000_000)):
            col = records[name]
            if ((col != LAT_LON_UNKNOWN) & (np.abs(col.astype(np.int64)) > limit)).any():
                raise MessageError("range", f"TRACKS {name} beyond +-{limit} (unknown is -2^31)")
    return records


_FLOAT_FIELDS = tuple(n for n in TRACK_RECORD_DTYPE.names if TRACK_RECORD_DTYPE.fields[n][0].kind == "f")
_FLOAT_WORDS = slice(TRACK_RECORD_DTYPE.fields[_FLOAT_FIELDS[0]][1] // 4, RECORD_SIZE // 4)
_LAT_LON_WORDS = slice(TRACK_RECORD_DTYPE.fields["lat_e7"][1] // 4, TRACK_RECORD_DTYPE.fields["lon_e7"][1] // 4 + 1)
_LAT_LON_LIMITS = np.array([900_000_000, 1_800_000_000], dtype=np.int32)
assert all(TRACK_RECORD_DTYPE.fields[n][1] // 4 in range(_FLOAT_WORDS.start, _FLOAT_WORDS.stop) for n in _FLOAT_FIELDS)
assert len(_FLOAT_FIELDS) == _FLOAT_WORDS.stop - _FLOAT_WORDS.start


def decode_events(msg: Message) -> list[dict]:
    """The event objects of a decoded EVENTS message, each checked for the required keys
    and types and for consecutive ascending ``seq``. Severity values outside the ICD's
    four are accepted here (lenient receiver); ``encode_events`` refuses them."""
    _expect(msg, MsgType.EVENTS)
    events = _parsed(msg, "EVENTS")
    if not isinstance(events, list) or len(events) != msg.count:
        raise MessageError("count", "EVENTS body does not match count")
    for i, ev in enumerate(events):
        try:
            _check_event(ev, i)
        except ValueError as exc:
            raise MessageError("event_fields", str(exc)) from None
        if not 1 <= ev["seq"] <= U64_MAX:
            raise MessageError("seq", f"event {i}: seq {ev['seq']} out of range")
        if not INT64_MIN <= ev["time_us"] <= INT64_MAX:
            raise MessageError("range", f"event {i}: time_us {ev['time_us']} is not an int64")
    for i in range(1, len(events)):
        if events[i]["seq"] != events[i - 1]["seq"] + 1:
            raise MessageError("seq", "EVENTS: seq values are not consecutive ascending")
    return events


def decode_health(msg: Message, max_nodes: int = MAX_JSON_NODES) -> dict:
    """The JSON object of a decoded HEALTH message (at most ``max_nodes`` values)."""
    _expect(msg, MsgType.HEALTH)
    health = _parsed(msg, "HEALTH", max_nodes)
    if not isinstance(health, dict):
        raise MessageError("json_shape", "HEALTH body is not a JSON object")
    return health


def decode_ack(msg: Message) -> tuple[int, int]:
    """``(first_seq, last_seq)`` of a decoded ACK."""
    _expect(msg, MsgType.ACK)
    first, last = _ACK_BODY.unpack(msg.body)
    return first, last


def decode_error(msg: Message) -> tuple[str, str]:
    """``(code, message)`` of a decoded ERROR."""
    _expect(msg, MsgType.ERROR)
    err = _parsed(msg, "ERROR")
    if not (isinstance(err, dict) and isinstance(err.get("code"), str) and isinstance(err.get("message"), str)):
        raise MessageError("json_shape", 'ERROR body is not {"code": str, "message": str}')
    return err["code"], err["message"]


_IDENTITY_NAMES = frozenset({
    "IDENTITY_RECORD_DTYPE", "UAS_ID_LEN", "OPERATOR_ID_LEN", "SELF_ID_LEN", "IdentityWithheld", "WITHHELD_BITS",
    "IDENTITY_STATUS_MAX", "empty_identity_records", "check_identity_records", "encode_identities",
    "decode_identities", "uas_id_bytes", "uas_id_text", "uas_id_texts", "BINARY_ID_TYPES",
})


def __getattr__(name: str) -> object:
    """The IDENTITY record's names, now in :mod:`towerd.icd_identity`, still importable
    from here (loaded on first use: that module builds on this one)."""
    if name in _IDENTITY_NAMES:
        from towerd import icd_identity
        return getattr(icd_identity, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
