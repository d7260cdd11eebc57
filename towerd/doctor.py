"""``towerd doctor``: check a tower computer and say how to fix each problem found.

Checks, in the order a technician would fix them: the configuration; the state
directory and free disk; each sensor's port (present, a stable name, permissions for
the service user, not held by another program) and the usual port thieves; the files
the configuration names (:func:`towerd.files.check_files`, the same checks as
``check-config`` and ``run``); the clock; each central (TCP reachable, then a real
ZeroMQ handshake with the configured keys, which tells a central that does not have our
key on its allow-list from a central whose public key we have wrong).

A technician runs doctor as root; the daemon runs as the service user. So permissions
are judged for the service user (``--user``, default ``towerd`` when it exists), never
for root. Exit 0 when nothing is wrong, 1 otherwise.
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
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

from towerd.config import DEFAULT_PATH, Config, load_config
from towerd.drivers.transport import KNOWN_CULPRITS, holder_fix, port_holders
from towerd.errors import ConfigError
from towerd.files import Account, allowed, check_files, service_account

SERIAL_GROUP = "dialout"
BARE_TTY = re.compile(r"/dev/tty(USB|ACM)\d+$")


@dataclass
class Finding:
    ok: bool
    what: str
    fix: str = ""


class Doctor:
    def __init__(self, config_path: str, *, connect_timeout_s: float = 5.0, account: Account | None = None) -> None:
        self.config_path = config_path
        self.timeout_s = connect_timeout_s
        self.account = account or service_account()
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
        self.good(f"configuration {self.config_path} is valid (files checked as user {self.account.name}, "
                  "who runs the daemon)")
        self.check_state_dir(config)
        self.check_thieves()
        for sensor in config.sensors:
            if sensor.enabled:
                for label, url in self._ports(sensor):
                    self.check_port(f"{sensor.name} {label}", url)
        self.check_files(config)
        self.check_clock()
        for central in config.centrals:
            self.check_central(config, central)
        return self.findings

    def check_state_dir(self, config: Config) -> None:
        """Writable (or creatable) by the service user, as ``run`` needs it, and room
        for the outbox on its file system."""
        path = Path(config.state_dir)
        problems = [p for p in check_files(config, self.account) if p.key == "state_dir"]
        for p in problems:
            self.bad(f"state directory: {p.message}", p.fix)
        if problems:
            return
        existing = path if path.exists() else next(p for p in path.parents if p.exists())
        free = shutil.disk_usage(existing).free
        if free < 100 * 2**20:
            self.bad(f"only {free // 2**20} MiB free under {existing}: the outbox needs room during link outages",
                     "free disk space (journal: journalctl --vacuum-size=50M)")
        else:
            created = "" if path.exists() else " (created at start)"
            self.good(f"state directory {path}{created}: writable by user {self.account.name}, "
                      f"{free // 2**20} MiB free")

    def check_thieves(self) -> None:
        running = _running_programs()
        for name, why in KNOWN_CULPRITS.items():
            if name.lower() in running:
                self.bad(f"{name} is running: it can take serial ports away from towerd", why)

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
        user = self.account.name
        usable = allowed(self.account, st, os.R_OK | os.W_OK)
        if not usable and group == SERIAL_GROUP and st.st_mode & 0o060 == 0o060:
            self.bad(f"{label}: {real} is {stat.filemode(st.st_mode)} {_user_name(st.st_uid)}:{group} and user "
                     f"{user} is not in group {SERIAL_GROUP}: the service cannot open it",
                     f"adduser {user} {SERIAL_GROUP} (the package does this), then systemctl restart towerd")
        elif not usable:
            self.bad(f"{label}: {real} is {stat.filemode(st.st_mode)} {_user_name(st.st_uid)}:{group}: user {user} "
                     "cannot open it",
                     f"the udev rules set GROUP=\"{SERIAL_GROUP}\", MODE=\"0660\"; reload them: "
                     "udevadm control --reload && udevadm trigger")
        holders = [h for h in port_holders(real) if not h.is_towerd_daemon and h.pid != os.getpid()]
        for h in holders:
            self.bad(f"{label}: {real} is held open by {h.name} (pid {h.pid})", holder_fix(h))
        if usable and not holders:
            self.good(f"{label}: {url} -> {real} present, {stat.filemode(st.st_mode)} {group}, user {user} can "
                      "open it")

    def check_files(self, config: Config) -> None:
        """Key files and device configuration files, as ``check-config`` and ``run`` see
        them (the state directory has its own check above)."""
        problems = [p for p in check_files(config, self.account) if p.key != "state_dir"]
        for p in problems:
            self.bad(f"{p.key}: {p.message}", p.fix)
        for central in config.centrals:
            if central.plain:
                self.bad(f"central {central.name} is configured without CURVE (plain: true)",
                         "lab and demo use only: set plain: false and key files for a real tower")
        if not problems:
            named = sum(2 for c in config.centrals if not c.plain) + sum(
                1 for s in config.sensors if s.enabled and getattr(s.settings, "chirp_config", None))
            if named:
                self.good(f"the {named} files the configuration names are readable by user {self.account.name}")

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
        if result not in ("ok", "refused"):
            # libzmq's events race (a closed connection hides the reason): ask the
            # central's ZMTP greeting which security mechanism it speaks.
            theirs = zmtp_mechanism(host, port, self.timeout_s)
            ours = "NULL" if central.plain else "CURVE"
            if theirs is None:
                result = "no ZeroMQ greeting on that port"
            elif theirs != ours:
                result = "mechanism mismatch"
            elif theirs == "CURVE":
                result = "key mismatch"
        if result == "ok":
            self.good(f"central {central.name}: {host}:{port} reachable, ZeroMQ handshake accepted")
        elif result == "refused":
            self.bad(f"central {central.name}: the central refused this tower's key",
                     "send the tower's public key (towerd keys generate printed it) to the central's operators "
                     "for its allow-list, under this tower's id")
        elif result == "key mismatch":
            self.bad(f"central {central.name}: the central's public key in {central.server_public_key_file} does "
                     f"not match the central at {central.endpoint}",
                     f"ask the central's operators for its current public key file and put it in "
                     f"{central.server_public_key_file}; check the endpoint is the central they mean")
        elif result == "mechanism mismatch":
            ours, theirs = ("plain", "CURVE") if central.plain else ("CURVE", "plain (no keys)")
            self.bad(f"central {central.name}: this tower speaks {ours} but the central at {central.endpoint} "
                     f"speaks {theirs}",
                     "both ends must agree: a real tower uses CURVE (plain: false) with a CURVE central")
        else:
            self.bad(f"central {central.name}: TCP connects but the ZeroMQ handshake did not complete ({result})",
                     "check that the endpoint is a towerd central (not another service on that port)")


ZMTP_SIGNATURE = b"\xff" + b"\x00" * 8 + b"\x7f"


def zmtp_mechanism(host: str, port: int, timeout_s: float) -> str | None:
    """The security mechanism ("NULL", "PLAIN", "CURVE") a ZeroMQ peer announces in its
    ZMTP 3 greeting (RFC 23: signature, version, 20-byte mechanism name), or None when
    it sends no such greeting. Sends only the signature and major version (a peer then
    sends its whole greeting and waits for the rest of ours) and closes, so the central
    merely sees a connection come and go, never a mechanism it would refuse."""
    greeting = ZMTP_SIGNATURE + b"\x03"
    try:
        with socket.create_connection((host, port), timeout=timeout_s) as sock:
            sock.sendall(greeting)
            data = b""
            while len(data) < 64:
                chunk = sock.recv(64 - len(data))
                if not chunk:
                    break
                data += chunk
    except OSError:
        return None
    if len(data) < 32 or data[0] != 0xFF or data[9] != 0x7F or data[10] < 3:
        return None
    return data[12:32].rstrip(b"\x00").decode("ascii", "replace")


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
                message = recv_monitor_message(monitor)
                event, value = message["event"], message["value"]
                if event == zmq.EVENT_HANDSHAKE_SUCCEEDED:
                    return "ok"
                if event == zmq.EVENT_HANDSHAKE_FAILED_AUTH:
                    return "refused"  # our HELLO was read, our key is not on the allow-list
                if event == zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL:
                    if value == zmq.PROTOCOL_ERROR_ZMTP_MECHANISM_MISMATCH:
                        return "mechanism mismatch"
                    return f"protocol error {value}"
                if event == zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL and not central.plain:
                    # A CURVE server that cannot decrypt our HELLO (sealed to the key we
                    # were given) closes without a word: the key is not this central's.
                    return "key mismatch"
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


def _user_name(uid: int) -> str:
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return str(uid)


def cmd_doctor(args: argparse.Namespace) -> int:
    try:
        account = service_account(args.user)
    except ConfigError as exc:
        print(f"towerd doctor: {exc}", file=sys.stderr)
        return 2
    findings = Doctor(args.config, connect_timeout_s=args.timeout, account=account).run()
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
    p.add_argument("--user", help="judge permissions for this user (default: the service user 'towerd' when "
                   "run as root and it exists, else you)")
    p.set_defaults(func=cmd_doctor)

