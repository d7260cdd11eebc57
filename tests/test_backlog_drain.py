"""The load generator's drain measurement (what benchmarks/central_pg_backlog.py reads)
against a real CURVE central with the SQLite store: it runs on after the towers' backlogs
are acknowledged, reports the live latency after that moment apart from the latency
during the drain, and prints its progress while it runs."""
from __future__ import annotations

import sqlite3
import threading

from towerd.central import loadgen
from towerd.central.server import CentralServer


def test_the_run_goes_on_after_the_drain_and_reports_live_latency_during_and_after_it(tmp_path, capfd):
    paths = loadgen.make_keys(tmp_path, 4)
    db = tmp_path / "central.sqlite"
    server = CentralServer("tcp://127.0.0.1:*", db, server_secret_key_file=paths["central_secret"],
                           allow_dir=paths["allow"])
    stop = threading.Event()
    thread = threading.Thread(target=server.serve_forever, args=(stop,), name="central")
    thread.start()
    try:
        spec = loadgen.LoadSpec(directory=str(tmp_path), endpoints=(server.bound_endpoint,), towers=4, rate=40.0,
                                duration_s=30.0, warmup_s=0.5, procs=1, commit_s=0.05, backlog_towers=2,
                                backlog_s=30.0, outbox_dir=str(tmp_path / "outboxes"), stop_when_drained=True,
                                after_drain_s=1.0, progress_s=0.2)
        result = loadgen.run(spec)
    finally:
        stop.set()
        thread.join(10)
        server.close()
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
