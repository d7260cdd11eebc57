"""towerd doctor on real files, a real pty and a real central: each problem is named
with its fix, and the exit status says whether any was found."""

from __future__ import annotations

import os
import pwd
import re
import stat
import subprocess

from processes import free_tcp_port


def me() -> str:
    return pwd.getpwuid(os.geteuid()).pw_name


def doctor(towerd_exe, cfg, user: str | None = None) -> subprocess.CompletedProcess:
    """Permissions judged for ``user`` (default: the user running the test, so the result
    does not depend on whether this machine has a `towerd` user)."""
    return subprocess.run([towerd_exe, "doctor", "--config", str(cfg), "--timeout", "3", "--user", user or me()],
                          capture_output=True, text=True, timeout=60)


def write_config(tmp_path, port: str, endpoint: str, state_dir) -> str:
    cfg = tmp_path / "towerd.yaml"
    cfg.write_text(f"""\
version: 1
tower: {{id: tx-test-001, latitude_deg: 27.5, longitude_deg: -99.5, height_m: 130}}
state_dir: {state_dir}
sensors:
  - name: radar0
    driver: ti_mmwave
    settings: {{port: "{port}"}}
    mount: {{boresight_azimuth_deg: 0}}
centrals:
  - {{name: hq, endpoint: "{endpoint}", plain: true}}
""")
    return cfg


def test_doctor_names_each_problem_with_a_fix(towerd_exe, tmp_path):
    cfg = write_config(tmp_path, "/dev/ttyUSB7", f"tcp://127.0.0.1:{free_tcp_port()}", tmp_path / "nope")
    res = doctor(towerd_exe, cfg)
    out = res.stdout
    assert res.returncode == 1, out
    assert f"configuration {cfg} is valid" in out
    assert f"PROBLEM  state directory {tmp_path / 'nope'} does not exist" in out
    assert "PROBLEM  radar0 data port: /dev/ttyUSB7 does not exist" in out
    assert "PROBLEM  central hq: cannot reach 127.0.0.1:" in out
    assert "PROBLEM  central hq is configured without CURVE (plain: true)" in out
    assert "clock:" in out
    assert out.count("fix: ") == out.count("PROBLEM")
    assert out.rstrip().endswith("problems found.")


def test_doctor_sees_a_working_central_and_who_holds_the_port(towerd_exe, tmp_path, central, pty_pair):
    (tmp_path / "state").mkdir()
    cfg = write_config(tmp_path, pty_pair.path, central.endpoint, tmp_path / "state")
    out = doctor(towerd_exe, cfg).stdout
    assert f"ok       state directory {tmp_path / 'state'}: writable" in out
    assert "ZeroMQ handshake accepted" in out, out
    # This test process keeps the pty's slave open, as another program would a real port.
    assert re.search(rf"PROBLEM  radar0 data port: {pty_pair.path} is held open by \S+ \(pid {os.getpid()}\)", out), out
    # The pty is its owner's only (0620 or 0600): another user, as the service user
    # would be, cannot open it, and doctor says so; it judges for that user, not for root.
    st = os.stat(pty_pair.path)
    other = doctor(towerd_exe, cfg, user="nobody").stdout
    assert re.search(rf"PROBLEM  radar0 data port: {pty_pair.path} is {stat.filemode(st.st_mode)} {me()}:\S+: "
                     "user nobody cannot open it", other), other
    assert f"PROBLEM  state directory {tmp_path / 'state'} is not writable by user nobody" in other


def test_doctor_reports_an_invalid_configuration(towerd_exe, tmp_path):
    cfg = tmp_path / "bad.yaml"
    cfg.write_text("version: 1\ntower: {id: x}\n")
    res = doctor(towerd_exe, cfg)
    assert res.returncode == 1
    assert "the configuration is invalid" in res.stdout and "tower.latitude_deg: required key is missing" in res.stdout
    assert f"fix: edit {cfg}, then run: towerd check-config {cfg}" in res.stdout
