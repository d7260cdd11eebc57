"""The load generator (python -m towerd.central.loadgen) against a real central with the
SQLite store: its towers' records arrive exactly once, and it reports how long replies
could wait in its own loop."""
from __future__ import annotations

import sqlite3
import threading

from towerd.central import loadgen
from towerd.central.server import CentralServer


def test_towers_deliver_once_and_the_generator_reports_its_reply_gaps(tmp_path):
    paths = loadgen.make_keys(tmp_path, 4)
    db = tmp_path / "central.sqlite"
    server = CentralServer("tcp://127.0.0.1:*", db, server_secret_key_file=paths["central_secret"],
                           allow_dir=paths["allow"])
    stop = threading.Event()
    thread = threading.Thread(target=server.serve_forever, args=(stop,), name="central")
    thread.start()
    try:
        spec = loadgen.LoadSpec(directory=str(tmp_path), endpoints=(server.bound_endpoint,), towers=4, rate=40.0,
                                duration_s=2.0, warmup_s=0.5, procs=1, commit_s=0.05,
                                outbox_dir=str(tmp_path / "outboxes"))
        result = loadgen.run(spec)
    finally:
        stop.set()
        thread.join(10)
        server.close()
    assert result["errors_received"] == 0 and result["resent_msgs"] == 0
    assert result["ack_latency_ms"]["n"] > 100 and result["live_msgs"] > 50
    gaps = result["reply_gap_ms"]
    assert 0 < gaps["median"] <= gaps["p99"] <= gaps["max"] + 0.1 and result["tick_ms_p99"] == gaps["p99"]
    assert result["slice_ms_p99"] > 0
    # Per second and per worker: what was acknowledged, and where the worker's pauses went.
    (windows,) = result["worker_windows"]
    assert len(windows) >= 1 and sum(w["acked"] for w in windows) <= result["acked_records"]
    assert sum(w["n"] for w in windows) <= result["ack_latency_ms"]["n"]
    for w in windows:
        gap = w["gap"]
        assert gap["ms"] >= 0 and gap["cpu_ms"] >= 0 and w["read_max_ms"] >= 0 and w["gc_ms"] >= w["gc_max_ms"] >= 0
        assert abs(sum(gap[k] for k in ("gc", "write", "send", "pace", "mark", "unbooked")) - gap["ms"]) < 0.1
    pauses = result["generator_pauses"]
    assert pauses["worst_gap"]["ms"] == max(w["gap"]["ms"] for w in windows)
    with sqlite3.connect(db) as conn:
        rows = conn.execute("SELECT tower_id, count(*), count(DISTINCT seq), min(seq), max(seq) FROM tracks "
                            "GROUP BY tower_id ORDER BY 1").fetchall()
    assert [r[0] for r in rows] == [loadgen.tower_id(i) for i in range(4)]
    for tower_id, n, distinct, first, last in rows:
        assert n == distinct == last and first == 1, tower_id  # every seq once, none missing
    # At the stop some records may be stored whose ACK the towers had not yet seen, or not yet sent.
    assert result["acked_records"] <= sum(r[1] for r in rows) <= result["written_records"]
