"""The one exception hierarchy of towerd.

Every error towerd raises on purpose derives from :class:`TowerdError`. Foreign
exceptions (``OSError``, ``serial.SerialException``, ``zmq.ZMQError``,
``sqlite3.Error``, ``yaml.YAMLError``) are wrapped at the boundary with
``raise ... from`` so callers handle one family and the cause is kept.
"""

from __future__ import annotations

EX_CONFIG = 78
"""sysexits.h EX_CONFIG: the exit status for a bad configuration. The systemd unit
sets ``RestartPreventExitStatus=78`` so a typo cannot cause a restart loop."""


class TowerdError(Exception):
    """Root of every error towerd raises."""


class ConfigError(TowerdError):
    """The configuration is invalid. ``problems`` holds every message found."""

    def __init__(self, problems: list[str] | str) -> None:
        self.problems = [problems] if isinstance(problems, str) else list(problems)
        super().__init__("\n".join(self.problems))


class DriverError(TowerdError):
    """A sensor driver failed."""


class DriverInitError(DriverError):
    """The device could not be opened or configured."""


class DriverIOError(DriverError):
    """Reading or writing the device failed (unplugged, EIO, port vanished)."""


class DriverTimeoutError(DriverError):
    """The device did not answer in time."""


class FrameError(TowerdError):
    """A frame or message could not be decoded."""


class OutboxError(TowerdError):
    """The local record store failed."""


class UplinkError(TowerdError):
    """The link to a central failed or was misconfigured."""
