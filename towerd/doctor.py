"""``towerd doctor``: check a tower computer and say how to fix each problem found.

Checks, in the order a technician would fix them: the configuration; the state
directory and free disk; each sensor's port (present, a stable name, permissions for
the service user, not held by another program) and the usual port thieves; CURVE key
files; the clock; each central (TCP reachable, then a real ZeroMQ handshake with the
configured keys, which also proves the central has our key on its allow-list).
Exit 0 when nothing is wrong, 1 otherwise.
"""

from __future__ import annotations

import argparse
import ctypes
import grp
import os
import pwd
import re
import shutil
import socket
import stat
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

from towerd.config import DEFAULT_PATH, Config, load_config
from towerd.drivers.transport import port_holders
from towerd.errors import ConfigError

SERVICE_USER = "towerd"
SERIAL_GROUP = "dialout"
PORT_THIEVES = {
    "ModemManager": "sends AT commands into new serial ports (it stops a TI radar's configuration); "
                    "the udev rules set ID_MM_DEVICE_IGNORE, or: systemctl disable --now ModemManager",
    "gpsd": "its hotplug rule claims 10c4:ea60, the RF Explorer's USB id: remove the device from "
            "/lib/udev/rules.d/60-gpsd.rules or systemctl disable --now gpsd.socket gpsd",
    "brltty": "grabs CH340 and CP210x adapters on Ubuntu: apt purge brltty",
}
BARE_TTY = re.compile(r"/dev/tty(USB|ACM)\d+$")


@dataclass
class Finding:
    ok: bool
    what: str
    fix: str = ""


class Doctor:
    def __init__(self, config_path: str, *, connect_timeout_s: float = 5.0) -> None:
        self.config_path = config_path
        self.timeout_s = connect_timeout_s
        self.findings: list[Finding] = []

    def good(self, what: str) -> None:
        self.findings.append(Finding(True, what))

    def bad(self, what: str, fix: str) -> None:
        self.findings.append(Finding(False, what, fix))

    # -- checks -------------------------------------------------------------------

    def run(self) -> list[Finding]:
        try:
            config = load_config(self.config_path).config
        except ConfigError as exc:
            self.bad("the configuration is invalid:\n      " + "\n      ".join(exc.problems),
                     f"edit {self.config_path}, then run: towerd check-config {self.config_path}")
            return self.findings
        self.good(f"configuration {self.config_path} is valid")
        self.check_state_dir(config)
        self.check_thieves()
        for sensor in config.sensors:
            if sensor.enabled:
                for label, url in self._ports(sensor):
                    self.check_port(f"{sensor.name} {label}", url)
        self.check_keys(config)
        self.check_clock()
        for central in config.centrals:
            self.check_central(config, central)
        return self.findings

    def check_state_dir(self, config: Config) -> None:
        path = Path(config.state_dir)
        if not path.is_dir():
            self.bad(f"state directory {path} does not exist",
                     "the systemd unit creates it (StateDirectory=towerd); by hand: "
                     f"install -d -o {SERVICE_USER} -m 0750 {path}")
            return
        if not os.access(path, os.W_OK):
            self.bad(f"state directory {path} is not writable by {_me()}",
                     f"chown {SERVICE_USER} {path} (the service runs as {SERVICE_USER})")
        free = shutil.disk_usage(path).free
        if free < 100 * 2**20:
            self.bad(f"only {free // 2**20} MiB free under {path}: the outbox needs room during link outages",
                     "free disk space (journal: journalctl --vacuum-size=50M)")
        else:
            self.good(f"state directory {path}: writable, {free // 2**20} MiB free")

    def check_thieves(self) -> None:
        running = _running_programs()
        for name, why in PORT_THIEVES.items():
            if name.lower() in running:
                self.bad(f"{name} is running", why)

    @staticmethod
    def _ports(sensor) -> list[tuple[str, str]]:
        ports = [("data port", sensor.settings.port)]
        cli = getattr(sensor.settings, "cli_port", None)
        if cli:
            ports.append(("control port", cli))
        return ports

    def check_port(self, label: str, url: str) -> None:
        if "://" in url:
            self.good(f"{label}: {url} is a URL, not checked here")
            return
        path = Path(url)
        if not path.exists():
            self.bad(f"{label}: {url} does not exist",
                     "plug the device in; check `dmesg | tail` and `ls -l /dev/towerd/ /dev/serial/by-id/`; "
                     "the package's udev rules create /dev/towerd/ names for supported devices")
            return
        real = os.path.realpath(path)
        st = os.stat(real)
        if not stat.S_ISCHR(st.st_mode):
            self.bad(f"{label}: {url} -> {real} is not a character device", "point the setting at the serial device")
            return
        if BARE_TTY.match(url):
            self.bad(f"{label}: {url} is a bare kernel name, which can change at reboot or replug",
                     "use /dev/towerd/... (udev rules) or /dev/serial/by-id/...")
        group = _group_name(st.st_gid)
        if not (st.st_mode & 0o006 == 0o006 or (group == SERIAL_GROUP and st.st_mode & 0o060 == 0o060)):
            self.bad(f"{label}: {real} is {stat.filemode(st.st_mode)} {group}: the service cannot open it",
                     f"the udev rules set GROUP=\"{SERIAL_GROUP}\", MODE=\"0660\"; reload them: "
                     "udevadm control --reload && udevadm trigger")
        elif not _user_in_group(SERVICE_USER, SERIAL_GROUP):
            self.bad(f"user {SERVICE_USER} is not in group {SERIAL_GROUP}",
                     f"adduser {SERVICE_USER} {SERIAL_GROUP} (the package does this)")
        holders = [h for h in port_holders(real) if h.name != "towerd" and h.pid != os.getpid()]
        if holders:
            who = ", ".join(f"{h.name} (pid {h.pid})" for h in holders)
            self.bad(f"{label}: {real} is held open by {who}", "stop that program; see the port thieves above")
        else:
            self.good(f"{label}: {url} -> {real} present, {stat.filemode(st.st_mode)} {group}")

    def check_keys(self, config: Config) -> None:
        for central in config.centrals:
            if central.plain:
                self.bad(f"central {central.name} is configured without CURVE (plain: true)",
                         "lab and demo use only: set plain: false and key files for a real tower")
                continue
            for label, key in (("central public key", central.server_public_key_file),
                               ("tower secret key", central.client_secret_key_file)):
                if not key or not os.path.exists(key):
                    self.bad(f"central {central.name}: {label} {key} is missing",
                             "towerd keys generate --dir /etc/towerd/keys; copy the central's public key there")
                    continue
                mode = os.stat(key).st_mode
                if label == "tower secret key" and mode & 0o077:
                    self.bad(f"central {central.name}: {key} is readable by others ({stat.filemode(mode)})",
                             f"chmod 600 {key}; chown {SERVICE_USER} {key}")
                else:
                    self.good(f"central {central.name}: {label} {key} present")

    def check_clock(self) -> None:
        synced = clock_synchronised()
        if synced is None:
            self.good("clock: cannot tell whether it is synchronised (adjtimex unavailable)")
        elif synced:
            self.good("clock: synchronised (kernel reports NTP sync)")
        else:
            self.bad("clock: not synchronised: report times (UTC) may be wrong; a Raspberry Pi has no RTC",
                     "enable NTP: timedatectl set-ntp true (or install chrony); check: timedatectl")

    def check_central(self, config: Config, central) -> None:
        url = urlparse(central.endpoint)
        host, port = url.hostname, url.port
        if url.scheme != "tcp" or not host or not port:
            self.good(f"central {central.name}: {central.endpoint} not a tcp:// endpoint, not checked")
            return
        try:
            with socket.create_connection((host, port), timeout=self.timeout_s):
                pass
        except OSError as exc:
            self.bad(f"central {central.name}: cannot reach {host}:{port}: {exc}",
                     "check the link (ping, ip route), the firewall, and that the central is running")
            return
        result = zmq_handshake(config.tower.id, central, self.timeout_s)
        if result == "ok":
            self.good(f"central {central.name}: {host}:{port} reachable, ZeroMQ handshake accepted")
        elif result == "refused":
            self.bad(f"central {central.name}: the central refused this tower's key",
                     "send the tower's public key (towerd keys generate printed it) to the central's operators "
                     "for its allow-list, under this tower's id")
        else:
            self.bad(f"central {central.name}: TCP connects but the ZeroMQ handshake did not complete ({result})",
                     "check that the endpoint is a towerd central and that both ends agree on CURVE vs plain")


def zmq_handshake(tower_id: str, central, timeout_s: float) -> str:
    """'ok', 'refused' or a short reason, from a real DEALER with the configured keys."""
    import zmq
    import zmq.auth
    from zmq.utils.monitor import recv_monitor_message

    ctx = zmq.Context()
    sock = ctx.socket(zmq.DEALER)
    try:
        sock.setsockopt(zmq.LINGER, 0)
        sock.setsockopt(zmq.ROUTING_ID, tower_id.encode())
        if not central.plain:
            try:
                public, secret = zmq.auth.load_certificate(central.client_secret_key_file)
                server_public, _ = zmq.auth.load_certificate(central.server_public_key_file)
            except (OSError, ValueError) as exc:
                return f"keys unreadable: {exc}"
            sock.curve_publickey, sock.curve_secretkey, sock.curve_serverkey = public, secret, server_public
        monitor = sock.get_monitor_socket()
        sock.connect(central.endpoint)
        deadline = time.monotonic() + timeout_s
        try:
            while time.monotonic() < deadline:
                if not monitor.poll(int(max(1, (deadline - time.monotonic()) * 1000))):
                    break
                event = recv_monitor_message(monitor)["event"]
                if event == zmq.EVENT_HANDSHAKE_SUCCEEDED:
                    return "ok"
                if event == getattr(zmq, "EVENT_HANDSHAKE_FAILED_AUTH", -1):
                    return "refused"
                if event == getattr(zmq, "EVENT_HANDSHAKE_FAILED_PROTOCOL", -1):
                    return "protocol mismatch"
            return "timed out"
        finally:
            sock.disable_monitor()
            monitor.close(0)
    finally:
        sock.close(0)
        ctx.term()


class _Timex(ctypes.Structure):
    # struct timex begins with modes (unsigned int) ... status (int) after 5 longs; the
    # kernel's is 208 bytes on 64-bit: pad generously, only `status` is read.
    _fields_ = [("modes", ctypes.c_uint), ("offset", ctypes.c_long), ("freq", ctypes.c_long),
                ("maxerror", ctypes.c_long), ("esterror", ctypes.c_long), ("status", ctypes.c_int),
                ("_rest", ctypes.c_byte * 256)]


STA_UNSYNC = 0x0040
TIME_ERROR = 5


def clock_synchronised() -> bool | None:
    """True/False from the kernel's adjtimex (as timedatectl's NTPSynchronized), None if unknown."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        tx = _Timex()
        state = libc.adjtimex(ctypes.byref(tx))
    except (OSError, AttributeError):
        return None
    if state < 0:
        return None
    return state != TIME_ERROR and not tx.status & STA_UNSYNC


def _running_programs() -> set[str]:
    names = set()
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                names.add(Path(f"/proc/{entry}/comm").read_text().strip().lower())
            except OSError:
                continue
    return names


def _group_name(gid: int) -> str:
    try:
        return grp.getgrgid(gid).gr_name
    except KeyError:
        return str(gid)


def _user_in_group(user: str, group: str) -> bool:
    try:
        g = grp.getgrnam(group)
        pw = pwd.getpwnam(user)
    except KeyError:
        return False
    return user in g.gr_mem or pw.pw_gid == g.gr_gid


def _me() -> str:
    try:
        return pwd.getpwuid(os.getuid()).pw_name
    except KeyError:
        return str(os.getuid())


def cmd_doctor(args: argparse.Namespace) -> int:
    findings = Doctor(args.config, connect_timeout_s=args.timeout).run()
    for f in findings:
        if f.ok:
            print(f"  ok       {f.what}")
        else:
            print(f"  PROBLEM  {f.what}\n           fix: {f.fix}")
    problems = sum(not f.ok for f in findings)
    print(f"{problems} problem{'s' if problems != 1 else ''} found." if problems else "No problems found.")
    return 1 if problems else 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("doctor", help="check this tower computer and say how to fix each problem")
    p.add_argument("--config", "-c", default=DEFAULT_PATH, help=f"configuration file (default {DEFAULT_PATH})")
    p.add_argument("--timeout", type=float, default=5.0, help="seconds to wait for each central")
    p.set_defaults(func=cmd_doctor)

