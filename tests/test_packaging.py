"""Packaging: the hardened systemd unit, the udev rules, and the Debian package.

Quick tests (always run, no root): the unit keeps the daemon's contract and its hardening
directives, passes `systemd-analyze verify`, and scores <= 2.0 with `systemd-analyze
security --offline=yes`; every udev rule parses and names the right devices.

The slow test builds the .deb with packaging/build-deb.sh, installs it with apt-get (which
pulls Debian's own python3-* libraries), checks the installed package with Debian's
/usr/bin/python3 (never the venv), and purges it. It changes system packages, so it runs
only when asked (CI=true, TOWERD_TEST_PACKAGE=1, or `bash scripts/test --with-package`),
and then undoes what it did: it purges the package, the packages its build and install
pulled in that were not installed before, and the `towerd` user and group when it created
them. It needs root and apt: elsewhere it skips, except under CI=true, where skipping
would hide a broken package, so it fails.
"""

from __future__ import annotations

import fnmatch
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import pytest

import towerd

REPO = Path(__file__).resolve().parents[1]
UNIT = REPO / "packaging" / "towerd.service"
RULES = REPO / "packaging" / "60-towerd.rules"
DEBIAN = REPO / "packaging" / "debian"
BUILD_DEB = REPO / "packaging" / "build-deb.sh"
IN_CI = os.environ.get("CI") == "true"
ASKED = IN_CI or os.environ.get("TOWERD_TEST_PACKAGE") == "1"
"""Whether the package test may change this machine's packages and users."""
pytestmark = pytest.mark.system  # apt/dpkg and the `towerd` user: one at a time (tests/conftest.py)
# apt-get through scripts/apt.sh's apt_get, as bootstrap.sh and build-deb.sh run it: it
# waits for a lock held by another apt (apt-daily, unattended-upgrades, a bootstrap),
# the package lists' lock of `apt-get update` included, instead of failing.
APT = ["bash", "-c", 'as_root() { "$@"; }; . "$0"; apt_get "$@"', str(REPO / "scripts" / "apt.sh")]
MAX_EXPOSURE = 2.0

# Debian's tools and interpreter only: the tests run inside the development venv, whose
# bin/ must not leak into what the package is checked with.
SYSTEM_ENV = {
    "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    "LC_ALL": "C.UTF-8",
    "HOME": os.environ.get("HOME", "/root"),
    "DEBIAN_FRONTEND": "noninteractive",
}


def skip_or_fail(reason: str) -> None:
    """Skip, except under CI=true, where a skipped check would pass unnoticed."""
    if IN_CI:
        pytest.fail(f"{reason}; CI=true requires this check to run")
    pytest.skip(reason)


def run(cmd: list[str], timeout_s: float, check: bool = True, **kwargs) -> subprocess.CompletedProcess:
    """Run a command in its own process group with a deadline; on timeout the whole group
    (dpkg-buildpackage's or apt's children too) is killed, so nothing outlives the test."""
    kwargs.setdefault("env", SYSTEM_ENV)
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True, **kwargs)
    try:
        out, _ = proc.communicate(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, _ = proc.communicate()
        pytest.fail(f"{' '.join(cmd)} did not finish in {timeout_s} s:\n{out[-4000:]}")
    result = subprocess.CompletedProcess(cmd, proc.returncode, out, "")
    if check and proc.returncode != 0:
        pytest.fail(f"{' '.join(cmd)} exited {proc.returncode}:\n{out[-4000:]}")
    return result


# --------------------------------------------------------------------------- the unit

def parse_unit(text: str) -> dict[str, dict[str, list[str]]]:
    """Unit file -> {section: {key: [values in order]}}; repeated keys accumulate and an
    empty assignment resets the list, as systemd does."""
    sections: dict[str, dict[str, list[str]]] = {}
    current = None
    pending = ""
    for raw in text.splitlines():
        line = pending + raw.strip()
        pending = ""
        if line.endswith("\\"):
            pending = line[:-1] + " "
            continue
        if not line or line[0] in "#;":
            continue
        if line.startswith("["):
            current = sections.setdefault(line.strip("[]"), {})
            continue
        assert current is not None, f"assignment outside a section: {line}"
        key, sep, value = line.partition("=")
        assert sep, f"not an assignment: {line}"
        values = current.setdefault(key.strip(), [])
        if value.strip():
            values.append(value.strip())
        else:
            values.clear()
            values.append("")
    return sections


@pytest.fixture(scope="module")
def unit() -> dict[str, dict[str, list[str]]]:
    return parse_unit(UNIT.read_text())


def words(values) -> list[str]:
    return [w for v in values for w in v.split()]


def seconds(span: str) -> float:
    """systemd time span ("15", "15s", "1min 30s") -> seconds."""
    units = {"": 1, "s": 1, "sec": 1, "ms": 1e-3, "m": 60, "min": 60, "h": 3600}
    total = 0.0
    for number, unit_name in re.findall(r"(\d+(?:\.\d+)?)\s*([a-z]*)", span):
        total += float(number) * units[unit_name]
    return total


def test_unit_keeps_the_daemon_contract(unit):
    service = unit["Service"]
    assert service["Type"] == ["notify"], "Type=notify-reload needs systemd 253; Debian 12 has 252"
    assert service["ExecStart"] == ["/usr/bin/towerd run --config /etc/towerd/towerd.yaml"]
    assert [v.lstrip("-") for v in service["ExecStartPre"]] == ["/usr/bin/towerd check-config /etc/towerd/towerd.yaml"]
    # RestartPreventExitStatus= applies to the main process only: a failing ExecStartPre
    # would be restarted every RestartSec forever; `towerd run` exits 78 instead.
    assert service["ExecStartPre"][0].startswith("-")
    assert service["Restart"] == ["on-failure"]
    assert "78" in words(service["RestartPreventExitStatus"])
    assert service["ExecReload"] == ["/usr/bin/towerd check-config /etc/towerd/towerd.yaml",
                                     "/bin/kill -HUP $MAINPID"], "check first, then HUP (sshd pattern)"
    stop = seconds(service["TimeoutStopSec"][-1])
    assert 0 < stop <= 60, "a bounded stop timeout"
    assert service["StateDirectory"] == ["towerd"]


def test_unit_is_hardened_as_the_notes_require(unit):
    service = unit["Service"]
    assert service["User"] == ["towerd"]
    assert "dialout" in words(service["SupplementaryGroups"])
    assert service["RuntimeDirectory"] == ["towerd"]
    assert service["ConfigurationDirectory"] == ["towerd"]
    assert service["ProtectSystem"] == ["strict"]
    assert "ReadWritePaths" not in service, "/etc/towerd stays read-only"
    assert service["CapabilityBoundingSet"] == [""]
    assert service["AmbientCapabilities"] == [""]
    assert service["DevicePolicy"] == ["closed"]
    assert set(service["DeviceAllow"]) == {"char-ttyUSB rw", "char-ttyACM rw"}
    assert service.get("PrivateDevices", ["no"]) == ["no"], "PrivateDevices=yes hides the serial ports"
    assert set(words(service["RestrictAddressFamilies"])) == {"AF_UNIX", "AF_INET", "AF_INET6"}
    assert service["SystemCallFilter"][0] == "@system-service"
    denied = words(v[1:] for v in service["SystemCallFilter"] if v.startswith("~"))
    assert "@resources" not in denied, "libzmq aborts when sched_setscheduler (in @resources) is refused"
    assert service["SystemCallArchitectures"] == ["native"]
    assert service["UMask"] == ["0077"]
    for key in ("NoNewPrivileges", "ProtectHome", "PrivateTmp", "ProtectKernelTunables",
                "ProtectKernelModules", "ProtectKernelLogs", "ProtectControlGroups", "ProtectClock",
                "ProtectHostname", "RestrictNamespaces", "RestrictRealtime", "RestrictSUIDSGID",
                "LockPersonality", "RemoveIPC", "MemoryDenyWriteExecute"):
        assert service[key] == ["yes"], key
    assert service["ProtectProc"] == ["invisible"]
    assert service["ProcSubset"] == ["pid"]
    # DeviceAllow=char-ttyUSB/char-ttyACM resolve only once the drivers are loaded.
    for key in ("Wants", "After"):
        assert {"modprobe@usbserial.service", "modprobe@cdc_acm.service"} <= set(words(unit["Unit"][key]))


def can_apt_install() -> bool:
    return os.geteuid() == 0 and shutil.which("apt-get", path=SYSTEM_ENV["PATH"]) is not None


def systemd_analyze() -> str:
    """The systemd-analyze of this machine; under CI=true on a root apt machine without
    it (a slim container image), Debian's systemd package is installed to get it."""
    exe = shutil.which("systemd-analyze", path=SYSTEM_ENV["PATH"])
    if exe is None and IN_CI and can_apt_install():
        run([*APT, "update", "-qq"], 180)
        run([*APT, "install", "-y", "-qq", "--no-install-recommends", "systemd"], 300)
        exe = shutil.which("systemd-analyze", path=SYSTEM_ENV["PATH"])
    if exe is None:
        skip_or_fail("systemd-analyze is not installed")
    return exe


def exposure(unit_path: Path) -> float:
    """Overall exposure from `systemd-analyze security --offline=yes` (0 = best, 10 = worst)."""
    out = run([systemd_analyze(), "security", "--offline=yes", "--no-pager", str(unit_path)], 60, check=False).stdout
    match = re.search(r"Overall exposure level for \S+: (\d+(?:\.\d+)?)", out)
    assert match, f"no overall exposure in:\n{out[-2000:]}"
    return float(match.group(1))


def test_unit_exposure_is_at_most_2(tmp_path):
    score = exposure(UNIT)
    assert score <= MAX_EXPOSURE, f"exposure {score} > {MAX_EXPOSURE}: a hardening directive was lost"
    # The tool's own gate agrees (threshold in tenths).
    gate = run([systemd_analyze(), "security", "--offline=yes", f"--threshold={int(MAX_EXPOSURE * 10)}",
                str(UNIT)], 60, check=False)
    assert gate.returncode == 0, gate.stdout[-2000:]
    # Negative control: the same measurement of an unhardened unit must be far above 2.
    plain = tmp_path / "towerd.service"
    plain.write_text("[Service]\nType=notify\nExecStart=/usr/bin/towerd run\n")
    assert exposure(plain) > 9.0


def test_unit_verifies(tmp_path):
    """`systemd-analyze verify` checks every directive and its value. It also insists the
    executables exist, so here /usr/bin/towerd is swapped for /bin/true; the installed
    unit is verified as is by the package test."""
    true = shutil.which("true", path=SYSTEM_ENV["PATH"])
    copy = tmp_path / "towerd.service"
    copy.write_text(UNIT.read_text().replace("/usr/bin/towerd", true))
    result = run([systemd_analyze(), "verify", str(copy)], 60, check=False)
    complaints = [line for line in result.stdout.splitlines() if "towerd.service" in line]
    assert result.returncode == 0 and not complaints, result.stdout


# --------------------------------------------------------------------------- udev rules

MATCH_ONLY = {"ACTION", "DEVPATH", "KERNEL", "KERNELS", "SUBSYSTEM", "SUBSYSTEMS", "DRIVER", "DRIVERS",
              "ATTRS", "TAGS", "RESULT", "TEST", "CONST"}
ASSIGN_ONLY = {"OWNER", "GROUP", "MODE", "RUN", "LABEL", "GOTO", "IMPORT", "OPTIONS", "SECLABEL"}
BOTH = {"NAME", "SYMLINK", "TAG", "ENV", "ATTR", "SYSCTL", "PROGRAM"}
WITH_ARGUMENT = {"ATTRS", "ATTR", "ENV", "TEST", "CONST", "SYSCTL", "IMPORT", "RUN", "SECLABEL"}
CLAUSE = re.compile(r'\s*([A-Z]+)(?:\{([^}]*)\})?\s*(==|!=|\+=|-=|:=|=)\s*"((?:[^"\\]|\\.)*)"\s*(?:,|$)')


@dataclass
class Clause:
    key: str
    arg: str | None
    op: str
    value: str


def parse_rule(line: str, where: str) -> list[Clause]:
    """One rule line -> clauses; asserts every key, argument and operator is valid udev."""
    clauses, pos = [], 0
    while pos < len(line):
        m = CLAUSE.match(line, pos)
        assert m, f"{where}: cannot parse at column {pos + 1}: {line[pos:pos + 40]!r}"
        key, arg, op, value = m.groups()
        assert key in MATCH_ONLY | ASSIGN_ONLY | BOTH, f"{where}: unknown key {key}"
        assert (arg is not None) == (key in WITH_ARGUMENT) or key in {"IMPORT", "RUN"}, f"{where}: {key} argument"
        if key in MATCH_ONLY:
            assert op in {"==", "!="}, f"{where}: {key} is a match key, not {op}"
        elif key in ASSIGN_ONLY:
            assert op in {"=", "+=", ":=", "-="} and not (key in {"LABEL", "GOTO"} and op != "="), \
                f"{where}: {key} takes an assignment, not {op}"
        clauses.append(Clause(key, arg, op, value))
        pos = m.end()
    return clauses


def rule_lines(text: str, commented: bool = False) -> list[tuple[int, str]]:
    """(line number, rule) for every rule; commented=True gives the commented examples."""
    found = []
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if commented:
            body = line[1:].strip() if line.startswith("#") else ""
            if re.match(r'(SUBSYSTEM|KERNEL|ACTION|ENV|ATTRS)\b[^=]*[=!]=', body):
                found.append((number, body))
        elif line and not line.startswith("#"):
            found.append((number, line))
    return found


@pytest.fixture(scope="module")
def rules() -> list[list[Clause]]:
    text = RULES.read_text()
    assert "\\\n" not in text, "no line continuations: every rule on one line"
    return [parse_rule(line, f"{RULES.name}:{n}") for n, line in rule_lines(text)]


def test_udev_rules_parse(rules):
    labels = {c.value for rule in rules for c in rule if c.key == "LABEL"}
    gotos = {c.value for rule in rules for c in rule if c.key == "GOTO"}
    assert gotos and gotos <= labels, f"GOTO without LABEL: {gotos - labels}"


def test_udev_commented_examples_parse():
    """The site examples technicians copy into /etc/udev/rules.d must work as written."""
    examples = rule_lines(RULES.read_text(), commented=True)
    assert len(examples) >= 4
    for n, line in examples:
        clauses = parse_rule(line, f"{RULES.name}:{n} (example)")
        keys = {c.key for c in clauses}
        assert "SYMLINK" in keys and any(c.value.startswith("towerd/") for c in clauses if c.key == "SYMLINK")
        pinned = {(c.key, c.arg) for c in clauses} & {("ATTRS", "serial"), ("ENV", "ID_PATH"), ("ENV", "ID_SERIAL_SHORT")}
        assert pinned, f"line {n}: a site rule must pin the adapter (serial or USB path)"


def test_udevadm_verify_if_available():
    """systemd >= 254 ships `udevadm verify`; Debian 12's 252 does not."""
    udevadm = shutil.which("udevadm", path=SYSTEM_ENV["PATH"])
    if udevadm is None or run([udevadm, "verify", "--help"], 30, check=False).returncode != 0:
        pytest.skip("udevadm verify needs systemd >= 254 (this machine: none or older)")
    run([udevadm, "verify", "--resolve-names=never", str(RULES)], 30)


@dataclass
class Event:
    """A udev event for a tty as the rules see it: kernel name, parents' subsystems, and
    the properties IMPORT{builtin}="usb_id" would add."""
    kernel: str
    usb: dict[str, str] | None = None
    action: str = "add"
    subsystem: str = "tty"
    env: dict[str, str] = field(default_factory=dict)
    symlinks: list[str] = field(default_factory=list)
    tags: set[str] = field(default_factory=set)
    group: str | None = None
    mode: str | None = None


def apply_rules(rules: list[list[Clause]], event: Event) -> Event:
    """Evaluate the rules for one event, the subset of udev semantics these rules use
    (an unknown key fails the test, so a new construct needs a model here first)."""
    def pattern_match(value: str, pattern: str) -> bool:
        return any(fnmatch.fnmatchcase(value, alt) for alt in pattern.split("|"))

    def expand(value: str) -> str:
        return re.sub(r"\$env\{([A-Z_]+)\}", lambda m: event.env.get(m.group(1), ""), value)

    goto = None
    for rule in rules:
        if goto is not None:
            if any(c.key == "LABEL" and c.value == goto for c in rule):
                goto = None
            continue
        matched = True
        for c in rule:
            if c.op not in {"==", "!="}:
                continue
            if c.key == "ACTION":
                actual = event.action
            elif c.key == "SUBSYSTEM":
                actual = event.subsystem
            elif c.key == "KERNEL":
                actual = event.kernel
            elif c.key == "SUBSYSTEMS":
                hit = event.usb is not None and pattern_match("usb", c.value)
                if hit != (c.op == "=="):
                    matched = False
                continue
            elif c.key == "ENV":
                actual = event.env.get(c.arg, "")
            else:
                raise AssertionError(f"no model for match key {c.key}")
            if pattern_match(actual, c.value) != (c.op == "=="):
                matched = False
        if not matched:
            continue
        for c in rule:
            if c.op in {"==", "!="}:
                continue
            if c.key == "IMPORT" and c.arg == "builtin" and c.value == "usb_id":
                event.env.update(event.usb or {})
            elif c.key == "GOTO":
                goto = c.value
            elif c.key == "LABEL":
                pass
            elif c.key == "SYMLINK" and c.op == "+=":
                event.symlinks.append(expand(c.value))
            elif c.key == "ENV" and c.op == "=":
                event.env[c.arg] = expand(c.value)
            elif c.key == "TAG" and c.op == "+=":
                event.tags.add(c.value)
            elif c.key == "GROUP":
                event.group = c.value
            elif c.key == "MODE":
                event.mode = c.value
            else:
                raise AssertionError(f"no model for assignment {c.key}{c.op}")
    return event


def usb(vendor: str, model: str, interface: str, serial: str = "") -> dict[str, str]:
    props = {"ID_BUS": "usb", "ID_VENDOR_ID": vendor, "ID_MODEL_ID": model, "ID_USB_INTERFACE_NUM": interface}
    if serial:
        props["ID_SERIAL_SHORT"] = serial
    return props


@pytest.mark.parametrize("event, names", [
    (Event("ttyACM0", usb("0451", "bef3", "00", "R0061006")), ["towerd/ti-cli", "towerd/ti-R0061006-cli"]),
    (Event("ttyACM1", usb("0451", "bef3", "03", "R0061006")), ["towerd/ti-data", "towerd/ti-R0061006-data"]),
    (Event("ttyACM1", usb("0451", "bef4", "03")), ["towerd/ti-data"]),
    (Event("ttyUSB0", usb("10c4", "ea70", "00", "00F2A1B3")), ["towerd/ti-cli", "towerd/ti-00F2A1B3-cli"]),
    (Event("ttyUSB1", usb("10c4", "ea70", "01", "00F2A1B3")), ["towerd/ti-data", "towerd/ti-00F2A1B3-data"]),
    (Event("ttyUSB2", usb("10c4", "ea60", "00", "0001")), ["towerd/rfexplorer"]),
], ids=["xds110-cli", "xds110-data", "xds110-bef4-data", "cp2105-enhanced-cli", "cp2105-standard-data",
        "rfexplorer"])
def test_udev_names_supported_devices(rules, event, names):
    result = apply_rules(rules, event)
    assert result.symlinks == names
    assert (result.group, result.mode) == ("dialout", "0660")
    assert result.env.get("ID_MM_DEVICE_IGNORE") == "1", "ModemManager must leave the port alone"
    assert "systemd" in result.tags


@pytest.mark.parametrize("event", [
    Event("ttyACM2", usb("0451", "bef3", "01")),           # an XDS110 interface that is neither port
    Event("ttyUSB0", usb("0403", "6001", "00", "A50285BI")),  # FTDI: site rule only
    Event("ttyUSB0", usb("1a86", "7523", "00")),           # CH340: site rule only
    Event("ttyS0"),                                        # on-board UART
    Event("ttyACM0", usb("0451", "bef3", "00"), action="remove"),
    Event("ttyACM0", usb("0451", "bef3", "00"), subsystem="usb"),
], ids=["xds110-other-interface", "ftdi", "ch340", "ttyS0", "remove", "not-tty"])
def test_udev_leaves_other_devices_alone(rules, event):
    result = apply_rules(rules, event)
    assert result.symlinks == [] and result.group is None and "ID_MM_DEVICE_IGNORE" not in result.env


# --------------------------------------------------------------------------- Debian sources

def test_debian_changelog_version_is_the_package_version():
    first = (DEBIAN / "changelog").read_text().splitlines()[0]
    version = re.match(r"towerd \(([^)]+)\)", first).group(1)
    assert version == towerd.__version__, "bump packaging/debian/changelog with towerd.__version__"


def test_debian_control_depends_on_debian_libraries():
    control = (DEBIAN / "control").read_text()
    depends = re.search(r"^Depends:(.*?)(?=^\S)", control, re.M | re.S).group(1)
    names = {d.strip().split()[0] for d in depends.split(",") if d.strip()}
    assert {"python3-numpy", "python3-serial", "python3-zmq", "python3-yaml", "python3-scipy",
            "python3-pymap3d", "python3-systemd", "adduser", "${python3:Depends}", "${misc:Depends}"} <= names
    rules_text = (DEBIAN / "rules").read_text()
    assert "dh $@ --with python3 --buildsystem=pybuild" in rules_text


# --------------------------------------------------------------------------- the package

def dpkg_status(package: str) -> str:
    out = run(["dpkg-query", "-W", "-f=${db:Status-Abbrev}", package], 30, check=False)
    return out.stdout.strip() if out.returncode == 0 else "un"


def installed_packages() -> set[str]:
    """Names of the packages whose files are on this machine (any state but not-installed
    and config-files), without architecture qualifiers."""
    out = run(["dpkg-query", "-W", "-f=${Package}\t${db:Status-Abbrev}\n"], 60).stdout
    present = set()
    for line in out.splitlines():
        name, _, status = line.partition("\t")
        if len(status) >= 2 and status[1] not in "nc":
            present.add(name.split(":")[0])
    return present


def newly_unpacked(apt_output: str) -> set[str]:
    """Packages dpkg installed for the first time, from its "Selecting previously
    unselected package NAME." lines (printed even under apt-get -qq)."""
    return {m.split(":")[0] for m in re.findall(r"Selecting previously unselected package (\S+)\.\s*$",
                                                  apt_output, re.M)}


def account_exists(kind: str, name: str) -> bool:
    return run(["getent", kind, name], 30, check=False).returncode == 0


def undo_installs(before: set[str], ours: set[str], env: dict[str, str]) -> set[str]:
    """Purge the packages this test installed (``ours``) that were not there ``before``.
    Another program may have installed something meanwhile that depends on them: apt's
    simulation shows it, and then nothing is purged (never a package the test did not
    install). Returns the packages left behind."""
    leftovers = (ours & installed_packages()) - before
    if not leftovers:
        return set()
    sim = run([*APT, "-s", "purge", *sorted(leftovers)], 120, check=False, env=env).stdout
    dragged = {m.split(":")[0] for m in re.findall(r"^Purg (\S+)", sim, re.M)} - leftovers
    if dragged:
        sys.stderr.write(f"package test: not purging {sorted(leftovers)}: packages installed meanwhile by "
                         f"something else depend on them ({sorted(dragged)})\n")
        return leftovers
    run([*APT, "purge", "-y", "-qq", *sorted(leftovers)], 600, check=False, env=env)
    return (leftovers & installed_packages())


@pytest.mark.slow
def test_debian_package_builds_installs_and_purges(tmp_path):
    if not (Path("/etc/debian_version").exists() and shutil.which("apt-get", path=SYSTEM_ENV["PATH"])
            and shutil.which("dpkg", path=SYSTEM_ENV["PATH"])):
        skip_or_fail("needs Debian/Ubuntu with apt-get and dpkg")
    if not can_apt_install():
        skip_or_fail("needs root to install and purge the package")
    if dpkg_status("towerd").startswith("ii") and not IN_CI:
        pytest.skip("towerd is installed on this machine and this test would purge it "
                    "(its outbox too): run it on a scratch machine or with CI=true")
    if not ASKED:
        pytest.skip("changes system packages and users: runs with CI=true, TOWERD_TEST_PACKAGE=1 or "
                    "`bash scripts/test --with-package`")

    times: dict[str, float] = {}
    apt_log = tmp_path / "apt.log"
    env = dict(SYSTEM_ENV, TMPDIR=str(tmp_path), TOWERD_APT_LOG=str(apt_log))
    # What to put back: the packages and accounts there before the test.
    packages_before = installed_packages()
    user_before, group_before = account_exists("passwd", "towerd"), account_exists("group", "towerd")

    def step(name: str, cmd: list[str], timeout_s: float, **kwargs) -> subprocess.CompletedProcess:
        start = time.monotonic()
        result = run(cmd, timeout_s, **kwargs)
        times[name] = time.monotonic() - start
        return result

    out_dir = tmp_path / "out"
    step("build", ["bash", str(BUILD_DEB), str(out_dir)], 420, env=env)
    debs = sorted(out_dir.glob("towerd_*_all.deb"))
    assert [d.name for d in debs] == [f"towerd_{towerd.__version__}_all.deb"]

    try:
        # No recommends: proves Depends alone is enough (a tower may install it that way).
        # apt-get update (network, tens of seconds) only when the package lists this
        # machine has cannot satisfy the install (a dependency missing or gone stale).
        install = [*APT, "install", "-y", "-qq", "--no-install-recommends", f"./{debs[0].name}"]
        installed = step("install", install, 420, check=False, env=env, cwd=out_dir)
        if installed.returncode != 0:
            step("apt-get update", [*APT, "update", "-qq"], 180, env=env)
            installed = step("install", install, 420, env=env, cwd=out_dir)
        with open(apt_log, "a") as fh:
            fh.write(installed.stdout)
        assert dpkg_status("towerd").startswith("ii")

        # The command runs on Debian's python3 and Debian's libraries, not the venv's.
        # Not configured yet: check-config (the unit's ExecStartPre) names the missing keys
        # as the service user would meet them, so the service stays stopped with that message.
        # (Three read-only runs of Debian's python3, a second or more of imports each: at once.)
        assert Path("/usr/bin/towerd").read_text().splitlines()[0] == "#!/usr/bin/python3"
        with ThreadPoolExecutor(3) as pool:
            where_run = pool.submit(run, ["/usr/bin/python3", "-c",
                                          "import towerd, numpy, zmq, serial, scipy, yaml, pymap3d, systemd\n"
                                          "for m in (towerd, numpy, zmq, serial, scipy, yaml, pymap3d, systemd):\n"
                                          "    print(m.__name__, m.__file__)"], 60, cwd="/")
            schema_run = pool.submit(step, "check-config", ["/usr/bin/towerd", "check-config", "--schema-only",
                                                            "/etc/towerd/towerd.yaml"], 60, cwd="/")
            unconfigured_run = pool.submit(run, ["/usr/bin/towerd", "check-config", "/etc/towerd/towerd.yaml"], 60,
                                           check=False, cwd="/")
            where, unconfigured = where_run.result().stdout, unconfigured_run.result()
            schema_run.result()
        for line in where.splitlines():
            name, path = line.split()
            assert path.startswith("/usr/lib/python3/dist-packages/"), f"{name} from {path}"
        assert unconfigured.returncode == 1, unconfigured.stdout
        assert "/etc/towerd/keys/tower.key_secret does not exist" in unconfigured.stdout
        assert "/etc/towerd/keys/central.key does not exist" in unconfigured.stdout

        unit = Path("/lib/systemd/system/towerd.service")
        assert unit.read_text() == UNIT.read_text()
        verify = run([systemd_analyze(), "verify", str(unit)], 60, check=False)
        complaints = [line for line in verify.stdout.splitlines() if "towerd.service" in line]
        assert verify.returncode == 0 and not complaints, verify.stdout
        assert exposure(unit) <= MAX_EXPOSURE
        assert Path("/etc/systemd/system/multi-user.target.wants/towerd.service").is_symlink(), "enabled"
        assert Path("/usr/lib/udev/rules.d/60-towerd.rules").read_text() == RULES.read_text()
        assert Path("/usr/share/doc/towerd/packaging.md").is_file(), "the unit's Documentation= target"

        passwd = run(["getent", "passwd", "towerd"], 30).stdout.strip().split(":")
        assert int(passwd[2]) < 1000 and passwd[6].endswith("nologin"), passwd
        groups = run(["id", "-nG", "towerd"], 30).stdout.split()
        assert "dialout" in groups, groups
        conffiles = run(["dpkg-query", "-W", "-f=${Conffiles}", "towerd"], 30).stdout.split()
        assert "/etc/towerd/towerd.yaml" in conffiles
        uid, gid = int(passwd[2]), int(passwd[3])
        keys = Path("/etc/towerd/keys").stat()
        assert (oct(keys.st_mode & 0o7777), keys.st_uid, keys.st_gid) == ("0o750", 0, gid), "root:towerd 0750"
        state = Path("/var/lib/towerd").stat()
        assert (oct(state.st_mode & 0o7777), state.st_uid, state.st_gid) == ("0o750", uid, gid), "towerd 0750"

        # A technician's edit survives reinstalling the package (it is a conffile).
        config = Path("/etc/towerd/towerd.yaml")
        config.write_text(config.read_text() + "\n# edited on site\n")
        step("reinstall", ["dpkg", "-i", str(debs[0])], 120, env=env)
        assert config.read_text().endswith("# edited on site\n")

        # Purge: the daemon's state goes; keys a technician placed stay.
        Path("/var/lib/towerd").mkdir(exist_ok=True)
        Path("/var/lib/towerd/outbox.sqlite").write_bytes(b"outbox")
        Path("/etc/towerd/keys/tower.key_secret").write_text("secret")
        step("purge", [*APT, "purge", "-y", "-qq", "towerd"], 180, env=env)
        assert dpkg_status("towerd") in {"un", "pn"}, dpkg_status("towerd")
        for gone in ("/usr/bin/towerd", "/lib/systemd/system/towerd.service", "/etc/towerd/towerd.yaml",
                     "/usr/lib/udev/rules.d/60-towerd.rules", "/var/lib/towerd",
                     "/etc/systemd/system/multi-user.target.wants/towerd.service",
                     "/usr/lib/python3/dist-packages/towerd"):
            assert not os.path.lexists(gone), f"{gone} left after purge"
        assert Path("/etc/towerd/keys/tower.key_secret").read_text() == "secret"
    finally:
        if dpkg_status("towerd") not in {"un", "pn"}:
            run([*APT, "purge", "-y", "-qq", "towerd"], 180, check=False, env=env)
        # Only what this test put there.
        Path("/etc/towerd/keys/tower.key_secret").unlink(missing_ok=True)
        for directory in ("/etc/towerd/keys", "/etc/towerd"):
            if os.path.isdir(directory) and not os.listdir(directory):
                os.rmdir(directory)
        # The build dependencies and libraries apt pulled in, and the system user.
        ours = newly_unpacked(apt_log.read_text() if apt_log.exists() else "")
        ours.discard("towerd")
        left = undo_installs(packages_before, ours, env)
        if not user_before and account_exists("passwd", "towerd"):
            run(["userdel", "towerd"], 60, check=False)
        if not group_before and account_exists("group", "towerd"):
            run(["groupdel", "towerd"], 60, check=False)
    assert not left, f"packages the test installed are still there: {sorted(left)}"
    assert not (installed_packages() - packages_before) & (ours | {"towerd"})
    assert (account_exists("passwd", "towerd"), account_exists("group", "towerd")) == (user_before, group_before)
    sys.stderr.write(f"package test: {len(ours)} packages installed and purged again; ")
    sys.stderr.write("package test timings: " + ", ".join(f"{k} {v:.1f} s" for k, v in times.items()) + "\n")


# --------------------------------------------------------------------------- scripts/test

@pytest.mark.parametrize("flag, expected", [([], None), (["--with-package"], "1")], ids=["default", "asked"])
def test_scripts_test_asks_for_the_package_test_only_with_the_flag(tmp_path, flag, expected):
    """`bash scripts/test` alone leaves TOWERD_TEST_PACKAGE unset (so the package test skips
    unless CI=true); `--with-package` sets it and is not passed on to pytest."""
    probe = tmp_path / "test_probe.py"
    probe.write_text("import os\n"
                     "def test_env():\n"
                     f"    assert os.environ.get('TOWERD_TEST_PACKAGE') == {expected!r}\n")
    env = {k: v for k, v in os.environ.items() if k not in ("TOWERD_TEST_PACKAGE", "CI", "PYTEST_ADDOPTS")}
    env["TOWERD_TEST_WORKERS"] = "0"  # one probe test: no worker processes
    res = subprocess.run(["bash", str(REPO / "scripts" / "test"), *flag, "-q", "-p", "no:cacheprovider",
                          "-c", "/dev/null", "--rootdir", str(tmp_path), str(probe)],
                         capture_output=True, text=True, timeout=300, env=env)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "1 passed" in res.stdout
