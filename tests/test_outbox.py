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
from towerd.errors import ConfigError, OutboxError
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


# ------------------------------------------------------------------------------ size cap


def _events(box: Outbox, code: str | None = None) -> list[dict]:
    evs = [json.loads(p) for _, kind, p in box.pending(limit=10**6) if kind == "E"]
    return [e for e in evs if code is None or e["code"] == code]


def test_cap_drops_the_oldest_and_announces_exactly_what(db, clock, caplog):
    box = Outbox(db, clock=clock, max_records=50)
    try:
        assert box.add_tracks(_tracks(40)) == (1, 40)
        box.commit()
        with caplog.at_level(logging.ERROR, logger="towerd.outbox.sqlite"):
            assert box.add_tracks(_tracks(20)) == (41, 60)   # 60 > 50: drop 11 (room for the event)
        box.commit()
        held = [s for s, _, _ in box.pending(limit=1000)]
        assert held == list(range(12, 62)) and box.pending_count() == 50   # 61 is the announcement
        (ev,) = _events(box, "outbox.dropped")
        assert ev["seq"] == 61 and (ev["first_seq"], ev["last_seq"], ev["count"]) == (1, 11, 11)
        assert ev["severity"] == "error" and ev["reason"] == "max_records" and "ranges" not in ev
        assert box.dropped_total == 11
        assert box.health() == {"pending": 50, "oldest_seq": 12, "next_seq": 62, "dropped_total": 11,
                                "write_error": None, "write_failures": 0}
        assert "dropped 11 oldest records, seq 1..11" in caplog.text
    finally:
        box.close()
    box = Outbox(db, clock=clock, max_records=50)   # accounting and dropped_total survive a restart
    try:
        assert box.pending_count() == 50 and box.dropped_total == 11
        assert box.add_event("sensor.up", "info", "x") == 62
        box.commit()
        assert box.pending_count() == 50 and box.oldest_seq() == 14   # 12, 13 dropped for 62 and its event
        ev = _events(box, "outbox.dropped")[-1]
        assert (ev["first_seq"], ev["last_seq"], ev["count"]) == (12, 13, 2) and box.dropped_total == 13
    finally:
        box.close()


def test_cap_shrunk_between_runs_is_applied_at_open(db, clock):
    box = Outbox(db, clock=clock)
    box.add_tracks(_tracks(100))
    box.close()
    box = Outbox(db, clock=clock, max_records=30)
    try:
        assert box.pending_count() == 30
        (ev,) = _events(box, "outbox.dropped")
        assert (ev["first_seq"], ev["last_seq"], ev["count"]) == (1, 71, 71)
    finally:
        box.close()
    with _other_connection(db) as conn:   # committed at open, not left in a transaction
        assert conn.execute("SELECT count(*) FROM records").fetchone()[0] == 30


def test_cap_on_bytes(db, clock):
    box = Outbox(db, clock=clock, max_bytes=20_000)
    try:
        box.add_tracks(_tracks(200))   # 16,000 bytes: fits
        box.commit()
        assert box.dropped_total == 0
        box.add_tracks(_tracks(100))   # 24,000 > 20,000 - 4,096 reserved for the announcement
        box.commit()
        stats = box.stats()
        assert stats["bytes"] <= 20_000
        (ev,) = _events(box, "outbox.dropped")
        assert ev["reason"] == "max_bytes" and ev["first_seq"] == 1 and ev["count"] == ev["last_seq"]
        assert stats["bytes"] == (300 - ev["count"]) * 80 + len(json.dumps(ev, separators=(",", ":")))
    finally:
        box.close()


def test_drop_of_non_contiguous_rows_lists_the_exact_ranges(db, clock):
    box = Outbox(db, clock=clock, max_records=10)
    try:
        box.add_tracks(_tracks(9))
        box.commit()
        box.ack(3, 4)           # delivered: must not be named as lost
        box.ack(6, 6)
        box.commit()
        box.add_tracks(_tracks(6))   # 10..15: 12 held -> drop 3 (room for the event): 1, 2, 5
        box.commit()
        (ev,) = _events(box, "outbox.dropped")
        assert (ev["first_seq"], ev["last_seq"], ev["count"]) == (1, 5, 3)
        assert ev["ranges"] == [[1, 2], [5, 5]]
        assert [s for s, _, _ in box.pending()] == [7, 8, 9, 10, 11, 12, 13, 14, 15, 16]
    finally:
        box.close()


def test_an_announcement_that_is_itself_dropped_is_carried_forward(db, clock):
    """A long outage: drops keep coming, and older outbox.dropped events age into the
    dropped front. Whatever is not held must still be named by an event that is."""
    box = Outbox(db, clock=clock, max_records=12)
    try:
        for _ in range(40):
            box.add_tracks(_tracks(3))
            box.commit()
        held = {s for s, _, _ in box.pending()}
        named = {s for ev in _events(box, "outbox.dropped")
                 for a, b in ev.get("ranges", [[ev["first_seq"], ev["last_seq"]]]) for s in range(a, b + 1)}
        assert named | held == set(range(1, box.next_seq)) and not named & held
        assert box.dropped_total == len(named) and box.pending_count() <= 12
        for ev in _events(box, "outbox.dropped"):
            ranges = ev.get("ranges", [[ev["first_seq"], ev["last_seq"]]])
            assert ev["count"] == sum(b - a + 1 for a, b in ranges)
    finally:
        box.close()


def test_rows_in_flight_are_never_dropped(db, clock):
    box = Outbox(db, clock=clock, max_records=10, centrals=["hq", "partner"])
    try:
        box.add_tracks(_tracks(8))
        box.commit()
        box.protect("hq", 1, 3)        # built into a message for hq, not yet acknowledged
        box.protect("partner", 2, 4)
        box.add_tracks(_tracks(4))     # 12 > 10: drop 3 unprotected rows (room for the event)
        box.commit()
        (ev,) = _events(box, "outbox.dropped")
        assert (ev["first_seq"], ev["last_seq"], ev["count"]) == (5, 7, 3)
        assert box.protected_count() == 6
        box.ack(1, 3, "hq")            # released only when the acknowledgement commits
        assert box.protected_count() == 6
        box.commit()
        assert box.protected_count() == 3
        with pytest.raises(ValueError):
            box.protect("nobody", 1, 1)
    finally:
        box.close()


def test_a_full_store_drops_one_percent_at_a_time(db, clock):
    box = Outbox(db, clock=clock, max_records=1000)
    try:
        box.add_tracks(_tracks(1000))
        box.add_tracks(_tracks(1))   # 1001 > 1000: drop down to 990 with the announcement
        assert box.pending_count() == 990 and box.dropped_total == 12   # 1001 - 989, and the event
        for _ in range(9):
            box.add_tracks(_tracks(1))   # room again: no more drops until full
        assert box.dropped_total == 12 and box.pending_count() == 999
    finally:
        box.close()


def test_disk_footprint_at_the_record_cap(db, clock):
    """The cap is real on disk: a store full of track records stays within 130 bytes
    per record (measured ~107) plus the WAL bound (journal_size_limit 8 MiB)."""
    cap = 20_000
    box = Outbox(db, clock=clock, max_records=cap)
    try:
        for _ in range(30):
            box.add_tracks(_tracks(1000))
            box.commit()
        assert 0.98 * cap <= box.pending_count() <= cap and box.dropped_total > 30_000 - cap
        size = db.stat().st_size
        wal = db.with_name(db.name + "-wal")
        wal_size = wal.stat().st_size if wal.exists() else 0
    finally:
        box.close()
    assert size <= cap * 130, size / cap
    assert wal_size <= 8 * 1024 * 1024 + 64 * 1024


# ------------------------------------------------------------------------------ per-central acknowledgement


def test_a_record_is_deleted_only_when_every_central_is_done(db, clock):
    box = Outbox(db, clock=clock, centrals=["hq", "partner"])
    try:
        assert box.centrals == ("hq", "partner")
        box.add_tracks(_tracks(6))
        box.commit()
        assert box.ack(1, 4, "hq") == 4
        assert box.ack(1, 4, "hq") == 0
        assert box.pending_count() == 6
        assert [s for s, _, _ in box.pending(central="hq")] == [5, 6]
        assert [s for s, _, _ in box.pending(central="partner")] == [1, 2, 3, 4, 5, 6]
        assert box.pending_count("partner") == 6 and box.pending_count("hq") == 2
        assert box.ack(2, 5, "partner") == 4   # 2..4 done by both: deleted; 5 still owed to hq
        box.commit()
        assert [s for s, _, _ in box.pending()] == [1, 5, 6]
        with pytest.raises(ValueError):
            box.ack(1, 1)
        with pytest.raises(ValueError):
            box.pending(central="nobody")
    finally:
        box.close()
    box = Outbox(db, clock=clock, centrals=["hq", "partner"])   # state survives a restart
    try:
        assert [s for s, _, _ in box.pending(central="hq")] == [5, 6]
        assert [s for s, _, _ in box.pending(central="partner")] == [1, 6]
    finally:
        box.close()
    box = Outbox(db, clock=clock, centrals=["hq"])   # partner removed: its state goes, 1 is done
    try:
        assert [s for s, _, _ in box.pending()] == [5, 6]
    finally:
        box.close()
    box = Outbox(db, clock=clock, centrals=["hq", "new"])   # a new central gets what is held
    try:
        assert [s for s, _, _ in box.pending(central="new")] == [5, 6]
        box.set_centrals(["new"])
        assert [s for s, _, _ in box.pending(central="new")] == [5, 6]
        generation = box.generation
        box.set_centrals(None)   # back to one unnamed consumer
        assert box.generation == generation + 1
        assert [s for s, _, _ in box.pending(central="anything")] == [5, 6]
    finally:
        box.close()


def test_attach_refuses_senders_the_outbox_keeps_no_state_for(db, tmp_path, clock):
    single = Outbox(db, clock=clock)
    named = Outbox(tmp_path / "named.sqlite", clock=clock, centrals=["hq", "partner"])
    try:
        single.attach("hq")
        single.attach("hq")
        with pytest.raises(ConfigError, match="open it with centrals="):
            single.attach("partner")
        single.detach("hq")
        single.attach("partner")   # after the first sender closed (a rename on reload)
        named.attach("hq")
        named.attach("partner")
        with pytest.raises(ConfigError, match="keeps no state for central 'third'"):
            named.attach("third")
        with pytest.raises(ValueError):
            Outbox(tmp_path / "x.sqlite", clock=clock, centrals=["a", "a"])
        with pytest.raises(ValueError):
            Outbox(tmp_path / "y.sqlite", clock=clock, centrals=[])
    finally:
        single.close()
        named.close()


def test_version_1_store_is_upgraded_in_place(db, clock):
    with sqlite3.connect(str(db)) as conn:   # the walking skeleton's layout, with a backlog
        conn.executescript("""
            PRAGMA journal_mode=WAL;
            CREATE TABLE meta (id INTEGER PRIMARY KEY CHECK (id = 1), schema_version INTEGER NOT NULL,
                stream_id TEXT NOT NULL, next_seq INTEGER NOT NULL CHECK (next_seq >= 1),
                created_us INTEGER NOT NULL);
            CREATE TABLE records (seq INTEGER PRIMARY KEY, kind TEXT NOT NULL CHECK (kind IN ('T', 'E')),
                time_us INTEGER NOT NULL, payload BLOB NOT NULL);
            INSERT INTO meta VALUES (1, 1, '00000000deadbeef', 4, 0);
        """)
        rec = _tracks(3)
        rec["seq"] = [1, 2, 3]
        conn.executemany("INSERT INTO records VALUES (?, 'T', 0, ?)",
                         [(i + 1, rec[i].tobytes()) for i in range(3)])
    box = Outbox(db, clock=clock, centrals=["hq"])
    try:
        assert box.stream_id == 0xDEADBEEF and box.next_seq == 4
        assert [s for s, _, _ in box.pending(central="hq")] == [1, 2, 3]
        assert box.ack(1, 3, "hq") == 3 and box.pending_count() == 0
    finally:
        box.close()
    with _other_connection(db) as conn:
        assert conn.execute("SELECT schema_version FROM meta").fetchone()[0] == 2


def test_wal_is_truncated_after_a_large_drain(db, clock):
    box = Outbox(db, clock=clock)
    wal = db.with_name(db.name + "-wal")
    try:
        for _ in range(12):
            box.add_tracks(_tracks(1000))
            box.commit()
        assert wal.stat().st_size > 1_000_000
        for first in range(1, 12_001, 500):
            box.ack(first, first + 499)
        box.commit()
        assert box.pending_count() == 0
        assert wal.stat().st_size == 0
    finally:
        box.close()



def test_wal_is_not_truncated_at_a_towers_usual_rate(db, clock):
    """Over 10,000 deletions of records acknowledged as they come (a small backlog all
    along) are no large drain: the WAL, overwritten in place by SQLite after its
    checkpoints, is never cut to zero (it would grow again, each commit then waiting longer
    for its fsync)."""
    box = Outbox(db, clock=clock, synchronous="normal")
    wal = db.with_name(db.name + "-wal")
    sizes = []
    try:
        for _ in range(1_010):
            first, last = box.add_tracks(_tracks(10))
            box.commit()
            box.ack(first, last)
            sizes.append(wal.stat().st_size)
        box.commit()
        sizes.append(wal.stat().st_size)
    finally:
        box.close()
    assert all(b >= a for a, b in zip(sizes, sizes[1:])), [s for s in sizes if s == 0][:3]

# ------------------------------------------------------------------------------ write failures

_FULL_DISK_SCRIPT = r"""
import json, resource, signal, sys
import numpy as np
from towerd.clock import SystemClock
from towerd.errors import ConfigError, OutboxError
from towerd.icd import empty_track_records
from towerd.outbox.sqlite import Outbox

signal.signal(signal.SIGXFSZ, signal.SIG_IGN)   # a write beyond the limit fails (EFBIG/short)
box = Outbox(sys.argv[1], clock=SystemClock(), synchronous="full")
rec = empty_track_records(200)
rec["time_us"] = 1
for _ in range(5):
    box.add_tracks(rec)
    box.commit()
committed = box.next_seq - 1
soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
resource.setrlimit(resource.RLIMIT_FSIZE, (0, hard))   # "the disk is full" for this process
errors = []
for _ in range(3):
    try:
        box.add_tracks(rec)
        box.commit()
    except OutboxError as exc:
        errors.append(str(exc))
resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))   # space again
first, last = box.add_tracks(rec)
box.commit()
box.close()
print(json.dumps({"committed": committed, "errors": errors, "after": [first, last]}))
"""


def test_full_disk_raises_outbox_error_and_the_loss_is_announced(db, tmp_path):
    """A real write failure: the process's file size limit makes SQLite's writes fail
    as on a full disk. Every failing call raises OutboxError (never a silent loss); once
    writes work again the store continues and says how many records were lost."""
    import subprocess
    import sys

    res = subprocess.run([sys.executable, "-c", _FULL_DISK_SCRIPT, str(db)], capture_output=True, text=True,
                         timeout=60)
    assert res.returncode == 0, res.stderr
    out = json.loads(res.stdout)
    assert out["committed"] == 1000
    assert len(out["errors"]) == 3
    assert all("uncommitted records lost" in e for e in out["errors"])
    box = Outbox(db, clock=ManualClock())
    try:
        seqs = [s for s, _, _ in box.pending(limit=10_000)]
        assert seqs == list(range(1, len(seqs) + 1))   # contiguous, nothing reused or skipped
        (ev,) = _events(box, "outbox.write_failed")
        assert ev["seq"] == 1001 and ev["lost"] == 600 and ev["severity"] == "error"
        assert out["after"] == [1002, 1201]   # the store goes on after the announcement
    finally:
        box.close()


def test_normal_mode_sends_only_what_is_synced(db, clock):
    """synchronous=normal: a power cut may roll back unsynced commits, so only rows the
    outbox has fsynced are handed out; it fsyncs at most once a second."""
    box = Outbox(db, clock=clock, synchronous="normal")
    try:
        box.add_tracks(_tracks(3))
        box.commit()
        assert box.pending() == [] and box.sendable_next_seq == 1   # synced at open, not since
        clock.advance(1.0)
        assert [s for s, _, _ in box.pending()] == [1, 2, 3]
        box.add_tracks(_tracks(2))
        box.commit()
        clock.advance(0.5)
        assert [s for s, _, _ in box.pending()] == [1, 2, 3]
        clock.advance(0.5)
        assert [s for s, _, _ in box.pending()] == [1, 2, 3, 4, 5]
    finally:
        box.close()
    box = Outbox(db, clock=clock)   # full: committed is sendable
    try:
        box.add_tracks(_tracks(1))
        box.commit()
        assert box.sendable_next_seq == 7 and len(box.pending()) == 6
    finally:
        box.close()
