"""Outbox: durable records per second, and how fast a one-hour backlog drains while live
reports continue (with their latency beside it).

Both use the measuring code that also ships for a tower's own storage
(``python -m towerd.outbox.bench``, ``python -m towerd.uplink.bench``): the figures here
are this machine's disk, not an SD card's.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from benchmarks.common import Figure, Section
from towerd.outbox.bench import append_rate
from towerd.uplink import bench as uplink_bench
from towerd.uplink.client import CentralSettings

LIVE_RPS = 50.0  # a busy tower: 20 live tracks reported at 1 Hz plus status changes, rounded up


def run(quick: bool) -> Section:
    figures = []
    seconds = 1.0 if quick else 5.0
    runs = 2 if quick else 3
    with tempfile.TemporaryDirectory(prefix="towerd-bench-outbox-") as tmp:
        path = Path(tmp) / "outbox.sqlite"
        for mode in ("full", "normal"):
            rates = [append_rate(path, mode, seconds, batch=20, commit_every_s=0.05) for _ in range(runs)]
            values = sorted(r["records_per_s"] for r in rates)
            med = values[len(values) // 2]
            p99 = max(r["commit_ms_p99"] for r in rates)
            single = append_rate(path, mode, seconds, batch=1, commit_every_s=None)
            figures.append(Figure(
                f"durable appends, synchronous={mode}, daemon batching (commit every 50 ms)", med, "records/s",
                (values[0], values[-1]),
                reference=f"one commit per record: {single['records_per_s']:,} records/s; commit p99 {p99:.2f} ms",
                note=f"{rates[0]['bytes_per_record']:.0f} bytes of file per held record"))
        hours = 0.05 if quick else 1.0
        replay_rps = CentralSettings(name="x", endpoint="tcp://x:1", plain=True).replay_rate_rps  # the default
        result = uplink_bench.run(Path(tmp) / "drain", backlog_hours=hours, rate=LIVE_RPS, replay_rps=replay_rps,
                                  tail_s=1.0 if quick else 10.0)
    during, after = result["live_latency_ms_during_replay"], result["live_latency_ms_after"]
    label = "one-hour" if hours == 1.0 else f"{hours * 60:.0f}-minute"
    figures.append(Figure(
        f"drain of a {label} backlog ({result['backlog_records']:,} records) at replay_rate_rps {replay_rps:.0f}",
        result["drain_s"], "s",
        reference=f"goal < 120 s for one hour; {result['drain_records_per_s']:,} records/s while {LIVE_RPS:.0f} "
                  f"live records/s continue",
        note=f"live latency commit->ACK during the drain median {during['median']} ms, p99 {during['p99']} ms; "
             f"after it median {after['median']} ms, p99 {after['p99']} ms. replay_rate_rps bounds the drain: "
             f"{result['backlog_records']:,} / {replay_rps:.0f} = {result['backlog_records'] / replay_rps:.0f} s"))
    records = result["backlog_records"] + LIVE_RPS * result["drain_s"]
    figures.append(Figure(
        "CPU per record while draining the backlog: tower process (outbox read, message build, send)",
        round(result["tower_cpu_s"] / records * 1e6, 1), "us/record",
        reference=f"central process (decode, store, ACK): {result['central_cpu_s'] / records * 1e6:.1f} us/record",
        note=f"process CPU seconds over the drain ({result['tower_cpu_s']} s tower, {result['central_cpu_s']} s "
             f"central, {records:,.0f} records), which holds under load better than wall time; the tower's "
             "includes its loop polling the uplink every millisecond"))
    return Section("Outbox and backlog", figures, __doc__.split("\n\n", 1)[1].strip())
