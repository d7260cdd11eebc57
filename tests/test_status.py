"""Status for technicians: the daemon's local JSON socket, `towerd status` and its exit
codes, and the systemd watchdog that only a progressing loop feeds."""

from __future__ import annotations

import json
import socket
import subprocess
import threading
import time

import pytest

from processes import Child, free_tcp_port
from towerd.config import load_config
from towerd.daemon import Daemon
from towerd.pipeline import Pipeline
from towerd.status import StatusServer, query

GOOD_STATE = {"tower_id": "t1", "sensors": {}, "centrals": {}, "outbox": {}}


def config_text(tmp_path, port: str, endpoint: str) -> str:
    return f"""\
version: 1
tower: {{id: tx-test-001, latitude_deg: 27.5, longitude_deg: -99.5, height_m: 130}}
state_dir: {tmp_path}/state
status_socket: {tmp_path}/status.sock
sensors:
  - name: radar0
    driver: ti_mmwave
    settings: {{port: {port}}}
    mount: {{boresight_azimuth_deg: 0}}
centrals:
  - {{name: hq, endpoint: "{endpoint}", plain: true}}
"""


def ask_raw(path, payload: bytes) -> dict:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(5)
        s.connect(str(path))
        s.sendall(payload)
        return json.loads(s.makefile().readline())


@pytest.fixture
def served(tmp_path):
    """A StatusServer polled by a thread, as the daemon's loop polls it."""
    server = StatusServer(str(tmp_path / "s.sock"), lambda: {**GOOD_STATE, "x": float("nan")}, "9.9")
    stop = threading.Event()

    def loop():
        while not stop.is_set():
            server.poll()
            stop.wait(0.005)

    thread = threading.Thread(target=loop)
    thread.start()
    yield server
    stop.set()
    thread.join()
    server.close()


def test_server_answers_and_rejects_bad_requests(served):
    path = served.path
    reply = query(path)
    assert reply["ok"] and reply["status"]["tower_id"] == "t1"
    assert reply["status"]["x"] is None  # NaN becomes null: the answer is strict JSON
    assert query(path, "version") == {"ok": True, "version": "9.9"}
    assert ask_raw(path, b"not json\n")["error"].startswith("malformed request")
    assert "unknown command 'reboot'" in ask_raw(path, b'{"command": "reboot"}\n')["error"]
    assert "longer than" in ask_raw(path, b"x" * 5000)["error"]


def test_a_stale_socket_file_is_replaced_and_a_live_one_is_not(tmp_path, served):
    with pytest.raises(OSError, match="another towerd answers"):
        StatusServer(served.path, dict, "1")
    stale = tmp_path / "stale.sock"
    dead = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    dead.bind(str(stale))
    dead.close()  # the file stays, nobody listens
    server = StatusServer(str(stale), dict, "1")
    server.close()
    assert not stale.exists()


def test_towerd_status_reports_problems_in_sentences(towerd_exe, tmp_path, central):
    cfg = tmp_path / "towerd.yaml"
    cfg.write_text(config_text(tmp_path, str(tmp_path / "no-such-radar"), central.endpoint))
    sock = str(tmp_path / "status.sock")
    unreachable = subprocess.run([towerd_exe, "status", "--socket", sock], capture_output=True, text=True, timeout=30)
    assert unreachable.returncode == 3 and "is not answering" in unreachable.stderr
    daemon = Child([towerd_exe, "run", "--config", str(cfg)], tmp_path / "daemon.log")
    try:
        deadline = time.monotonic() + 20
        while True:
            res = subprocess.run([towerd_exe, "status", "--socket", sock], capture_output=True, text=True, timeout=30)
            if res.returncode != 3 and "hq (" in res.stdout and "up (up)" in res.stdout:
                break
            assert time.monotonic() < deadline, res.stdout + res.stderr + daemon.log()
            time.sleep(0.2)  # polling another process: there is no event to wait on
        assert res.returncode == 1, res.stdout
        assert "radar0 (ti_mmwave on " in res.stdout and ": down," in res.stdout
        assert "cannot open" in res.stdout  # the reason, for the technician
        assert "Problems: sensor radar0 is down" in res.stdout
        as_json = subprocess.run([towerd_exe, "status", "--socket", sock, "--json"], capture_output=True,
                                 text=True, timeout=30)
        status = json.loads(as_json.stdout)
        assert status["tower_id"] == "tx-test-001" and status["sensors"]["radar0"]["state"] == "down"
        device = status["sensors"]["radar0"]["device"]  # the driver's own status, through HEALTH
        assert device["cli"] == "not used (configured by other means)" and device["sdk"] is None
        assert "    device: cli not used (configured by other means)\n" in res.stdout
        assert status["centrals"]["hq"]["link_up"] is True
        assert len(status["config_digest"]) == 64
    finally:
        assert daemon.stop() == 0, daemon.log()


class HangingPipeline(Pipeline):
    """A pipeline whose expiry pass blocks until released: a hung processing loop."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.hang = threading.Event()
        self.release = threading.Event()

    def expire(self, t_mono: float):
        if self.hang.is_set():
            self.release.wait(30)
        return super().expire(t_mono)


def test_watchdog_is_fed_only_while_the_loop_progresses(tmp_path, monkeypatch):
    notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    notify.bind(str(tmp_path / "notify.sock"))
    notify.settimeout(0.5)
    monkeypatch.setenv("NOTIFY_SOCKET", str(tmp_path / "notify.sock"))
    monkeypatch.setenv("WATCHDOG_USEC", "200000")  # WatchdogSec=0.2: ping every 0.1 s
    monkeypatch.delenv("WATCHDOG_PID", raising=False)
    cfg = tmp_path / "towerd.yaml"
    cfg.write_text(config_text(tmp_path, str(tmp_path / "absent"), f"tcp://127.0.0.1:{free_tcp_port()}"))
    loaded = load_config(cfg)
    pipeline = HangingPipeline(loaded.config, Daemon(loaded).clock)
    daemon = Daemon(loaded, pipeline=pipeline)
    stop = threading.Event()
    thread = threading.Thread(target=daemon.run, args=(stop,))
    thread.start()

    def pings(seconds: float) -> int:
        n, end = 0, time.monotonic() + seconds
        while time.monotonic() < end:
            try:
                n += notify.recv(4096) == b"WATCHDOG=1"
            except TimeoutError:
                pass
        return n

    try:
        assert pings(1.0) >= 5
        pipeline.hang.set()
        pings(0.3)  # let the loop enter the hang
        assert pings(1.0) == 0
        pipeline.hang.clear()
        pipeline.release.set()
        assert pings(1.0) >= 5
    finally:
        pipeline.hang.clear()
        pipeline.release.set()
        stop.set()
        thread.join(20)
        notify.close()
    assert not thread.is_alive()
