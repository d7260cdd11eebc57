"""Live reload (SIGHUP) of a real `towerd run`: an invalid file is rejected and the old
configuration kept; a valid one takes effect without losing tracks or queued reports,
and only the sensors whose device settings changed are reopened."""

from __future__ import annotations

import json
import signal
import sqlite3
import subprocess
import time

import numpy as np

from processes import Child
from towerd.demo import demo_config
from towerd.sim.pty import PtyPair
from towerd.sim.scenario import builtin_scenario
from towerd.sim.ti_mmwave import TiMmwaveEmulator


def central_rows(db, sql, args=()):
    if not db.exists():
        return []
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=1.0)
    try:
        return conn.execute(sql, args).fetchall()
    except sqlite3.OperationalError:
        return []
    finally:
        conn.close()


def wait_until(predicate, timeout_s: float, what: str, log=lambda: ""):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.1)  # polling another process's files: no event to wait on
    raise AssertionError(f"timed out waiting for {what}\n{log()}")


def status(towerd_exe, sock) -> dict:
    res = subprocess.run([towerd_exe, "status", "--socket", sock, "--json"], capture_output=True, text=True, timeout=30)
    return json.loads(res.stdout) if res.stdout.strip() else {}


def test_sighup_reload_rejects_bad_files_and_applies_good_ones(towerd_exe, tmp_path, central):
    scenario = builtin_scenario("demo")
    ptys = [PtyPair.open(), PtyPair.open()]
    emulators = [TiMmwaveEmulator(scenario, boresight_azimuth_deg=0.0, position_enu_m=(0.0, 0.0, 10.0),
                                  frame_rate_hz=10.0, rng=np.random.default_rng(i)) for i in range(2)]
    cfg = tmp_path / "towerd.yaml"
    base = demo_config(ptys[0].path, central.endpoint, tmp_path / "state")
    cfg.write_text(base)
    sock = str(tmp_path / "state" / "status.sock")
    daemon = Child([towerd_exe, "run", "--config", str(cfg)], tmp_path / "daemon.log")
    for emulator, pty in zip(emulators, ptys):
        emulator.start(pty)
    db = central.db_path
    try:
        wait_until(lambda: central_rows(db, "SELECT 1 FROM tracks WHERE status = 1"), 30, "first tracks", daemon.log)
        before = status(towerd_exe, sock)
        digest_before = before["config_digest"]

        # 1. A typo: rejected, the daemon keeps running on the old configuration.
        cfg.write_text(base.replace("    plain: true", "    plain: true\n    plian: true"))
        daemon.proc.send_signal(signal.SIGHUP)
        rejected = wait_until(lambda: central_rows(db, "SELECT json FROM events WHERE code = 'config.rejected'"),
                              20, "config.rejected", daemon.log)
        event = json.loads(rejected[0][0])
        assert any("plian: unknown key, did you mean 'plain'?" in p for p in event["problems"]), event
        assert event["config_digest"] == digest_before
        assert daemon.proc.poll() is None
        assert status(towerd_exe, sock)["config_digest"] == digest_before

        # 2. A restart-only change is rejected too, and says so.
        cfg.write_text(base.replace("id: tx-demo-001", "id: tx-demo-002"))
        daemon.proc.send_signal(signal.SIGHUP)
        wait_until(lambda: len(central_rows(db, "SELECT 1 FROM events WHERE code = 'config.rejected'")) == 2,
                   20, "second config.rejected", daemon.log)
        assert "takes a restart" in daemon.log()

        # 3. A valid change: faster reports and the radar moved to another port.
        ids_before = {tid for (tid,) in central_rows(db, "SELECT DISTINCT track_id FROM tracks WHERE status = 1")}
        seq_before = central_rows(db, "SELECT MAX(seq) FROM tracks")[0][0]
        new = (base.replace(ptys[0].path, ptys[1].path)
               + "reports:\n  interval_s: 0.25\n")
        cfg.write_text(new)
        daemon.proc.send_signal(signal.SIGHUP)
        reloaded = wait_until(lambda: central_rows(db, "SELECT json FROM events WHERE code = 'config.reloaded'"),
                              20, "config.reloaded", daemon.log)
        digest_after = json.loads(reloaded[0][0])["config_digest"]
        assert digest_after != digest_before
        assert wait_until(lambda: status(towerd_exe, sock).get("config_digest") == digest_after, 10, "new digest")
        assert status(towerd_exe, sock)["sensors"]["radar0"]["port"] == ptys[1].path

        # Tracks survived the reload (same ids continue), and reports now come 4x as often.
        def continued():
            rows = central_rows(db, "SELECT track_id, time_us FROM tracks WHERE seq > ? AND status = 1", (seq_before,))
            ids = {tid for tid, _ in rows}
            return rows if ids & ids_before and len(rows) >= 20 else None

        rows = wait_until(continued, 30, "reports after the reload", daemon.log)
        per_track: dict[int, list[int]] = {}
        for tid, t_us in rows:
            per_track.setdefault(tid, []).append(t_us)
        gaps = [np.diff(sorted(ts)).mean() / 1e6 for ts in per_track.values() if len(ts) >= 4]
        assert gaps and np.median(gaps) < 0.5, gaps
        assert "sensor radar0: settings changed, reopening" in daemon.log()
    finally:
        code = daemon.stop()
        for emulator in emulators:
            emulator.stop()
        for pty in ptys:
            pty.close()
    assert code == 0, daemon.log()
