"""Central with PostgreSQL, the store alone: what one record costs the central's store
writer (client CPU: building the COPY image, psycopg's round trips) and PostgreSQL
(server CPU of every server process: the backend's inserts and index updates, the WAL
writer, the checkpointer), without sockets, CURVE or the load generator.

``PgCentralStore.store_many`` is called with batches of TRACKS messages as the central's
store writer hands them over (towers x records per message, each tower's stream in seq
order, times of today), into a throwaway durable cluster (fsync on, synchronous_commit
on). Two batch sizes: small transactions (an idle central, each commit a few dozen
messages) and large ones (a busy central). A third case replays messages already stored
(REPLAY flag, every record a duplicate), the path a tower's backlog after a failover
takes. Per record: client CPU (thread time of the calls), server CPU (all server
processes), WAL bytes; per commit, wall time and round trips (libpq's trace of a few
more batches, turns from the client's messages to the server's).

The reference is the same measurement on the tree of ``REFERENCE`` (``git archive``),
run alternately with this tree's, round by round, on the same cluster (a fresh database
each), so that both see the machine's load of the moment.

    python -m benchmarks.central_pg_store [--rounds 3] [--reference COMMIT]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.common import Figure, Section

REPO = Path(__file__).resolve().parents[1]
REFERENCE = os.environ.get("TOWERD_BENCH_REFERENCE", "a4d95bb")
"""The commit before issue 13's second round of central work (the branch base)."""

CASES = (
    # (name, towers per batch, records per message, batches)
    ("small", 50, 4, 120),
    ("large", 500, 5, 24),
)
TRACED = 5
"""Batches per case stored after the timed ones, with libpq's trace on, to count round trips."""


def _batches(towers: int, per_msg: int, count: int, first_seq: int, replay: bool = False) -> list[list]:
    """``count`` batches of one TRACKS message per tower (``per_msg`` records each),
    seqs continuing from ``first_seq``; times of now."""
    import numpy as np

    from towerd.central.loadtower import _records
    from towerd.central.storetypes import Pending

    fields = getattr(Pending, "__dataclass_fields__", {})

    def seqs(first: int, n: int) -> dict:  # as the central's intake gives them, where Pending takes them
        return {"first_seq": first, "last_seq": first + n - 1} if "first_seq" in fields else {}

    rng = np.random.default_rng(7)
    now_us = time.time_ns() // 1000
    out = []
    seq = first_seq
    for b in range(count):
        batch = []
        for t in range(towers):
            rec = _records(per_msg, seq + t, now_us + b * 200_000, rng)
            rec["seq"] = np.arange(seq, seq + per_msg)
            batch.append(Pending(f"tx-bench-{t:04d}", 0x5EED0000 + t, replay, records=rec, **seqs(seq, per_msg)))
        seq += per_msg
        out.append(batch)
    return out


def _server_cpu_s(pids: list[int]) -> float:
    tck = os.sysconf("SC_CLK_TCK")
    total = 0.0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat", "rb") as fh:
                f = fh.read().rsplit(b")", 1)[1].split()
            total += (int(f[11]) + int(f[12])) / tck
        except (OSError, ValueError, IndexError):
            continue
    return total


def measure(url: str, data_dir: str) -> dict:
    """In this process (whose ``towerd`` is the tree measured): every case into the
    database at ``url``; the cluster's data directory names its server processes."""
    import psycopg

    from towerd.central.pgstore import PgCentralStore
    from towerd.central.pgtemp import child_pids

    master = int((Path(data_dir) / "postmaster.pid").read_text().split()[0])

    def server_pids() -> list[int]:
        return [master, *child_pids(master)]

    store = PgCentralStore(url, index_closed_days_after_s=None)
    out: dict[str, dict] = {}
    try:
        seq = 1
        for name, towers, per_msg, count in CASES:
            warm = _batches(towers, per_msg, 3, seq)
            seq += 3 * per_msg
            for batch in warm:
                store.store_many(batch)
            batches = _batches(towers, per_msg, count + TRACED, seq)
            seq += (count + TRACED) * per_msg
            out[name] = _run_case(store, batches[:count], server_pids, url, psycopg)
            out[name]["round_trips"] = _round_trips(store, batches[count:])
        # The last case's records again, flagged REPLAY: all duplicates (a backlog re-sent
        # after a failover).
        again = [[dataclasses.replace(item, replay=True) for item in batch] for batch in batches]
        out["duplicates"] = _run_case(store, again[:count], server_pids, url, psycopg)
        out["duplicates"]["round_trips"] = _round_trips(store, again[count:])
    finally:
        store.close()
    return out


def _round_trips(store, batches: list[list]) -> float:
    """Round trips per commit of ``batches`` (after the timed ones: libpq's trace of the
    store's connection, each turn from the client's messages to the server's)."""
    with tempfile.TemporaryFile() as fh:
        store._db().pgconn.trace(fh.fileno())
        try:
            for batch in batches:
                store.store_many(batch)
        finally:
            store._conn.pgconn.untrace()
        fh.seek(0)
        turns, last = 0, b"B"
        for line in fh:
            side = line.split(b"\t", 2)[1:2]
            if side in ([b"F"], [b"B"]):
                turns += side[0] == b"F" and last == b"B"
                last = side[0]
    return turns / len(batches)


def _run_case(store, batches: list[list], server_pids, url: str, psycopg) -> dict:
    with psycopg.connect(url, autocommit=True) as conn:
        lsn0 = conn.execute("SELECT pg_current_wal_lsn()").fetchone()[0]
        srv0 = _server_cpu_s(server_pids())
        cli = 0.0
        wall = []
        records = new = 0
        for batch in batches:
            t0, c0 = time.perf_counter(), time.thread_time()
            results = store.store_many(batch)
            cli += time.thread_time() - c0
            wall.append(time.perf_counter() - t0)
            bad = [r for r in results if not isinstance(r, int)]
            if bad:
                raise RuntimeError(f"store failed: {bad[0]}")
            if batch[0].replay and any(results):
                raise RuntimeError("records re-sent were stored again")
            records += sum(item.size for item in batch)
            new += sum(results)
        srv = _server_cpu_s(server_pids()) - srv0
        wal = conn.execute("SELECT pg_current_wal_lsn() - %s::pg_lsn", (lsn0,)).fetchone()[0]
    return {"records": records, "new": new, "client_us": cli / records * 1e6, "server_us": srv / records * 1e6,
            "wal_bytes": float(wal) / records, "commit_ms": statistics.median(wall) * 1000,
            "records_per_commit": records / len(batches)}


def _tree(commit: str) -> Path | None:
    from benchmarks.stages import reference_tree

    return reference_tree(commit)


def compare(rounds: int, reference: str) -> tuple[dict[str, list[dict]], float, float]:
    """Both trees, alternately, ``rounds`` times each: {tree label: [results]}."""
    from towerd.central.pgtemp import PgCluster, find_bindir

    from benchmarks.central_pg import SETTINGS

    bindir = find_bindir()
    if bindir is None:
        raise RuntimeError("PostgreSQL server not installed")
    trees = {"branch": REPO}
    ref = _tree(reference)
    if ref is not None:
        trees = {reference: ref, **trees}
    results: dict[str, list[dict]] = {label: [] for label in trees}
    load_before = os.getloadavg()[0]
    cluster = PgCluster(bindir, durable=True, settings=SETTINGS)
    try:
        cluster.start()
        import psycopg

        for r in range(rounds):
            for label, root in trees.items():
                db = f"store_{r}_{len(results[label])}_{label.replace('-', '_')}"
                with psycopg.connect(cluster.url(), autocommit=True) as conn:
                    conn.execute(f'CREATE DATABASE "{db}"')
                proc = subprocess.run([sys.executable, "-m", "benchmarks.central_pg_store", "--measure",
                                       cluster.url(db), str(cluster.data)], cwd=root, capture_output=True,
                                      text=True, timeout=900)
                if proc.returncode:
                    raise RuntimeError(f"{label}: {proc.stderr[-3000:]}")
                results[label].append(json.loads(proc.stdout.strip().splitlines()[-1]))
                with psycopg.connect(cluster.url(), autocommit=True) as conn:
                    conn.execute(f'DROP DATABASE "{db}"')
    finally:
        cluster.remove()
    return results, load_before, os.getloadavg()[0]


def _median(runs: list[dict], case: str, key: str) -> float:
    return statistics.median(r[case][key] for r in runs)


def _trips(runs: list[dict], case: str) -> str:
    """", N round trips per commit", when the tree measured counts them."""
    if any("round_trips" not in r[case] for r in runs):
        return ""
    return f", {_median(runs, case, 'round_trips'):.1f} round trips per commit"


def run(quick: bool) -> Section:
    try:
        results, before, after = compare(1 if quick else 3, REFERENCE)
    except RuntimeError as exc:
        return Section("Central with PostgreSQL: the store alone", [], f"Not measured: {exc}")
    labels = list(results)
    branch = results["branch"]
    ref = results[labels[0]] if len(labels) > 1 else None
    figures = []
    for case in ("small", "large", "duplicates"):
        per_commit = _median(branch, case, "records_per_commit")
        refs = (f"{labels[0]}: client {_median(ref, case, 'client_us'):.1f} µs, PostgreSQL "
                f"{_median(ref, case, 'server_us'):.1f} µs, WAL {_median(ref, case, 'wal_bytes'):.0f} bytes, commit "
                f"{_median(ref, case, 'commit_ms'):.1f} ms{_trips(ref, case)}") if ref else ""
        figures.append(Figure(
            f"{case} batches ({per_commit:,.0f} records per commit): CPU per record, client + PostgreSQL",
            _median(branch, case, "client_us") + _median(branch, case, "server_us"), "µs",
            reference=refs,
            note=f"client {_median(branch, case, 'client_us'):.1f} µs, PostgreSQL "
                 f"{_median(branch, case, 'server_us'):.1f} µs, WAL {_median(branch, case, 'wal_bytes'):.0f} bytes "
                 f"per record, commit {_median(branch, case, 'commit_ms'):.1f} ms (median){_trips(branch, case)}"))
    return Section("Central with PostgreSQL: the store alone", figures,
                   __doc__.strip().split("\n\n    python")[0]
                   + f"\n\nLoad average (1 min) {before:.1f} before, {after:.1f} after; medians of "
                     f"{len(branch)} rounds.")


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.central_pg_store")
    parser.add_argument("--measure", nargs=2, metavar=("URL", "DATA_DIR"), help=argparse.SUPPRESS)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--reference", default=REFERENCE)
    args = parser.parse_args(argv)
    if args.measure:
        print(json.dumps(measure(*args.measure)))
        return 0
    results, before, after = compare(args.rounds, args.reference)
    print(f"load average {before:.1f} before, {after:.1f} after")
    for case in ("small", "large", "duplicates"):
        for label, runs in results.items():
            cells = "  ".join(f"{k} " + "/".join(f"{r[case][k]:.1f}" for r in runs)
                              for k in ("client_us", "server_us", "wal_bytes", "commit_ms", "records_per_commit",
                                        "round_trips") if k in runs[0][case])
            print(f"{case:10s} {label:10s} {cells}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
