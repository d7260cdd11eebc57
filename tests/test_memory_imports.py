"""Resident memory: what the running daemon imports.

scipy.spatial (k-d trees) and scipy.optimize (the assignment solver) are about 45 MiB of
the daemon's resident memory (issue 16: under 100 MB). A daemon that has run its whole
chain (radar frames confirmed into tracks and reported, RF sweeps processed) in a fresh
interpreter must not have imported them. Run in a child process, since the test session
itself imports scipy elsewhere.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest

pytestmark = pytest.mark.slow  # a daemon run in a fresh interpreter: ~5-15 s

CHILD = textwrap.dedent(
    """
    import json, socket, sys, threading, time
    from pathlib import Path

    import numpy as np

    from towerd.config import load_config
    from towerd.daemon import Daemon
    from towerd.demo import demo_config
    from towerd.sim.pty import PtyPair
    from towerd.sim.rfexplorer import RfExplorerEmulator
    from towerd.sim.scenario import builtin_scenario
    from towerd.sim.ti_mmwave import TiMmwaveEmulator
    from towerd.demo import RADAR_BORESIGHT_DEG, RADAR_POSITION_ENU_M

    tmp = Path(sys.argv[1])
    with socket.socket() as s:  # a free port nobody listens on: the uplink just retries
        s.bind(("127.0.0.1", 0))
        endpoint = f"tcp://127.0.0.1:{s.getsockname()[1]}"
    radar, rf = PtyPair.open(), PtyPair.open()
    cfg = tmp / "towerd.yaml"
    cfg.write_text(demo_config(radar.path, endpoint, tmp / "state", rf_path=rf.path))
    scenario = builtin_scenario("demo")
    ti = TiMmwaveEmulator(scenario, boresight_azimuth_deg=RADAR_BORESIGHT_DEG, position_enu_m=RADAR_POSITION_ENU_M,
                          frame_rate_hz=20.0, rng=np.random.default_rng(3))
    rfe = RfExplorerEmulator(scenario, rng=np.random.default_rng(4), sweep_rate_hz=10.0)
    daemon = Daemon(load_config(cfg))
    stop = threading.Event()
    loop = threading.Thread(target=daemon.run, args=(stop,))
    loop.start()
    ti.start(radar)
    rfe.start(rf)
    reported = 0
    try:
        deadline = time.monotonic() + 60.0
        while time.monotonic() < deadline:
            reported = daemon.outbox.next_seq if daemon.outbox is not None else 0
            if daemon.pipeline.frames >= 40 and reported > 5 and daemon.pipeline.rf.sweeps > 0:
                break
            time.sleep(0.1)  # polling another thread's counters: there is no event to wait on
    finally:
        stop.set()
        loop.join(30)
        ti.stop()
        rfe.stop()
        radar.close()
        rf.close()
    print(json.dumps({"frames": daemon.pipeline.frames, "next_seq": reported, "sweeps": daemon.pipeline.rf.sweeps,
                      "modules": sorted(sys.modules)}))
    """
)


def run_daemon_child(tmp_path) -> dict:
    proc = subprocess.run([sys.executable, "-c", CHILD, str(tmp_path)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def daemon_modules(tmp_path_factory) -> dict:
    return run_daemon_child(tmp_path_factory.mktemp("memory"))


def test_the_daemon_ran_its_whole_chain(daemon_modules) -> None:
    assert daemon_modules["frames"] >= 40 and daemon_modules["next_seq"] > 5 and daemon_modules["sweeps"] > 0


@pytest.mark.parametrize("module", ["scipy.spatial", "scipy.optimize", "scipy.integrate", "scipy.linalg", "scipy.sparse"])
def test_the_running_daemon_does_not_import(daemon_modules, module: str) -> None:
    assert module not in daemon_modules["modules"]
