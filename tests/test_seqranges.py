"""Seq ranges and the outbox.dropped event: what the tower announces is what the
central reads back (one module for both)."""

from __future__ import annotations

from towerd.icd import EVENT_OUTBOX_DROPPED
from towerd.seqranges import (
    RANGES_PER_EVENT,
    SEQ_MAX,
    dropped_events,
    dropped_ranges,
    merge_ranges,
    subtract_range,
    subtract_ranges,
)


def test_merge_and_subtract():
    assert merge_ranges([(5, 6), (1, 2), (3, 3), (9, 12), (10, 11)]) == [(1, 3), (5, 6), (9, 12)]
    assert subtract_range([(1, 10), (20, 30)], 5, 22) == [(1, 4), (23, 30)]
    assert subtract_range([(1, 3)], 1, 3) == []
    assert subtract_ranges([(1, 10)], [(3, 4), (6, 6)]) == [(1, 2), (5, 5), (7, 10)]


def test_announcements_read_back_as_the_ranges_they_name():
    named = [(10 * i + 1, 10 * i + 3) for i in range(RANGES_PER_EVENT + 5)]
    events = dropped_events(named, "max_records")
    assert len(events) == 2
    back = []
    for message, fields in events:
        ev = {"seq": 1, "time_us": 0, "code": EVENT_OUTBOX_DROPPED, "severity": "error", "message": message, **fields}
        ranges = dropped_ranges(ev)
        assert ranges is not None and fields["count"] == 3 * len(ranges)
        assert (fields["first_seq"], fields["last_seq"]) == (ranges[0][0], ranges[-1][1])
        back += ranges
    assert back == named
    (message, fields), = dropped_events([(7, 9)], "max_bytes")
    assert "ranges" not in fields and fields == {"first_seq": 7, "last_seq": 9, "count": 3, "reason": "max_bytes"}
    assert message == "outbox full (max_bytes): 3 records lost, seq 7..9"


def test_invalid_announcements_name_nothing():
    good = {"code": EVENT_OUTBOX_DROPPED, "first_seq": 1, "last_seq": 4, "count": 4}
    assert dropped_ranges(good) == [(1, 4)]
    for bad in ({**good, "count": 3}, {**good, "last_seq": SEQ_MAX + 1}, {**good, "first_seq": True},
                {**good, "ranges": [[1, 2], [5, 6]]}, {**good, "ranges": []}, {**good, "code": "sensor.down"}):
        assert dropped_ranges(bad) is None, bad
