"""`towerd status` says what a technician must act on, with exit 1: error counters that
rise now (not totals from an hour ago) and an outbox that cannot write (a full disk).
Real processes: `towerd sim` on a pty, `towerd run`, a central; the full disk is a file
size limit put on the running daemon (writes fail with EFBIG as on a full disk)."""

from __future__ import annotations

import json
import resource
import subprocess
import time

import pytest

from processes import Child, Sim
from towerd.drivers.base import DriverCounters
from towerd.sensors import ErrorTrend
from towerd.status import render


def status(towerd_exe, sock, *extra) -> subprocess.CompletedProcess:
    return subprocess.run([towerd_exe, "status", "--socket", str(sock), *extra], capture_output=True, text=True,
                          timeout=30)


def wait_status(towerd_exe, sock, daemon, accept, timeout_s: float = 60.0) -> subprocess.CompletedProcess:
    """Ask until ``accept(result)``; polling another process, there is no event to wait on."""
    deadline = time.monotonic() + timeout_s
    while True:
        res = status(towerd_exe, sock)
        if accept(res):
            return res
        assert time.monotonic() < deadline, res.stdout + res.stderr + daemon.log()
        assert daemon.proc.poll() is None, daemon.log()
        time.sleep(0.2)


def test_error_trend_counts_only_the_last_window():
    trend, counters = ErrorTrend(window_s=60.0, every_s=1.0), DriverCounters()
    trend.sample(0.0, counters)
    counters.resyncs, counters.dropped_bytes = 2, 300
    trend.sample(10.0, counters)
    assert trend.recent(30.0, counters) == {"bad_frames": 0, "resyncs": 2, "dropped_bytes": 300}
    for t in range(11, 200):  # quiet since: the old losses leave the window
        trend.sample(float(t), counters)
    assert trend.recent(200.0, counters) == {"bad_frames": 0, "resyncs": 0, "dropped_bytes": 0}
    counters.bad_frames = 1
    assert trend.recent(200.5, counters)["bad_frames"] == 1


def test_render_names_rising_counters_and_a_failing_outbox():
    base = {"tower_id": "t1", "centrals": {}, "state_dir": "/var/lib/towerd"}
    quiet = {"radar0": {"state": "ok", "resyncs": 40, "errors_recent": {"resyncs": 0}, "errors_window_s": 60}}
    text, problems = render({**base, "sensors": quiet, "outbox": {"write_error": None}})
    assert problems == [] and text.endswith("All good.")
    rising = {"radar0": {"state": "ok", "errors_recent": {"bad_frames": 1, "resyncs": 3, "dropped_bytes": 0},
                         "errors_window_s": 60}}
    text, problems = render({**base, "sensors": rising, "outbox": {}})
    assert problems == ["sensor radar0 is losing data: 1 bad frame, 3 resyncs in the last 60 s"]
    text, problems = render({**base, "sensors": {}, "outbox": {"write_error": "commit: database or disk is full"}})
    assert problems == ["the outbox cannot write (commit: database or disk is full): new reports are being lost"]
    assert "df -h /var/lib/towerd" in text


def test_render_shows_what_the_driver_knows_and_what_was_set_aside():
    sensor = {"state": "ok", "driver": "rfexplorer", "frames": 20, "reasons": {"sweeps_without_config": 2,
                                                                            "early_ends": 0},
              "device": {"model": "WSUB1G/None fw 01.33", "band": "ism2400", "start_mhz": 2400.0, "points": 112,
                         "rbw_khz": None, "plan": ["ism433", "ism2400"], "retunes": 0, "requeries": 1}}
    text, problems = render({"sensors": {"rfe0": sensor}, "centrals": {}, "outbox": {}})
    assert problems == []
    assert ("    device: model WSUB1G/None fw 01.33, band ism2400, start mhz 2400, points 112, plan ism433 ism2400, "
            "requeries 1\n") in text
    assert "    set aside: 2 sweeps without config\n" in text
    text, _ = render({"sensors": {"rfe0": {"state": "ok", "device": {"band": None}, "reasons": {}}}, "outbox": {}})
    assert "device:" not in text and "set aside:" not in text  # nothing known, nothing set aside: no lines


@pytest.mark.slow
def test_status_shows_rising_errors_and_a_full_disk(towerd_exe, tmp_path, central):
    link = tmp_path / "radar0"
    sim = Sim(towerd_exe, tmp_path, "--device", "ti_mmwave", "--link", str(link), "--rate", "20")
    sim.wait_for("ready")
    sock = tmp_path / "status.sock"
    cfg = tmp_path / "towerd.yaml"
    cfg.write_text(f"""\
version: 1
tower: {{id: tx-test-001, latitude_deg: 27.5, longitude_deg: -99.5, height_m: 130}}
state_dir: {tmp_path}/state
status_socket: {sock}
sensors:
  - name: radar0
    driver: ti_mmwave
    settings: {{port: {link}}}
    mount: {{boresight_azimuth_deg: 0}}
centrals:
  - {{name: hq, endpoint: "{central.endpoint}", plain: true}}
""")
    daemon = Child([towerd_exe, "run", "--config", str(cfg)], tmp_path / "daemon.log")
    try:
        good = wait_status(towerd_exe, sock, daemon, lambda r: r.returncode == 0)
        assert good.stdout.rstrip().endswith("All good."), good.stdout

        sim.send("garbage 3000")  # a burst of line noise on the radar's UART
        noisy = wait_status(towerd_exe, sock, daemon, lambda r: "losing data" in r.stdout)
        assert noisy.returncode == 1, noisy.stdout
        assert "radar0 is losing data:" in noisy.stdout and "in the last 60 s" in noisy.stdout

        # The disk fills: every outbox write of the daemon now fails.
        _, hard = resource.prlimit(daemon.proc.pid, resource.RLIMIT_FSIZE)
        resource.prlimit(daemon.proc.pid, resource.RLIMIT_FSIZE, (0, hard))
        full = wait_status(towerd_exe, sock, daemon, lambda r: "outbox cannot write" in r.stdout)
        assert full.returncode == 1
        raw = json.loads(status(towerd_exe, sock, "--json").stdout)
        assert raw["outbox"]["write_error"] and raw["outbox"]["write_failures"] >= 1  # HEALTH carries it too

        resource.prlimit(daemon.proc.pid, resource.RLIMIT_FSIZE, (hard, hard))  # space again
        wait_status(towerd_exe, sock, daemon, lambda r: "outbox cannot write" not in r.stdout)
        assert daemon.proc.poll() is None
    finally:
        codes = daemon.stop(timeout_s=30), sim.stop()  # both, even when one fails
        assert codes == (0, 0), daemon.log()[-3000:] + sim.log()[-1000:]


def test_error_trend_rebase_forgets_the_partial_frame_at_open():
    trend, counters = ErrorTrend(window_s=60.0, every_s=1.0), DriverCounters()
    trend.sample(0.0, counters)
    counters.dropped_bytes, counters.resyncs = 57, 1  # the tail of a frame in flight when the port opened
    trend.rebase(0.1, counters)  # the first whole frame
    assert trend.recent(5.0, counters) == {"bad_frames": 0, "resyncs": 0, "dropped_bytes": 0}
    counters.dropped_bytes = 60
    assert trend.recent(6.0, counters)["dropped_bytes"] == 3
