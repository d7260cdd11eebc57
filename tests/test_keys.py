"""CURVE key files: generation with safe permissions, the checks the daemon makes before
using a secret key (and `towerd run` exiting 78 naming the file), and the central's
allow-list binding each key to one tower id. Real files, real `towerd` processes."""

from __future__ import annotations

import os
import stat
import subprocess
from pathlib import Path

import pytest
import zmq
import zmq.auth

from towerd import keys
from towerd.errors import EX_CONFIG, ConfigError


def mode_of(path: Path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


@pytest.fixture
def pair(tmp_path) -> keys.KeyPair:
    return keys.generate_keypair(tmp_path / "k", "tower")


def test_generate_writes_a_zmq_certificate_pair_with_a_private_secret(tmp_path):
    old_umask = os.umask(0)  # even with a permissive umask the secret file is 0600
    try:
        pair = keys.generate_keypair(tmp_path / "new" / "dir", "tower")
    finally:
        os.umask(old_umask)
    assert pair.secret_file == tmp_path / "new" / "dir" / "tower.key_secret"
    assert pair.public_file == tmp_path / "new" / "dir" / "tower.key"
    assert mode_of(pair.secret_file) == 0o600
    assert mode_of(pair.public_file) == 0o644
    assert mode_of(pair.secret_file.parent) == 0o700
    public, secret = zmq.auth.load_certificate(pair.secret_file)  # readable by pyzmq's own loader
    assert public.decode() == pair.public_key and len(secret) == 40
    assert zmq.curve_public(secret) == public
    assert zmq.auth.load_certificate(pair.public_file) == (public, None)
    assert not [p for p in pair.secret_file.parent.iterdir() if ".tmp-" in p.name]


def test_generate_refuses_to_replace_keys_unless_forced(pair):
    before = pair.secret_file.read_bytes()
    with pytest.raises(FileExistsError, match="--force"):
        keys.generate_keypair(pair.secret_file.parent, "tower")
    assert pair.secret_file.read_bytes() == before
    again = keys.generate_keypair(pair.secret_file.parent, "tower", force=True)
    assert again.public_key != pair.public_key and mode_of(again.secret_file) == 0o600
    with pytest.raises(ConfigError, match="key name"):
        keys.generate_keypair(pair.secret_file.parent, "../escape")


def test_check_secret_key_file_accepts_a_good_file(pair):
    keys.check_secret_key_file(pair.secret_file)
    public, secret = keys.load_secret_key_file(pair.secret_file)
    assert public.decode() == pair.public_key and zmq.curve_public(secret) == public


@pytest.mark.parametrize(("mode", "who"), [(0o640, "group"), (0o604, "others"), (0o644, "group and others"),
                                           (0o620, "group")])
def test_secret_key_readable_by_others_is_refused_naming_file_and_why(pair, mode, who):
    os.chmod(pair.secret_file, mode)
    with pytest.raises(ConfigError) as info:
        keys.check_secret_key_file(pair.secret_file)
    text = str(info.value)
    assert str(pair.secret_file) in text
    assert f"mode {mode:04o} gives {who} access" in text and "chmod 600" in text


def test_other_unusable_secret_key_files_are_refused(tmp_path, pair):
    cases = [
        (None, "no secret key file"),
        (tmp_path / "missing.key_secret", "missing (make one with `towerd keys generate"),
        (tmp_path, "not a regular file"),
        (pair.public_file, "holds no secret key (is it the public .key file?)"),
    ]
    garbage = tmp_path / "garbage.key_secret"
    garbage.write_text('curve\n    public-key = "short"\n    secret-key = "also short"\n')
    os.chmod(garbage, 0o600)
    cases.append((garbage, "not 40-character Z85"))
    other = keys.generate_keypair(tmp_path / "o", "other")
    mixed = tmp_path / "mixed.key_secret"
    _, other_secret = zmq.auth.load_certificate(other.secret_file)
    mixed.write_text(f'curve\n    public-key = "{pair.public_key}"\n    secret-key = "{other_secret.decode()}"\n')
    os.chmod(mixed, 0o600)
    cases.append((mixed, "does not belong to its secret key"))
    for path, expected in cases:
        with pytest.raises(ConfigError) as info:
            keys.check_secret_key_file(path)
        assert expected in str(info.value), (path, str(info.value))
        if path is not None:
            assert str(path) in str(info.value)


def test_public_key_file_checks(tmp_path, pair):
    assert keys.load_public_key_file(pair.public_file).decode() == pair.public_key
    assert keys.load_public_key_file(pair.secret_file).decode() == pair.public_key
    with pytest.raises(ConfigError, match="server public key file .*missing"):
        keys.load_public_key_file(tmp_path / "nope.key", "server public key file")
    empty = tmp_path / "empty.key"
    empty.write_text("# nothing\n")
    with pytest.raises(ConfigError, match="holds no public key"):
        keys.load_public_key_file(empty)


# ------------------------------------------------------------------------------ allow-list


def test_allow_binds_one_key_to_one_tower(tmp_path, pair):
    allow = tmp_path / "allow"
    target = keys.allow_tower("tx-lrd-014", pair.public_file, allow)
    assert target == allow / "tx-lrd-014.key" and mode_of(target) == 0o644
    listed, problems = keys.load_allow_list(allow)
    assert problems == [] and listed.tower_of(pair.public_key.encode()) == "tx-lrd-014" and len(listed) == 1
    with pytest.raises(ConfigError, match="already allowed for tower 'tx-lrd-014'"):
        keys.allow_tower("tx-lrd-015", pair.public_file, allow)
    other = keys.generate_keypair(tmp_path / "o", "other")
    with pytest.raises(FileExistsError, match="--force"):
        keys.allow_tower("tx-lrd-014", other.public_file, allow)
    keys.allow_tower("tx-lrd-014", other.public_file, allow, force=True)  # key rotation
    listed, _ = keys.load_allow_list(allow)
    assert listed.tower_of(other.public_key.encode()) == "tx-lrd-014"
    assert listed.tower_of(pair.public_key.encode()) is None
    with pytest.raises(ConfigError, match="tower id"):
        keys.allow_tower("bad id", pair.public_file, allow)


def test_allow_list_refuses_a_key_under_two_ids_and_reports_odd_files(tmp_path, pair):
    allow = tmp_path / "allow"
    allow.mkdir()
    for name in ("tx-a.key", "tx-b.key"):  # copied by hand under two names
        (allow / name).write_bytes(pair.public_file.read_bytes())
    good = keys.generate_keypair(tmp_path / "g", "good")
    (allow / "tx-c.key").write_bytes(good.public_file.read_bytes())
    (allow / "not a tower id.key").write_bytes(good.public_file.read_bytes())
    (allow / "tx-d.key_secret").write_bytes(good.secret_file.read_bytes())
    (allow / "tx-e.key").write_text("public-key = \"nonsense\"\n")
    (allow / "README").write_text("ignored\n")
    listed, problems = keys.load_allow_list(allow)
    assert dict(listed.towers) == {good.public_key.encode(): "tx-c"}
    text = "\n".join(problems)
    assert "listed for towers tx-a, tx-b" in text
    assert "not a tower id.key: file name is not <tower-id>.key" in text
    assert "tx-d.key_secret: a secret key file in the allow-list directory" in text
    assert "tx-e.key: no valid public key" in text
    assert len(problems) == 4
    missing, problems = keys.load_allow_list(tmp_path / "absent")
    assert len(missing) == 0 and "no tower is admitted" in problems[0]


def test_allow_dir_signature_changes_with_the_directory(tmp_path, pair):
    allow = tmp_path / "allow"
    allow.mkdir()
    before = keys.allow_dir_signature(allow)
    assert keys.allow_dir_signature(allow) == before
    keys.allow_tower("tx-a", pair.public_file, allow)
    after = keys.allow_dir_signature(allow)
    assert after != before
    (allow / "tx-a.key").unlink()
    assert keys.allow_dir_signature(allow) != after


# ------------------------------------------------------------------------------ command line


def run(exe: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([exe, *args], capture_output=True, text=True, timeout=60)


def test_cli_generate_allow_check(towerd_exe, tmp_path):
    res = run(towerd_exe, "keys", "generate", "--dir", str(tmp_path / "t"), "--name", "tower")
    assert res.returncode == 0, res.stderr
    public, _ = zmq.auth.load_certificate(tmp_path / "t" / "tower.key_secret")
    assert f"public key: {public.decode()}" in res.stdout
    assert mode_of(tmp_path / "t" / "tower.key_secret") == 0o600
    again = run(towerd_exe, "keys", "generate", "--dir", str(tmp_path / "t"))
    assert again.returncode == 1 and "refusing to replace" in again.stderr

    res = run(towerd_exe, "keys", "allow", "--tower-id", "tx-9", str(tmp_path / "t" / "tower.key"),
              "--dir", str(tmp_path / "allow"))
    assert res.returncode == 0, res.stderr
    assert (tmp_path / "allow" / "tx-9.key").exists()

    ok = run(towerd_exe, "keys", "check", str(tmp_path / "t" / "tower.key_secret"))
    assert ok.returncode == 0 and "OK" in ok.stdout
    os.chmod(tmp_path / "t" / "tower.key_secret", 0o644)
    bad = run(towerd_exe, "keys", "check", str(tmp_path / "t" / "tower.key_secret"))
    assert bad.returncode == 1 and "gives group and others access" in bad.stderr


CONFIG = """\
version: 1
tower:
  id: tx-keys-01
  latitude_deg: 27.5
  longitude_deg: -99.5
  height_m: 130
state_dir: {state}
centrals:
  - name: hq
    endpoint: tcp://127.0.0.1:9
    server_public_key_file: {server_public}
    client_secret_key_file: {secret}
"""


def test_daemon_refuses_to_start_with_an_unsafe_or_missing_key(towerd_exe, tmp_path):
    central = keys.generate_keypair(tmp_path / "central", "central")
    tower = keys.generate_keypair(tmp_path / "tower", "tower")
    cfg = tmp_path / "towerd.yaml"

    def start(secret: Path) -> subprocess.CompletedProcess:
        cfg.write_text(CONFIG.format(state=tmp_path / "state", server_public=central.public_file, secret=secret))
        return run(towerd_exe, "run", "--config", str(cfg))

    os.chmod(tower.secret_file, 0o640)
    res = start(tower.secret_file)
    assert res.returncode == EX_CONFIG, res.stdout + res.stderr
    out = res.stdout + res.stderr
    assert str(tower.secret_file) in out and "mode 0640 gives group access" in out

    missing = tmp_path / "tower" / "absent.key_secret"
    res = start(missing)
    assert res.returncode == EX_CONFIG, res.stdout + res.stderr
    assert f"this tower's secret key file {missing} does not exist" in res.stdout + res.stderr
    assert not (tmp_path / "state").exists(), "refused before creating anything on disk"


def test_generate_gives_the_secret_to_its_owner(towerd_exe, tmp_path):
    """--owner USER: the secret key belongs to the user the daemon runs as (0600), and a
    directory created for it lets that user in (root-owned 0750, the user's group)."""
    import pwd

    if os.geteuid() != 0:
        res = run(towerd_exe, "keys", "generate", "--dir", str(tmp_path / "k"), "--owner", "nobody")
        assert res.returncode == 1 and "Operation not permitted" in res.stderr  # only root gives files away
        return
    nobody = pwd.getpwnam("nobody")
    res = run(towerd_exe, "keys", "generate", "--dir", str(tmp_path / "k"), "--owner", "nobody")
    assert res.returncode == 0, res.stderr
    secret = (tmp_path / "k" / "tower.key_secret").stat()
    assert (secret.st_uid, secret.st_gid, secret.st_mode & 0o777) == (nobody.pw_uid, nobody.pw_gid, 0o600)
    d = (tmp_path / "k").stat()
    assert (d.st_uid, d.st_gid, d.st_mode & 0o777) == (0, nobody.pw_gid, 0o750)
    assert "owner nobody" in res.stdout
    # pytest's tmp_path is 0700: nobody cannot reach the key, and generate says so.
    assert "user nobody cannot enter" in res.stderr and "could not read it" in res.stderr
    unknown = run(towerd_exe, "keys", "generate", "--dir", str(tmp_path / "u"), "--owner", "no-such-user-x")
    assert unknown.returncode == 1 and "no user 'no-such-user-x'" in unknown.stderr
