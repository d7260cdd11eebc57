"""The outbox's in-memory tail (towerd.outbox.tail) against the database it stands in for:
after any sequence of adds, commits, acknowledgements, exclusions, cap drops, changes of
centrals and failed writes, what the live flow reads from memory (``pending(recent=True)``,
``recent_tracks``) is exactly what the file holds, and the counters the tail lets an ACK
skip its query for match the file."""

from __future__ import annotations

import json
import random
import sqlite3
import subprocess
import sys

import numpy as np
import pytest

from towerd.clock import ManualClock
from towerd.icd import RECORD_SIZE, empty_track_records
from towerd.outbox.sqlite import Outbox


def _tracks(n: int, t_us: int) -> np.ndarray:
    rec = empty_track_records(n)
    rec["time_us"] = t_us + np.arange(n)
    rec["track_id"] = np.arange(n) + t_us % 1000
    rec["range_m"] = 100.0
    return rec


def _truth(box: Outbox) -> tuple[int, int]:
    with sqlite3.connect(str(box.path)) as conn:
        return conn.execute("SELECT count(*), coalesce(sum(length(payload)), 0) FROM records").fetchone()


def _check(box: Outbox, centrals: list[str | None], rng: random.Random) -> None:
    hi = box.committed_next_seq
    for central in centrals:
        for after in {0, max(0, hi - 1 - rng.randrange(1, 40)), max(0, hi - 2), rng.randrange(0, hi + 1)}:
            limit = rng.choice([1, 3, 100])
            memory = box.pending(after, limit, central=central, recent=True)
            disk = box.pending(after, limit, central=central)
            assert memory == disk, (central, after, limit)
            run = box.recent_tracks(after, limit, central=central)
            if run is not None:
                first, count, body = run
                rows = box.pending(after, count, central=central)
                assert first == after + 1 and [s for s, _, _ in rows] == list(range(first, first + count))
                assert all(k == "T" for _, k, _ in rows) and body == b"".join(p for _, _, p in rows)
                assert len(body) == count * RECORD_SIZE


@pytest.mark.parametrize("centrals", [None, ["a"], ["a", "b"]])
def test_memory_reads_and_counts_match_the_file(tmp_path, centrals):
    rng = random.Random(7)
    clock = ManualClock()
    names: list[str | None] = [None] if centrals is None else list(centrals)
    box = Outbox(tmp_path / "o.sqlite", clock=clock, centrals=centrals, max_records=300, max_bytes=2_000_000)
    try:
        t = 1_700_000_000_000_000
        for step in range(250):
            op = rng.random()
            if op < 0.35:
                t += 1000
                box.add_tracks(_tracks(rng.randrange(1, 25), t))
            elif op < 0.45:
                box.add_event("sensor.down", "warning", f"step {step}", sensor="r")
            elif op < 0.65:
                box.commit()
            elif op < 0.85:
                top = box.committed_next_seq - 1
                if top >= 1:
                    lo = rng.randrange(max(1, top - 60), top + 1)
                    box.ack(lo, min(top, lo + rng.randrange(0, 30)), rng.choice(names))
            elif op < 0.93:
                top = box.committed_next_seq - 1
                if top >= 1:
                    lo = rng.randrange(max(1, top - 30), top + 1)
                    box.protect(rng.choice(names), lo, top)
            elif centrals is not None and op < 0.95:
                box.set_centrals(rng.choice([centrals, centrals[:1], ["a", "c"]]))
                names = list(box.centrals)
            else:
                box.commit()
                assert (box.pending_count(), box.stats()["bytes"]) == _truth(box)
            _check(box, names, rng)
        box.commit()
        assert (box.pending_count(), box.stats()["bytes"]) == _truth(box)
        assert box.stats()["dropped_total"] > 0  # the cap dropped rows on the way
    finally:
        box.close()


def test_rows_the_cap_drops_are_never_read_from_memory(tmp_path):
    box = Outbox(tmp_path / "o.sqlite", clock=ManualClock(), max_records=100)
    try:
        for i in range(8):  # nothing acknowledged: the cap drops the oldest, in and out of the open transaction
            box.add_tracks(_tracks(30, 1000 * i))
            if i % 3:
                box.commit()
        box.commit()
        assert box.stats()["dropped_total"] > 0
        for after in range(0, box.committed_next_seq, 7):
            assert box.pending(after, 500, recent=True) == box.pending(after, 500)
            run = box.recent_tracks(after, 500)
            rows = box.pending(after, 500)
            assert run is None or (rows[0][0] == after + 1 and rows[0][1] == "T")
    finally:
        box.close()


def test_an_acknowledged_batch_is_counted_without_a_query(tmp_path):
    box = Outbox(tmp_path / "o.sqlite", clock=ManualClock())
    try:
        box.add_tracks(_tracks(4, 1))
        box.commit()
        statements: list[str] = []
        box._conn.set_trace_callback(statements.append)
        assert box.recent_tracks(0, 100)[:2] == (1, 4)
        assert box.ack(1, 4) == 4
        box._conn.set_trace_callback(None)
        assert [s.split()[0] for s in statements] == ["BEGIN", "DELETE"]
        box.commit()
        assert box.pending_count() == 0 and box.stats()["bytes"] == 0 and _truth(box) == (0, 0)
    finally:
        box.close()


_ROLLBACK_SCRIPT = r"""
import json, resource, signal, sys
import numpy as np
from towerd.clock import SystemClock
from towerd.errors import OutboxError
from towerd.icd import empty_track_records
from towerd.outbox.sqlite import Outbox

signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
box = Outbox(sys.argv[1], clock=SystemClock(), synchronous="full")

def rec(t):
    r = empty_track_records(300)
    r["time_us"] = t
    return r

box.add_tracks(rec(1))
box.commit()
soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
resource.setrlimit(resource.RLIMIT_FSIZE, (0, hard))   # the disk is full
failed = 0
try:
    box.add_tracks(rec(2))
    box.commit()
except OutboxError:
    failed = 1
resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
box.add_tracks(rec(3))   # takes the seqs the lost records had
box.commit()
memory = box.pending(0, 10_000, recent=True)
disk = box.pending(0, 10_000)
run = box.recent_tracks(301, 10_000)
print(json.dumps({"failed": failed, "same": memory == disk, "n": len(disk),
                  "run": [run[0], run[1], run[2] == b"".join(p for s, k, p in disk if s >= run[0] and k == "T")]}))
box.close()
"""


def test_rows_of_a_rolled_back_write_are_never_read_from_memory(tmp_path):
    """A real write failure (the process's file size limit, as a full disk): the records
    of the rolled-back transaction never reached the file, so memory must not give them
    either, although their seqs are then given to new records."""
    res = subprocess.run([sys.executable, "-c", _ROLLBACK_SCRIPT, str(tmp_path / "o.sqlite")],
                         capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stderr
    out = json.loads(res.stdout)
    assert out["failed"] == 1 and out["same"] and out["n"] == 601
    assert out["run"][2] is True
