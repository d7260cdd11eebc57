"""towerd's configuration: the schema (frozen dataclasses) and the loader.

The YAML is validated once, here, at the edge; everything below receives these frozen
dataclasses. config/towerd.yaml in the repository is the shipped default and documents
every key. See :mod:`towerd.schema` for how problems are reported.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from towerd.detection.settings import DetectionSettings
from towerd.errors import ConfigError
from towerd.identity.settings import RemoteIdSettings
from towerd.outbox.settings import OutboxSettings
from towerd.reports.settings import ReportsSettings
from towerd.rf.processor import RfSettings
from towerd.schema import INVALID, Problem, Validator, compose, read_config_text, spec
from towerd.threat import ThreatSettings
from towerd.tracking.classify import ClassificationSettings
from towerd.tracking.settings import TrackingSettings
from towerd.uplink.settings import CentralSettings
from towerd.web.settings import WebSettings

TOWER_ID_PATTERN = r"[A-Za-z0-9._-]{1,64}"
NAME_PATTERN = r"[a-z0-9][a-z0-9_-]{0,31}"
DEFAULT_PATH = "/etc/towerd/towerd.yaml"
MAX_FILE_BYTES = 1 << 20
"""Largest configuration file read (the shipped one is about 20 KB)."""


@dataclass(frozen=True)
class TowerConfig:
    id: str = spec(doc="tower id, also the ZeroMQ routing id (ICD v1)", pattern=TOWER_ID_PATTERN)
    latitude_deg: float = spec(doc="WGS84 latitude of the reference point", unit="deg", lo=-90.0, hi=90.0)
    longitude_deg: float = spec(doc="WGS84 longitude of the reference point", unit="deg", lo=-180.0, hi=180.0)
    height_m: float = spec(doc="height above the WGS84 ellipsoid", unit="m", lo=-500.0, hi=9000.0)


@dataclass(frozen=True)
class MountConfig:
    boresight_azimuth_deg: float = spec(doc="boresight, clockwise from true north", unit="deg", lo=0.0, hi=360.0)
    position_enu_m: tuple[float, float, float] = spec(
        (0.0, 0.0, 0.0), doc="antenna east/north/up of the reference point", unit="m", lo=-1000.0, hi=1000.0
    )
    tilt_deg: float = spec(0.0, doc="boresight above the horizontal", unit="deg", lo=-90.0, hi=90.0)


@dataclass(frozen=True)
class NoiseConfig:
    range_sigma_m: float = spec(0.5, unit="m", lo=0.01, hi=500.0)
    azimuth_sigma_deg: float = spec(1.0, unit="deg", lo=0.01, hi=30.0)
    elevation_sigma_deg: float = spec(2.0, unit="deg", lo=0.01, hi=30.0)
    radial_speed_sigma_mps: float = spec(0.5, doc="radial speed (Doppler) error", unit="m/s", lo=0.01, hi=50.0)
    unambiguous_speed_mps: float = spec(
        0.0, doc="radial speeds fold modulo twice this (TI: lambda/(4 Tc)); 0: they do not fold", unit="m/s",
        lo=0.0, hi=1000.0)


@dataclass(frozen=True)
class SensorConfig:
    name: str = spec(doc="sensor name in logs, status and HEALTH", pattern=NAME_PATTERN)
    driver: str = spec(doc="driver registry name")
    settings: Any = spec(doc="the driver's own settings", settings_of="driver")
    mount: MountConfig | None = spec(None, doc="antenna position and pointing; required for radars")
    noise: NoiseConfig = spec(NoiseConfig())
    enabled: bool = spec(True)
    degraded_after_s: float = spec(5.0, doc="open but silent this long -> degraded", unit="s", lo=0.5, hi=3600.0)
    reconnect_max_s: float = spec(30.0, doc="cap of the reopen backoff", unit="s", lo=1.0, hi=3600.0)


@dataclass(frozen=True)
class LoggingConfig:
    level: Literal["debug", "info", "warning", "error"] = spec("info")


@dataclass(frozen=True)
class Config:
    version: int = spec(doc="configuration format version", lo=1, hi=1)
    tower: TowerConfig = spec()
    state_dir: str = spec("/var/lib/towerd", doc="where the outbox lives")
    status_socket: str | None = spec("/run/towerd/status.sock", doc="local status socket; null: none")
    sensors: tuple[SensorConfig, ...] = spec(())
    detection: DetectionSettings = spec(DetectionSettings())
    tracking: TrackingSettings = spec(TrackingSettings())
    classification: ClassificationSettings = spec(ClassificationSettings(), doc="track categories and confidence")
    threat: ThreatSettings = spec(ThreatSettings(), doc="threat levels from zones, category and behaviour")
    rf: RfSettings = spec(RfSettings(), doc="RF detection, tracking and fusion (spectrum analysers)")
    reports: ReportsSettings = spec(ReportsSettings())
    outbox: OutboxSettings = spec(OutboxSettings())
    centrals: tuple[CentralSettings, ...] = spec(())
    logging: LoggingConfig = spec(LoggingConfig())
    web: WebSettings = spec(WebSettings(), doc="read-only live web console (towerd.web)")
    remote_id: RemoteIdSettings = spec(RemoteIdSettings(), doc="Remote ID broadcasts fused with radar tracks")

    @property
    def pipeline(self) -> PipelineSettings:
        """The part of the configuration the pipeline (readings to reports) needs."""
        return PipelineSettings(tower=self.tower, sensors=self.sensors, detection=self.detection,
                                tracking=self.tracking, classification=self.classification, threat=self.threat,
                                rf=self.rf, reports=self.reports, remote_id=self.remote_id)


@dataclass(frozen=True)
class PipelineSettings:
    """What :class:`towerd.pipeline.Pipeline` is configured with: where the tower is, its
    sensors' mounts and noise, and the settings of detection, tracking, classification,
    threat, RF, reports and Remote ID fusion (nothing of the outbox, the uplink or the console)."""

    tower: TowerConfig
    sensors: tuple[SensorConfig, ...]
    detection: DetectionSettings = DetectionSettings()
    tracking: TrackingSettings = TrackingSettings()
    classification: ClassificationSettings = ClassificationSettings()
    threat: ThreatSettings = ThreatSettings()
    rf: RfSettings = RfSettings()
    reports: ReportsSettings = ReportsSettings()
    remote_id: RemoteIdSettings = RemoteIdSettings()


DetectionConfig = DetectionSettings
TrackingConfig = TrackingSettings
ReportsConfig = ReportsSettings
"""Former names of the settings now beside their components."""


@dataclass(frozen=True)
class LoadedConfig:
    """A valid configuration with where it came from."""

    config: Config
    path: str
    digest: str  # sha256 hex of the file's bytes


def _driver_settings(name: str) -> type:
    from towerd.drivers import REGISTRY, driver_class

    if name not in REGISTRY:
        raise KeyError(f"unknown driver {name!r}, expected one of: {', '.join(sorted(REGISTRY))}")
    return driver_class(name).Settings


def _cross_checks(config: Config, root: Any, v: Validator) -> None:
    """Checks spanning several keys (unique names, mounts where a driver needs one)."""
    from towerd.drivers import driver_class

    for i, sensor in enumerate(config.sensors):
        if sensor.mount is None and driver_class(sensor.driver).needs_mount:
            v.problems.append(Problem(*_item_mark(root, "sensors", i), f"sensors[{i}].mount",
                                      f"required for a {sensor.driver} sensor (where the antenna is and looks)"))
    zones = {z.name for z in config.threat.zones}
    for i, central in enumerate(config.centrals):
        for zone in central.share.zones:
            if zone not in zones:
                known = ", ".join(sorted(zones)) or "none are configured under threat.zones"
                v.problems.append(Problem(*_item_mark(root, "centrals", i), f"centrals[{i}].share.zones",
                                          f"unknown zone {zone!r} (zones: {known})"))
    mounted = [s.name for s in config.sensors if s.mount is not None]
    for i, radar in enumerate(config.remote_id.radars):
        if radar.sensor not in mounted:
            v.problems.append(Problem(*_path_mark(root, ("remote_id", "radars", i)), f"remote_id.radars[{i}].sensor",
                                      f"{radar.sensor!r} is not a sensor with a mount ({', '.join(mounted) or 'none'})"))
    for key, items in (("sensors", config.sensors), ("centrals", config.centrals)):
        seen: set[str] = set()
        for i, item in enumerate(items):
            if item.name in seen:
                v.problems.append(Problem(*_item_mark(root, key, i), f"{key}[{i}].name", f"duplicate name {item.name!r}"))
            seen.add(item.name)


def _item_mark(root: Any, key: str, index: int) -> tuple[int, int]:
    for k, val in root.value:
        if k.value == key:
            node = val.value[index]
            return node.start_mark.line + 1, node.start_mark.column + 1
    return 1, 1


def _path_mark(root: Any, path: tuple[str | int, ...]) -> tuple[int, int]:
    """Line and column of the node at ``path`` (mapping keys, list indices) under ``root``."""
    node = root
    for step in path:
        if isinstance(step, int):
            node = node.value[step]
        else:
            node = next(val for k, val in node.value if k.value == step)
    return node.start_mark.line + 1, node.start_mark.column + 1


def parse_config(text: str, filename: str) -> Config:
    """Validate YAML text; raise ConfigError listing every problem."""
    root, problems = compose(text, filename)
    if problems:
        raise ConfigError([p.format(filename) for p in problems])
    if root is None:
        raise ConfigError(f"{filename}:1:1: the file is empty")
    v = Validator(_driver_settings)
    config = v.build(root, Config)
    if config is not INVALID:
        _cross_checks(config, root, v)
    if v.problems:
        ordered = sorted(v.problems, key=lambda p: (p.line, p.column))
        raise ConfigError([p.format(filename) for p in ordered])
    return config


def load_config(path: str | Path) -> LoadedConfig:
    """Read and validate the file at ``path``."""
    path = Path(path)
    text, raw = read_config_text(path, MAX_FILE_BYTES)
    config = parse_config(text, str(path))
    return LoadedConfig(config=config, path=str(path), digest=hashlib.sha256(raw).hexdigest())
