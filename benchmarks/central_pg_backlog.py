"""Central with PostgreSQL: many towers coming back at once after a long outage, each
replaying its backlog (REPLAY, paced at the uplink's default replay_rate_rps) while the
others keep reporting live. Same set-up as the section above (load generator, real
centrals, durable throwaway cluster); the backlogs are written into the towers' outboxes
before the start, time-stamped over the outage, as the daemon would have kept them.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from benchmarks.central_pg import SETTINGS, _base, _scenario, _span, load_text, settings_text
from benchmarks.common import Figure, Section
from towerd.central.pgtemp import PgCluster, find_bindir
from towerd.uplink.client import CentralSettings


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
    cap_s = 60.0 if quick else float(os.environ.get("TOWERD_BENCH_DRAIN_CAP_S", 170))
    replay_rps = CentralSettings(name="x", endpoint="tcp://x:1", plain=True).replay_rate_rps
    cluster = PgCluster(bindir, durable=True, settings=SETTINGS)
    with tempfile.TemporaryDirectory(prefix="towerd-bench-backlog-") as tmp:
        try:
            cluster.start()
            back = _scenario(cluster, Path(tmp), "backlog", 1,
                             {**base, "duration_s": cap_s, "backlog_towers": backlog_towers,
                              "backlog_s": backlog_s, "stop_when_drained": True})
        finally:
            cluster.remove()
    total = int(backlog_towers * backlog_s * base["rate"])
    left = back["backlog_left_records"]
    drained = back["drain_s"]["all"]
    lat = back["ack_latency_ms"]
    if drained is not None:
        value, how = drained, "every backlog acknowledged"
    else:
        rate = (total - left) / cap_s
        value = float("nan")
        how = (f"NOT drained within the {cap_s:.0f} s run: {total - left:,} of {total:,} backlog records "
               f"acknowledged ({rate:,.0f}/s; at that rate all in {total / rate:,.0f} s)" if rate
               else "nothing drained")
    fig = Figure(
        f"{backlog_towers} towers back at once after a {_span(backlog_s)} outage ({total:,} records held), "
        f"{towers - backlog_towers} others live: time to drain", value, "s",
        reference=how + f"; replay_rate_rps {replay_rps:.0f} per tower (the uplink default)",
        note=f"live ACK latency meanwhile (all towers' live records) median {lat['median']} ms, p99 {lat['p99']} "
             f"ms, max {lat['max']} ms; {back['records_per_s_sustained']:,.0f} records/s acknowledged on average; "
             f"CPU: central {back['central_cpu']}, PostgreSQL {back['db_cpu']}, load generator {back['gen_cpu']} "
             f"cores; per record acknowledged: central {back['cpu_us_per_record']['central']} µs, PostgreSQL "
             f"{back['cpu_us_per_record']['db']} µs, load generator {back['cpu_us_per_record']['gen']} µs")
    return Section("Central with PostgreSQL: backlog after an outage", [fig],
                   __doc__.strip() + "\n\n" + settings_text(bindir) + load_text(load_before))
