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
    "ModemManager": "keep ModemManager off the port: ENV{ID_MM_DEVICE_IGNORE}=\"1\" in its udev rule "
                    "(towerd's rules do), or `systemctl disable --now ModemManager` on a tower without a modem",
    "gpsd": "take the port from gpsd: `gpsdctl remove PORT`, and USBAUTO=\"false\" in /etc/default/gpsd "
            "so that its hotplug rule does not claim it again",
    "brltty": "`apt purge brltty` (or `systemctl mask brltty-udev.service` where a braille display is used)",
}
"""Programs that steal towers' serial ports, by process name, with their fix."""


@dataclass(frozen=True)
class PortHolder:
    """A process that has the port open."""

    pid: int
    name: str  # /proc/<pid>/comm
    cmdline: str

    @property
    def is_towerd_daemon(self) -> bool:
        """A `towerd run` process (the daemon's own hold on its ports is no problem)."""
        return self.name == "towerd" or bool(re.search(r"\btowerd\b.*\srun(\s|$)", self.cmdline))

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


def holder_fix(holder: PortHolder) -> str:
    """The one fix that applies to the program holding a port."""
    if holder.name in KNOWN_CULPRITS:
        return KNOWN_CULPRITS[holder.name]
    if holder.is_towerd_daemon:
        return "the daemon has it: `systemctl stop towerd` first (or watch it through `towerd status`)"
    return f"close that program (`kill {holder.pid}`)"


def explain_open_failure(url: str, exc: BaseException) -> str:
    """What went wrong opening ``url`` and what to do, for EBUSY/lock/EACCES/ENOENT: for a
    busy port, who holds it (pid and program) and the one fix that applies."""
    code = getattr(exc, "errno", None)
    text = str(exc)
    busy = code in (errno.EBUSY, errno.EAGAIN) or "exclusively lock" in text or "Device or resource busy" in text
    if busy:
        holders = [h for h in port_holders(url) if h.pid != os.getpid()]
        if not holders:
            return (f"the port is busy, held by a process this user cannot see: `sudo fuser -v {url}` names it")
        return "the port is busy: " + "; ".join(
            f"held by {h.name} (pid {h.pid}): {holder_fix(h)}" for h in holders)
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
