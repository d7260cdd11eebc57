"""ICD v1 codec: the encoder is checked byte by byte against the offsets written in
the ICD (docs/protocol.md, appendix; not against our own dtype), and the decoder against
malformed input."""

from __future__ import annotations

import json
import math
import struct

import numpy as np
import pytest

from towerd import icd
from towerd.errors import FrameError
from towerd.icd import MessageError, MsgType

# The ICD's tables, transcribed independently of towerd.icd: (offset, struct format, field).
ICD_HEADER = [(0, "<2s", "magic"), (2, "<B", "version"), (3, "<B", "type"), (4, "<Q", "stream_id"),
              (12, "<H", "count"), (14, "<H", "flags")]
ICD_RECORD = [
    (0, "<Q", "seq"), (8, "<q", "time_us"), (16, "<I", "track_id"), (20, "<B", "status"),
    (21, "<B", "category"), (22, "<B", "confidence"), (23, "<B", "threat"), (24, "<B", "sources"),
    (25, "<B", "reserved"), (26, "<H", "hits"), (28, "<i", "lat_e7"), (32, "<i", "lon_e7"),
    (36, "<f", "alt_m"), (40, "<f", "range_m"), (44, "<f", "azimuth_deg"), (48, "<f", "elevation_deg"),
    (52, "<f", "vel_east_mps"), (56, "<f", "vel_north_mps"), (60, "<f", "vel_up_mps"),
    (64, "<f", "pos_sigma_m"), (68, "<f", "rf_freq_mhz"), (72, "<f", "rf_bw_mhz"), (76, "<f", "rf_power_dbm"),
]
STREAM = 0xF1E2D3C4B5A69788  # high bit set: catches signed/unsigned confusion


def _records(n: int, first_seq: int = 1) -> np.ndarray:
    """Records whose every field differs per record and per field (exact in float32)."""
    rec = icd.empty_track_records(n)
    i = np.arange(n)
    rec["seq"] = first_seq + i
    rec["time_us"] = 1_700_000_000_123_456 + 100_000 * i
    rec["track_id"] = 4_000_000_000 + i
    rec["status"] = i % 4
    rec["category"] = (i + 1) % 6
    rec["confidence"] = 90 + i % 11
    rec["threat"] = (i + 2) % 4
    rec["sources"] = icd.SOURCE_RADAR | icd.SOURCE_RF
    rec["hits"] = 65535 - i
    rec["lat_e7"] = 294_245_678 + i
    rec["lon_e7"] = -985_012_345 - i
    for k, name in enumerate(["alt_m", "range_m", "azimuth_deg", "elevation_deg", "vel_east_mps",
                              "vel_north_mps", "vel_up_mps", "pos_sigma_m", "rf_freq_mhz", "rf_bw_mhz",
                              "rf_power_dbm"]):
        rec[name] = (k + 1) * 10.25 + i * 0.5 - (100 if name == "rf_power_dbm" else 0)
    return rec


def _header(frame: bytes) -> dict:
    return {name: struct.unpack_from(fmt, frame, off)[0] for off, fmt, name in ICD_HEADER}


def _raw(mtype: int, count: int = 0, body: bytes = b"", *, stream_id: int = STREAM, flags: int = 0,
         magic: bytes = b"TW", version: int = 1) -> bytes:
    return struct.pack("<2sBBQHH", magic, version, mtype, stream_id, count, flags) + body


# ------------------------------------------------------------------------------ encoding


def test_tracks_header_and_every_record_field_at_icd_offsets():
    rec = _records(3, first_seq=41)
    frame = icd.encode_tracks(STREAM, rec, flags=icd.FLAG_REPLAY)
    assert len(frame) == 16 + 3 * 80
    assert _header(frame) == {"magic": b"TW", "version": 1, "type": 0x01, "stream_id": STREAM,
                              "count": 3, "flags": 0x0001}
    for r in range(3):
        base = 16 + 80 * r
        for off, fmt, name in ICD_RECORD:
            got = struct.unpack_from(fmt, frame, base + off)[0]
            want = rec[name][r].item()
            if fmt == "<f":
                assert got == pytest.approx(want, abs=0), (r, name)
            else:
                assert got == want, (r, name)
    assert struct.unpack_from("<Q", frame, 16 + 80 * 2)[0] == 43


def test_unknown_values_are_the_icd_ones_on_the_wire():
    rec = icd.empty_track_records(1)
    rec["seq"] = 7
    frame = icd.encode_tracks(STREAM, rec)
    assert struct.unpack_from("<i", frame, 16 + 28)[0] == -(2**31)
    assert struct.unpack_from("<i", frame, 16 + 32)[0] == -(2**31)
    for off, fmt, name in ICD_RECORD:
        if fmt == "<f":
            assert math.isnan(struct.unpack_from("<f", frame, 16 + off)[0]), name
    assert struct.unpack_from("<B", frame, 16 + 25)[0] == 0  # reserved


def test_events_header_and_json_body():
    events = [
        {"seq": 10, "time_us": 1_700_000_000_000_001, "code": "sensor.down", "severity": "error",
         "message": "radar-1 stopped answering", "sensor": "radar-1"},
        {"seq": 11, "time_us": 1_700_000_000_000_002, "code": "sensor.up", "severity": "info",
         "message": "radar-1 back — ünïcode"},
    ]
    frame = icd.encode_events(STREAM, events)
    assert _header(frame) == {"magic": b"TW", "version": 1, "type": 0x02, "stream_id": STREAM,
                              "count": 2, "flags": 0}
    assert json.loads(frame[16:].decode("utf-8")) == events


def test_ack_health_ack_health_error_layouts():
    ack = icd.encode_ack(STREAM, 5, 2**63 + 3)
    assert len(ack) == 32
    assert _header(ack) == {"magic": b"TW", "version": 1, "type": 0x81, "stream_id": STREAM, "count": 0, "flags": 0}
    assert struct.unpack_from("<Q", ack, 16)[0] == 5
    assert struct.unpack_from("<Q", ack, 24)[0] == 2**63 + 3

    hack = icd.encode_health_ack(STREAM)
    assert len(hack) == 16 and _header(hack)["type"] == 0x82 and _header(hack)["stream_id"] == STREAM

    health = {"tower_id": "tx-lrd-014", "uptime_s": 12.5, "sensors": {"radar-1": {"state": "ok", "rate_hz": 20}}}
    h = icd.encode_health(STREAM, health)
    assert _header(h)["type"] == 0x03 and _header(h)["count"] == 0
    assert json.loads(h[16:]) == health

    err = icd.encode_error(0, "central.store_failed", "disk full")
    assert _header(err)["type"] == 0x8F
    assert json.loads(err[16:]) == {"code": "central.store_failed", "message": "disk full"}


# ------------------------------------------------------------------------------ round trips


def test_tracks_round_trip_is_bit_exact_and_copied():
    rec = _records(5, first_seq=2**40)
    rec["alt_m"][1] = np.nan
    frame = icd.encode_tracks(STREAM, rec)
    msg = icd.decode(frame)
    assert (msg.type, msg.stream_id, msg.count, msg.flags) == (MsgType.TRACKS, STREAM, 5, 0)
    out = icd.decode_tracks(msg)
    assert out.dtype == icd.TRACK_RECORD_DTYPE
    assert out.tobytes() == rec.tobytes()
    assert out.flags.writeable and not np.shares_memory(out, np.frombuffer(msg.body, dtype=np.uint8))
    np.testing.assert_allclose(out["range_m"], rec["range_m"])


def test_events_ack_health_error_round_trip():
    events = [{"seq": s, "time_us": s * 1000, "code": "config.reloaded", "severity": "info", "message": "ok"}
              for s in (3, 4, 5)]
    msg = icd.decode(icd.encode_events(STREAM, events, flags=icd.FLAG_REPLAY))
    assert msg.flags == icd.FLAG_REPLAY and msg.count == 3
    assert icd.decode_events(msg) == events
    assert icd.decode_ack(icd.decode(icd.encode_ack(STREAM, 9, 12))) == (9, 12)
    assert icd.decode_health(icd.decode(icd.encode_health(1, {"a": [1, 2]}))) == {"a": [1, 2]}
    assert icd.decode_error(icd.decode(icd.encode_error(1, "x.y", "boom"))) == ("x.y", "boom")
    assert icd.decode(icd.encode_health_ack(STREAM)).type == MsgType.HEALTH_ACK


# ------------------------------------------------------------------------------ encoder refusals


@pytest.mark.parametrize("seqs", [[1, 3], [2, 1], [0, 1], [5, 5]])
def test_encode_tracks_refuses_non_consecutive_seq(seqs):
    rec = icd.empty_track_records(len(seqs))
    rec["seq"] = seqs
    with pytest.raises(ValueError):
        icd.encode_tracks(STREAM, rec)


def test_encode_tracks_refusals():
    rec = _records(2)
    with pytest.raises(ValueError):
        icd.encode_tracks(STREAM, icd.empty_track_records(0))
    with pytest.raises(ValueError):
        icd.encode_tracks(STREAM, np.ones(2, dtype=[("seq", "<u8")]))
    with pytest.raises(ValueError):
        icd.encode_tracks(STREAM, rec.reshape(1, 2))
    with pytest.raises(ValueError):
        icd.encode_tracks(STREAM, rec, flags=0x0002)
    with pytest.raises(ValueError):
        icd.encode_tracks(0, rec)
    with pytest.raises(ValueError):
        icd.encode_tracks(2**64, rec)
    big = icd.empty_track_records(65536)
    big["seq"] = np.arange(1, 65537)
    with pytest.raises(ValueError, match="65535"):
        icd.encode_tracks(STREAM, big)
    assert icd.decode(icd.encode_tracks(STREAM, big[:65535])).count == 65535


def test_encode_events_refusals():
    ok = {"seq": 1, "time_us": 1, "code": "a.b", "severity": "info", "message": "m"}
    for bad in ({**ok, "severity": "warn"}, {k: v for k, v in ok.items() if k != "message"},
                {**ok, "seq": True}, {**ok, "time_us": 1.5}, {**ok, "x": float("nan")}):
        with pytest.raises(ValueError):
            icd.encode_events(STREAM, [bad])
    with pytest.raises(ValueError):
        icd.encode_events(STREAM, [ok, {**ok, "seq": 3}])
    with pytest.raises(ValueError):
        icd.encode_events(STREAM, [])
    with pytest.raises(ValueError):
        icd.encode_ack(STREAM, 5, 4)
    with pytest.raises(ValueError):
        icd.encode_health(STREAM, {"rate_hz": float("inf")})


# ------------------------------------------------------------------------------ malformed input


def _tracks_body(seqs: list[int]) -> bytes:
    rec = icd.empty_track_records(len(seqs))
    rec["seq"] = seqs
    return rec.tobytes()


MALFORMED = [
    ("empty", b"", "short"),
    ("15 bytes", _raw(0x81)[:15], "short"),
    ("bad magic", _raw(0x82, magic=b"TX"), "magic"),
    ("version 0", _raw(0x82, version=0), "version"),
    ("version 2", _raw(0x82, version=2), "version"),
    ("type 0x05", _raw(0x05), "type"),
    ("type 0x00", _raw(0x00), "type"),
    ("undefined flag", _raw(0x01, 1, _tracks_body([1]), flags=0x0002), "flags"),
    ("flag bit 15", _raw(0x82, flags=0x8000), "flags"),
    ("tracks 79 bytes", _raw(0x01, 1, _tracks_body([1])[:79]), "size"),
    ("tracks 81 bytes", _raw(0x01, 1, _tracks_body([1]) + b"\0"), "size"),
    ("tracks count 2 body 1", _raw(0x01, 2, _tracks_body([1])), "size"),
    ("tracks count 0", _raw(0x01, 0, b""), "count"),
    ("tracks stream 0", _raw(0x01, 1, _tracks_body([1]), stream_id=0), "stream_id"),
    ("tracks seq gap", _raw(0x01, 2, _tracks_body([1, 3])), "seq"),
    ("tracks seq descending", _raw(0x01, 2, _tracks_body([2, 1])), "seq"),
    ("tracks seq 0", _raw(0x01, 1, _tracks_body([0])), "seq"),
    ("ack 15 bytes", _raw(0x81, 0, struct.pack("<QQ", 1, 2)[:15]), "size"),
    ("ack 17 bytes", _raw(0x81, 0, struct.pack("<QQ", 1, 2) + b"\0"), "size"),
    ("ack count 1", _raw(0x81, 1, struct.pack("<QQ", 1, 2)), "count"),
    ("ack reversed", _raw(0x81, 0, struct.pack("<QQ", 3, 2)), "ack_range"),
    ("ack first 0", _raw(0x81, 0, struct.pack("<QQ", 0, 2)), "ack_range"),
    ("ack stream 0", _raw(0x81, 0, struct.pack("<QQ", 1, 2), stream_id=0), "stream_id"),
    ("health_ack body", _raw(0x82, 0, b"x"), "size"),
    ("events invalid json", _raw(0x02, 1, b"[{"), "json"),
    ("events not utf-8", _raw(0x02, 1, b'[{"m":"\xff"}]'), "encoding"),
    ("events not array", _raw(0x02, 1, b'{"seq":1}'), "json_shape"),
    ("events count 2 for 1", _raw(0x02, 2, b'[{"seq":1}]'), "count"),
    ("events count 1 for 2", _raw(0x02, 1, b'[{"seq":1},{"seq":2}]'), "count"),
    ("events non-object", _raw(0x02, 1, b"[1]"), "json_shape"),
    ("events NaN", _raw(0x02, 1, b'[{"x":NaN}]'), "json"),
    ("health array", _raw(0x03, 0, b"[]"), "json_shape"),
    ("health count 1", _raw(0x03, 1, b"{}"), "count"),
    ("error no code", _raw(0x8F, 0, b'{"message":"x"}'), "json_shape"),
]


@pytest.mark.parametrize("frame,reason", [m[1:] for m in MALFORMED], ids=[m[0] for m in MALFORMED])
def test_decode_rejects_malformed_with_reason(frame, reason):
    with pytest.raises(MessageError) as info:
        icd.decode(frame)
    assert info.value.reason == reason
    assert isinstance(info.value, FrameError) and str(info.value)


def test_replay_flag_on_a_message_without_records_is_accepted():
    msg = icd.decode(_raw(0x81, 0, struct.pack("<QQ", 1, 2), flags=icd.FLAG_REPLAY))
    assert icd.decode_ack(msg) == (1, 2)


def test_decode_events_checks_fields_and_seq():
    missing = _raw(0x02, 1, b'[{"seq":1,"time_us":1,"code":"a","severity":"info"}]')
    with pytest.raises(MessageError) as info:
        icd.decode_events(icd.decode(missing))
    assert info.value.reason == "event_fields"
    ev = {"time_us": 1, "code": "a", "severity": "info", "message": "m"}
    gap = json.dumps([{**ev, "seq": 1}, {**ev, "seq": 3}]).encode()
    with pytest.raises(MessageError) as info:
        icd.decode_events(icd.decode(_raw(0x02, 2, gap)))
    assert info.value.reason == "seq"
    # Lenient receiver: a severity outside the four is stored, not refused.
    odd = json.dumps([{**ev, "seq": 1, "severity": "notice"}]).encode()
    assert icd.decode_events(icd.decode(_raw(0x02, 1, odd)))[0]["severity"] == "notice"


def test_decode_helpers_refuse_the_wrong_type():
    msg = icd.decode(icd.encode_health_ack(STREAM))
    for fn in (icd.decode_tracks, icd.decode_events, icd.decode_ack, icd.decode_health, icd.decode_error):
        with pytest.raises(FrameError):
            fn(msg)


def test_random_and_mutated_frames_raise_only_frame_error():
    rng = np.random.default_rng(20240611)
    valid = [icd.encode_tracks(STREAM, _records(2)), icd.encode_ack(STREAM, 1, 2),
             icd.encode_events(STREAM, [{"seq": 1, "time_us": 1, "code": "a", "severity": "info", "message": "m"}]),
             icd.encode_health(STREAM, {"a": 1}), icd.encode_health_ack(STREAM)]
    outcomes = {"ok": 0, "error": 0}
    for _ in range(3000):
        if rng.random() < 0.3:
            frame = rng.bytes(int(rng.integers(0, 300)))
        else:
            buf = bytearray(valid[int(rng.integers(len(valid)))])
            for _ in range(int(rng.integers(1, 4))):
                buf[int(rng.integers(len(buf)))] = int(rng.integers(256))
            frame = bytes(buf[: int(rng.integers(len(buf) // 2, len(buf) + 1))])
        try:
            msg = icd.decode(frame)
            if msg.type == MsgType.TRACKS:
                icd.decode_tracks(msg)
            elif msg.type == MsgType.EVENTS:
                icd.decode_events(msg)
            outcomes["ok"] += 1
        except FrameError:
            outcomes["error"] += 1
    assert outcomes["ok"] > 0 and outcomes["error"] > 0


_EV = b'{"seq":1,"time_us":1,"code":"x","severity":"info","message":"m"'


@pytest.mark.parametrize("body,reason", [
    (b"[" * 100_000 + b"]" * 100_000, "json_depth"),
    (b"[" + _EV + b',"x":' + b"[" * 40 + b"]" * 40 + b"}]", "json_depth"),
    (b"[" + _EV + b',"x":"\\ud800"}]', "encoding"),
    (b"[" + _EV + b',"\\udfff":1}]', "encoding"),
    (b"[" + _EV + b',"x":"a\\u0000b"}]', "encoding"),
    (b"[" + _EV + b',"x":1e999}]', "json"),
    (b"[" + _EV + b',"x":1' + b"0" * 25 + b"}]", "json"),
    (b'[{"seq":1,"time_us":9223372036854775808,"code":"x","severity":"info","message":"m"}]', "range"),
    (b"[" + _EV + b',"x":[' + b"0," * 200_001 + b"0]}]", "json_size"),
])
def test_received_json_is_bounded_and_storable(body, reason):
    """Deep, huge, unstorable or out-of-range JSON is a MessageError with its reason, never
    RecursionError, OverflowError or a string that SQLite/PostgreSQL cannot store."""
    frame = icd._header(MsgType.EVENTS, STREAM, 1, 0) + body
    with pytest.raises(icd.MessageError) as err:
        icd.decode_events(icd.decode(frame))
    assert err.value.reason == reason


def test_tracks_seq_wrapping_past_2_64_and_infinite_fields_are_refused():
    rec = _records(2)
    frame = bytearray(icd.encode_tracks(STREAM, rec))
    np.frombuffer(frame, dtype=icd.TRACK_RECORD_DTYPE, offset=icd.HEADER_SIZE)["seq"] = [2**64 - 1, 0]
    with pytest.raises(icd.MessageError) as err:
        icd.decode(bytes(frame))
    assert err.value.reason == "seq"
    rec["alt_m"][1] = np.inf
    with pytest.raises(icd.MessageError) as err:
        icd.decode_tracks(icd.decode(icd.encode_tracks(STREAM, rec)))
    assert err.value.reason == "range"


def test_health_value_bound_is_the_receivers():
    msg = icd.decode(icd.encode_health(STREAM, {str(i): i for i in range(100)}))
    assert len(icd.decode_health(msg)) == 100
    with pytest.raises(icd.MessageError) as err:
        icd.decode_health(msg, max_nodes=50)
    assert err.value.reason == "json_size"
