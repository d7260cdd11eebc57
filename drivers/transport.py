"""Opening serial ports by URL, for every driver.

``serial.serial_for_url`` lets a pty path, ``loop://``, ``socket://host:port`` or a
``/dev/serial/by-id/...`` symlink stand in for a device with no code change. Local
device paths are opened with an exclusive lock (pyserial ``exclusive=True``: ``flock``
LOCK_EX) so that gpsd, ModemManager or a second towerd cannot share the port unnoticed.

When a port cannot be opened because it is busy (EBUSY, or the lock is held) or not
permitted (EACCES), the error says who holds it — found the way ``fuser`` does, by
reading the ``/proc/<pid>/fd`` links of every process we may inspect — and names the
programs known to steal these ports, with their fixes (ModemManager, gpsd's hotplug
rule, brltty). :func:`unstable_name_hint` explains why ``/dev/ttyUSB0`` or
``/dev/ttyACM1`` in a configuration is fragile and which stable names point at the same
device.
"""

from __future__ import annotations

import errno
import os
import re
from dataclasses import dataclass
from pathlib import Path

import serial

from towerd.errors import DriverInitError

BY_ID_DIR = "/dev/serial/by-id"
TOWERD_DIR = "/dev/towerd"
_UNSTABLE = re.compile(r"^/dev/tty(USB|ACM)\d+$")

KNOWN_CULPRITS: dict[str, str] = {
    "ModemManager": (
        "ModemManager probes CDC-ACM and USB serial ports with AT commands: keep it off the radar with "
        "ENV{ID_MM_DEVICE_IGNORE}=\"1\" in the udev rule (towerd's 60-towerd.rules does), or "
        "`systemctl disable --now ModemManager` if the tower has no modem"
    ),
    "gpsd": (
        "gpsd's hotplug rule claims CP210x/FTDI/CH340 adapters (the RF Explorer is 10c4:ea60): "
        "set USBAUTO=\"false\" in /etc/default/gpsd, or remove the device from gpsd (`gpsdctl remove PORT`)"
    ),
    "brltty": (
        "brltty (Ubuntu) grabs CH340 and CP210x adapters as braille displays: "
        "`apt purge brltty`, or `systemctl mask brltty-udev.service`"
    ),
}
"""Programs that steal towers' serial ports, by process name, with their fix."""


@dataclass(frozen=True)
class PortHolder:
    """A process that has the port open."""

    pid: int
    name: str  # /proc/<pid>/comm
    cmdline: str

    def describe(self) -> str:
        me = " (this process)" if self.pid == os.getpid() else ""
        return f"PID {self.pid} {self.name}{me}: {self.cmdline or '?'}"


def port_holders(path: str, proc: str = "/proc") -> list[PortHolder]:
    """Processes with ``path`` (after resolving symlinks) open, as ``fuser`` finds them.

    Processes of other users are invisible without privileges; the list may be empty
    even though the port is busy."""
    target = os.path.realpath(path)
    holders = []
    for entry in os.listdir(proc):
        if not entry.isdigit():
            continue
        fd_dir = f"{proc}/{entry}/fd"
        try:
            fds = os.listdir(fd_dir)
        except OSError:
            continue
        for fd in fds:
            try:
                if os.readlink(f"{fd_dir}/{fd}") != target:
                    continue
            except OSError:
                continue
            holders.append(PortHolder(int(entry), _read(f"{proc}/{entry}/comm"),
                                      _read(f"{proc}/{entry}/cmdline").replace("\0", " ").strip()))
            break
    return holders


def _read(path: str) -> str:
    try:
        with open(path, "rb") as fh:
            return fh.read(4096).decode("utf-8", "replace").strip()
    except OSError:
        return ""


def stable_names(path: str, dirs: tuple[str, ...] = (TOWERD_DIR, BY_ID_DIR)) -> list[str]:
    """Symlinks under ``dirs`` (/dev/towerd, /dev/serial/by-id) that point at the same device."""
    try:
        target = os.path.realpath(path)
    except OSError:
        return []
    names = []
    for directory in dirs:
        d = Path(directory)
        if not d.is_dir():
            continue
        for link in sorted(d.rglob("*")):
            try:
                if link.is_symlink() and os.path.realpath(link) == target:
                    names.append(str(link))
            except OSError:
                continue
    return names


def unstable_name_hint(path: str, dirs: tuple[str, ...] = (TOWERD_DIR, BY_ID_DIR)) -> str | None:
    """A warning when ``path`` is a bare /dev/ttyUSBn or /dev/ttyACMn, else None.

    The kernel numbers these in plug order, so after a reboot or a replug the radar can
    become the other port (and TI's two XDS110 ports can swap)."""
    if not _UNSTABLE.match(path):
        return None
    names = stable_names(path, dirs)
    suggestion = (
        f"use {names[0]}" + (f" (or {', '.join(names[1:])})" if len(names) > 1 else "")
        if names
        else f"use its {BY_ID_DIR}/... name or a udev symlink under {TOWERD_DIR}/ (see packaging/60-towerd.rules)"
    )
    return f"{path} is numbered in plug order and may name another device after a reboot or replug: {suggestion}"


def explain_open_failure(url: str, exc: BaseException) -> str:
    """What went wrong opening ``url`` and what to do, for EBUSY/lock/EACCES/ENOENT."""
    code = getattr(exc, "errno", None)
    text = str(exc)
    busy = code in (errno.EBUSY, errno.EAGAIN) or "exclusively lock" in text or "Device or resource busy" in text
    if busy:
        holders = port_holders(url)
        who = "; ".join(h.describe() for h in holders) if holders else "no process visible to this user holds it"
        hints = [KNOWN_CULPRITS[h.name] for h in holders if h.name in KNOWN_CULPRITS]
        if not hints:
            hints = [f"if {', '.join(KNOWN_CULPRITS)} runs here: " + "; ".join(KNOWN_CULPRITS.values())]
        return (f"the port is busy: {who}. If it is another towerd (the daemon), stop it first "
                f"(`systemctl stop towerd`). " + " ".join(hints))
    if code in (errno.EACCES, errno.EPERM) or "Permission denied" in text:
        return (f"permission denied: the user needs the port's group (usually `dialout`: "
                f"`adduser $USER dialout`, then log in again); `ls -l {url}` shows owner and mode")
    if code == errno.ENOENT or "No such file" in text:
        return f"{text} (unplugged, or another name after a replug?)"
    return str(exc)


def open_port(url: str, baudrate: int, timeout_s: float) -> serial.SerialBase:
    """Open ``url`` at ``baudrate`` with a read timeout; raise DriverInitError on failure."""
    kwargs: dict = {"baudrate": baudrate, "timeout": timeout_s, "write_timeout": max(timeout_s, 1.0)}
    if "://" not in url:
        kwargs["exclusive"] = True
    try:
        return serial.serial_for_url(url, **kwargs)
    except (serial.SerialException, OSError, ValueError) as exc:
        raise DriverInitError(f"cannot open {url}: {explain_open_failure(url, exc)}") from exc
