"""Central with PostgreSQL: many towers coming back at once after a long outage, each
replaying its backlog (REPLAY, paced at the uplink's default replay_rate_rps) while the
others keep reporting live. Same set-up as the section above (load generator, real
centrals, durable throwaway cluster); the backlogs are written into the towers' outboxes
before the start, time-stamped over the outage, as the daemon would have kept them.

The run lasts until every backlog record is acknowledged (at most 20 minutes; a backlog
not drained by then is reported as not drained, with the rate reached), then 30 s more
(5 s in quick mode) with live load only. Time to drain: from the towers' reconnect to the
ACK of the last backlog record. Live ACK latency is given apart during the drain and
after it (each load generator process splits at the moment its own towers' backlogs are
all acknowledged). Progress is printed to stderr every 30 s (per load generator process).
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from benchmarks.central_pg import SETTINGS, _base, _scenario, _span, load_text, settings_text, split_text
from benchmarks.common import Figure, Section
from towerd.central.pgtemp import PgCluster, find_bindir
from towerd.uplink.client import CentralSettings


def _lat(lat: dict | None) -> str:
    if not lat or not lat["n"]:
        return "none measured"
    return f"median {lat['median']} ms, p99 {lat['p99']} ms, max {lat['max']} ms over {lat['n']:,} records"


def run(quick: bool) -> Section:
    bindir = find_bindir()
    if bindir is None:
        return Section("Central with PostgreSQL: backlog after an outage", [],
                       "PostgreSQL server not installed: not measured.")
    load_before = os.getloadavg()
    base = _base(quick)
    towers = base["towers"]
    backlog_towers = 20 if quick else 100
    backlog_s = 60.0 if quick else float(os.environ.get("TOWERD_BENCH_BACKLOG_S", 3600))
    cap_s = 60.0 if quick else float(os.environ.get("TOWERD_BENCH_DRAIN_CAP_S", 1200))
    after_s = 5.0 if quick else 30.0
    replay_rps = CentralSettings(name="x", endpoint="tcp://x:1", plain=True).replay_rate_rps
    cluster = PgCluster(bindir, durable=True, settings=SETTINGS)
    with tempfile.TemporaryDirectory(prefix="towerd-bench-backlog-") as tmp:
        try:
            cluster.start()
            back = _scenario(cluster, Path(tmp), "backlog", 1,
                             {**base, "duration_s": cap_s + after_s, "backlog_towers": backlog_towers,
                              "backlog_s": backlog_s, "stop_when_drained": True, "after_drain_s": after_s,
                              "progress_s": 30.0})
        finally:
            cluster.remove()
    total = int(backlog_towers * backlog_s * base["rate"])
    left = back["backlog_left_records"]
    drained = back["drain_s"]["all"]
    if drained is not None and drained <= cap_s:
        value = drained
        how = (f"every backlog record acknowledged: {total / drained:,.0f} backlog records/s on average "
               f"(median tower drained in {back['drain_s']['median']} s)")
    else:
        rate = (total - left) / (cap_s + after_s)  # how long the towers ran
        value = float("nan")
        how = (f"NOT drained within the {cap_s:.0f} s cap: {total - left:,} of {total:,} backlog records "
               f"acknowledged ({rate:,.0f}/s; at that rate all in {total / rate:,.0f} s)" if rate
               else "nothing drained")
    during, after = back["ack_latency_during_drain_ms"], back["ack_latency_after_drain_ms"]
    cpu = back.get("cpu_us_per_record", {})
    fig = Figure(
        f"{backlog_towers} towers back at once after a {_span(backlog_s)} outage ({total:,} records held), "
        f"all {towers} reporting live: time to drain", value, "s",
        reference=how + f"; replay_rate_rps {replay_rps:.0f} per tower (the uplink default) would allow "
                        f"{backlog_towers * replay_rps:,.0f}/s",
        note=f"live ACK latency (all towers' live records) during the drain: {_lat(during)}; in the {after_s:g} s "
             f"after it: {_lat(after)}; {back['records_per_s_sustained']:,.0f} records/s acknowledged on average "
             f"(live and backlog); the central's own part of the ACK latency (every message of the run, live and "
             f"backlog; median / p99 ms): {split_text(back.get('central_split', []))}; "
             f"{back['resent_msgs']} messages re-sent after an ACK timeout; "
             f"CPU: central {back['central_cpu']}, PostgreSQL {back['db_cpu']}, load generator {back['gen_cpu']} "
             f"cores; per record acknowledged: central {cpu.get('central')} µs, PostgreSQL "
             f"{cpu.get('db')} µs, load generator {cpu.get('gen')} µs")
    return Section("Central with PostgreSQL: backlog after an outage", [fig],
                   __doc__.strip() + "\n\n" + settings_text(bindir) + load_text(load_before))
