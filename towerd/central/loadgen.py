"""Load generator for a central: N emulated towers, each a real outbox and a real uplink.

    python -m towerd.central.loadgen keys --dir DIR --towers 500
    python -m towerd.central.loadgen run --dir DIR --endpoint tcp://central:7700 --towers 500 --rate 20 \\
        --duration 60 [--procs 2] [--burst-factor 3 --burst-every-s 20 --burst-s 2] \\
        [--outage-towers 100 --outage-at 20 --outage-s 30] [--backlog-towers 100 --backlog-s 3600]

``keys`` makes one CURVE key pair per tower (``DIR/keys/lg-NNNN.key[_secret]``) and puts
every public key on an allow-list directory (``DIR/allow``: give it to ``towerd central
--allow-dir``); the central's key pair is ``DIR/keys/central.key[_secret]``.

``run``: every tower is what the daemon runs below its pipeline: a real SQLite
:class:`~towerd.outbox.sqlite.Outbox` (in ``--outbox-dir``, by default a RAM-backed
directory under /dev/shm, so that 500 outboxes' fsyncs do not measure this machine's
disk; synchronous=full as the daemon's default: on /dev/shm an fsync costs nothing
measurable, 250 outboxes cost the same per message with ``normal``, and ``normal`` would
hold rows back until its once-a-second sync, which is not the daemon's default flow; each
outbox holds its file lock while open, as nobody else reads it) and a real
:class:`~towerd.uplink.client.UplinkClient` (a DEALER with the tower's
own CURVE key, routing id = tower id; ICD encoding, window, resend, live before a paced
REPLAY backlog). Each tower writes ``--rate`` TRACKS records per second (Poisson spread,
``--burst-factor`` times more for ``--burst-s`` every ``--burst-every-s``, the towers'
bursts staggered) and commits them every ``--commit-s``, each tower at its own phase
(real towers are not in step); a worker reads the replies that came meanwhile after
each tower it writes, so that an ACK does not wait behind a pass over many towers.

Outages: ``--outage-towers`` towers lose their link at ``--outage-at`` for ``--outage-s``
(the uplink is closed; the records pile up in the outbox; a new uplink then sends the
backlog flagged REPLAY, as the daemon does after a restart or a link loss).
``--backlog-towers`` towers start with ``--backlog-s`` seconds of records already in their
outbox (time-stamped over that past interval: coming back after an outage that long).

Towers are split over ``--procs`` worker processes and over the ``--endpoint``s (tower i
uses endpoint i mod k), or with ``--all-endpoints`` each tower lists them all (failover).
``--nice N`` lowers the workers' priority: run on the central's own machine, the emulated
towers (other computers in the field) then take the CPU the central and its database leave.

Measured, printed as one JSON object: records acknowledged per second (sustained, over
the run after ``--warmup-s``), ACK latency of live records (commit in the tower's outbox
to ACK processed; median, p99, max), and for backlogs the time until each tower's last
backlog record was acknowledged (with ``--after-drain-s``, the run goes on that long
after a worker's backlogs are all acknowledged, and the live latency after that moment is
also reported apart; ``--progress-s`` prints a progress line per worker). The latency includes the generator's own loop delay:
``reply_gap_ms`` (median, p99, max over the workers) is the time between two reads of
the replies, the longest a reply that arrived could wait in the worker, and
``tick_ms_p99`` is its p99 (``slice_ms_p99``: how long one pass of writes takes).
``worker_windows`` gives, per worker and per second, the records acknowledged, their
latency p99 and max, the longest such gap and what filled it (garbage collection, outbox
writes, sends, wall time the worker did not run), and the longest pass handling replies
(:mod:`towerd.central.loadpause`); ``generator_pauses`` is the worst of them.

The towers with no backlog are connected (CURVE handshake done) before the run starts,
as a real tower's link is up long before: connecting hundreds at the start made the
first seconds' latency a start-up transient (~0.8 s). Towers with a backlog connect at
the start, as towers coming back would. What the setup built is frozen out of Python's
cyclic collector (a full collection over 250 towers' objects: ~39 ms of CPU, ~3 ms
frozen).
"""

from __future__ import annotations

import argparse
import gc
import json
import logging
import math
import os
import subprocess
import resource
import select
import shutil
import sys
import tempfile
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
import zmq

from towerd import keys
from towerd.clock import SystemClock
from towerd.central.loadpause import Pauses
from towerd.central.loadtower import LoadSpec, _RecordPool, _records, _Tower, tower_id

log = logging.getLogger(__name__)

__all__ = ["LoadSpec", "make_keys", "run", "summarise", "tower_id", "_records"]


def make_keys(directory: Path, towers: int) -> dict:
    """Key pairs for the central and ``towers`` towers, and the allow-list; existing
    tower keys are kept. Returns the paths."""
    key_dir, allow = directory / "keys", directory / "allow"
    if not (key_dir / "central.key_secret").exists():
        keys.generate_keypair(key_dir, "central")
    for i in range(towers):
        tid = tower_id(i)
        if not (key_dir / f"{tid}.key_secret").exists():
            pair = keys.generate_keypair(key_dir, tid)
            keys.allow_tower(tid, pair.public_file, allow, force=True)
    return {"central_secret": key_dir / "central.key_secret", "central_public": key_dir / "central.key",
            "allow": allow}


_WRITE_SLICE = 25
"""Towers written (one outbox commit and send each) in one pass of the loop; the replies
are read between any two of them."""
_PACED_SCAN_S = 0.1
"""How often the worker looks for the towers with a backlog to pace (it polls those every
10 ms; a tower whose link just came up sends its first backlog burst from the poll that
saw the link come up)."""


def _service(t: _Tower) -> None:
    """Poll ``t``'s uplink: read its replies, send what is due. The uplink leaves no
    reply unread behind a notice its own sends took in (UplinkClient._step), so one poll
    serves a wake-up of its descriptors."""
    if t.client is not None:
        t.client.poll(0)


class _Replies:
    """The worker's wait for replies: one epoll set over every uplink socket's
    notification descriptor (``zmq.FD``), so that a wait costs the sockets that are
    ready, not all of them; and how long replies could have waited in the worker (the
    gaps between two reads of that set, as a histogram in 0.1 ms steps).

    Such a descriptor says only that the socket's state may have changed; the uplink's
    poll asks the sockets themselves (``zmq.EVENTS``), so a notice is never lost."""

    _BINS = 20_000  # 0.1 ms each: up to 2 s

    def __init__(self, pauses: Pauses) -> None:
        self._epoll = select.epoll()
        self._pauses = pauses
        self._fds: dict[_Tower, tuple[int, ...]] = {}
        self._by_fd: dict[int, _Tower] = {}
        self._gaps = [0] * self._BINS
        self._max_gap = 0.0
        self._last = time.monotonic()

    def sync(self, t: _Tower) -> None:
        """Register ``t``'s current sockets (new after a connect or a rebuild); a tower
        whose sockets changed is polled once, for what came before the registration."""
        fds = tuple(s.get(zmq.FD) for s in t.client.pollables()) if t.client is not None else ()
        old = self._fds.get(t, ())
        if fds == old:
            return
        for fd in old:
            if self._by_fd.get(fd) is t:
                del self._by_fd[fd]
                try:
                    self._epoll.unregister(fd)
                except (OSError, ValueError):
                    pass  # closed with its socket: epoll dropped it already
        for fd in fds:
            try:
                self._epoll.register(fd, select.EPOLLIN)
            except FileExistsError:  # a number reused before the old one was unregistered
                self._epoll.modify(fd, select.EPOLLIN)
            self._by_fd[fd] = t
        self._fds[t] = fds
        _service(t)

    def serve(self, timeout_s: float) -> None:
        """Wait up to ``timeout_s`` (0: do not wait) and poll the uplinks whose
        descriptors are ready."""
        now = self._pauses.read_begins()
        gap = now - self._last
        self._gaps[min(int(gap * 10_000), self._BINS - 1)] += 1
        if gap > self._max_gap:
            self._max_gap = gap
        by_fd = self._by_fd
        ready = self._epoll.poll(timeout_s)
        woke = time.monotonic()
        for fd, _ in ready:
            t = by_fd.get(fd)
            if t is not None:
                _service(t)
        self._last = self._pauses.read_ends(woke)

    def restart(self) -> None:
        """Forget the gaps so far (the setup's): the run starts now."""
        self._gaps = [0] * self._BINS
        self._max_gap = 0.0
        self._last = time.monotonic()

    def gap_ms(self) -> dict:
        """Median, p99 and max of the gaps between two reads, in ms."""
        n = sum(self._gaps)
        out = {"n": n, "max": round(self._max_gap * 1000, 1)}
        for name, q in (("median", 0.5), ("p99", 0.99)):
            k, acc = 0, 0
            while k < self._BINS and acc + self._gaps[k] < q * n:
                acc += self._gaps[k]
                k += 1
            out[name] = round((k + 1) / 10, 1)  # the upper edge of the bin
        return out

    def close(self) -> None:
        self._epoll.close()


class _Progress:
    """A worker's progress line on stderr every ``every_s``: backlog records left, the
    rate they went at since the last line, and the live ACK latency over that interval,
    so that a long drain can be watched."""

    def __init__(self, towers: list[_Tower], latencies: list[float], t0: float, every_s: float) -> None:
        self._towers = towers
        self._latencies = latencies
        self._t0 = t0
        self._every = every_s
        self._next = t0 + every_s
        self._mark = 0
        self._left = self._total = sum(t.backlog_left for t in towers)
        self._last = t0

    def drained(self, now: float) -> None:
        print(f"loadgen worker {os.getpid()}: {now - self._t0:.1f} s: every backlog acknowledged "
              f"({self._total:,} records)", file=sys.stderr, flush=True)

    def report(self, now: float) -> None:
        if now < self._next:
            return
        self._next += self._every
        lat = _lat_summary(np.asarray(self._latencies[self._mark:]))
        self._mark = len(self._latencies)
        left = sum(t.backlog_left for t in self._towers)
        rate = (self._left - left) / max(1e-9, now - self._last)
        self._left, self._last = left, now
        live = (f"median {lat['median']:.0f} ms, p99 {lat['p99']:.0f} ms, max {lat['max']:.0f} ms"
                if lat["n"] else "none acknowledged")
        print(f"loadgen worker {os.getpid()}: {now - self._t0:.0f} s: backlog left {left:,} of {self._total:,} "
              f"({rate:,.0f} records/s); live ACK latency {live}", file=sys.stderr, flush=True)


def _worker(spec: LoadSpec, indices: list[int], ready) -> dict:
    """Build the towers, then ``ready()`` -> the monotonic time at which they start."""
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))  # ~8 descriptors per tower
    clock = SystemClock()
    paths = {"central_public": Path(spec.directory) / "keys" / "central.key"}
    outbox_dir = Path(spec.outbox_dir) / f"w{os.getpid()}"
    outbox_dir.mkdir(parents=True, exist_ok=True)
    ctx = zmq.Context(io_threads=1)
    towers: list[_Tower] = []
    replies: _Replies | None = None
    pauses: Pauses | None = None
    latencies: list[float] = []  # the worker's towers' ACK latencies, ms (one list: windows cut it)
    k = len(spec.endpoints)
    pool = _RecordPool(np.random.default_rng(spec.seed))
    try:
        for i in indices:
            ix = list(range(k)) if spec.all_endpoints else [i % k]
            if spec.all_endpoints:
                ix = ix[i % k:] + ix[:i % k]
            towers.append(_Tower(i, spec, paths, outbox_dir, ix, np.random.default_rng(spec.seed * 100_003 + i),
                                 clock, ctx, pool))
            towers[-1].latencies = latencies
        for t in towers:
            if int(t.id[3:]) < spec.backlog_towers:
                t.prefill(spec.backlog_s)
        pauses = Pauses()
        replies = _Replies(pauses)
        for t in towers:  # a live tower's link is up before the run, as a real one's would be
            if not t.backlog_left:
                t.connect(time.monotonic())
                replies.sync(t)
        deadline = time.monotonic() + 10.0
        while time.monotonic() < deadline and not all(t.client.link_up for t in towers if t.client is not None):
            replies.serve(0.05)
        # What the setup built (250 towers' outboxes, sockets, keys) stays: Python's cyclic
        # collector need not walk it again in every full collection (~35 ms for 150 towers).
        gc.collect()
        gc.freeze()
        t_start = ready()
        while time.monotonic() < t_start:
            time.sleep(0.01)
        t0 = time.monotonic()
        t0_utc = time.time()
        replies.restart()
        pauses.restart()
        # The progress lines' total is the backlog held when its towers come back, taken
        # before they connect: from their first poll on, ACKs take from it.
        progress = _Progress(towers, latencies, t0, spec.progress_s) if spec.progress_s > 0 else None
        for t in towers:
            if t.client is None:  # a tower with a backlog comes back now: its handshake is in the run
                t.connect(t0)
                replies.sync(t)
        per_second: list[int] = []
        slice_ms: list[float] = []
        for k, t in enumerate(towers):
            t.last_write = t0
            t.next_write = t0 + spec.commit_s * (k + 1) / len(towers)
        cursor = 0
        next_write = towers[0].next_write if towers else math.inf
        acked_mark = 0
        next_pace = next_scan = t0
        paced: list[_Tower] = []
        next_mark = t0 + 1.0
        outage_on = False
        drained_at: float | None = None  # when this worker's backlogs were all acknowledged
        split = 0  # how many of the latencies came before then
        while True:
            now = time.monotonic()
            el = now - t0
            if el >= spec.duration_s:
                break
            if spec.stop_when_drained and drained_at is None and el > max(1.0, spec.outage_at_s + spec.outage_s) \
                    and all(t.backlog_left == 0 for t in towers if t.backlog_started is not None):
                drained_at = now
                split = len(latencies)
                if progress is not None:
                    progress.drained(now)
            if drained_at is not None and now - drained_at >= spec.after_drain_s:
                break
            if spec.outage_towers and not outage_on and spec.outage_at_s <= el < spec.outage_at_s + spec.outage_s:
                outage_on = True
                for t in towers:
                    if int(t.id[3:]) < spec.outage_towers:
                        t.disconnect()
                        replies.sync(t)
            elif outage_on and el >= spec.outage_at_s + spec.outage_s:
                outage_on = False
                for t in towers:
                    if t.client is None:
                        t.connect(now)
                        replies.sync(t)
            if now >= next_write:
                # Each tower commits every commit_s at its own phase (real towers are not in
                # step); the replies that came meanwhile are read after each of them.
                tick = time.monotonic()
                for _ in range(min(_WRITE_SLICE, len(towers))):
                    t = towers[cursor]
                    if t.next_write > now:
                        break
                    began = pauses.begin()
                    t.write(now, now - t.last_write, t0)
                    began = pauses.part("write", began)
                    t.last_write = now
                    t.next_write += spec.commit_s
                    if t.next_write < now:
                        t.next_write = now + spec.commit_s
                    _service(t)  # send what was just committed
                    pauses.part("send", began)
                    cursor = (cursor + 1) % len(towers)
                    replies.serve(0)
                next_write = towers[cursor].next_write
                slice_ms.append((time.monotonic() - tick) * 1000)
            elif now >= next_pace:  # backlog pacing (token bucket) and scheduled socket rebuilds
                began = pauses.begin()
                if now >= next_scan:  # which towers have a timer at all: not every tower every 10 ms
                    paced = [t for t in towers if t.client is not None and t.client.next_timer_s() < math.inf]
                    next_scan = now + _PACED_SCAN_S
                for t in paced:
                    if t.client is not None and t.client.next_timer_s() < 1.0:
                        _service(t)
                        replies.sync(t)  # a refused uplink rebuilds its socket in a poll
                next_pace = now + (0.01 if paced else _PACED_SCAN_S)
                pauses.part("pace", began)
            replies.serve(max(0.0, min(next_write, next_mark, next_pace) - time.monotonic()))
            if time.monotonic() >= next_mark:
                began = pauses.begin()
                for t in towers:  # a socket rebuilt in any poll (after a refusal) is waited on
                    replies.sync(t)
                total = sum(t.acked for t in towers)
                per_second.append(total - acked_mark)
                acked_mark = total
                next_mark += 1.0
                pauses.part("mark", began)
                pauses.window(began[0] - t0, per_second[-1], latencies)
                if progress is not None:
                    progress.report(time.monotonic())
        t_end = time.monotonic()
        if drained_at is None:
            split = len(latencies)
        lat = np.array(latencies[:split], dtype=np.float64)
        after = np.array(latencies[split:], dtype=np.float64)
        gaps = replies.gap_ms()
        return {
            "towers": len(towers), "elapsed_s": t_end - t0, "t0_utc": t0_utc, "late_start_s": t0 - t_start,
            "per_second": per_second,
            "acked": sum(t.acked for t in towers), "written": sum(t.counter for t in towers),
            # 0.01 ms is precise enough and keeps a long run's JSON (millions of values) under half as long
            "latencies": lat.round(2).tolist(), "latencies_after_drain": after.round(2).tolist(),
            "drained_at_s": None if drained_at is None else drained_at - t0,
            "drained_s": [t.drained_s for t in towers if t.backlog_started is not None],
            "backlog_left": sum(t.backlog_left for t in towers),
            "tick_ms_p99": gaps["p99"], "reply_gap_ms": gaps,
            "slice_ms_p99": float(np.percentile(slice_ms, 99)) if slice_ms else 0.0,
            "windows": pauses.windows,
            **{key: sum(t.client.stats[key] for t in towers if t.client is not None)
               for key in ("live_msgs", "resent_msgs", "replay_msgs", "disconnects", "errors_received")},
        }
    finally:
        if replies is not None:
            replies.close()
        if pauses is not None:
            pauses.close()
        for t in towers:
            t.close()
        ctx.term()
        shutil.rmtree(outbox_dir, ignore_errors=True)


def run(spec: LoadSpec, on_schedule=None) -> dict:
    """Run the load in ``spec.procs`` worker processes; the summary as a dict.
    ``on_schedule(t_start)``: told the monotonic time at which the towers start
    (once every worker has built its towers: outboxes, backlogs, live links)."""
    if not spec.endpoints:
        raise ValueError("at least one endpoint")
    own_dir = spec.outbox_dir is None
    base = Path(tempfile.mkdtemp(prefix="towerd-loadgen-", dir="/dev/shm" if os.path.isdir("/dev/shm") else None)) \
        if own_dir else Path(spec.outbox_dir)
    spec = LoadSpec(**{**asdict(spec), "outbox_dir": str(base)})
    if not spec.plain:
        make_keys(Path(spec.directory), spec.towers)
    procs = max(1, min(spec.procs, spec.towers))
    prefill_s = spec.backlog_towers * spec.backlog_s * spec.rate / 40_000  # measured: ~60,000 appends/s, idle
    setup_s = 60.0 + spec.towers * 0.1 + prefill_s  # generous: the machine may be loaded
    workers = []
    try:
        for w in range(procs):
            job = {"spec": asdict(spec), "indices": list(range(w, spec.towers, procs))}
            workers.append(subprocess.Popen([sys.executable, "-m", "towerd.central.loadgen", "worker",
                                             json.dumps(job)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                            text=True))
        # Each worker says when its towers are built; then all start at one time
        # (CLOCK_MONOTONIC is shared between processes), whatever the setup took.
        for proc in workers:
            if not select.select([proc.stdout], [], [], setup_s)[0] or proc.stdout.readline().strip() != "ready":
                raise RuntimeError("a load generator worker did not get ready")
        t_start = time.monotonic() + 0.2
        if on_schedule is not None:
            on_schedule(t_start)
        for proc in workers:
            proc.stdin.write(f"{t_start!r}\n")
            proc.stdin.flush()  # communicate() closes it
        results = []
        for proc in workers:
            out, _ = proc.communicate(timeout=spec.duration_s + 600 + prefill_s)
            if proc.returncode != 0:
                raise RuntimeError(f"load generator worker failed with status {proc.returncode}")
            results.append(json.loads(out))
    finally:
        for proc in workers:
            if proc.poll() is None:
                proc.kill()
            proc.wait()
        if own_dir:
            shutil.rmtree(base, ignore_errors=True)
    return summarise(spec, results)


def _pct(a: np.ndarray, p: float) -> float:
    return round(float(np.percentile(a, p)), 1) if a.size else math.nan


def _pause_summary(per_worker: list[list[dict]]) -> dict:
    """Over every worker's windows: the longest gap between two reads of the replies
    with what filled it, the longest reply-handling pass, and the garbage collector's
    time (total, longest pause, full collections)."""
    windows = [w for ws in per_worker for w in ws]
    if not windows:
        return {}
    worst = max((w["gap"] for w in windows), key=lambda g: g["ms"])
    return {"worst_gap": worst, "read_max_ms": max(w["read_max_ms"] for w in windows),
            "gc_ms": round(sum(w["gc_ms"] for w in windows), 1), "gc_max_ms": max(w["gc_max_ms"] for w in windows),
            "gc_full": sum(w["gc_full"] for w in windows)}


def _lat_summary(lat: np.ndarray) -> dict:
    return {"n": int(lat.size), "median": _pct(lat, 50), "p99": _pct(lat, 99),
            "max": round(float(lat.max()), 1) if lat.size else math.nan}


def summarise(spec: LoadSpec, results: list[dict]) -> dict:
    n = min(len(r["per_second"]) for r in results)
    per_second = np.sum([r["per_second"][:n] for r in results], axis=0) if n else np.zeros(0)
    steady = per_second[int(spec.warmup_s):] if n > spec.warmup_s else per_second
    during = [np.asarray(r["latencies"]) for r in results]
    after = [np.asarray(r.get("latencies_after_drain", ())) for r in results]
    lat = np.concatenate(during + after) if results else np.zeros(0)
    drained = [d for r in results for d in r["drained_s"]]
    return {
        "towers": spec.towers, "rate_per_tower": spec.rate, "offered_records_per_s": spec.towers * spec.rate,
        "endpoints": len(spec.endpoints), "procs": len(results),
        "written_records": int(sum(r["written"] for r in results)),
        "acked_records": int(sum(r["acked"] for r in results)),
        "records_per_s_sustained": round(float(np.mean(steady)), 1) if steady.size else math.nan,
        "records_per_s_min_second": int(np.min(steady)) if steady.size else 0,
        "ack_latency_ms": _lat_summary(lat),
        "ack_latency_during_drain_ms": _lat_summary(np.concatenate(during)) if results else None,
        "ack_latency_after_drain_ms": _lat_summary(np.concatenate(after)) if results else None,
        "drained_at_s": [r.get("drained_at_s") for r in results],
        "backlog_towers": len(drained),
        "drain_s": {"all": None if any(d is None for d in drained) or not drained else round(max(drained), 1),
                    "median": round(float(np.median([d for d in drained if d is not None])), 1)
                    if any(d is not None for d in drained) else None,
                    "not_drained_towers": sum(1 for d in drained if d is None)},
        "backlog_left_records": int(sum(r["backlog_left"] for r in results)),
        "tick_ms_p99": round(max(r["tick_ms_p99"] for r in results), 1),
        "reply_gap_ms": {key: max(r["reply_gap_ms"][key] for r in results) for key in ("median", "p99", "max")},
        "slice_ms_p99": round(max(r["slice_ms_p99"] for r in results), 1),
        "live_msgs": int(sum(r["live_msgs"] for r in results)),
        "resent_msgs": int(sum(r["resent_msgs"] for r in results)),
        "replay_msgs": int(sum(r["replay_msgs"] for r in results)),
        "disconnects": int(sum(r["disconnects"] for r in results)),
        "errors_received": int(sum(r["errors_received"] for r in results)),
        "generator_pauses": _pause_summary([r.get("windows", []) for r in results]),
        "worker_windows": [r.get("windows", []) for r in results],
        "worker_t0_utc": [r.get("t0_utc") for r in results],
        "late_start_s": round(max(r.get("late_start_s", 0.0) for r in results), 3),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m towerd.central.loadgen",
                                     description="Emulate many towers (real outboxes and uplinks) against a central.")
    sub = parser.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("keys", help="make the central's and N towers' key pairs and the allow-list")
    p.add_argument("--dir", required=True)
    p.add_argument("--towers", type=int, default=500)
    p = sub.add_parser("run", help="run the load and print a JSON summary")
    p.add_argument("--dir", required=True, help="where `keys` put the keys")
    p.add_argument("--endpoint", action="append", required=True, help="central endpoint (repeat for several)")
    p.add_argument("--all-endpoints", action="store_true", help="every tower lists every endpoint (failover)")
    for name, typ, default, what in [
        ("towers", int, 500, "towers emulated"), ("rate", float, 20.0, "records per second per tower"),
        ("duration", float, 60.0, "seconds"), ("warmup", float, 5.0, "seconds left out of the sustained rate"),
        ("procs", int, 2, "worker processes"),
        ("commit-s", float, 0.2, "outbox commit period (one message per tower per commit), s"),
        ("burst-factor", float, 1.0, "rate multiplier during a burst"), ("burst-every-s", float, 20.0, ""),
        ("burst-s", float, 2.0, ""), ("outage-towers", int, 0, "towers losing the link"),
        ("outage-at", float, 0.0, "s"), ("outage-s", float, 0.0, "s"),
        ("backlog-towers", int, 0, "towers starting with a backlog"),
        ("backlog-s", float, 0.0, "seconds of records in that backlog"), ("seed", int, 1, ""),
        ("nice", int, 0, "added to the workers' nice value (emulated towers on the central's machine yield to it)")]:
        p.add_argument(f"--{name}", type=typ, default=default, help=what or None)
    p.add_argument("--outbox-dir", help="where the outboxes go (default: a new directory under /dev/shm)")
    p.add_argument("--plain", action="store_true", help="no CURVE (the central runs --plain)")
    p.add_argument("--stop-when-drained", action="store_true", help="end once every backlog is acknowledged")
    p.add_argument("--after-drain-s", type=float, default=0.0, help="with --stop-when-drained: run on this long "
                   "after (live latency after the drain, reported apart)")
    p.add_argument("--progress-s", type=float, default=0.0, help="print progress to stderr every this many "
                   "seconds (0: never)")
    p = sub.add_parser("worker", help=argparse.SUPPRESS)
    p.add_argument("job")
    args = parser.parse_args(argv)
    if args.cmd == "worker":
        job = json.loads(args.job)
        spec = LoadSpec(**{**job["spec"], "endpoints": tuple(job["spec"]["endpoints"])})
        if spec.nice:
            os.nice(spec.nice)
        def ready() -> float:
            print("ready", flush=True)
            return float(sys.stdin.readline())

        print(json.dumps(_worker(spec, job["indices"], ready)))
        return 0
    if args.cmd == "keys":
        paths = make_keys(Path(args.dir), args.towers)
        print(json.dumps({k: str(v) for k, v in paths.items()}))
        return 0
    spec = LoadSpec(directory=args.dir, endpoints=tuple(args.endpoint), towers=args.towers, rate=args.rate,
                    duration_s=args.duration, warmup_s=args.warmup, procs=args.procs,
                    all_endpoints=args.all_endpoints, commit_s=args.commit_s, burst_factor=args.burst_factor,
                    burst_every_s=args.burst_every_s, burst_s=args.burst_s, outage_towers=args.outage_towers,
                    outage_at_s=args.outage_at, outage_s=args.outage_s, backlog_towers=args.backlog_towers,
                    backlog_s=args.backlog_s, outbox_dir=args.outbox_dir, plain=args.plain, seed=args.seed,
                    stop_when_drained=args.stop_when_drained, after_drain_s=args.after_drain_s,
                    progress_s=args.progress_s, nice=args.nice)
    print(json.dumps(run(spec)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
