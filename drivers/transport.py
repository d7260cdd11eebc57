"""Opening serial ports by URL, for every driver.

``serial.serial_for_url`` lets a pty path, ``loop://``, ``socket://host:port`` or a
``/dev/serial/by-id/...`` symlink stand in for a device with no code change. Local
device paths are opened with an exclusive lock so that gpsd, ModemManager or a second
towerd cannot share the port unnoticed.
"""

from __future__ import annotations

import serial

from towerd.errors import DriverInitError


def open_port(url: str, baudrate: int, timeout_s: float) -> serial.SerialBase:
    """Open ``url`` at ``baudrate`` with a read timeout; raise DriverInitError on failure."""
    kwargs: dict = {"baudrate": baudrate, "timeout": timeout_s, "write_timeout": max(timeout_s, 1.0)}
    if "://" not in url:
        kwargs["exclusive"] = True
    try:
        return serial.serial_for_url(url, **kwargs)
    except (serial.SerialException, OSError, ValueError) as exc:
        raise DriverInitError(f"cannot open {url}: {exc}") from exc
