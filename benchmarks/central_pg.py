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

import json
import os
import re
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import psycopg

from benchmarks.central_senders import blast, paced
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


def _runq_s(pid: int) -> float | None:
    """Seconds the threads of ``pid`` have waited on a run queue for a core (schedstat)."""
    total = 0.0
    try:
        for tid in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{tid}/schedstat", "rb") as fh:
                total += int(fh.read().split()[1]) / 1e9
    except (OSError, ValueError, IndexError):
        return None
    return total


class CpuMeter:
    """CPU seconds used by a changing set of processes, and seconds their threads waited
    for a core (sampled every 0.25 s: a process that ends between samples loses at most
    its last quarter second)."""

    def __init__(self, pids_fn) -> None:
        self._pids_fn = pids_fn
        self.start_at = 0.0  # monotonic: CPU before this is not counted (set it before it passes)
        self._first: dict[int, float] = {}
        self._last: dict[int, float] = {}
        self._runq_first: dict[int, float] = {}
        self._runq_last: dict[int, float] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="cpu-meter", daemon=True)

    def _sample(self) -> None:
        if time.monotonic() < self.start_at:
            for d in (self._first, self._last, self._runq_first, self._runq_last):
                d.clear()
            return
        for pid in self._pids_fn():
            v = _cpu_s(pid)
            if v is not None:
                self._first.setdefault(pid, v)
                self._last[pid] = v
            w = _runq_s(pid)
            if w is not None:
                self._runq_first.setdefault(pid, w)
                self._runq_last[pid] = w

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
        self.elapsed = time.monotonic() - max(self.t0, self.start_at)

    @property
    def seconds(self) -> float:
        """CPU seconds used (user + system, every thread)."""
        return sum(self._last[p] - self._first[p] for p in self._last)

    @property
    def cores(self) -> float:
        return self.seconds / self.elapsed

    @property
    def runq_cores(self) -> float:
        """Seconds waited for a core per second of run (threads ready to run, none free)."""
        return sum(self._runq_last[p] - self._runq_first[p] for p in self._runq_last) / self.elapsed


class WaitSampler:
    """What the central's PostgreSQL sessions are doing, sampled every ``interval_s`` from
    ``pg_stat_activity`` (from ``start_at``, monotonic): per state, the average number of
    sessions in it. ``CPU`` is an active session with no wait event: running, or ready to
    run and waiting for a core (the run-queue figures of :class:`CpuMeter` tell which)."""

    def __init__(self, url: str, interval_s: float = 0.05) -> None:
        self._url = url
        self._interval = interval_s
        self.start_at = 0.0
        self.backend_pid = 0  # its own session's server process: not PostgreSQL's CPU for the central
        self._connected = threading.Event()
        self.samples = 0
        self.counts: dict[str, int] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="wait-sampler", daemon=True)

    def _run(self) -> None:
        with psycopg.connect(self._url, autocommit=True) as conn:
            self.backend_pid = conn.pgconn.backend_pid
            self._connected.set()
            while not self._stop.wait(self._interval):
                if time.monotonic() < self.start_at:
                    continue
                rows = conn.execute("SELECT state, wait_event_type, wait_event FROM pg_stat_activity "
                                    "WHERE application_name = 'towerd-central'").fetchall()
                self.samples += 1
                for state, kind, event in rows:
                    key = ("CPU" if kind is None else f"{kind}:{event}") if state == "active" else "idle"
                    self.counts[key] = self.counts.get(key, 0) + 1

    def __enter__(self) -> WaitSampler:
        self._thread.start()
        self._connected.wait(30)
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()

    def shares(self) -> dict[str, float]:
        """{state: average sessions in it}, largest first."""
        n = max(self.samples, 1)
        return {k: round(v / n, 3) for k, v in sorted(self.counts.items(), key=lambda kv: -kv[1])}


def _wal_flushes(url: str) -> int:
    with psycopg.connect(url) as conn:
        return int(conn.execute("SELECT wal_sync FROM pg_stat_wal").fetchone()[0])


def _start_central(url: str, keys: dict, log: Path, root: Path | None = None) -> tuple[subprocess.Popen, str]:
    """A ``towerd central`` process (of the tree at ``root``, default this one)."""
    endpoint = f"tcp://127.0.0.1:{_free_port()}"
    env = {**os.environ, "PYTHONPATH": str(root)} if root is not None else None
    with open(log, "ab") as fh:
        proc = subprocess.Popen([sys.executable, "-m", "towerd.central.server", "--bind", endpoint, "--store", url,
                                 "--secret-key", str(keys["central_secret"]), "--allow-dir", str(keys["allow"]),
                                 "--log-level", "INFO"], stdout=fh, stderr=subprocess.STDOUT, cwd=root, env=env)
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


def _ack_timing(log: Path) -> dict:
    """The central's own split of the ACK latency, as it logs it when it stops."""
    found = re.findall(r"ACK latency at the central \(ms\): (\{.*\})", log.read_text(errors="replace"))
    return json.loads(found[-1]) if found else {}


def _scenario(cluster: PgCluster, work: Path, name: str, centrals: int, spec_kw: dict, driver=None,
              root: Path | None = None) -> dict:
    """Fresh database ``name``, ``centrals`` central processes (of the tree at ``root``,
    default this one) on it, then the load generator with ``spec_kw`` (or
    ``driver(endpoints)``), with CPU and size measured."""
    with psycopg.connect(cluster.url(), autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}"')
        conn.execute(f'CREATE DATABASE "{name}"')
    url = cluster.url(name)
    keys = loadgen.make_keys(work, spec_kw["towers"])
    procs = []
    try:
        endpoints = []
        for i in range(centrals):
            proc, endpoint = _start_central(url, keys, work / f"{name}-central{i}.log", root)
            procs.append(proc)
            endpoints.append(endpoint)
        central_pids = {p.pid for p in procs}
        own = {os.getpid()} if driver is not None else set()  # an in-process driver's CPU is this process's
        flushes, flushes_t0 = _wal_flushes(url), time.monotonic()
        with WaitSampler(url) as waits, CpuMeter(lambda: central_pids) as central_cpu, \
                CpuMeter(lambda: [p for p in cluster.server_pids() if p != waits.backend_pid]) as db_cpu, \
                CpuMeter(lambda: child_pids(os.getpid()) - central_pids | own) as gen_cpu:
            def schedule(t_start: float) -> None:  # count CPU from the towers' start, not while they prefill
                for meter in (central_cpu, db_cpu, gen_cpu, waits):
                    meter.start_at = t_start

            if driver is not None:
                result = driver(endpoints)
            else:
                result = loadgen.run(loadgen.LoadSpec(directory=str(work), endpoints=tuple(endpoints), **spec_kw),
                                     on_schedule=schedule)
        result["central_cpu"] = round(central_cpu.cores, 2)
        result["db_cpu"] = round(db_cpu.cores, 2)
        result["gen_cpu"] = round(gen_cpu.cores, 2)
        result["runq"] = {"central": round(central_cpu.runq_cores, 2), "db": round(db_cpu.runq_cores, 2),
                          "gen": round(gen_cpu.runq_cores, 2)}
        result["db_sessions"] = waits.shares()
        result["wal_flushes_per_s"] = round((_wal_flushes(url) - flushes) / (time.monotonic() - flushes_t0), 1)
        if result.get("acked_records"):  # CPU time per record: holds under the shared machine's load
            result["cpu_us_per_record"] = {name: round(m.seconds / result["acked_records"] * 1e6, 1) for name, m in
                                           (("central", central_cpu), ("db", db_cpu), ("gen", gen_cpu))}
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            try:
                p.wait(30)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
    result["central_split"] = [_ack_timing(work / f"{name}-central{i}.log") for i in range(centrals)]
    rows, size = _db_size(url)
    result["db_rows"] = rows
    result["db_bytes_per_million"] = size / rows * 1e6 if rows else float("nan")
    return result


def _generator_wait_text(r: dict) -> str:
    """How long a reply can wait in the generator before it reads it (older generators
    report only how long one slice of writes takes)."""
    gap = r.get("reply_gap_ms")
    if gap is None:
        return f"the generator's slice of writes (25 towers) takes up to {r['tick_ms_p99']} ms (p99), during which " \
               "replies wait"
    text = (f"a reply waits in the generator until its next read of the replies: gaps between two reads median "
            f"{gap['median']} ms, p99 {gap['p99']} ms, max {gap['max']} ms")
    pauses = r.get("generator_pauses")
    if pauses:
        worst = pauses["worst_gap"]
        text += (f" (the longest: {worst['ms']:g} ms wall of which the worker ran {worst['cpu_ms']:g} ms; garbage "
                 f"collection {worst['gc']:g}, outbox writes {worst['write']:g}, sends {worst['send']:g} ms); the "
                 f"longest pass handling replies {pauses['read_max_ms']:g} ms; the generator's garbage collector "
                 f"{pauses['gc_ms']:g} ms in all, longest pause {pauses['gc_max_ms']:g} ms, "
                 f"{pauses['gc_full']} full collections")
    return text


def _load_figures(label: str, r: dict) -> list[Figure]:
    lat = r["ack_latency_ms"]
    cpu = r["cpu_us_per_record"]
    met = r["records_per_s_sustained"] >= GOAL_RPS and lat["p99"] < GOAL_P99_MS
    return [
        Figure(f"{label}: records/s acknowledged, sustained", r["records_per_s_sustained"], "records/s",
               reference=f"offered {r['offered_records_per_s']:,.0f}/s; goal {GOAL_RPS:,}/s with ACK p99 < "
                         f"{GOAL_P99_MS:.0f} ms: {'met' if met else 'NOT met'}",
               note=f"slowest second {r['records_per_s_min_second']:,}/s; {r['acked_records']:,} records in all; "
                    f"{r['errors_received']} store errors, {r['resent_msgs']} messages re-sent after an ACK timeout, "
                    f"{r['disconnects']} link drops seen by the towers, {r['replay_msgs']} messages "
                    "sent as REPLAY (what was in flight at a drop, and what a tower wrote before its link came up)"),
        Figure(f"{label}: ACK latency of live records, median", lat["median"], "ms",
               reference=f"p99 {lat['p99']} ms, max {lat['max']} ms over {lat['n']:,} records",
               note=f"{_generator_wait_text(r)}: part of this latency is the generator's; the central's own part "
                    f"(median / p99 ms): {split_text(r.get('central_split', []))}"),
        Figure(f"{label}: CPU of the central process(es)", r["central_cpu"], "cores",
               reference=f"PostgreSQL {r['db_cpu']} cores; the load generator (the towers) {r['gen_cpu']} cores"),
        Figure(f"{label}: CPU per record acknowledged, central + PostgreSQL",
               cpu["central"] + cpu["db"], "µs",
               reference=f"central {cpu['central']} µs, PostgreSQL {cpu['db']} µs; "
                         f"the load generator {cpu['gen']} µs",
               note="CPU time (user + system, all threads) over the run divided by the records acknowledged in it: "
                    "unlike rates and latencies, it holds when the shared machine is loaded"),
        Figure(f"{label}: the central's PostgreSQL sessions, share of time on a core or waiting for one",
               r["db_sessions"].get("CPU", 0.0), "sessions",
               reference=f"every state (average sessions in it): {sessions_text(r['db_sessions'])}; "
                         f"{r['wal_flushes_per_s']:g} WAL flushes/s",
               note=f"waited for a core (run queue, seconds per second): PostgreSQL {r['runq']['db']}, "
                     f"central {r['runq']['central']}, load generator {r['runq']['gen']}; a commit's time is "
                     "that of its session's states: lock waits (Lock:*, LWLock:*) are what two central processes "
                     "could cost each other, IO:WALSync the commit's flush, Client:ClientRead waiting for the "
                     "central's COPY data"),
        Figure(f"{label}: database bytes per million records", r["db_bytes_per_million"] / 1e6, "MB",
               reference=f"{r['db_rows']:,} rows in tracks, partitions with indexes"),
    ]


def sessions_text(shares: dict[str, float]) -> str:
    """The sampled states, largest first (the idle ones last)."""
    busy = [f"{k} {v:g}" for k, v in shares.items() if k != "idle"]
    return ", ".join(busy + [f"idle {shares.get('idle', 0.0):g}"])


def split_text(splits: list[dict]) -> str:
    """``queue`` (waiting for the commit before), ``commit``, ``ack`` (commit returned to
    ACK sent) per central, as logged by it."""
    parts = []
    for split in splits:
        parts.append(", ".join(f"{k} {v['median_ms']:g} / {v['p99_ms']:g}" for k, v in sorted(split.items()))
                     or "not logged")
    return "; ".join(parts) or "not logged"


SETTINGS = {"max_wal_size": "2GB", "shared_buffers": "256MB"}
GENERATOR_NICE = 10
"""The load generator's workers run at this nice value: the towers are other computers in
the field, here they share the two cores with the central and PostgreSQL, and at the same
priority a burst of their work (SQLite commits, collections) delays the central's commit
thread. Niced, they still take the ~1 core the central and the database leave them; their
own delay in reading the ACKs stays in the measured latency."""


def _base(quick: bool) -> dict:
    return dict(towers=100 if quick else 500, rate=20.0, duration_s=10.0 if quick else 45.0, warmup_s=5.0, procs=2,
                burst_factor=2.0, burst_every_s=20.0, burst_s=1.0, nice=GENERATOR_NICE)


def load_text(before: tuple[float, float, float]) -> str:
    """The machine is shared: its load average (1 min) before and after the run."""
    return (f" Load average of the (shared, 2-core) machine: {before[0]:.1f} before the run, "
            f"{os.getloadavg()[0]:.1f} after it.")


def settings_text(bindir: Path) -> str:
    return (f"Settings: PostgreSQL {bindir.parts[-2]} with max_wal_size 2GB, shared_buffers 256MB, otherwise "
            "defaults; the store's batch_records 5000 (the store writer commits at most about that many records per "
            "transaction while the next messages are received); each "
            "emulated tower commits its outbox every 0.2 s (one message per commit), Poisson arrivals, bursts at "
            f"twice the rate for 1 s in every 20 s; 2 load generator processes at nice {GENERATOR_NICE} (the "
            "central and PostgreSQL at 0: the towers are other computers in the field).")


def run(quick: bool) -> Section:
    bindir = find_bindir()
    if bindir is None:
        return Section("Central with PostgreSQL", [], "PostgreSQL server not installed: not measured.")
    load_before = os.getloadavg()
    base = _base(quick)
    towers = base["towers"]
    cluster = PgCluster(bindir, durable=True, settings=SETTINGS)
    figures: list[Figure] = []
    with tempfile.TemporaryDirectory(prefix="towerd-bench-central-") as tmp:
        work = Path(tmp)
        try:
            cluster.start()
            reference = os.environ.get("TOWERD_BENCH_REFERENCE")
            if reference:  # the same scenario with another commit's central, just before, for a paired figure
                from benchmarks.stages import reference_tree

                root = reference_tree(reference)
                if root is not None:
                    ref = _scenario(cluster, work, "reference", 1, base, root=root)
                    figures += _load_figures(f"{towers} towers x 20/s, one central of {reference}", ref)
            one = _scenario(cluster, work, "one", 1, base)
            figures += _load_figures(f"{towers} towers x 20/s, one central", one)
            two = _scenario(cluster, work, "two", 2, base)
            figures += _load_figures(f"{towers} towers x 20/s, two central processes", two)
            seconds = 10.0 if quick else 30.0
            light = _scenario(cluster, work, "paced", 1, base,
                              driver=lambda eps: paced(eps[0], work, towers, seconds, rate_rps=base["rate"],
                                                       burst_factor=base["burst_factor"],
                                                       burst_every_s=base["burst_every_s"], burst_s=base["burst_s"]))
            met = light["records_per_s"] >= GOAL_RPS and light["p99"] < GOAL_P99_MS
            figures.append(Figure(
                f"{towers} bare CURVE senders x {base['rate']:g}/s (4 records per message, Poisson, the same bursts), one central: "
                "ACK latency, median", light["median"], "ms",
                reference=f"p99 {light['p99']:.1f} ms, max {light['max']:.1f} ms over {light['n']:,} messages; "
                          f"{light['records_per_s']:,.0f} records/s acknowledged; goal {GOAL_RPS:,}/s with ACK p99 "
                          f"< {GOAL_P99_MS:.0f} ms: {'met' if met else 'NOT met'}",
                note=f"the same offered load as above without the towers' outboxes, so the machine's cores go to "
                     f"the central ({light['central_cpu']} cores) and PostgreSQL ({light['db_cpu']} cores); the "
                     f"senders took {light['gen_cpu']} cores; latency from each message's due time (a late sender "
                     f"is charged); {light['errors']} store errors"))
            cap = _scenario(cluster, work, "ceiling", 1, base,
                            driver=lambda eps: blast(eps[0], work, towers, seconds))
            figures.append(Figure(
                f"ceiling of one central + PostgreSQL: {towers} bare CURVE senders, 4 pre-encoded records per "
                "message, 4 messages in flight each", cap["records_per_s"], "records/s",
                reference=f"ACK latency median {cap['median']:.1f} ms, p99 {cap['p99']:.1f} ms; goal "
                          f"{GOAL_RPS:,}/s",
                note=f"no outboxes on the sending side, so most of the CPU is the central's ({cap['central_cpu']} "
                     f"cores) and PostgreSQL's ({cap['db_cpu']} cores); the senders took {cap['gen_cpu']} cores; "
                     f"{cap['errors']} store errors; {cap['db_bytes_per_million'] / 1e6:.0f} MB of tracks per "
                     "million records"))
        finally:
            cluster.remove()
    return Section("Central with PostgreSQL", figures,
                   __doc__.strip() + "\n\n" + settings_text(bindir) + load_text(load_before))


def _span(seconds: float) -> str:
    if seconds >= 3600:
        return f"{seconds / 3600:g}-hour"
    if seconds >= 60:
        return f"{seconds / 60:g}-minute"
    return f"{seconds:g}-second"
