"""Measure how fast a backlog drains while live reports keep their latency.

    python -m towerd.uplink.bench --dir DIR [--backlog-hours 1] [--rate 50] [--replay-rps 1000]

Builds an outbox holding ``backlog-hours`` of records at ``rate`` records per second (as
after an outage of that length), starts a real ``towerd central`` (CURVE, keys made in
DIR) on loopback, then runs a tower loop like the daemon's: live records at ``rate``
(in batches at 10 Hz), a commit every 50 ms, the uplink polled in between. It reports the
time to replay the backlog, the replay rate achieved, the CPU time the tower process and
the central process used during it, and the latency of live records
(commit to ACK: the time a live record spends in the tower and on the link, the central's
durable store included) during the replay and after it.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import time
from collections import deque
from pathlib import Path

from towerd import keys
from towerd.clock import SystemClock
from towerd.icd import empty_track_records
from towerd.outbox.sqlite import Outbox
from towerd.uplink.client import CentralSettings, UplinkClient


def _records(n: int, t_us: int):
    rec = empty_track_records(n)
    rec["time_us"] = t_us
    rec["lat_e7"] = 294_000_000
    rec["lon_e7"] = -985_000_000
    rec["range_m"] = 800.0
    return rec


def _pct(xs: list[float], p: float) -> float:
    s = sorted(xs)
    return round(s[min(len(s) - 1, int(p * len(s)))], 2) if s else float("nan")


def run(directory: Path, backlog_hours: float, rate: float, replay_rps: float, tail_s: float) -> dict:
    directory.mkdir(parents=True, exist_ok=True)
    for name in ("bench-outbox.sqlite", "bench-central.sqlite"):
        for suffix in ("", "-wal", "-shm"):
            p = directory / (name + suffix)
            if p.exists():
                p.unlink()
    clock = SystemClock()
    central_keys = keys.generate_keypair(directory / "keys", "central", force=True)
    tower_keys = keys.generate_keypair(directory / "keys", "tower", force=True)
    keys.allow_tower("tx-bench", tower_keys.public_file, directory / "keys" / "allow", force=True)
    box = Outbox(directory / "bench-outbox.sqlite", clock=clock, max_records=100_000_000, max_bytes=2**40)
    backlog = int(backlog_hours * 3600 * rate)
    t_build = time.perf_counter()
    for start in range(0, backlog, 5000):
        box.add_tracks(_records(min(5000, backlog - start), clock.utc_us()))
        box.commit()
    build_s = time.perf_counter() - t_build
    log_path = directory / "bench-central.log"
    with open(log_path, "wb") as fh:
        central = subprocess.Popen(
            [sys.executable, "-m", "towerd.central.server", "--bind", "tcp://127.0.0.1:*", "--db",
             str(directory / "bench-central.sqlite"), "--secret-key", str(central_keys.secret_file),
             "--allow-dir", str(directory / "keys" / "allow"), "--log-level", "INFO"],
            stdout=fh, stderr=subprocess.STDOUT)
    try:
        endpoint = _wait_endpoint(central, log_path)
        settings = CentralSettings("bench", endpoint, server_public_key_file=str(central_keys.public_file),
                                   client_secret_key_file=str(tower_keys.secret_file), replay_rate_rps=replay_rps)
        client = UplinkClient("tx-bench", settings, box, clock=clock)
        live: deque[tuple[int, int, float]] = deque()  # (first, last, commit time)
        lat_during: list[float] = []
        lat_after: list[float] = []
        per_batch = max(1, round(rate / 10))
        next_batch = time.monotonic()
        last_commit = time.monotonic()
        t0 = time.monotonic()
        cpu0, central_cpu0 = time.process_time(), _process_cpu_s(central.pid)
        drained_at = None
        pending_commit: list[tuple[int, int]] = []
        while True:
            now = time.monotonic()
            if now >= next_batch:
                pending_commit.append(box.add_tracks(_records(per_batch, clock.utc_us())))
                next_batch += 0.1
            if box.uncommitted and now - last_commit >= 0.05:
                box.commit()
                last_commit = time.monotonic()
                live.extend((f, la, last_commit) for f, la in pending_commit)
                pending_commit.clear()
            client.poll(1)
            while live:
                first, last, t_commit = live[0]
                rows = box.pending(first - 1, 1)
                if rows and rows[0][0] <= last:
                    break
                live.popleft()
                (lat_after if drained_at is not None else lat_during).append((time.monotonic() - t_commit) * 1000)
            if drained_at is None and client.link_up and not client.replaying and \
                    client.stats["acked_records"] >= backlog:
                drained_at = time.monotonic()
                tower_cpu_s = time.process_time() - cpu0
                central_cpu_s = _process_cpu_s(central.pid) - central_cpu0
            if drained_at is not None and time.monotonic() - drained_at >= tail_s:
                break
            if time.monotonic() - t0 > 3600:
                raise RuntimeError("backlog not drained within an hour")
        stats = client.stats
        client.close()
    finally:
        central.terminate()
        central.wait(30)
        box.close()
    drain_s = drained_at - t0
    return {
        "backlog_records": backlog, "build_s": round(build_s, 1), "replay_rate_rps_setting": replay_rps,
        "drain_s": round(drain_s, 1), "drain_records_per_s": round(backlog / drain_s),
        "live_rate_rps": rate, "live_latency_ms_during_replay": {"n": len(lat_during), "median": _pct(lat_during, 0.5),
                                                                  "p99": _pct(lat_during, 0.99),
                                                                  "max": round(max(lat_during, default=0), 2)},
        "live_latency_ms_after": {"n": len(lat_after), "median": _pct(lat_after, 0.5), "p99": _pct(lat_after, 0.99),
                                  "max": round(max(lat_after, default=0), 2)},
        "tower_cpu_s": round(tower_cpu_s, 2), "central_cpu_s": round(central_cpu_s, 2),
        "uplink": {k: stats[k] for k in ("replay_msgs", "replay_records", "live_msgs", "resent_msgs", "connects")},
        "latency_median_ratio": round(statistics.median(lat_during) / statistics.median(lat_after), 2)
        if lat_during and lat_after else None,
    }


def _process_cpu_s(pid: int) -> float:
    """CPU seconds (user + system) process ``pid`` has used so far (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _wait_endpoint(proc: subprocess.Popen, log_path: Path) -> str:
    """The endpoint the central process says it listens on."""
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"central exited: {log_path.read_text()}")
        m = re.search(r"listening on (tcp://127\.0\.0\.1:\d+)", log_path.read_text(errors="replace"))
        if m:
            return m.group(1)
        time.sleep(0.05)
    raise RuntimeError("central did not start listening")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m towerd.uplink.bench", description=__doc__.split("\n\n")[0])
    parser.add_argument("--dir", required=True, help="scratch directory")
    parser.add_argument("--backlog-hours", type=float, default=1.0)
    parser.add_argument("--rate", type=float, default=50.0, help="records per second, live and in the backlog")
    parser.add_argument("--replay-rps", type=float, default=1000.0, help="replay_rate_rps of the central settings")
    parser.add_argument("--tail-s", type=float, default=5.0, help="seconds of live traffic measured after the drain")
    args = parser.parse_args(argv)
    print(json.dumps(run(Path(args.dir), args.backlog_hours, args.rate, args.replay_rps, args.tail_s)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
