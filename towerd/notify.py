"""systemd readiness and status notifications (sd_notify).

Uses systemd-python's ``systemd.daemon.notify`` when installed; otherwise sends the
same datagram itself, so a tower without python3-systemd still reports READY. With no
``NOTIFY_SOCKET`` in the environment (not started by systemd) every call is a no-op.
"""

from __future__ import annotations

import logging
import os
import socket

log = logging.getLogger(__name__)

try:
    from systemd import daemon as _sd_daemon
except ImportError:  # pragma: no cover - depends on the install
    _sd_daemon = None


class Notifier:
    """Send ``KEY=value`` lines to the service manager."""

    def __init__(self) -> None:
        self.enabled = bool(os.environ.get("NOTIFY_SOCKET"))

    def send(self, *lines: str) -> bool:
        if not self.enabled:
            return False
        state = "\n".join(lines)
        if _sd_daemon is not None:
            return bool(_sd_daemon.notify(state))
        return self._send_raw(state)

    def watchdog_interval_s(self) -> float:
        """systemd's WatchdogSec for this process (WATCHDOG_USEC), 0 when none."""
        if not self.enabled:
            return 0.0
        pid = os.environ.get("WATCHDOG_PID")
        if pid and pid != str(os.getpid()):
            return 0.0
        try:
            return int(os.environ.get("WATCHDOG_USEC", "0")) / 1e6
        except ValueError:
            log.warning("ignoring malformed WATCHDOG_USEC=%r", os.environ.get("WATCHDOG_USEC"))
            return 0.0

    def ready(self, status: str) -> None:
        self.send("READY=1", f"STATUS={status}")

    def status(self, status: str) -> None:
        self.send(f"STATUS={status}")

    def stopping(self) -> None:
        self.send("STOPPING=1")

    @staticmethod
    def _send_raw(state: str) -> bool:
        addr = os.environ.get("NOTIFY_SOCKET", "")
        if addr.startswith("@"):
            addr = "\0" + addr[1:]
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
                sock.sendto(state.encode(), addr)
            return True
        except OSError as exc:
            log.warning("sd_notify to %s failed: %s", addr, exc)
            return False
