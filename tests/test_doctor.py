"""towerd doctor on real files, a real pty and a real central: each problem is named
with its fix, and the exit status says whether any was found."""

from __future__ import annotations

import os
import pwd
import re
import stat
import subprocess
import time

from processes import Child, free_tcp_port, wait_listening


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
    (tmp_path / "nope").write_text("")  # state_dir names a file
    cfg = write_config(tmp_path, "/dev/ttyUSB7", f"tcp://127.0.0.1:{free_tcp_port()}", tmp_path / "nope")
    res = doctor(towerd_exe, cfg)
    out = res.stdout
    assert res.returncode == 1, out
    assert f"configuration {cfg} is valid" in out
    assert f"PROBLEM  state directory: {tmp_path / 'nope'} is not a directory" in out
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
    assert f"PROBLEM  state directory: {tmp_path / 'state'}: user nobody cannot enter" in other


def test_doctor_reports_an_invalid_configuration(towerd_exe, tmp_path):
    cfg = tmp_path / "bad.yaml"
    cfg.write_text("version: 1\ntower: {id: x}\n")
    res = doctor(towerd_exe, cfg)
    assert res.returncode == 1
    assert "the configuration is invalid" in res.stdout and "tower.latitude_deg: required key is missing" in res.stdout
    assert f"fix: edit {cfg}, then run: towerd check-config {cfg}" in res.stdout


def curve_config(tmp_path, endpoint: str, central_key, secret) -> str:
    cfg = tmp_path / "curve.yaml"
    cfg.write_text(f"""\
version: 1
tower: {{id: tx-test-001, latitude_deg: 27.5, longitude_deg: -99.5, height_m: 130}}
state_dir: {tmp_path}/state
centrals:
  - {{name: hq, endpoint: "{endpoint}", server_public_key_file: "{central_key}", client_secret_key_file: "{secret}"}}
""")
    return cfg


def test_doctor_tells_a_wrong_central_key_from_a_refused_tower_and_plain_vs_curve(towerd_exe, tmp_path, central):
    """A real CURVE central: our key allowed and the central's key right -> accepted; the
    central's key wrong -> "does not match"; our key not allowed -> refused; and against
    a plain central (the `central` fixture) a CURVE tower is told the two do not agree."""
    from towerd import keys

    server = keys.generate_keypair(tmp_path / "c", "central")
    stranger = keys.generate_keypair(tmp_path / "s", "central")
    tower = keys.generate_keypair(tmp_path / "t", "tower")
    other = keys.generate_keypair(tmp_path / "o", "tower")
    keys.allow_tower("tx-test-001", tower.public_file, tmp_path / "allow")
    endpoint = f"tcp://127.0.0.1:{free_tcp_port()}"
    curve = Child([towerd_exe, "central", "--bind", endpoint, "--db", str(tmp_path / "c.sqlite"), "--secret-key",
                   str(server.secret_file), "--allow-dir", str(tmp_path / "allow")], tmp_path / "curve.log")
    try:
        wait_listening(endpoint, curve)
        ok = doctor(towerd_exe, curve_config(tmp_path, endpoint, server.public_file, tower.secret_file)).stdout
        assert "central hq: 127.0.0.1:" in ok and "ZeroMQ handshake accepted" in ok, ok

        wrong = doctor(towerd_exe, curve_config(tmp_path, endpoint, stranger.public_file, tower.secret_file)).stdout
        assert (f"PROBLEM  central hq: the central's public key in {stranger.public_file} does not match the "
                f"central at {endpoint}") in wrong, wrong
        # ... and the central logged it, with the peer's address (it used to say nothing).
        deadline = time.monotonic() + 10
        while "cannot be decrypted" not in curve.log():
            assert time.monotonic() < deadline, curve.log()
            time.sleep(0.05)
        assert re.search(r"central: handshake from 127\.0\.0\.1:\d+ failed: its CURVE HELLO cannot be decrypted",
                         curve.log()), curve.log()

        refused = doctor(towerd_exe, curve_config(tmp_path, endpoint, server.public_file, other.secret_file)).stdout
        assert "PROBLEM  central hq: the central refused this tower's key" in refused, refused
    finally:
        curve.stop()
    plain = doctor(towerd_exe, curve_config(tmp_path, central.endpoint, server.public_file, tower.secret_file)).stdout
    assert (f"PROBLEM  central hq: this tower speaks CURVE but the central at {central.endpoint} speaks plain"
            in plain), plain
