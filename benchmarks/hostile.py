"""Hostile input: what refusing malformed traffic costs the central, beside the genuine
tower's latency.

A real `towerd central --plain` process (plain: the cost of decoding and refusing, not of
CURVE) receives a genuine tower (a real outbox and UplinkClient in this process, 200
records/s in messages of 5, the daemon's 20 ms commit interval) and, from another
connection, a mix of malformed messages at a stated rate: EVENTS nested 1,000 deep, a
lone surrogate, an event time_us of 1e30, TRACKS whose seqs wrap past 2^64, a wrong
magic, NUL in a string; each is refused, counted and answered with ERROR. Figures: the
central's CPU (utime + stime from /proc, % of one core) over each window, its peak
memory, and the genuine records' latency from creation to stored at the central.
"""

from __future__ import annotations

import json
import os
import socket
import sqlite3
import statistics
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import zmq

from benchmarks.common import Figure, Section
from towerd import icd
from towerd.clock import SystemClock
from towerd.outbox.sqlite import Outbox
from towerd.uplink.client import CentralSettings, UplinkClient

GENUINE_RPS = 200.0
RATES = (0.0, 1_000.0, 3_000.0)
"""Malformed messages per second in each window (0: the genuine tower alone)."""
TOWER = "tx-bench-genuine"


def _malformed() -> list[bytes]:
    def hdr(mtype: int, count: int = 0, magic: bytes = b"TW") -> bytes:
        return struct.pack("<2sBBQHH", magic, 1, mtype, 0xBAD1, count, 0)

    ev = {"seq": 1, "time_us": 1, "code": "x", "severity": "info", "message": "m"}
    rec = icd.empty_track_records(2)
    rec["seq"] = [2**64 - 1, 0]
    return [
        hdr(2, 1) + b"[" * 1000 + b"]" * 1000,
        hdr(2, 1) + json.dumps([{**ev, "message": "\ud800"}]).encode(),
        hdr(2, 1) + json.dumps([{**ev, "time_us": 10**30}]).encode(),
        hdr(1, 2) + rec.tobytes(),
        hdr(1, 1, magic=b"XX") + icd.empty_track_records(1).tobytes(),
        hdr(2, 1) + json.dumps([{**ev, "code": "a\x00"}]).encode(),
    ]


def _cpu_s(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as fh:
        fields = fh.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _window(pid: int, box: Outbox, uplink: UplinkClient, flood: zmq.Socket, rate: float,
            seconds: float, clock: SystemClock) -> tuple[float, int]:
    """Run one window; returns (central CPU % of a core, malformed messages sent)."""
    cases = _malformed()
    cpu0, t0 = _cpu_s(pid), time.monotonic()
    next_batch = next_bad = t0
    last_commit = t0
    sent = 0
    while (now := time.monotonic()) - t0 < seconds:
        if now >= next_batch:
            rec = icd.empty_track_records(5)
            rec["time_us"] = clock.utc_us()
            box.add_tracks(rec)
            next_batch += 5 / GENUINE_RPS
        if box.uncommitted and now - last_commit >= 0.02:
            box.commit()
            last_commit = now
        while rate and now >= next_bad:
            try:
                flood.send(cases[sent % len(cases)], zmq.NOBLOCK)
                sent += 1
            except zmq.Again:
                pass
            next_bad += 1.0 / rate
        while flood.poll(0):
            flood.recv()
        uplink.poll(1)
    return 100.0 * (_cpu_s(pid) - cpu0) / (time.monotonic() - t0), sent


def run(quick: bool) -> Section:
    seconds = 3.0 if quick else 10.0
    runs = 1 if quick else 3
    clock = SystemClock()
    load = os.getloadavg()
    results: dict[float, list[tuple[float, int]]] = {r: [] for r in RATES}
    latencies: dict[float, list[float]] = {r: [] for r in RATES}
    with tempfile.TemporaryDirectory(prefix="towerd-bench-hostile-") as tmp:
        endpoint = f"tcp://127.0.0.1:{_free_port()}"
        db = Path(tmp) / "central.sqlite"
        log = open(Path(tmp) / "central.log", "wb")
        exe = Path(sys.executable).with_name("towerd")
        central = subprocess.Popen([str(exe), "central", "--bind", endpoint, "--db", str(db), "--plain",
                                    "--log-level", "WARNING"], stdout=log, stderr=subprocess.STDOUT)
        ctx = zmq.Context()
        box = Outbox(Path(tmp) / "outbox.sqlite", clock=clock)
        uplink = UplinkClient(TOWER, CentralSettings(name="hq", endpoint=endpoint, plain=True), box, clock=clock,
                              health=box.health)
        flood = ctx.socket(zmq.DEALER)
        flood.linger = 0
        flood.routing_id = b"tx-bench-hostile"
        flood.connect(endpoint)
        try:
            deadline = time.monotonic() + 30
            while not db.exists() and time.monotonic() < deadline:
                uplink.poll(50)
            _window(central.pid, box, uplink, flood, 0.0, 1.0, clock)   # warm-up
            for _ in range(runs):
                for rate in RATES:
                    start_us = clock.utc_us()
                    results[rate].append(_window(central.pid, box, uplink, flood, rate, seconds, clock))
                    settle = time.monotonic() + 2.0
                    while box.pending_count() and time.monotonic() < settle:
                        uplink.poll(10)
                    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
                    latencies[rate] += [(rx - t) / 1000.0 for rx, t in conn.execute(
                        "SELECT received_us, time_us FROM tracks WHERE tower_id = ? AND time_us >= ?",
                        (TOWER, start_us))]
                    conn.close()
            peak = _peak_rss_mb(central.pid)
        finally:
            uplink.close()
            box.close()
            flood.close(0)
            ctx.term()
            central.terminate()
            central.wait(20)
            log.close()
    figures = []
    alone = statistics.median(c for c, _ in results[0.0])
    for rate in RATES:
        cpus = sorted(c for c, _ in results[rate])
        sent = sum(n for _, n in results[rate]) / (seconds * runs)
        lat = np.array(latencies[rate])
        what = "genuine tower alone" if rate == 0 else f"malformed messages at {rate:,.0f}/s (sent {sent:,.0f}/s)"
        cost = "" if rate == 0 else (f"; {(statistics.median(cpus) - alone) / 100 / sent * 1e6:.0f} µs of central "
                                     "CPU per refused message")
        figures.append(Figure(
            f"central CPU, {what}", statistics.median(cpus), "% of a core", (cpus[0], cpus[-1]),
            reference=f"genuine tower ({GENUINE_RPS:.0f} records/s): latency creation->stored median "
                      f"{np.median(lat):.1f} ms, p99 {np.percentile(lat, 99):.1f} ms, max {lat.max():.1f} ms "
                      f"({lat.size:,} records){cost}"))
    figures[-1].note = (f"central peak RSS over all windows {peak:.0f} MB; load average at the start "
                        f"{load[0]:.1f} (the 2 cores were shared with other work: latency tails include it)")
    return Section("Hostile input: the central's cost of refusing malformed traffic", figures,
                   __doc__.split("\n\n", 1)[1].strip())
