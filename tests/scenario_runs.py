"""Running scenarios through the whole radar chain in-process, for tests with known truth.

The TI emulator builds each frame's bytes from the scenario (the same bytes it would
write to a pty), the real TI driver decodes them, and a real :class:`Pipeline` tracks,
classifies and reports: everything but the serial port, so a 40 s scenario at 10 Hz runs
in about a second, with deterministic seeds.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from types import SimpleNamespace
from typing import Any, Iterator

import numpy as np

from towerd import geo
from towerd.clock import ManualClock
from towerd.config import Config, MountConfig, NoiseConfig, SensorConfig, TowerConfig
from towerd.drivers.ti_mmwave.driver import TiMmwaveDriver, TiMmwaveSettings
from towerd.icd import Status
from towerd.pipeline import Pipeline
from towerd.sim import scenes
from towerd.sim.scenario import Scenario
from towerd.sim.ti_mmwave import TiMmwaveEmulator
from towerd.threat import ThreatSettings
from towerd.tracking.classify import ClassificationSettings
from towerd.tracking.clutter import StaticClutterSettings
from towerd.tracking.imm import ImmSettings

SITE = geo.Site(latitude_deg=27.5036, longitude_deg=-99.5076, height_m=130.0)
FOV_AZ_DEG, FOV_EL_DEG, MAX_RANGE_M = 60.0, 30.0, 200.0
"""The TI emulator's defaults: ±60° azimuth, ±30° elevation, 200 m."""


def pipeline_config(
    *,
    imm: ImmSettings = ImmSettings(enabled=True),
    static_clutter: StaticClutterSettings = StaticClutterSettings(),
    classification: ClassificationSettings = ClassificationSettings(),
    threat: ThreatSettings = ThreatSettings(),
    **tracking: Any,
) -> Any:
    """A configuration for :class:`Pipeline`: a real :class:`Config` for the demo radar,
    plus the sections this work adds (``tracking.imm``, ``tracking.static_clutter``,
    ``classification``, ``threat``). Until towerd.config.Config has those fields the
    result is a namespace with every Config field and the new ones (Pipeline only reads
    attributes); once it has them, the same values go through."""
    base = Config(
        version=1,
        tower=TowerConfig(id="tx-test-001", latitude_deg=SITE.latitude_deg, longitude_deg=SITE.longitude_deg,
                          height_m=SITE.height_m),
        sensors=(
            SensorConfig(
                name="radar0", driver="ti_mmwave", settings=TiMmwaveSettings(port="loop://"),
                mount=MountConfig(boresight_azimuth_deg=scenes.RADAR_BORESIGHT_DEG,
                                  position_enu_m=scenes.RADAR_POSITION_ENU_M),
                noise=NoiseConfig(range_sigma_m=0.5, azimuth_sigma_deg=1.0, elevation_sigma_deg=1.5),
            ),
        ),
    )
    t = {f.name: getattr(base.tracking, f.name) for f in fields(base.tracking)}
    t.update(tracking, imm=imm, static_clutter=static_clutter)
    c = {f.name: getattr(base, f.name) for f in fields(base)}
    c.update(tracking=SimpleNamespace(**t), classification=classification, threat=threat)
    return SimpleNamespace(**c)


def in_fov(pos_enu_m: np.ndarray) -> np.ndarray:
    """(N, 3) -> (N,) inside the emulated radar's field of view."""
    rel = np.asarray(pos_enu_m, dtype=float).reshape(-1, 3) - np.asarray(scenes.RADAR_POSITION_ENU_M)
    s = rel @ geo.mount_rotation(scenes.RADAR_BORESIGHT_DEG)
    r, az, el = geo.cartesian_to_spherical(s)
    az = (az + 180.0) % 360.0 - 180.0
    return (r >= 1.0) & (r <= MAX_RANGE_M) & (np.abs(az) <= FOV_AZ_DEG) & (np.abs(el) <= FOV_EL_DEG)


@dataclass
class Frame:
    """One processed frame: time, the records it produced, the pipeline (its state now)
    and the truth present in the field of view."""

    t_s: float
    records: np.ndarray
    pipeline: Pipeline
    names: np.ndarray
    kinds: np.ndarray
    truth_enu_m: np.ndarray

    def reported_tracks(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(track ids, positions (n, 3), rows) of the live tracks the central is told
        about: confirmed or coasting and reportable (not static clutter)."""
        tr = self.pipeline.tracker.tracks
        labels = self.pipeline.last_labels
        ok = tr.rows_with_status(Status.CONFIRMED, Status.COASTING) & labels.reportable
        rows = np.flatnonzero(ok)
        return tr.track_id[rows], tr.state[rows, :3], rows


@dataclass
class Run:
    """Everything a scenario run produced."""

    frames: list[Frame] = field(default_factory=list)

    @property
    def records(self) -> np.ndarray:
        return np.concatenate([f.records for f in self.frames])


def frames(scenario: Scenario, pipeline: Pipeline, *, duration_s: float, seed: int,
           rate_hz: float = 10.0) -> Iterator[Frame]:
    """Feed ``duration_s`` of emulated TI frames through ``pipeline``, yielding each."""
    emulator = TiMmwaveEmulator(scenario, boresight_azimuth_deg=scenes.RADAR_BORESIGHT_DEG,
                                position_enu_m=scenes.RADAR_POSITION_ENU_M, frame_rate_hz=rate_hz,
                                rng=np.random.default_rng(seed))
    driver = TiMmwaveDriver("radar0", TiMmwaveSettings(port="loop://"))
    for k in range(int(round(duration_s * rate_hz))):
        t = k / rate_hz
        for reading in driver.feed(emulator.frame_bytes(t, k + 1), t):
            records = pipeline.process(reading)
            names, kinds, pos = scenes.truth_enu(scenario, t)
            seen = in_fov(pos)
            yield Frame(t, records, pipeline, names[seen], kinds[seen], pos[seen])


def run(scenario: Scenario, *, duration_s: float, seed: int, **config: Any) -> tuple[Pipeline, list[Frame]]:
    """A fresh pipeline (``pipeline_config(**config)``, ManualClock) run over the scenario;
    the frames are kept (their ``pipeline`` is the same object, in its final state, so
    read per-frame state inside a loop over :func:`frames` instead)."""
    pipeline = Pipeline(pipeline_config(**config), ManualClock())
    return pipeline, list(frames(scenario, pipeline, duration_s=duration_s, seed=seed))
