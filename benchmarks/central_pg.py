"""Central with the PostgreSQL store at border scale: towers emulated by
`python -m towerd.central.loadgen` (each a real SQLite outbox in /dev/shm and a real
uplink with its own CURVE key), real `towerd central --store postgresql://...` processes,
and a throwaway PostgreSQL cluster with the server's durable defaults (fsync on,
synchronous_commit on: every ACK follows a flushed commit), everything on this one
machine: the towers' CPU competes with the central's and the database's.

Records per second are those acknowledged (sustained: mean over the run after a warm-up);
ACK latency is per live record, from its commit in the tower's outbox to the ACK processed
by the tower (the generator's own loop delay included). CPU is user+system time of the
central process(es) and of all PostgreSQL server processes, per second of run (1.0 = one
core). Database bytes are the `tracks` partitions with their indexes, per million rows.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import psycopg

from benchmarks.common import Figure, Section
from towerd.central import loadgen
from towerd.central.pgtemp import PgCluster, child_pids, find_bindir

GOAL_RPS = 10_000
GOAL_P99_MS = 100.0


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _cpu_s(pid: int) -> float | None:
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            f = fh.read().rsplit(b")", 1)[1].split()
        return (int(f[11]) + int(f[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return None


class CpuMeter:
    """CPU seconds used by a changing set of processes (sampled every 0.25 s: a process
    that ends between samples loses at most its last quarter second)."""

    def __init__(self, pids_fn) -> None:
        self._pids_fn = pids_fn
        self._first: dict[int, float] = {}
        self._last: dict[int, float] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="cpu-meter", daemon=True)

    def _sample(self) -> None:
        for pid in self._pids_fn():
            v = _cpu_s(pid)
            if v is not None:
                self._first.setdefault(pid, v)
                self._last[pid] = v

    def _run(self) -> None:
        while not self._stop.wait(0.25):
            self._sample()

    def __enter__(self) -> CpuMeter:
        self._sample()
        self.t0 = time.monotonic()
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self._sample()
        self.elapsed = time.monotonic() - self.t0

    @property
    def cores(self) -> float:
        used = sum(self._last[p] - self._first[p] for p in self._last)
        return used / self.elapsed


def _start_central(url: str, keys: dict, log: Path) -> tuple[subprocess.Popen, str]:
    endpoint = f"tcp://127.0.0.1:{_free_port()}"
    with open(log, "ab") as fh:
        proc = subprocess.Popen([sys.executable, "-m", "towerd.central.server", "--bind", endpoint, "--store", url,
                                 "--secret-key", str(keys["central_secret"]), "--allow-dir", str(keys["allow"]),
                                 "--log-level", "WARNING"], stdout=fh, stderr=subprocess.STDOUT)
    port = int(endpoint.rsplit(":", 1)[1])
    deadline = time.monotonic() + 60
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return proc, endpoint
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"central did not start: {log.read_text(errors='replace')}")
            time.sleep(0.1)


def _db_size(url: str) -> tuple[int, int]:
    """(rows, bytes) of tracks: every partition with its indexes and TOAST."""
    with psycopg.connect(url) as conn:
        rows = conn.execute("SELECT count(*) FROM tracks").fetchone()[0]
        size = conn.execute("SELECT coalesce(sum(pg_total_relation_size(i.inhrelid)), 0) FROM pg_inherits i "
                            "WHERE i.inhparent = 'tracks'::regclass").fetchone()[0]
    return rows, int(size)


def _scenario(cluster: PgCluster, work: Path, name: str, centrals: int, spec_kw: dict) -> dict:
    with psycopg.connect(cluster.url(), autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}"')
        conn.execute(f'CREATE DATABASE "{name}"')
    url = cluster.url(name)
    keys = loadgen.make_keys(work, spec_kw["towers"])
    procs = []
    try:
        endpoints = []
        for i in range(centrals):
            proc, endpoint = _start_central(url, keys, work / f"{name}-central{i}.log")
            procs.append(proc)
            endpoints.append(endpoint)
        spec = loadgen.LoadSpec(directory=str(work), endpoints=tuple(endpoints), **spec_kw)
        central_pids = {p.pid for p in procs}
        with CpuMeter(lambda: central_pids) as central_cpu, CpuMeter(cluster.server_pids) as db_cpu, \
                CpuMeter(lambda: child_pids(os.getpid()) - central_pids) as gen_cpu:
            result = loadgen.run(spec)
        result["central_cpu"] = round(central_cpu.cores, 2)
        result["db_cpu"] = round(db_cpu.cores, 2)
        result["gen_cpu"] = round(gen_cpu.cores, 2)
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            try:
                p.wait(30)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
    rows, size = _db_size(url)
    result["db_rows"] = rows
    result["db_bytes_per_million"] = size / rows * 1e6 if rows else float("nan")
    return result


def _load_figures(label: str, r: dict) -> list[Figure]:
    lat = r["ack_latency_ms"]
    met = r["records_per_s_sustained"] >= GOAL_RPS and lat["p99"] < GOAL_P99_MS
    return [
        Figure(f"{label}: records/s acknowledged, sustained", r["records_per_s_sustained"], "records/s",
               reference=f"offered {r['offered_records_per_s']:,.0f}/s; goal {GOAL_RPS:,}/s with ACK p99 < "
                         f"{GOAL_P99_MS:.0f} ms: {'met' if met else 'NOT met'}",
               note=f"slowest second {r['records_per_s_min_second']:,}/s; {r['acked_records']:,} records in all; "
                    f"{r['errors_received']} store errors, {r['resent_msgs']} messages re-sent"),
        Figure(f"{label}: ACK latency of live records, median", lat["median"], "ms",
               reference=f"p99 {lat['p99']} ms, max {lat['max']} ms over {lat['n']:,} records",
               note=f"the generator's write round over its towers takes up to {r['tick_ms_p99']} ms (p99), "
                    "during which replies wait: part of this latency is the generator's"),
        Figure(f"{label}: CPU of the central process(es)", r["central_cpu"], "cores",
               reference=f"PostgreSQL {r['db_cpu']} cores; the load generator (the towers) {r['gen_cpu']} cores"),
        Figure(f"{label}: database bytes per million records", r["db_bytes_per_million"] / 1e6, "MB",
               reference=f"{r['db_rows']:,} rows in tracks, partitions with indexes"),
    ]


def run(quick: bool) -> Section:
    bindir = find_bindir()
    if bindir is None:
        return Section("Central with PostgreSQL", [], "PostgreSQL server not installed: not measured.")
    towers = 100 if quick else 500
    duration = 10.0 if quick else 45.0
    backlog_towers, backlog_s = (20, 60.0) if quick else (100, float(os.environ.get("TOWERD_BENCH_BACKLOG_S", 3600)))
    cluster = PgCluster(bindir, durable=True, settings={"max_wal_size": "2GB", "shared_buffers": "256MB"})
    figures: list[Figure] = []
    with tempfile.TemporaryDirectory(prefix="towerd-bench-central-") as tmp:
        work = Path(tmp)
        try:
            cluster.start()
            base = dict(towers=towers, rate=20.0, duration_s=duration, warmup_s=5.0, procs=2,
                        burst_factor=2.0, burst_every_s=20.0, burst_s=1.0)
            one = _scenario(cluster, work, "one", 1, base)
            figures += _load_figures(f"{towers} towers x 20/s, one central", one)
            two = _scenario(cluster, work, "two", 2, base)
            figures += _load_figures(f"{towers} towers x 20/s, two central processes", two)
            cap_s = 60.0 if quick else float(os.environ.get("TOWERD_BENCH_DRAIN_CAP_S", 180))
            back = _scenario(cluster, work, "backlog", 1,
                             {**base, "duration_s": cap_s, "backlog_towers": backlog_towers, "backlog_s": backlog_s,
                              "stop_when_drained": True})
            total = int(backlog_towers * backlog_s * 20)
            left = back["backlog_left_records"]
            drained = back["drain_s"]["all"]
            lat = back["ack_latency_ms"]
            if drained is not None:
                value, how = drained, "every backlog acknowledged"
            else:
                rate = (total - left) / cap_s
                value, how = float("nan"), (f"NOT drained within the {cap_s:.0f} s cap: {total - left:,} of {total:,} "
                                            f"backlog records acknowledged ({rate:,.0f}/s; at that rate all in "
                                            f"{total / rate:,.0f} s)" if rate else "nothing drained")
            figures.append(Figure(
                f"{backlog_towers} towers back at once after a {_span(backlog_s)} outage ({total:,} records held), "
                f"{towers - backlog_towers} others live: time to drain", value, "s",
                reference=how + f"; replay_rate_rps {3000} per tower (the uplink default)",
                note=f"live ACK latency meanwhile median {lat['median']} ms, p99 {lat['p99']} ms, max {lat['max']} "
                     f"ms; central CPU {back['central_cpu']} cores, PostgreSQL {back['db_cpu']} cores, load generator "
                     f"{back['gen_cpu']} cores; "
                     f"{back['records_per_s_sustained']:,.0f} records/s acknowledged on average"))
        finally:
            cluster.remove()
    text = (__doc__.strip() + "\n\nSettings: PostgreSQL " + bindir.parts[-2] + " with max_wal_size 2GB, "
            "shared_buffers 256MB, otherwise defaults; the store's batch_records 5000 (one transaction per poll "
            "round of the central); each tower commits its outbox every 0.2 s (one message per commit), Poisson "
            "arrivals, bursts at twice the rate for 1 s in every 20 s; 2 load generator processes.")
    return Section("Central with PostgreSQL", figures, text)


def _span(seconds: float) -> str:
    if seconds >= 3600:
        return f"{seconds / 3600:g}-hour"
    if seconds >= 60:
        return f"{seconds / 60:g}-minute"
    return f"{seconds:g}-second"
