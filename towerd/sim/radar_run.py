"""A scenario through the radar chain in-process, frame by frame, for tests and benchmarks.

The TI emulator builds each frame's bytes from the scenario (the bytes it would write to
a pty), the real TI driver decodes them, and the caller's ``process`` (normally
:meth:`towerd.pipeline.Pipeline.process`) takes each reading: everything but the serial
port, so a 40 s scenario at 10 frames/s runs in about a second with deterministic seeds.
Tests (which cannot be imported by benchmarks) and benchmarks share this one loop, so
both measure the same chain.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Callable, Iterator

import numpy as np

from towerd import geo
from towerd.config import Config, MountConfig, NoiseConfig, SensorConfig, TowerConfig
from towerd.drivers.measurements import RadarPlots
from towerd.drivers.ti_mmwave.driver import TiMmwaveDriver, TiMmwaveSettings
from towerd.sim import scenes
from towerd.sim.scenario import Scenario
from towerd.sim.ti_mmwave import MIN_RANGE_M, TiMmwaveEmulator

log = logging.getLogger(__name__)

SENSOR = "radar0"
SITE = geo.Site(latitude_deg=27.5036, longitude_deg=-99.5076, height_m=130.0)
FOV_AZ_DEG, FOV_EL_DEG, MAX_RANGE_M = 60.0, 30.0, 200.0
"""The TI emulator's defaults: ±60° azimuth, ±30° elevation, 200 m."""


def radar_config(tower_id: str = "sim-001") -> Config:
    """towerd's default configuration with one TI radar, ``SENSOR``, mounted where
    :mod:`towerd.sim.scenes` puts it (range σ 0.5 m, azimuth 1°, elevation 1.5°)."""
    return Config(
        version=1,
        tower=TowerConfig(id=tower_id, latitude_deg=SITE.latitude_deg, longitude_deg=SITE.longitude_deg,
                          height_m=SITE.height_m),
        sensors=(SensorConfig(
            name=SENSOR, driver="ti_mmwave", settings=TiMmwaveSettings(port="loop://"),
            mount=MountConfig(boresight_azimuth_deg=scenes.RADAR_BORESIGHT_DEG,
                              position_enu_m=scenes.RADAR_POSITION_ENU_M),
            noise=NoiseConfig(range_sigma_m=0.5, azimuth_sigma_deg=1.0, elevation_sigma_deg=1.5),
        ),),
    )


def in_fov(pos_enu_m: np.ndarray) -> np.ndarray:
    """(N, 3) ENU m -> (N,) inside the emulated radar's field of view."""
    rel = np.asarray(pos_enu_m, dtype=float).reshape(-1, 3) - np.asarray(scenes.RADAR_POSITION_ENU_M)
    r, az, el = geo.cartesian_to_spherical(rel @ geo.mount_rotation(scenes.RADAR_BORESIGHT_DEG))
    az = (az + 180.0) % 360.0 - 180.0
    return (r >= MIN_RANGE_M) & (r <= MAX_RANGE_M) & (np.abs(az) <= FOV_AZ_DEG) & (np.abs(el) <= FOV_EL_DEG)


def readings(scenario: Scenario, *, duration_s: float, seed: int,
             rate_hz: float = 10.0) -> Iterator[tuple[float, RadarPlots]]:
    """(t s, reading) for ``duration_s`` of frames: frame k (1-based) at t = (k − 1) / rate_hz,
    built by the emulator (rng seeded with ``seed``) and decoded by the driver."""
    emulator = TiMmwaveEmulator(scenario, boresight_azimuth_deg=scenes.RADAR_BORESIGHT_DEG,
                                position_enu_m=scenes.RADAR_POSITION_ENU_M, frame_rate_hz=rate_hz,
                                rng=np.random.default_rng(seed))
    driver = TiMmwaveDriver(SENSOR, TiMmwaveSettings(port="loop://"))
    for k in range(int(round(duration_s * rate_hz))):
        t = k / rate_hz
        for reading in driver.feed(emulator.frame_bytes(t, k + 1), t):
            yield t, reading


@dataclass(frozen=True, eq=False)
class SimFrame:
    """One processed frame: time, the reading, what ``process`` returned for it, and the
    truth in the field of view then (names (n,), kinds (n,), positions (n, 3) ENU m)."""

    t_s: float
    reading: RadarPlots
    records: Any
    names: np.ndarray
    kinds: np.ndarray
    truth_enu_m: np.ndarray


def run_frames(scenario: Scenario, process: Callable[[RadarPlots], Any], *, duration_s: float, seed: int,
               rate_hz: float = 10.0) -> Iterator[SimFrame]:
    """Feed :func:`readings` to ``process`` one by one, yielding each frame with its truth
    (read the caller's state, e.g. the pipeline's tracks, inside the loop)."""
    for t, reading in readings(scenario, duration_s=duration_s, seed=seed, rate_hz=rate_hz):
        records = process(reading)
        names, kinds, pos = scenes.truth_enu(scenario, t)
        seen = in_fov(pos)
        yield SimFrame(t, reading, records, names[seen], kinds[seen], pos[seen])
