"""The walking skeleton end to end, with real processes: the TI emulator writes frames
into a pty; `towerd run` reads them with pyserial, tracks, and sends ICD v1 over ZeroMQ
to `towerd central`, which stores them in SQLite. Tracks are checked against truth."""

from __future__ import annotations

import socket
import sqlite3
import re
import subprocess
import sys
import time

import numpy as np
import pytest

from processes import Child
from towerd.demo import DEMO_SITE, RADAR_BORESIGHT_DEG, RADAR_POSITION_ENU_M, demo_config
from towerd.geo import geodetic_to_enu
from towerd.icd import Status
from towerd.sim.scenario import builtin_scenario
from towerd.sim.ti_mmwave import TiMmwaveEmulator

pytestmark = pytest.mark.slow


def confirmed_rows(db_path) -> list[sqlite3.Row]:
    if not db_path.exists():
        return []
    conn = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True, timeout=1.0)
    conn.row_factory = sqlite3.Row
    try:
        return conn.execute("SELECT * FROM tracks WHERE status IN (?, ?) ORDER BY seq",
                            (int(Status.CONFIRMED), int(Status.COASTING))).fetchall()
    except sqlite3.OperationalError:
        return []  # the central has not created its tables yet
    finally:
        conn.close()


def locate(scenario, emulator, row) -> tuple[float, str, str]:
    """Distance, name and kind of the real object nearest to a stored record."""
    t_s = (row["time_us"] - emulator.t0_utc_us) / 1e6
    enu = geodetic_to_enu(DEMO_SITE, row["lat_e7"] / 1e7, row["lon_e7"] / 1e7, row["alt_m"])[0]
    return scenario.nearest(t_s, enu)


def wait_for(predicate, timeout_s: float, interval_s: float = 0.2):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        result = predicate()
        if result:
            return result
        time.sleep(interval_s)  # polling another process's database: there is no event to wait on
    return predicate()


def test_radar_frames_become_tracks_in_the_central(towerd_exe, tmp_path, pty_pair, central):
    scenario = builtin_scenario("demo")
    emulator = TiMmwaveEmulator(scenario, boresight_azimuth_deg=RADAR_BORESIGHT_DEG,
                                position_enu_m=RADAR_POSITION_ENU_M, frame_rate_hz=10.0,
                                rng=np.random.default_rng(7))
    cfg = tmp_path / "towerd.yaml"
    cfg.write_text(demo_config(pty_pair.path, central.endpoint, tmp_path / "state"))
    notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)  # stands in for systemd
    notify.bind(str(tmp_path / "notify.sock"))
    notify.settimeout(30.0)
    daemon = Child([towerd_exe, "run", "--config", str(cfg)], tmp_path / "daemon.log",
                   env={"NOTIFY_SOCKET": str(tmp_path / "notify.sock")})
    emulator.start(pty_pair)
    try:
        ready = notify.recv(4096).decode()
        assert ready.startswith("READY=1\nSTATUS=radar0:"), ready
        def enough():
            rows = confirmed_rows(central.db_path)
            drone_records: dict[str, int] = {}
            for r in rows:
                _, name, kind = locate(scenario, emulator, r)
                if kind == "uas":
                    drone_records[name] = drone_records.get(name, 0) + 1
            return rows if sum(n >= 5 for n in drone_records.values()) >= 2 else None

        rows = wait_for(enough, timeout_s=45.0)
        assert rows, f"no confirmed tracks reached the central\n--- daemon ---\n{daemon.log()}\n--- central ---\n{central.log()}"
    finally:
        status = daemon.stop()
        emulator.stop()
    assert status == 0, daemon.log()
    notes = []
    while True:
        try:
            notes.append(notify.recv(4096).decode())
        except TimeoutError:
            break
        if notes[-1] == "STOPPING=1":
            break
    notify.close()
    assert notes and notes[-1] == "STOPPING=1", notes
    assert emulator.frames_sent > 0

    # Every confirmed report is within 15 m of something real (a drone, or a static
    # reflector: the radar sees a lamp post too), and at least two drones are tracked.
    drones: set[str] = set()
    for r in rows:
        dist, name, kind = locate(scenario, emulator, r)
        assert dist < 15.0, f"track {r['track_id']} at {r['time_us']} is {dist:.1f} m from the nearest, {name}"
        if kind == "uas":
            drones.add(name)
    assert len(drones) >= 2, drones
    # sequence numbers in the central are unique per (tower, stream): de-duplicated store
    keys = [(r["tower_id"], r["stream_id"], r["seq"]) for r in rows]
    assert len(keys) == len(set(keys))
    assert {r["tower_id"] for r in rows} == {"tx-demo-001"}
    # A graceful stop ends every reported track with a final record, and the stop
    # event reaches the central.
    with sqlite3.connect(central.db_path) as conn:
        ended = {tid for (tid,) in conn.execute("SELECT track_id FROM tracks WHERE status = ?", (int(Status.ENDED),))}
        codes = [c for (c,) in conn.execute("SELECT code FROM events ORDER BY seq")]
    conn.close()
    assert {r["track_id"] for r in rows} <= ended
    assert codes[0] == "daemon.started" and codes[-1] == "daemon.stopping"
    assert "sensor.up" in codes


def test_demo_command_runs_bounded_and_summarises(tmp_path):
    """One bounded demo run (25 s: long enough for the Remote ID findings) checked for its
    live table, its summary and the identities it shows."""
    res = subprocess.run([sys.executable, "-m", "towerd", "demo", "--duration", "25", "--show", "live"],
                         capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    summary = res.stdout[res.stdout.index("Summary:"):]
    assert "tracks" in summary and "track records stored by the central" in summary
    assert summary.count("  track ") >= 2
    # Bounded by --duration: no "Ctrl-C to stop" promise; the live table explains its ids.
    live = res.stdout[:res.stdout.index("Summary:")]
    assert "Ctrl-C" not in live and "Stops by itself after 25 s, then prints a summary." in live
    assert "RF-n: a track of the RF sensor alone" in live
    # RF-only tracks are RF-n, never their raw u32 ids (2^31 and up); no "unknown 0%";
    # each track says whether it ended or was still tracked when the demo stopped.
    assert not re.search(r"\b(21[4-9]\d|2[2-9]\d\d|[3-4]\d\d\d)\d{6}\b", res.stdout)
    assert "unknown 0%" not in res.stdout and ", last " not in summary
    for line in summary.splitlines()[1:]:
        if line.startswith("  track "):
            assert ", ended, " in line or "when the demo stopped" in line, line
    # Remote ID: the crossing drone's broadcast names it and its pilot; the climber's false
    # position raises rid_mismatch; the ID-n tracks are explained.
    crossing = [line for line in summary.splitlines() if "nearest truth crossing" in line and "Remote ID" in line]
    assert crossing and "1581F5FKD229400001, pilot at 27.50" in crossing[0] and "radar+RID" in crossing[0], summary
    assert "rid_mismatch" in summary and "1581F6ZZX001SPOOF000" in summary, summary
    assert "ID-n: a drone heard by the Remote ID receiver" in summary
