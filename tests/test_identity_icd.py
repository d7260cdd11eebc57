"""ICD v1.1 IDENTITY codec: the encoder checked byte by byte against the offsets written
in docs/protocol.md (transcribed here independently of towerd.icd's dtype), the decoder
against malformed, out-of-range and random input (it raises only MessageError)."""

from __future__ import annotations

import struct

import numpy as np
import pytest

from towerd import icd
from towerd.errors import FrameError
from towerd.icd import MessageError, MsgType

ICD_IDENTITY = [
    (0, "<Q", "seq"), (8, "<q", "time_us"), (16, "<q", "last_heard_us"), (24, "<I", "track_id"),
    (28, "<B", "status"), (29, "<B", "source"), (30, "<B", "id_type"), (31, "<B", "ua_type"),
    (32, "<i", "operator_lat_e7"), (36, "<i", "operator_lon_e7"), (40, "<f", "operator_alt_m"),
    (44, "<f", "rssi_dbm"), (48, "<B", "withheld"), (49, "20s", "uas_id"), (69, "20s", "operator_id"),
    (89, "23s", "self_id"),
]
STREAM = 0xF1E2D3C4B5A69788


def _identities(n: int, first_seq: int = 1) -> np.ndarray:
    rec = icd.empty_identity_records(n)
    i = np.arange(n)
    rec["seq"] = np.uint64(first_seq) + i.astype(np.uint64)
    rec["time_us"] = 1_700_000_000_123_456 + i
    rec["last_heard_us"] = 1_700_000_000_000_000 + i
    rec["track_id"] = 4_000_000_000 + i
    rec["status"] = 1 + i % 4
    rec["source"] = i % 6
    rec["id_type"] = 1
    rec["ua_type"] = 2
    rec["operator_lat_e7"] = 294_245_678 + i
    rec["operator_lon_e7"] = -985_012_345 - i
    rec["operator_alt_m"] = 171.5
    rec["rssi_dbm"] = -71.25
    rec["withheld"] = 0
    rec["uas_id"] = [f"1581F5FKD229400{k:05d}".encode()[:20] for k in range(n)]
    rec["operator_id"] = b"USA-OP-0042"
    rec["self_id"] = b"survey flight 23 chars!"
    return rec


def _raw(mtype: int, count: int, body: bytes, *, stream_id: int = STREAM, flags: int = 0) -> bytes:
    return struct.pack("<2sBBQHH", b"TW", 1, mtype, stream_id, count, flags) + body


def test_identity_header_and_every_field_at_the_documented_offsets():
    rec = _identities(3, first_seq=7)
    frame = icd.encode_identities(STREAM, rec, flags=icd.FLAG_REPLAY)
    assert struct.unpack_from("<2sBBQHH", frame, 0) == (b"TW", 1, 0x04, STREAM, 3, 1)
    assert len(frame) == 16 + 3 * 112
    for k in range(3):
        base = 16 + 112 * k
        got = {name: struct.unpack_from(fmt, frame, base + off)[0] for off, fmt, name in ICD_IDENTITY}
        assert got["seq"] == 7 + k and got["time_us"] == 1_700_000_000_123_456 + k
        assert got["track_id"] == 4_000_000_000 + k and got["status"] == 1 + k % 4
        assert got["operator_lat_e7"] == 294_245_678 + k and got["operator_lon_e7"] == -985_012_345 - k
        assert got["operator_alt_m"] == 171.5 and got["rssi_dbm"] == -71.25
        assert got["uas_id"] == f"1581F5FKD229400{k:05d}".encode()
        assert got["operator_id"] == b"USA-OP-0042" + b"\0" * 9  # NUL-padded
        assert got["self_id"] == b"survey flight 23 chars!"  # exactly 23 bytes, no terminator
    back = icd.decode_identities(icd.decode(frame))
    assert back.tobytes() == rec.tobytes()
    back["track_id"] = 0  # a writable copy
    assert icd.decode(frame).body[24:28] != b"\0\0\0\0"


def test_unknown_values_on_the_wire():
    rec = icd.empty_identity_records(1)
    rec["seq"], rec["status"] = 1, 3
    frame = icd.encode_identities(STREAM, rec)
    assert struct.unpack_from("<ii", frame, 16 + 32) == (-(2**31), -(2**31))
    assert all(np.isnan(struct.unpack_from("<ff", frame, 16 + 40)))
    assert frame[16 + 49:] == b"\0" * 63


@pytest.mark.parametrize("field,value,reason", [
    ("status", 0, "range"), ("status", 5, "range"), ("id_type", 16, "range"), ("ua_type", 200, "range"),
    ("withheld", 0x08, "range"), ("operator_alt_m", np.inf, "range"), ("rssi_dbm", -np.inf, "range"),
    ("operator_lat_e7", 900_000_001, "range"), ("operator_lon_e7", -1_800_000_001, "range"),
    ("last_heard_us", -1, "range"),
    ("uas_id", b"ABC\x00DEF", "encoding"), ("uas_id", b"\x01ABC", "encoding"),
    ("self_id", "caf\u00e9".encode("latin-1"), "encoding"), ("operator_id", b"OP\x7f", "encoding"),
])
def test_out_of_range_fields_are_refused_by_both_ends(field, value, reason):
    rec = _identities(2)
    rec[field][1] = value
    with pytest.raises(ValueError):
        icd.encode_identities(STREAM, rec)
    frame = _raw(0x04, 2, rec.tobytes())
    msg = icd.decode(frame)  # framing is fine; the field check is decode_identities'
    with pytest.raises(MessageError) as info:
        icd.decode_identities(msg)
    assert info.value.reason == reason


@pytest.mark.parametrize("frame,reason", [
    (_raw(0x04, 1, _identities(1).tobytes()[:111]), "size"),
    (_raw(0x04, 1, _identities(1).tobytes() + b"\0"), "size"),
    (_raw(0x04, 2, _identities(1).tobytes()), "size"),
    (_raw(0x04, 0, b""), "count"),
    (_raw(0x04, 1, _identities(1).tobytes(), stream_id=0), "stream_id"),
    (_raw(0x04, 1, _identities(1).tobytes(), flags=2), "flags"),
    (_raw(0x04, 2, _identities(1, 5).tobytes() + _identities(1, 7).tobytes()), "seq"),
    (_raw(0x04, 1, _identities(1, 0).tobytes()), "seq"),
    (_raw(0x04, 2, _identities(2, 2**64 - 1).tobytes()), "seq"),
])
def test_malformed_identity_frames(frame, reason):
    with pytest.raises(MessageError) as info:
        icd.decode(frame)
    assert info.value.reason == reason


def test_encoder_refusals():
    with pytest.raises(ValueError):
        icd.encode_identities(STREAM, icd.empty_track_records(1))
    with pytest.raises(ValueError):
        icd.encode_identities(STREAM, icd.empty_identity_records(0))
    with pytest.raises(ValueError):
        icd.encode_identities(0, _identities(1))
    rec = _identities(2)
    rec["seq"] = [3, 5]
    with pytest.raises(ValueError):
        icd.encode_identities(STREAM, rec)


def test_the_largest_message_is_bounded():
    """65535 records of 112 bytes: 7.3 MB, the most one IDENTITY message can be; the
    decoder reads the header and size before touching the body."""
    n = icd.MAX_COUNT
    rec = _identities(n)
    frame = icd.encode_identities(STREAM, rec)
    assert len(frame) == 16 + 112 * n
    assert icd.decode_identities(icd.decode(frame)).size == n


def test_decode_helpers_refuse_identity_and_vice_versa():
    msg = icd.decode(icd.encode_identities(STREAM, _identities(1)))
    for fn in (icd.decode_tracks, icd.decode_events, icd.decode_ack):
        with pytest.raises(FrameError):
            fn(msg)
    with pytest.raises(FrameError):
        icd.decode_identities(icd.decode(icd.encode_ack(STREAM, 1, 2)))


def test_random_and_mutated_identity_frames_raise_only_message_error():
    rng = np.random.default_rng(20261203)
    valid = icd.encode_identities(STREAM, _identities(3))
    outcomes = {"ok": 0, "error": 0}
    for _ in range(4000):
        if rng.random() < 0.2:
            frame = bytes(valid[:16]) + rng.bytes(112 * int(rng.integers(0, 4)))
        else:
            buf = bytearray(valid)
            for _ in range(int(rng.integers(1, 5))):
                buf[int(rng.integers(len(buf)))] = int(rng.integers(256))
            frame = bytes(buf[: int(rng.integers(len(buf) - 20, len(buf) + 1))])
        try:
            msg = icd.decode(frame)
            if msg.type == MsgType.IDENTITY:
                icd.decode_identities(msg)
            outcomes["ok"] += 1
        except MessageError:
            outcomes["error"] += 1
    assert outcomes["ok"] > 0 and outcomes["error"] > 1000
