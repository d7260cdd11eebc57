"""Durable outbox on real SQLite files: persistence, contiguous seq, commit visibility,
acknowledgement and recovery from an unusable file."""

from __future__ import annotations

import json
import logging
import sqlite3
import struct

import numpy as np
import pytest

from towerd.clock import ManualClock
from towerd.errors import OutboxError
from towerd.icd import TRACK_RECORD_DTYPE, empty_track_records
from towerd.outbox.sqlite import Outbox


def _tracks(n: int, t0: int = 1_700_000_000_000_000) -> np.ndarray:
    rec = empty_track_records(n)
    rec["time_us"] = t0 + np.arange(n) * 1000
    rec["track_id"] = 100 + np.arange(n)
    rec["range_m"] = 250.0 + np.arange(n)
    return rec


@pytest.fixture
def clock():
    return ManualClock()


@pytest.fixture
def db(tmp_path):
    return tmp_path / "outbox.sqlite"


def _other_connection(path) -> sqlite3.Connection:
    """A second connection, as another process would see the file: committed data only."""
    return sqlite3.connect(str(path))


def test_new_store_is_wal_with_random_nonzero_stream(db, tmp_path, clock):
    a = Outbox(db, clock=clock)
    b = Outbox(tmp_path / "other.sqlite", clock=clock)
    try:
        assert a.stream_id != 0 and 0 < a.stream_id < 2**64
        assert a.stream_id != b.stream_id
        assert a.next_seq == 1 and a.pending_count() == 0 and a.oldest_seq() is None
        with _other_connection(db) as conn:
            assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
            assert int(conn.execute("SELECT stream_id FROM meta").fetchone()[0], 16) == a.stream_id
    finally:
        a.close()
        b.close()


def test_stream_and_next_seq_survive_reopen(db, clock):
    box = Outbox(db, clock=clock)
    stream = box.stream_id
    assert box.add_tracks(_tracks(5)) == (1, 5)
    box.add_event("daemon.started", "info", "towerd started")
    box.commit()
    box.close()
    box.close()  # idempotent

    box = Outbox(db, clock=clock)
    try:
        assert box.stream_id == stream
        assert box.next_seq == 7
        assert [r[0] for r in box.pending()] == [1, 2, 3, 4, 5, 6]
        assert box.add_tracks(_tracks(1)) == (7, 7)
    finally:
        box.close()


def test_seq_contiguous_across_tracks_and_events(db, clock):
    box = Outbox(db, clock=clock)
    try:
        original = _tracks(3)
        assert box.add_tracks(original) == (1, 3)
        assert not original["seq"].any()  # the caller's array is not modified
        assert box.add_event("sensor.down", "warning", "radar-1 silent", sensor="radar-1") == 4
        assert box.add_tracks(_tracks(2)) == (5, 6)
        assert box.add_tracks(empty_track_records(0)) == (7, 6)  # empty range, nothing stored
        box.commit()
        rows = box.pending()
        assert [(s, k) for s, k, _ in rows] == [(1, "T"), (2, "T"), (3, "T"), (4, "E"), (5, "T"), (6, "T")]
        for seq, kind, payload in rows:
            if kind == "T":
                assert len(payload) == 80
                assert struct.unpack_from("<Q", payload, 0)[0] == seq  # seq filled in at ICD offset 0
        rec = np.frombuffer(rows[1][2], dtype=TRACK_RECORD_DTYPE)
        np.testing.assert_allclose(rec["range_m"], [251.0])
        event = json.loads(rows[3][2])
        assert event == {"seq": 4, "time_us": clock.utc_us(), "code": "sensor.down", "severity": "warning",
                         "message": "radar-1 silent", "sensor": "radar-1"}
    finally:
        box.close()


def test_uncommitted_adds_are_invisible_until_commit(db, clock):
    box = Outbox(db, clock=clock)
    try:
        box.add_tracks(_tracks(2))
        box.commit()
        box.add_tracks(_tracks(3))
        box.add_event("config.reloaded", "info", "ok")
        assert [r[0] for r in box.pending()] == [1, 2]
        assert box.pending_count() == 6  # held, committed or not
        with _other_connection(db) as conn:
            assert conn.execute("SELECT count(*) FROM records").fetchone()[0] == 2
            assert conn.execute("SELECT next_seq FROM meta").fetchone()[0] == 3
        box.commit()
        assert [r[0] for r in box.pending()] == [1, 2, 3, 4, 5, 6]
        with _other_connection(db) as conn:
            assert conn.execute("SELECT count(*) FROM records").fetchone()[0] == 6
            assert conn.execute("SELECT next_seq FROM meta").fetchone()[0] == 7
    finally:
        box.close()


def test_ack_deletes_only_covered_committed_rows(db, clock):
    box = Outbox(db, clock=clock)
    try:
        box.add_tracks(_tracks(10))
        box.commit()
        box.add_tracks(_tracks(2))  # 11, 12: not committed, cannot have been sent
        assert box.ack(3, 5) == 3
        assert box.ack(3, 5) == 0
        assert box.ack(11, 12) == 0
        assert box.ack(9, 100) == 2
        assert box.ack(1, 0) == 0
        box.commit()
        assert [r[0] for r in box.pending()] == [1, 2, 6, 7, 8, 11, 12]
        assert box.pending_count() == 7 and box.oldest_seq() == 1
        assert not box.uncommitted
        assert box.ack(1, 2) == 2
        assert box.oldest_seq() == 6
        assert box.uncommitted  # an ack alone is durable only at the next commit
        box.commit()
        assert not box.uncommitted
    finally:
        box.close()
    box = Outbox(db, clock=clock)
    try:
        assert [r[0] for r in box.pending()] == [6, 7, 8, 11, 12]
        assert box.pending_count() == 5
    finally:
        box.close()


def test_pending_pages_oldest_first(db, clock):
    box = Outbox(db, clock=clock)
    try:
        box.add_tracks(_tracks(10))
        box.commit()
        assert [r[0] for r in box.pending(limit=4)] == [1, 2, 3, 4]
        assert [r[0] for r in box.pending(after_seq=4, limit=4)] == [5, 6, 7, 8]
        assert [r[0] for r in box.pending(after_seq=8, limit=4)] == [9, 10]
        assert box.pending(after_seq=10) == []
    finally:
        box.close()


def test_close_commits_open_transaction(db, clock):
    box = Outbox(db, clock=clock)
    box.add_tracks(_tracks(4))
    box.close()
    box = Outbox(db, clock=clock)
    try:
        assert box.pending_count() == 4 and box.next_seq == 5
    finally:
        box.close()


def _moved_aside(db):
    return sorted(p for p in db.parent.iterdir() if p.name.startswith(db.name + ".corrupt-"))


def test_garbage_file_is_moved_aside_and_a_new_stream_begins(db, clock, caplog):
    garbage = b"this is not an sqlite database\n" * 200
    db.write_bytes(garbage)
    with caplog.at_level(logging.ERROR, logger="towerd.outbox.sqlite"):
        box = Outbox(db, clock=clock)
    try:
        assert box.next_seq == 1 and box.pending_count() == 0 and box.stream_id != 0
        aside = _moved_aside(db)
        assert len(aside) == 1 and aside[0].read_bytes() == garbage
        assert aside[0].name == db.name + ".corrupt-20231114T221320Z"  # ManualClock's UTC epoch
        assert any("moved aside" in r.getMessage() for r in caplog.records if r.levelno == logging.ERROR)
        assert box.add_tracks(_tracks(1)) == (1, 1)
    finally:
        box.close()


def test_file_failing_quick_check_is_moved_aside(db, clock, caplog):
    box = Outbox(db, clock=clock)
    old_stream = box.stream_id
    box.add_tracks(_tracks(3000))
    box.close()
    with _other_connection(db) as conn:
        page = conn.execute("PRAGMA page_size").fetchone()[0]
    with open(db, "r+b") as fh:  # zero the cell pointers of one b-tree leaf page
        fh.seek(page * 10 + 8)
        fh.write(b"\0\0\0\0")
    with caplog.at_level(logging.ERROR, logger="towerd.outbox.sqlite"):
        box = Outbox(db, clock=clock)
    try:
        assert box.stream_id != old_stream and box.next_seq == 1
        assert len(_moved_aside(db)) == 1
        assert any("quick_check" in r.getMessage() for r in caplog.records)
    finally:
        box.close()


def test_foreign_database_is_moved_aside(db, clock):
    with sqlite3.connect(str(db)) as conn:
        conn.execute("CREATE TABLE something (x)")
    box = Outbox(db, clock=clock)
    try:
        assert box.next_seq == 1
        assert len(_moved_aside(db)) == 1
    finally:
        box.close()


def test_newer_schema_is_refused_not_moved(db, clock):
    Outbox(db, clock=clock).close()
    with sqlite3.connect(str(db)) as conn:
        conn.execute("UPDATE meta SET schema_version = 99")
    with pytest.raises(OutboxError, match="schema version 99"):
        Outbox(db, clock=clock)
    assert _moved_aside(db) == []


def test_unopenable_path_raises_outbox_error(tmp_path, clock):
    with pytest.raises(OutboxError):
        Outbox(tmp_path / "missing-dir" / "outbox.sqlite", clock=clock)


def test_argument_checks_and_closed_store(db, clock):
    with pytest.raises(ValueError):
        Outbox(db, clock=clock, synchronous="off")
    box = Outbox(db, clock=clock, synchronous="normal")
    with pytest.raises(ValueError):
        box.add_tracks(np.zeros(2, dtype=[("seq", "<u8")]))
    with pytest.raises(ValueError):
        box.add_event("a.b", "fatal", "bad severity")
    with pytest.raises(ValueError):
        box.add_event("a.b", "info", "m", seq=5)
    with pytest.raises(ValueError):
        box.add_event("a.b", "info", "m", value=float("nan"))
    assert box.next_seq == 1  # refused adds consumed no seq
    assert box.add_event("a.b", "info", "m", time_us=42) == 1
    box.close()
    with pytest.raises(OutboxError):
        box.add_tracks(_tracks(1))
    with pytest.raises(OutboxError):
        box.pending()
