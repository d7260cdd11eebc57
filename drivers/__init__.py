"""Sensor drivers, installed as ``towerd.drivers``.

Drivers turn serial bytes into measurements and know nothing of detection, tracking or
the uplink. The YAML chooses a driver per sensor by its registry name.

A new device is one package plus one line in :data:`REGISTRY`:

- the package ``drivers/<name>/``: ``protocol.py`` (the pure, incremental parser) and
  ``driver.py`` (a :class:`~towerd.drivers.base.SensorDriver` subclass with its
  ``Settings``, ``_decode``, ``parser_totals`` and, when it knows more of its device,
  ``status``), and its emulator ``towerd/sim/<name>.py`` (bytes on a pty, driven by a
  scenario, with ``from_sim_args`` and ``sim_status`` for ``towerd sim``);
- the line: ``"<name>": DriverEntry(driver=..., emulator=..., readings=(...))``, every
  target a ``"module:Name"`` string imported on first use, so naming a device costs no
  import.

Everything else finds the device through the registry: the configuration validator (its
settings), the daemon, ``towerd tap/record/replay`` (the driver), ``towerd sim`` (the
emulator, ``--device <name>``), the conformance tests (its captures under
``tests/captures/<name>/``).
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Any

from towerd.errors import ConfigError


@dataclass(frozen=True)
class DriverEntry:
    """One device kind: its driver, its emulator and the reading types its driver yields,
    each as ``"module:Name"`` (imported when first asked for)."""

    driver: str
    """The :class:`~towerd.drivers.base.SensorDriver` subclass."""
    emulator: str | None
    """The emulator class ``towerd sim`` runs (None: no emulator yet)."""
    readings: tuple[str, ...]
    """Classes of the readings the driver yields (from :mod:`towerd.drivers.measurements`
    or the device's own package)."""


_M = "towerd.drivers.measurements"

REGISTRY: dict[str, DriverEntry] = {
    "ti_mmwave": DriverEntry(driver="towerd.drivers.ti_mmwave.driver:TiMmwaveDriver",
                             emulator="towerd.sim.ti_mmwave:TiMmwaveEmulator",
                             readings=(f"{_M}:RadarPlots",)),
    "nmea_radar": DriverEntry(driver="towerd.drivers.nmea_radar.driver:NmeaRadarDriver",
                              emulator="towerd.sim.nmea_radar:NmeaRadarEmulator",
                              readings=(f"{_M}:RadarPlots", f"{_M}:GeoPlots")),
    "rfexplorer": DriverEntry(driver="towerd.drivers.rfexplorer.driver:RfExplorerDriver",
                              emulator="towerd.sim.rfexplorer:RfExplorerEmulator",
                              readings=(f"{_M}:Spectrum",)),
    "remoteid": DriverEntry(driver="towerd.drivers.remoteid.driver:RemoteIdDriver",
                            emulator="towerd.sim.remoteid:RemoteIdEmulator",
                            readings=(f"{_M}:RemoteIdReading",)),
}
"""Registry name (YAML ``driver:``) -> what makes that device work."""

for _name, _entry in REGISTRY.items():
    if not isinstance(_entry, DriverEntry):  # an entry in an older format, e.g. a bare "module:Class"
        raise TypeError(f"towerd.drivers.REGISTRY[{_name!r}] must be a DriverEntry(driver=..., emulator=..., "
                        f"readings=...), got {_entry!r}")


def entry(name: str) -> DriverEntry:
    """The registry entry for ``name``; ConfigError naming the known ones if none."""
    try:
        return REGISTRY[name]
    except KeyError:
        known = ", ".join(sorted(REGISTRY))
        raise ConfigError(f"unknown driver {name!r}, expected one of: {known}") from None


def load(target: str) -> Any:
    """Import ``"module:Name"`` and return the object."""
    module_name, _, attr = target.partition(":")
    return getattr(importlib.import_module(module_name), attr)


def driver_class(name: str) -> type:
    """Return the driver class registered under ``name``."""
    return load(entry(name).driver)


def reading_types(name: str) -> tuple[type, ...]:
    """The classes of the readings the driver registered under ``name`` yields."""
    return tuple(load(target) for target in entry(name).readings)
