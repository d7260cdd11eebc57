"""Hardware emulators on pseudo-terminals, and the scenarios that drive them.

Each device's emulator is named by its driver's registry entry
(:data:`towerd.drivers.REGISTRY`, ``emulator=``); ``towerd sim --device NAME`` finds it
with :func:`emulator_class` and uses it through :class:`SimEmulator`, so a new device
needs no change to the sim command.
"""

from __future__ import annotations

from typing import Any, Protocol

from towerd.drivers import entry, load
from towerd.errors import ConfigError


class SimEmulator(Protocol):
    """What ``towerd sim`` needs of an emulator class and its instances.

    Optional: ``has_cli_port`` (class attribute, default False: the device has a second,
    command port and ``--cli`` gives it a pty, passed to ``start``), and the faults
    ``inject_bad_checksum()`` and ``inject_reset()`` (the sim's ``checksum`` and
    ``reset`` commands)."""

    @classmethod
    def from_sim_args(cls, scenario: Any, args: Any, rng: Any) -> "SimEmulator":
        """The emulator for the sim's command-line options; ValueError when they do not fit."""

    def start(self, pty: Any, *cli_pty: Any) -> None:
        """Start writing to ``pty`` (and serving the command port when one is given)."""

    def stop(self) -> None:
        """Stop; safe to call any number of times."""

    def sim_status(self) -> str:
        """One line of counters for the sim's ``status`` command."""

    def inject_garbage(self, n_bytes: int) -> None: ...

    def inject_truncated(self) -> None: ...

    def inject_stall(self, seconds: float) -> None: ...


def emulator_class(name: str) -> type:
    """The emulator class of the device registered as ``name``; ConfigError when the name
    is unknown or the device has no emulator."""
    target = entry(name).emulator
    if target is None:
        raise ConfigError(f"driver {name!r} has no emulator")
    return load(target)
