"""One encode per hop, same bytes: the outbox stores each record in wire form and each
event as the JSON object sent, the uplink joins stored rows behind the header, and the
central parses a JSON body once. Each shortcut is checked against the full encoder."""

from __future__ import annotations

import json

import numpy as np
import pytest

from towerd import icd
from towerd.clock import ManualClock
from towerd.icd import FLAG_REPLAY, MsgType, empty_track_records
from towerd.outbox.sqlite import Outbox


def _tracks(n: int) -> np.ndarray:
    rec = empty_track_records(n)
    rec["time_us"] = 1_700_000_000_000_000 + np.arange(n)
    rec["track_id"] = np.arange(n) + 7
    rec["range_m"] = np.linspace(10.0, 900.0, n)
    return rec


def test_stored_rows_make_the_messages_the_encoders_make(tmp_path):
    with Outbox(tmp_path / "o.sqlite", clock=ManualClock()) as box:
        box.add_tracks(_tracks(5))
        fields = {"sensor": "radar-0 é", "nested": {"x": [1, 2.5, None, True]}, "big": 2**62, "tiny": 1e-300}
        box.add_event("sensor.down", "warning", "ünïcode \u2028 and \"quotes\"", time_us=-5, **fields)
        box.add_event("outbox.note", "info", "second")
        box.commit()
        rows = box.pending(limit=100)
        stream = box.stream_id
    tracks = [p for _, kind, p in rows if kind == "T"]
    events = [p for _, kind, p in rows if kind == "E"]
    assert icd.encode_tracks_rows(stream, tracks, FLAG_REPLAY) == icd.encode_tracks(
        stream, np.frombuffer(b"".join(tracks), dtype=icd.TRACK_RECORD_DTYPE), FLAG_REPLAY)
    decoded = [json.loads(p) for p in events]
    assert decoded[0] == {"seq": 6, "time_us": -5, "code": "sensor.down", "severity": "warning",
                          "message": "ünïcode \u2028 and \"quotes\"", **fields}
    for payload, ev in zip(events, decoded):  # the stored object is what json.dumps makes of it
        assert payload == json.dumps(ev, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode()
    assert icd.encode_events_json(stream, events) == icd.encode_events(stream, decoded)


def test_row_shortcuts_refuse_what_the_encoders_refuse():
    rec = _tracks(3)
    rec["seq"] = [1, 2, 4]
    with pytest.raises(ValueError, match="consecutive"):
        icd.encode_tracks_rows(9, [r.tobytes() for r in rec])
    with pytest.raises(ValueError, match="80 bytes"):
        icd.encode_tracks_rows(9, [b"\x01" * 79])
    with pytest.raises(ValueError):
        icd.encode_events_json(9, [])
    with pytest.raises(ValueError, match="severity"):
        icd.check_event({"seq": 1, "time_us": 0, "code": "c", "severity": "loud", "message": ""})


def test_decode_parses_a_json_body_once_and_keeps_it():
    events = [{"seq": 3, "time_us": 1, "code": "c", "severity": "info", "message": "m"},
              {"seq": 4, "time_us": 2, "code": "c", "severity": "error", "message": "n"}]
    msg = icd.decode(icd.encode_events(5, events))
    assert msg.type == MsgType.EVENTS and msg.parsed == events
    assert icd.decode_events(msg) is msg.parsed
    health = icd.decode(icd.encode_health(5, {"a": {"b": [1, 2, 3]}}))
    assert icd.decode_health(health) == {"a": {"b": [1, 2, 3]}}
    with pytest.raises(icd.MessageError, match="more than 3 values"):  # a lower bound is still enforced
        icd.decode_health(health, max_nodes=3)
    assert icd.decode(icd.encode_ack(5, 1, 2)).parsed is None
