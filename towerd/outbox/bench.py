"""Measure the outbox on the storage it will run on (docs/durability.md).

    python -m towerd.outbox.bench append --dir /var/lib/towerd/bench [--seconds 5]
    python -m towerd.outbox.bench crash  --dir /var/lib/towerd/bench [--trials 30]

``append``: durable appends per second for each ``synchronous`` setting, with the
daemon's batching (one commit every 50 ms) and with one commit per record (the worst
case), and how long a commit keeps the loop waiting (median, 99th percentile, max).

``crash``: a writer process adds and commits records as fast as it can and reports each
commit on a pipe; it is killed with SIGKILL at a random moment; the store is reopened
and checked: every reported commit is there, ``PRAGMA quick_check`` passes, ``next_seq``
is above every stored seq (no seq is handed out twice), and the records of the open
transaction are gone. A process kill is what this measures; a power cut is not (see
docs/durability.md for what SQLite's documentation says about that).

The directory is used for scratch files and emptied of them afterwards.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from towerd.clock import SystemClock
from towerd.icd import empty_track_records
from towerd.outbox.sqlite import Outbox

MODES = ("full", "normal", "extra")


def _records(n: int) -> np.ndarray:
    rec = empty_track_records(n)
    rec["time_us"] = 1_700_000_000_000_000
    rec["range_m"] = 500.0
    return rec


def _remove(path: Path) -> None:
    for suffix in ("", "-wal", "-shm"):
        p = path.with_name(path.name + suffix)
        if p.exists():
            p.unlink()


def append_rate(path: Path, mode: str, seconds: float, batch: int, commit_every_s: float | None) -> dict:
    """Add ``batch`` records at a time for ``seconds``; commit every ``commit_every_s``
    (None: after every add). Returns records/s, commits/s and commit latency (ms)."""
    _remove(path)
    box = Outbox(path, clock=SystemClock(), synchronous=mode, max_records=100_000_000, max_bytes=2**40)
    rec = _records(batch)
    commit_ms: list[float] = []
    added = 0
    start = last_commit = time.perf_counter()
    try:
        while True:
            now = time.perf_counter()
            if now - start >= seconds:
                break
            box.add_tracks(rec)
            added += batch
            if commit_every_s is None or now - last_commit >= commit_every_s:
                t0 = time.perf_counter()
                box.commit()
                commit_ms.append((time.perf_counter() - t0) * 1000)
                last_commit = t0
        box.commit()
        elapsed = time.perf_counter() - start
        size = path.stat().st_size
    finally:
        box.close()
        _remove(path)
    commit_ms.sort()
    return {
        "mode": mode, "batch": batch, "commit_every_s": commit_every_s, "records_per_s": round(added / elapsed),
        "commits_per_s": round(len(commit_ms) / elapsed, 1),
        "commit_ms_median": round(statistics.median(commit_ms), 3),
        "commit_ms_p99": round(commit_ms[int(0.99 * (len(commit_ms) - 1))], 3),
        "commit_ms_max": round(commit_ms[-1], 3), "bytes_per_record": round(size / max(added, 1), 1),
    }


_WRITER = r"""
import sys
from towerd.clock import SystemClock
from towerd.outbox.bench import _records
from towerd.outbox.sqlite import Outbox
box = Outbox(sys.argv[1], clock=SystemClock(), synchronous=sys.argv[2])
rec = _records(int(sys.argv[3]))
out = sys.stdout
while True:
    first, last = box.add_tracks(rec)
    box.commit()
    out.write(f"{last}\n")
    out.flush()
"""


def crash_trial(path: Path, mode: str, batch: int, rng: random.Random) -> dict:
    """One writer killed with SIGKILL after a random 0.1-0.6 s; the store checked."""
    _remove(path)
    proc = subprocess.Popen([sys.executable, "-c", _WRITER, str(path), mode, str(batch)], stdout=subprocess.PIPE,
                            text=True)
    assert proc.stdout is not None
    first_line = proc.stdout.readline()  # the writer runs
    if not first_line:
        proc.wait()
        raise RuntimeError(f"writer did not start (exit {proc.returncode})")
    time.sleep(rng.uniform(0.1, 0.6))  # the kill lands at a random point of the write loop
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    reported = [int(x) for x in (first_line + proc.stdout.read()).split()]
    last_reported = max(reported)
    box = Outbox(path, clock=SystemClock(), synchronous=mode)
    try:
        seqs = [s for s, _, _ in box.pending(limit=10**9)]
        next_seq = box.next_seq
    finally:
        box.close()
    import sqlite3

    with sqlite3.connect(str(path)) as conn:
        check = conn.execute("PRAGMA quick_check").fetchone()[0]
    _remove(path)
    stored = len(seqs)
    return {
        "reported_commits_last_seq": last_reported,
        "stored": stored,
        "lost_committed": sum(1 for s in range(1, last_reported + 1) if s > stored),
        "contiguous": seqs == list(range(1, stored + 1)),
        "next_seq_above_stored": next_seq == stored + 1,
        "committed_not_yet_reported": stored - last_reported,
        "quick_check": check,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m towerd.outbox.bench", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="what", required=True)
    a = sub.add_parser("append", help="durable appends per second per synchronous setting")
    a.add_argument("--dir", required=True)
    a.add_argument("--seconds", type=float, default=5.0)
    c = sub.add_parser("crash", help="SIGKILL a writer at random moments and check the store")
    c.add_argument("--dir", required=True)
    c.add_argument("--trials", type=int, default=30)
    c.add_argument("--seed", type=int, default=1)
    args = parser.parse_args(argv)
    d = Path(args.dir)
    d.mkdir(parents=True, exist_ok=True)
    path = d / "bench-outbox.sqlite"
    results = []
    if args.what == "append":
        for mode in MODES:
            results.append(append_rate(path, mode, args.seconds, batch=10, commit_every_s=0.05))
            results.append(append_rate(path, mode, args.seconds, batch=1, commit_every_s=None))
    else:
        rng = random.Random(args.seed)
        for mode in ("full", "normal"):
            trials = [crash_trial(path, mode, 20, rng) for _ in range(args.trials)]
            results.append({
                "mode": mode, "trials": len(trials),
                "lost_committed_total": sum(t["lost_committed"] for t in trials),
                "all_contiguous": all(t["contiguous"] for t in trials),
                "all_next_seq_above_stored": all(t["next_seq_above_stored"] for t in trials),
                "all_quick_check_ok": all(t["quick_check"] == "ok" for t in trials),
                "committed_after_last_report_max": max(t["committed_not_yet_reported"] for t in trials),
                "records_written_median": statistics.median(t["stored"] for t in trials),
            })
    for r in results:
        print(json.dumps(r))
    return 0


if __name__ == "__main__":
    sys.exit(main())
