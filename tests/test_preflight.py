"""The files a configuration names: `towerd check-config`, `towerd doctor` and `towerd run`
agree on every bad input (the unit's ExecStartPre relies on check-config), and `run`
refuses before it creates anything on disk. The three commands run through their real
entry point (towerd.cli.main), permissions judged for the user running the test."""

from __future__ import annotations

import os
import pwd
import shutil
from pathlib import Path

import pytest

from processes import free_tcp_port
from towerd import keys
from towerd.cli import main
from towerd.errors import EX_CONFIG

REPO = Path(__file__).resolve().parents[1]
ME = pwd.getpwuid(os.geteuid()).pw_name


def write_config(tmp_path: Path, secret: Path, central_key: Path, chirp: Path, state: Path) -> Path:
    cfg = tmp_path / "towerd.yaml"
    cfg.write_text(f"""\
version: 1
tower: {{id: tx-test-001, latitude_deg: 27.5, longitude_deg: -99.5, height_m: 130}}
state_dir: {state}
status_socket: null
sensors:
  - name: radar0
    driver: ti_mmwave
    settings: {{port: {tmp_path}/ti-data, cli_port: {tmp_path}/ti-cli, chirp_config: {chirp}}}
    mount: {{boresight_azimuth_deg: 0}}
centrals:
  - name: hq
    endpoint: tcp://127.0.0.1:{free_tcp_port()}
    server_public_key_file: {central_key}
    client_secret_key_file: {secret}
""")
    return cfg


@pytest.fixture
def tower(tmp_path):
    """Good files: the tower's key pair, the central's public key, the chirp profile."""
    pair = keys.generate_keypair(tmp_path / "keys", "tower")
    central = keys.generate_keypair(tmp_path / "central", "central")
    chirp = tmp_path / "profile.cfg"
    shutil.copy(REPO / "config" / "ti_mmwave" / "iwr6843_demo.cfg", chirp)
    return {"secret": pair.secret_file, "central_key": central.public_file, "chirp": chirp,
            "state": tmp_path / "state", "public": pair.public_file}


def spoil(case: str, tmp_path: Path, files: dict) -> str:
    """Break one thing; returns the text every command must say about it."""
    if case == "secret missing":
        files["secret"].unlink()
        return f"this tower's secret key file {files['secret']} does not exist"
    if case == "secret mode 0644":
        files["secret"].chmod(0o644)
        return "mode 0644 gives group and others access to the secret key"
    if case == "secret is the public file":
        files["secret"] = files["public"]
        return "holds no secret key"
    if case == "central key missing":
        files["central_key"].unlink()
        return f"the central's public key file {files['central_key']} does not exist"
    if case == "central key garbage":
        files["central_key"].write_text("not a certificate\n")
        return "holds no public key"
    if case == "chirp profile missing":
        files["chirp"].unlink()
        return f"chirp configuration {files['chirp']} does not exist"
    if case == "chirp profile empty":
        files["chirp"].write_text("% only a comment\n")
        return "no commands in the file"
    if case == "state_dir is a file":
        files["state"].write_text("")
        return f"{files['state']} is not a directory"
    raise AssertionError(case)


CASES = ["secret missing", "secret mode 0644", "secret is the public file", "central key missing",
         "central key garbage", "chirp profile missing", "chirp profile empty", "state_dir is a file"]


@pytest.mark.parametrize("case", CASES)
def test_check_config_doctor_and_run_agree_on_a_bad_file(case, tmp_path, tower, capsys):
    said = spoil(case, tmp_path, tower)
    cfg = write_config(tmp_path, **{k: tower[k] for k in ("secret", "central_key", "chirp", "state")})
    before = sorted(p.name for p in tmp_path.iterdir())

    assert main(["check-config", "--user", ME, str(cfg)]) == 1
    err = capsys.readouterr().err
    assert said in err and f"{cfg}:" in err and "(fix: " in err, err

    assert main(["doctor", "--user", ME, "-c", str(cfg), "--timeout", "0.5"]) == 1
    out = capsys.readouterr().out
    assert said in out, out

    assert main(["run", "--config", str(cfg)]) == EX_CONFIG
    err = capsys.readouterr().err
    assert said in err and "not starting" in err, err
    assert sorted(p.name for p in tmp_path.iterdir()) == before, "run created something before refusing"

    # --schema-only checks the YAML alone, as the old check-config did.
    assert main(["check-config", "--schema-only", str(cfg)]) == 0


def test_good_files_pass_all_three(tmp_path, tower, capsys):
    cfg = write_config(tmp_path, **{k: tower[k] for k in ("secret", "central_key", "chirp", "state")})
    assert main(["check-config", "--user", ME, "-c", str(cfg)]) == 0
    assert f"files checked as user {ME}" in capsys.readouterr().out
    main(["doctor", "--user", ME, "-c", str(cfg), "--timeout", "0.5"])
    out = capsys.readouterr().out
    assert "the 3 files the configuration names are readable" in out
    assert "key_file" not in out and "chirp_config" not in out, out


def test_a_key_the_service_user_cannot_read_is_named(tmp_path, tower, capsys):
    """Permissions are judged for the service user: `nobody` cannot read a 0600 key of
    another user, nor enter a 0700 directory, although root can."""
    cfg = write_config(tmp_path, **{k: tower[k] for k in ("secret", "central_key", "chirp", "state")})
    assert main(["check-config", "--user", "nobody", str(cfg)]) == 1
    err = capsys.readouterr().err
    if os.geteuid() == 0:  # pytest's tmp dirs are 0700: nobody cannot even get to the files
        assert "user nobody cannot enter" in err, err
    assert "centrals[0].client_secret_key_file" in err and "centrals[0].server_public_key_file" in err
    assert main(["check-config", "--user", "no-such-user-x", str(cfg)]) == 1
    assert "no user 'no-such-user-x'" in capsys.readouterr().err


def test_a_reload_naming_a_missing_key_is_rejected_and_the_daemon_keeps_running(towerd_exe, tmp_path):
    """SIGHUP with a configuration whose key file is missing: the same check as at start,
    the reload is rejected (old configuration kept), the daemon lives on."""
    import signal
    import subprocess
    import time

    from processes import Child

    sock = tmp_path / "status.sock"
    plain = f"""\
version: 1
tower: {{id: tx-test-001, latitude_deg: 27.5, longitude_deg: -99.5, height_m: 130}}
state_dir: {tmp_path}/state
status_socket: {sock}
centrals:
  - {{name: hq, endpoint: "tcp://127.0.0.1:{free_tcp_port()}", plain: true}}
"""
    cfg = tmp_path / "towerd.yaml"
    cfg.write_text(plain)
    daemon = Child([towerd_exe, "run", "--config", str(cfg)], tmp_path / "daemon.log")
    try:
        deadline = time.monotonic() + 30
        while not sock.exists():  # another process: wait for its socket
            assert daemon.proc.poll() is None and time.monotonic() < deadline, daemon.log()
            time.sleep(0.05)
        missing = tmp_path / "keys" / "tower.key_secret"
        cfg.write_text(plain.replace("plain: true", f"server_public_key_file: {tmp_path}/keys/central.key, "
                                                    f"client_secret_key_file: {missing}"))
        daemon.proc.send_signal(signal.SIGHUP)
        while "reload rejected" not in daemon.log():
            assert daemon.proc.poll() is None and time.monotonic() < deadline, daemon.log()
            time.sleep(0.05)
        assert f"this tower's secret key file {missing} does not exist" in daemon.log()
        res = subprocess.run([towerd_exe, "status", "--socket", str(sock)], capture_output=True, text=True, timeout=30)
        assert res.returncode in (0, 1) and "hq (" in res.stdout, res.stdout + res.stderr  # still answering
    finally:
        assert daemon.stop() == 0, daemon.log()
