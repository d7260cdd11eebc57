"""docs/field-guide.md, walked on this machine as a technician (root) and the service
user (`towerd`) would: every shell command of the guide, in order, against emulated
sensors (`towerd sim` on ptys behind /dev/towerd-style names) and a real CURVE central.
A step fails the test when its command fails or its output contradicts what the guide
says it shows.

What differs from a tower, and why:
- /etc/towerd, /var/lib/towerd, /run/towerd and /dev/towerd live under a scratch root
  (ROOT); each path in a command is rewritten, and commands that read the default
  configuration get ``-c ROOT/etc/towerd/towerd.yaml``.
- Step 1 (`apt-get install ./towerd_*.deb`) is tests/test_packaging.py's; step 6's
  `systemctl enable --now towerd` is what the unit does: `towerd run` as the service user
  (setpriv), and `systemctl reload` is check-config then SIGHUP, as the unit's
  ExecReload.
- The ptys get group dialout, mode 0660, as the package's udev rules give the devices.
- The RF Explorer of the shipped configuration is disabled: this tower has a TI radar.

The service user runs the checkout's towerd. Where the venv's interpreter is private to
root (a pyenv under /root), it runs Debian's /usr/bin/python3 on the venv's packages.

Needs root (setpriv, chown). Uses the `towerd` user when it exists; creates it (and
removes it afterwards) only when asked (CI=true, TOWERD_TEST_PACKAGE=1 or `bash
scripts/test --with-package`), as system users are created only then.
"""

from __future__ import annotations

import grp
import os
import pwd
import re
import shutil
import signal
import site
import subprocess
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from processes import Child, Sim, free_tcp_port, wait_listening
from towerd.doctor import clock_synchronised
from towerd.status import query, render

REPO = Path(__file__).resolve().parents[1]
GUIDE = REPO / "docs" / "field-guide.md"
SHIPPED = REPO / "config" / "towerd.yaml"
USER = "towerd"
AS_SERVICE = ["setpriv", f"--reuid={USER}", f"--regid={USER}", "--init-groups", "--"]
"""Run as the service user with its groups, as systemd's User= does (setpriv execs: no
parent in between, so signals and exit statuses are the command's own)."""
ASKED = os.environ.get("CI") == "true" or os.environ.get("TOWERD_TEST_PACKAGE") == "1"
pytestmark = pytest.mark.system  # the `towerd` user and the shipped web console port 8470 (tests/conftest.py)
TOWER_ID = "tx-guide-001"

WALKED = [
    "apt-get install ./towerd_0.1.0_all.deb",
    "towerd keys generate --dir /etc/towerd/keys",
    "towerd check-config /etc/towerd/towerd.yaml",
    "towerd doctor",
    "systemctl enable --now towerd",
    "towerd status",
]
"""The guide's commands this test knows how to walk: a new step in the guide fails the
test until the test walks it too."""


def guide_commands() -> list[str]:
    """Every command line of the guide's ``sh`` blocks, comments stripped."""
    blocks = re.findall(r"```sh\n(.*?)```", GUIDE.read_text(), re.S)
    return [line.split("#", 1)[0].strip() for block in blocks for line in block.splitlines()
            if line.split("#", 1)[0].strip()]


def test_the_guide_has_the_steps_this_test_walks():
    assert guide_commands() == WALKED


@pytest.fixture
def service_user():
    """The `towerd` service user (created when asked and missing; removed again then)."""
    if os.geteuid() != 0 or shutil.which("setpriv") is None:
        pytest.skip("walks the guide as root and as the service user: needs root and setpriv")
    created = False
    try:
        pwd.getpwnam(USER)
    except KeyError:
        if not ASKED:
            pytest.skip(f"needs the service user {USER!r}: created only with CI=true or "
                        "`bash scripts/test --with-package`")
        subprocess.run(["useradd", "--system", "--user-group", "--no-create-home", "--home-dir", "/var/lib/towerd",
                        "--shell", "/usr/sbin/nologin", "--groups", "dialout", USER], check=True, timeout=60)
        created = True
    yield pwd.getpwnam(USER)
    if created:
        subprocess.run(["userdel", USER], check=False, timeout=60)
        if subprocess.run(["getent", "group", USER], capture_output=True).returncode == 0:
            subprocess.run(["groupdel", USER], check=False, timeout=60)


@pytest.fixture
def root():
    """A scratch root everyone may enter (pytest's tmp_path is root-only 0700)."""
    path = Path(tempfile.mkdtemp(prefix="towerd-guide-", dir="/tmp"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


def service_towerd(towerd_exe: str) -> list[str]:
    """How the service user runs this checkout's towerd: the console script, or Debian's
    python3 on the venv's site-packages when the venv's interpreter is out of its reach."""
    probe = AS_SERVICE
    if subprocess.run([*probe, towerd_exe, "--version"], capture_output=True, timeout=60).returncode == 0:
        return [towerd_exe]
    (site_dir,) = [d for d in site.getsitepackages() if list(Path(d).glob("__editable__*towerd*"))]
    launcher = ["/usr/bin/python3", "-c", f"import site, sys; site.addsitedir({site_dir!r}); "
                f"sys.path.insert(0, {site_dir!r}); sys.argv[0] = 'towerd'; from towerd.cli import main; "
                "sys.exit(main())"]
    res = subprocess.run([*probe, *launcher, "--version"], capture_output=True, text=True, timeout=60)
    if res.returncode != 0:
        pytest.skip(f"user {USER} cannot run this checkout's towerd: {res.stderr.strip()[-300:]}")
    return launcher


class Tower:
    """The guide's paths under ``root`` and the commands, as root or as the service user."""

    def __init__(self, exe: str, root: Path, user: pwd.struct_passwd) -> None:
        self.exe, self.root, self.user = exe, root, user
        self.service_exe = service_towerd(exe)
        self.etc = root / "etc" / "towerd"
        self.config = self.etc / "towerd.yaml"

    def path(self, text: str) -> str:
        for top in ("/etc/towerd", "/var/lib/towerd", "/run/towerd", "/dev/towerd"):
            text = text.replace(top, str(self.root) + top)
        return text

    def command(self, line: str) -> list[str]:
        """A guide command line for this machine: paths under the scratch root, the
        configuration named where the guide relies on the default."""
        argv = self.path(line).split()
        assert argv[0] == "towerd", line
        if argv[1] in ("doctor", "status"):
            argv += ["-c", str(self.config)]
        return [self.exe, *argv[1:]]

    def as_root(self, argv: list[str], timeout_s: float = 60) -> subprocess.CompletedProcess:
        return subprocess.run(argv, capture_output=True, text=True, timeout=timeout_s, cwd=self.root)

    def service(self, argv: list[str]) -> list[str]:
        """``argv`` (a towerd command line) run as the service user."""
        if argv and argv[0] == self.exe:
            argv = [*self.service_exe, *argv[1:]]
        return [*AS_SERVICE, *argv]

    def as_service(self, argv: list[str], timeout_s: float = 60) -> subprocess.CompletedProcess:
        return subprocess.run(self.service(argv), capture_output=True, text=True, timeout=timeout_s, cwd=self.root)


def udev_like(path: str) -> None:
    """What the package's udev rules do for a named port: group dialout, mode 0660."""
    os.chown(path, 0, grp.getgrnam("dialout").gr_gid)
    os.chmod(path, 0o660)


def together(*calls):
    """Run independent commands (zero-argument callables) at once and return their
    results in order: each towerd command costs a second or more of CPU to start, and
    read-only checks of the same state need not wait for each other."""
    with ThreadPoolExecutor(len(calls)) as pool:
        return [f.result() for f in [pool.submit(call) for call in calls]]


def wait_status(tower: Tower, daemon: Child, accept, ready, timeout_s: float = 60.0) -> subprocess.CompletedProcess:
    """`towerd status` once the daemon's status socket says ``ready`` (a predicate on the
    status it answers; asked in-process, as `towerd status` asks it, since every poll
    through the command would cost a process start), repeated until the command's result
    passes ``accept``. (The deadline is the old 40 s plus the start of one command on a
    loaded machine: a poll through the command read the status only after its start.)"""
    deadline = time.monotonic() + timeout_s
    sock = tower.path("/run/towerd/status.sock")
    while True:  # another process: nothing to wait on but its answers
        try:
            reply = query(sock, timeout_s=5.0)
        except (OSError, ValueError):
            reply = {}
        if reply.get("ok") and ready(reply["status"]):
            res = tower.as_root(tower.command("towerd status"))
            if accept(res):
                return res
        assert daemon.proc.poll() is None, daemon.log()
        assert time.monotonic() < deadline, str(reply) + daemon.log()
        time.sleep(0.2)


def all_good(status: dict) -> bool:
    """What makes `towerd status` exit 0: no problem in its rendering."""
    return render(status)[1] == []


def doctor_problems(out: str) -> list[str]:
    """Doctor's PROBLEM lines, less the clock one on a machine whose clock is not
    NTP-synchronised (a fact of this machine, not of the tower; doctor is right)."""
    problems = [line.strip() for line in out.splitlines() if line.strip().startswith("PROBLEM")]
    if clock_synchronised() is False:
        problems = [p for p in problems if not p.startswith("PROBLEM  clock: not synchronised")]
    return problems


@pytest.mark.slow
def test_walk_the_field_guide_as_the_service_user(towerd_exe, service_user, root, tmp_path):
    tower = Tower(towerd_exe, root, service_user)
    # What the package installs (step 1): the configuration, the chirp profile, the key
    # directory root:towerd 0750, the state and runtime directories the unit creates.
    (tower.etc / "ti_mmwave").mkdir(parents=True)
    shutil.copy(REPO / "config" / "ti_mmwave" / "iwr6843_demo.cfg", tower.etc / "ti_mmwave")
    for d, owner, mode in ((root / "var/lib/towerd", service_user.pw_uid, 0o750),
                           (root / "run/towerd", service_user.pw_uid, 0o755),
                           (root / "dev/towerd", 0, 0o755)):
        d.mkdir(parents=True)
        os.chown(d, owner, service_user.pw_gid)
        d.chmod(mode)

    # The central, run by its operators (root here), with its own key pair.
    central_dir = tmp_path / "central"
    endpoint = f"tcp://127.0.0.1:{free_tcp_port()}"
    central = None
    # Step 2: the radar, plugged in: a TI radar with its CLI port, under the udev names.
    sim = Sim(towerd_exe, tmp_path, "--device", "ti_mmwave", "--link", tower.path("/dev/towerd/ti-data"),
              "--cli-link", tower.path("/dev/towerd/ti-cli"))
    daemon = None
    try:
        log = sim.wait_for("ready")
        for port in re.findall(r"^(?:data|cli)_port: (\S+)$", log, re.M):
            udev_like(port)

        # Step 3: keys. The secret is the service user's alone; the public key is printed.
        # (The central's operators make their own key pair meanwhile.)
        made, res = together(
            lambda: tower.as_root([towerd_exe, "keys", "generate", "--dir", str(central_dir), "--name", "central",
                                   "--owner", "root"]),
            lambda: tower.as_root(tower.command("towerd keys generate --dir /etc/towerd/keys")))
        assert made.returncode == 0, made.stderr
        assert res.returncode == 0, res.stderr
        public = re.search(r"^public key: (\S{40})$", res.stdout, re.M)
        assert public, res.stdout
        keys = Path(tower.path("/etc/towerd/keys"))
        secret = keys / "tower.key_secret"
        st = secret.stat()
        assert (st.st_uid, st.st_mode & 0o777) == (service_user.pw_uid, 0o600), "readable by the service only"
        assert tower.as_service(["cat", str(secret)]).returncode == 0
        # ... sent to the central's operators for their allow-list; they send their key back.
        allowed = tower.as_root([towerd_exe, "keys", "allow", "--tower-id", TOWER_ID, str(keys / "tower.key"),
                                 "--dir", str(tmp_path / "allow")])
        assert allowed.returncode == 0, allowed.stderr
        central = Child([towerd_exe, "central", "--bind", endpoint, "--db", str(tmp_path / "central.sqlite"),
                         "--secret-key", str(central_dir / "central.key_secret"), "--allow-dir",
                         str(tmp_path / "allow")], tmp_path / "central.log")
        shutil.copy(central_dir / "central.key", keys / "central.key")

        # Step 4: configure the shipped file, then check it.
        text = SHIPPED.read_text().replace("id: tx-lrd-014", f"id: {TOWER_ID}")
        text = text.replace("tcp://central.example.net:7700", endpoint)
        text = re.sub(r"(\n    name: rf0\n    driver: rfexplorer\n)", r"\1    enabled: false\n", text)
        tower.config.write_text(tower.path(text))
        assert endpoint in tower.config.read_text(), "the shipped central endpoint changed: adapt the edit"
        # The unit's ExecStartPre runs it as the service user: same verdict.
        res, as_service = together(
            lambda: tower.as_root(tower.command("towerd check-config /etc/towerd/towerd.yaml")),
            lambda: tower.as_service(tower.command("towerd check-config /etc/towerd/towerd.yaml")))
        assert res.returncode == 0, res.stdout + res.stderr
        assert "configuration OK" in res.stdout and f"files checked as user {USER}" in res.stdout
        assert as_service.returncode == 0, as_service.stdout + as_service.stderr

        # The guide: "The daemon refuses to start with a secret key readable by others,
        # and says which file and why" -- and doctor and check-config say so first.
        secret.chmod(0o644)
        refused, check, doc = together(
            lambda: tower.as_service([towerd_exe, "run", "--config", str(tower.config)]),
            lambda: tower.as_root(tower.command("towerd check-config /etc/towerd/towerd.yaml")),
            lambda: tower.as_root(tower.command("towerd doctor")))
        assert refused.returncode == 78 and str(secret) in refused.stderr and "mode 0644" in refused.stderr
        assert check.returncode == 1
        assert "mode 0644" in doc.stdout
        # The trap of issue 14: a key root can read but the service user cannot.
        secret.chmod(0o600)
        os.chown(secret, 0, 0)
        refused, check, doc = together(
            lambda: tower.as_service([towerd_exe, "run", "--config", str(tower.config)]),
            lambda: tower.as_root(tower.command("towerd check-config /etc/towerd/towerd.yaml")),
            lambda: tower.as_root(tower.command("towerd doctor")))
        assert refused.returncode == 78 and f"user {USER} cannot read it" in refused.stderr, refused.stderr
        assert check.returncode == 1 and f"user {USER} cannot read it" in check.stderr
        assert doc.returncode == 1 and f"chown {USER} {secret}" in doc.stdout, doc.stdout
        assert not list(Path(tower.path("/var/lib/towerd")).iterdir()), "refused before creating anything"
        os.chown(secret, service_user.pw_uid, service_user.pw_gid)

        # Step 5: doctor, until it says "No problems found."
        wait_listening(endpoint, central)
        res = tower.as_root(tower.command("towerd doctor"), timeout_s=120)
        assert doctor_problems(res.stdout) == [], res.stdout
        assert "ZeroMQ handshake accepted" in res.stdout and f"user {USER} can open it" in res.stdout
        if clock_synchronised() is not False:
            assert res.returncode == 0 and res.stdout.rstrip().endswith("No problems found.")

        # Step 6: start (the unit runs `towerd run` as the service user) and watch.
        daemon = Child(tower.service([towerd_exe, "run", "--config", str(tower.config)]), tmp_path / "daemon.log")
        res = wait_status(tower, daemon, lambda r: r.returncode == 0, all_good)
        out = res.stdout
        # "each sensor with its state, its rate and error counters; each central with its
        # link state and the time since its last acknowledgement; how many reports wait in
        # the outbox; how many tracks are active. It exits 0 when all is well"
        assert re.search(r"radar0 \(ti_mmwave on \S+ti-data\): ok, [\d.]+ readings/s; \d+ frames?, 0 bad, "
                         r"0 resyncs, 0 bytes dropped", out), out
        assert re.search(r"hq \(tcp://127\.0\.0\.1:\d+\): up \(up\), last ACK [\d.]+ s ago", out), out
        assert re.search(r"Outbox: \d+ records? waiting for acknowledgement", out), out
        assert re.search(r"Tracks: \d+ active", out) and out.rstrip().endswith("All good."), out
        digest = re.search(r"sha256 ([0-9a-f]{12})", out).group(1)

        # With the daemon running, doctor still finds nothing (the daemon's own hold on
        # the port is not a problem).
        res = tower.as_root(tower.command("towerd doctor"), timeout_s=120)
        assert doctor_problems(res.stdout) == [], res.stdout

        # Step 7: change the configuration, reload (check-config, then SIGHUP), and the
        # digest in status changes.
        tower.config.write_text(tower.config.read_text() + "\n# edited on site\n")
        assert tower.as_service(tower.command("towerd check-config /etc/towerd/towerd.yaml")).returncode == 0
        os.kill(daemon.proc.pid, signal.SIGHUP)
        wait_status(tower, daemon, lambda r: r.returncode == 0 and f"sha256 {digest}" not in r.stdout,
                    lambda st: all_good(st) and not str(st.get("config_digest", "")).startswith(digest))
    finally:
        daemon_code = daemon.stop() if daemon is not None else 0
        if central is not None:
            central.stop()
        sim_code = sim.stop()
        assert daemon_code == 0, daemon.log()
        assert sim_code == 0, sim.log()
