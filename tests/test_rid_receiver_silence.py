"""A Remote ID receiver whose port is open but that prints nothing hears nothing: after
``remote_id.receiver_silent_after_s`` it no longer counts as covering (its silence is not
taken for the absence of broadcasts, so no uas track becomes non-cooperative), and HEALTH
and `towerd status` say why. The daemon runs in this process on a real pty."""

from __future__ import annotations

import threading
import time

import pytest

from towerd.config import load_config
from towerd.daemon import Daemon
from towerd.errors import ConfigError
from towerd.status import render

SILENT_AFTER_S = 1.0
HEARTBEAT = b'{"mac": "60:60:1f:00:00:01", "rssi": -71, "basic_id": "1581F5FJD23A800000A1"}\n'


def config(tmp_path, port: str, extra: str = "") -> str:
    return f"""\
version: 1
tower: {{id: tx-test-001, latitude_deg: 27.5, longitude_deg: -99.5, height_m: 130}}
state_dir: {tmp_path}/state
status_socket: {tmp_path}/status.sock
sensors:
  - {{name: rid0, driver: remoteid, settings: {{port: {port}}}, degraded_after_s: 600}}
remote_id: {{receiver_silent_after_s: {SILENT_AFTER_S}{extra}}}
"""


def wait_for(predicate, timeout_s: float = 15.0):
    """Poll the daemon's state (another thread's: there is no event to wait on)."""
    deadline = time.monotonic() + timeout_s
    while not (value := predicate()):
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)
    return value


def test_a_receiver_gone_silent_stops_covering_and_status_says_why(tmp_path, pty_pair):
    path = tmp_path / "towerd.yaml"
    path.write_text(config(tmp_path, pty_pair.path))
    daemon = Daemon(load_config(path))
    stop = threading.Event()
    thread = threading.Thread(target=daemon.run, args=(stop,))
    thread.start()
    fusion = daemon.pipeline.identity
    try:
        wait_for(lambda: daemon.health()["sensors"].get("rid0", {}).get("state") == "ok")
        pty_pair.write(HEARTBEAT)
        wait_for(lambda: daemon.health()["sensors"]["rid0"]["device"]["readings"] == 1)
        assert daemon.health()["sensors"]["rid0"]["covering"] == "yes" and fusion.receivers_up
        heard = time.monotonic()
        # The port stays open (still "ok": degraded_after_s is long) but nothing comes.
        why = wait_for(lambda: (c := daemon.health()["sensors"]["rid0"]["covering"]) != "yes" and c)
        assert time.monotonic() - heard >= SILENT_AFTER_S * 0.9
        assert why.startswith("not covering: silent for") and "receiver_silent_after_s 1 s" in why
        assert not fusion.receivers_up
        status = {**daemon.health(), "centrals": {}}
        assert status["sensors"]["rid0"]["state"] == "ok"
        text, problems = render(status)
        assert "    remote id: not covering: silent for" in text
        assert any(p.startswith("Remote ID receiver rid0 is not covering: silent for") for p in problems)
        # A line again (a heartbeat would do): covering again.
        pty_pair.write(HEARTBEAT)
        wait_for(lambda: daemon.health()["sensors"]["rid0"]["covering"] == "yes")
        assert fusion.receivers_up
    finally:
        stop.set()
        thread.join(20)
    assert not thread.is_alive()


def test_the_silence_setting_is_validated(tmp_path):
    for bad in (", receiver_silent_after_s_: 3", ", receiver_silent_after_s: -1"):
        path = tmp_path / "towerd.yaml"
        path.write_text(config(tmp_path, "/dev/null", bad).replace(f"receiver_silent_after_s: {SILENT_AFTER_S}, ", "")
                        if "-1" in bad else config(tmp_path, "/dev/null", bad))
        with pytest.raises(ConfigError) as err:
            load_config(path)
        problems = [p for p in err.value.problems if "remote_id.receiver_silent_after_s" in p]
        assert problems and ("unknown key" in problems[0]) == ("_:" in bad), err.value.problems
