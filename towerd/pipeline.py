"""The processing chain for radar readings: detection -> tracking -> report records.

Pure computation, no I/O: the daemon feeds it readings from the sensor threads, and
replay and the benchmarks feed it the same way. One tracker holds the tower's whole
picture; each sensor has its own plot converter (its mounting and noise).
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np

from towerd.clock import Clock
from towerd.config import Config
from towerd.detection.cluster import PointClusterer
from towerd.detection.plots import MeasurementNoise, PlotConverter, SensorMount
from towerd.drivers.measurements import RadarPlots
from towerd.geo import Site
from towerd.icd import TRACK_RECORD_DTYPE
from towerd.reports.tracks import TrackReporter
from towerd.tracking.tracker import Tracker, TrackUpdate, build_tracker

log = logging.getLogger(__name__)


class Pipeline:
    """Turns readings into ICD track records due for reporting."""

    def __init__(self, config: Config, clock: Clock) -> None:
        self.clock = clock
        self.frames = 0
        self._tracker: Tracker | None = None
        self.reporter: TrackReporter | None = None
        self.reconfigure(config)

    def reconfigure(self, config: Config) -> None:
        """Apply (new) settings; live tracks, track ids and report history are kept, so
        a reload takes effect at the next frame without losing anything."""
        self.converters: dict[str, PlotConverter] = {
            s.name: PlotConverter(
                SensorMount(s.mount.position_enu_m, s.mount.boresight_azimuth_deg, s.mount.tilt_deg),
                MeasurementNoise(s.noise.range_sigma_m, s.noise.azimuth_sigma_deg, s.noise.elevation_sigma_deg),
            )
            for s in config.sensors
        }
        d = config.detection
        self.clusterer = PointClusterer(d.target_extent_m, d.cluster_gate_probability, enabled=d.cluster_points)
        t = config.tracking
        fresh = build_tracker(
            accel_noise_mps2=t.accel_noise_mps2,
            gate_probability=t.gate_probability,
            confirm_hits=t.confirm_hits,
            confirm_window=t.confirm_window,
            tentative_max_misses=t.tentative_max_misses,
            confirmed_max_coast_s=t.confirmed_max_coast_s,
            coast_after_s=t.coast_after_s,
        )
        if self._tracker is None:
            self._tracker = fresh
        else:  # same tracks, new components
            for part in ("predictor", "updater", "associator", "initiator", "deleter"):
                setattr(self._tracker, part, getattr(fresh, part))
        site = Site(config.tower.latitude_deg, config.tower.longitude_deg, config.tower.height_m)
        if self.reporter is None:
            self.reporter = TrackReporter(
                site, interval_s=config.reports.interval_s, include_tentative=config.reports.include_tentative
            )
        else:
            self.reporter.site = site
            self.reporter.interval_s = config.reports.interval_s
            self.reporter.include_tentative = config.reports.include_tentative

    @property
    def tracker(self) -> Tracker:
        assert self._tracker is not None
        return self._tracker

    def process(self, reading: Any) -> np.ndarray:
        """Run one reading through the chain; return the records now due (seq unset)."""
        if not isinstance(reading, RadarPlots):
            log.debug("ignoring reading of type %s", type(reading).__name__)
            return np.zeros(0, dtype=TRACK_RECORD_DTYPE)
        converter = self.converters.get(reading.sensor)
        if converter is None:
            log.warning("reading from unknown sensor %r dropped", reading.sensor)
            return np.zeros(0, dtype=TRACK_RECORD_DTYPE)
        self.frames += 1
        detections = self.clusterer.cluster(converter.convert(reading))
        return self._report(self.tracker.step(detections))

    def expire(self, t_mono: float) -> np.ndarray:
        """End tracks that have gone stale even when no sensor sends anything."""
        return self._report(self.tracker.expire(t_mono))

    def end_all(self, t_mono: float) -> np.ndarray:
        """Final ENDED records for every reported track (the daemon is stopping)."""
        return self._report(self.tracker.end_all(t_mono))

    def _report(self, update: TrackUpdate) -> np.ndarray:
        return self.reporter.build(update, self.clock)

    @property
    def tracks_active(self) -> int:
        return len(self.tracker.tracks.track_id)
