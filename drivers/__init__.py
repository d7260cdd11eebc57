"""Sensor drivers, installed as ``towerd.drivers``.

Drivers turn serial bytes into measurements and know nothing of detection, tracking or
the uplink. A new device is one module and one line in :data:`REGISTRY`; the YAML
chooses a driver per sensor by its registry name.
"""

from __future__ import annotations

import importlib

from towerd.errors import ConfigError

REGISTRY: dict[str, str] = {
    "ti_mmwave": "towerd.drivers.ti_mmwave.driver:TiMmwaveDriver",
    "nmea_radar": "towerd.drivers.nmea_radar.driver:NmeaRadarDriver",
    "rfexplorer": "towerd.drivers.rfexplorer.driver:RfExplorerDriver",
    "remoteid": "towerd.drivers.remoteid.driver:RemoteIdDriver",
}
"""Registry name -> ``module:Class`` of the driver, imported on first use."""


def driver_class(name: str) -> type:
    """Return the driver class registered under ``name``."""
    try:
        target = REGISTRY[name]
    except KeyError:
        known = ", ".join(sorted(REGISTRY))
        raise ConfigError(f"unknown driver {name!r}, expected one of: {known}") from None
    module_name, _, class_name = target.partition(":")
    return getattr(importlib.import_module(module_name), class_name)
