"""The load generator's drain measurement (what benchmarks/central_pg_backlog.py reads)
against a real CURVE `towerd central` process with the SQLite store: it runs on after
the towers' backlogs are acknowledged, reports the live latency after that moment apart
from the latency during the drain, and prints its progress while it runs."""
from __future__ import annotations

import sqlite3

from processes import Child, free_tcp_port, wait_listening
from towerd.central import loadgen


def test_the_run_goes_on_after_the_drain_and_reports_live_latency_during_and_after_it(towerd_exe, tmp_path, capfd):
    paths = loadgen.make_keys(tmp_path, 4)
    db = tmp_path / "central.sqlite"
    endpoint = f"tcp://127.0.0.1:{free_tcp_port()}"
    central = Child([towerd_exe, "central", "--bind", endpoint, "--db", str(db), "--secret-key",
                     str(paths["central_secret"]), "--allow-dir", str(paths["allow"])], tmp_path / "central.log")
    try:
        wait_listening(endpoint, central)
        result = loadgen.run(loadgen.LoadSpec(
            directory=str(tmp_path), endpoints=(endpoint,), towers=4, rate=40.0, duration_s=30.0, warmup_s=0.5,
            procs=1, commit_s=0.05, backlog_towers=2, backlog_s=30.0, outbox_dir=str(tmp_path / "outboxes"),
            stop_when_drained=True, after_drain_s=1.0, progress_s=0.2))
    finally:
        central.stop()
    assert result["backlog_left_records"] == 0 and result["drain_s"]["not_drained_towers"] == 0
    (drained_at,) = result["drained_at_s"]
    assert drained_at is not None and result["drain_s"]["all"] <= drained_at + 0.5
    during, after, both = (result[k] for k in ("ack_latency_during_drain_ms", "ack_latency_after_drain_ms",
                                               "ack_latency_ms"))
    assert after["n"] > 50  # 1 s of 4 towers x 40 records/s after the drain
    assert during["n"] + after["n"] == both["n"] and both["max"] == max(during["max"] if during["n"] else 0,
                                                                          after["max"])
    err = capfd.readouterr().err
    assert "every backlog acknowledged (2,400 records)" in err, err
    assert "backlog left" in err and "live ACK latency" in err, err
    with sqlite3.connect(db) as conn:
        rows = conn.execute("SELECT tower_id, count(*), count(DISTINCT seq), min(seq), max(seq) FROM tracks "
                            "GROUP BY tower_id ORDER BY 1").fetchall()
    for tower_id, n, distinct, first, last in rows:
        assert n == distinct == last and first == 1, tower_id  # every seq once, none missing
