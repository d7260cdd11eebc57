"""The processing chain for radar readings: detection -> tracking -> labels -> report records.

Pure computation, no I/O: the daemon feeds it readings from the sensor threads, and
replay and the benchmarks feed it the same way. One tracker holds the tower's whole
picture; each sensor has its own plot converter (its mounting and noise).

Every tracker call goes to the labeller (:class:`~towerd.labeller.Labeller`), which keeps
the state the labels are made from (RF fusion's association, the tracks' features, the
static clutter filter's motion test and clutter map) and computes the labels themselves
— RF link, classification (:mod:`towerd.tracking.classify`), static clutter
(:class:`~towerd.tracking.clutter.StaticClutterFilter`: tracks that have not moved since
first seen are withheld, unless RF-linked, their Doppler spread shows rotors, they are
confidently classified uas, or paired with an airborne drone's Remote ID broadcast), threat (:class:`~towerd.threat.ThreatAssessor`) — only for
the tracks the reporter asks about, when their inputs changed; the reporter turns what
is due into ICD records.

Spectrum readings go to the RF processor (:mod:`towerd.rf`): its drone links are
associated with radar tracks (sources radar+RF and the link's frequency, bandwidth and
power in their records) or reported on their own as RF-only tracks (no position).
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np

from towerd.clock import Clock
from towerd.config import PipelineSettings
from towerd.detection.cluster import PointClusterer
from towerd.detection.plots import GeoPlotConverter, MeasurementNoise, PlotConverter, SensorMount
from towerd.drivers.measurements import GeoPlots, RadarPlots, RemoteIdReading, Spectrum
from towerd.geo import Site
from towerd.icd import TRACK_RECORD_DTYPE
from towerd.identity import RemoteIdFusion
from towerd.labeller import Labeller, RfFusion
from towerd.reports.tracks import TrackReporter
from towerd.rf import RadarLinkFusion, RfProcessor, RfSettings, RfTrackReporter, RfUpdate
from towerd.threat import ThreatAssessor, ThreatSettings
from towerd.tracking.classify import Classification, ClassificationSettings
from towerd.tracking.clutter import StaticClutterFilter, StaticClutterSettings
from towerd.tracking.compose import tracker_parts
from towerd.tracking.labels import TrackLabels
from towerd.tracking.tracker import Tracker, TrackUpdate

log = logging.getLogger(__name__)


class Pipeline:
    """Turns readings into ICD track records due for reporting."""

    def __init__(self, config: PipelineSettings, clock: Clock, *, rf_fusion: RfFusion | None = None) -> None:
        self.clock = clock
        self.frames = 0
        self._own_fusion = rf_fusion is None
        self.rf_fusion: RfFusion | None = rf_fusion
        self.rf: RfProcessor | None = None
        self.rf_reporter: RfTrackReporter | None = None
        self._tracker: Tracker | None = None
        self.reporter: TrackReporter | None = None
        self.static_filter: StaticClutterFilter | None = None
        self.labeller: Labeller | None = None
        self.last_rf_bands: tuple = ()
        """The RF BandResults of the latest sweep processed."""
        self.identity: RemoteIdFusion | None = None
        self.reconfigure(config)

    def reconfigure(self, config: PipelineSettings) -> None:
        """Apply (new) settings; live tracks, track ids, per-track features, the clutter
        map and report history are kept, so a reload takes effect at the next frame
        without losing anything."""
        site = Site(config.tower.latitude_deg, config.tower.longitude_deg, config.tower.height_m)
        self.converters: dict[str, PlotConverter] = {}
        self.geo_converters: dict[str, GeoPlotConverter] = {}
        for s in config.sensors:
            if s.mount is None:  # RF sensors have no mount and give no plots
                continue
            mount = SensorMount(s.mount.position_enu_m, s.mount.boresight_azimuth_deg, s.mount.tilt_deg)
            noise = MeasurementNoise(s.noise.range_sigma_m, s.noise.azimuth_sigma_deg, s.noise.elevation_sigma_deg,
                                     s.noise.radial_speed_sigma_mps, s.noise.unambiguous_speed_mps)
            self.converters[s.name] = PlotConverter(mount, noise)
            self.geo_converters[s.name] = GeoPlotConverter(site, mount, noise)
        self._reconfigure_rf(config.rf)
        d = config.detection
        self.clusterer = PointClusterer(d.target_extent_m, d.cluster_gate_probability, enabled=d.cluster_points)
        t = config.tracking
        static_settings: StaticClutterSettings = t.static_clutter
        if self.static_filter is None:
            self.static_filter = StaticClutterFilter(static_settings)
        else:
            self.static_filter.reconfigure(static_settings)
        parts = tracker_parts(t, clutter_map=self.static_filter.clutter_map if static_settings.enabled else None)
        if self._tracker is None:
            self._tracker = Tracker(**parts)
        else:  # same tracks, new components
            self._tracker.replace_components(**parts)
        classification: ClassificationSettings = config.classification
        threat: ThreatSettings = config.threat
        self.threat = ThreatAssessor(threat, site)
        if self.labeller is None:
            self.labeller = Labeller(classification, self.static_filter, self.threat, self.rf_fusion)
        else:
            self.labeller.rf_fusion = self.rf_fusion
            self.labeller.reconfigure(classification, self.threat)
        if self.reporter is None:
            self.reporter = TrackReporter(
                site, interval_s=config.reports.interval_s, include_tentative=config.reports.include_tentative
            )
        else:
            self.reporter.site = site
            self.reporter.interval_s = config.reports.interval_s
            self.reporter.include_tentative = config.reports.include_tentative
        mounts = {name: c.mount for name, c in self.converters.items()}
        listening = any(s.driver == "remoteid" and s.enabled for s in config.sensors)
        if self.identity is None:
            self.identity = RemoteIdFusion(config.remote_id, site, mounts, self.clock, self.threat, listening=listening)
        else:
            self.identity.reconfigure(config.remote_id, site, mounts, self.threat, listening=listening)
        self.labeller.exempt_tracks = self.identity.airborne_tracks  # a hovering broadcaster is no clutter

    def _reconfigure_rf(self, settings: RfSettings) -> None:
        """RF processing with ``settings``. A change restarts RF tracking (new ids, never
        reused), since its noise floors and emitter tracks depend on every setting."""
        if self.rf is not None and self.rf.settings == settings:
            return
        first_id = self.rf.next_track_id if self.rf is not None else None
        self.rf = RfProcessor(settings) if first_id is None else RfProcessor(settings, first_track_id=first_id)
        self.rf_reporter = RfTrackReporter(settings.reports, ids=self.rf.ids)
        if self._own_fusion:
            rf = self.rf
            self.rf_fusion = RadarLinkFusion(lambda: rf.tracks, settings.fusion)

    @property
    def tracker(self) -> Tracker:
        assert self._tracker is not None
        return self._tracker

    def process(self, reading: Any) -> np.ndarray:
        """Run one reading through the chain; return the records now due (seq unset)."""
        if isinstance(reading, Spectrum):
            update = self.rf.process(reading)
            self.last_rf_bands = update.bands  # spectra, floors, thresholds: for the web console
            return self._report_rf(update)
        if isinstance(reading, RemoteIdReading):
            return self.identity.ingest(reading)
        if isinstance(reading, RadarPlots):
            converters: dict[str, Any] = self.converters
        elif isinstance(reading, GeoPlots):
            converters = self.geo_converters
        else:
            log.debug("ignoring reading of type %s", type(reading).__name__)
            return _NO_RECORDS
        converter = converters.get(reading.sensor)
        if converter is None:
            log.warning("reading from unknown sensor %r dropped", reading.sensor)
            return _NO_RECORDS
        self.frames += 1
        detections = self.clusterer.cluster(converter.convert(reading))
        return self._report(self.tracker.step(detections))

    def expire(self, t_mono: float) -> np.ndarray:
        """End tracks that have gone stale even when no sensor sends anything."""
        return _join(_join(self._report(self.tracker.expire(t_mono)), self._report_rf(self.rf.expire(t_mono))),
                     self.identity.expire(t_mono))

    def end_all(self, t_mono: float) -> np.ndarray:
        """Final ENDED records for every reported track (the daemon is stopping)."""
        return _join(_join(self._report(self.tracker.end_all(t_mono)), self._report_rf(self.rf.end_all(t_mono))),
                     self.identity.end_all(t_mono))

    def _report_rf(self, update: RfUpdate) -> np.ndarray:
        """RF-only records: drone links no radar track carries."""
        linked = getattr(self.rf_fusion, "associated_rf_ids", np.zeros(0, dtype=np.uint32))
        return self.rf_reporter.build(update.tracks, update.ended, linked, self.clock)

    def label(self, update: TrackUpdate) -> TrackLabels:
        """RF link, category, static clutter and threat of ``update``'s live tracks (all
        of them; the reporter asks the labeller for the rows it needs instead)."""
        assert self.labeller is not None
        self.labeller.observe(update)
        return self.labeller.labels(np.arange(len(update.tracks)))

    def _report(self, update: TrackUpdate) -> np.ndarray:
        assert self.reporter is not None and self.labeller is not None
        if not self.labeller.observe(update):
            return _NO_RECORDS  # nothing changed since the last call: nothing can be due
        records = self.reporter.build(update, self.clock, self.labeller.labels)
        assert self.identity is not None
        return self.identity.on_radar(update, self.labeller.categories, records)

    @property
    def last_labels(self) -> TrackLabels | None:
        """The labels of the live tracks after the latest call (computed on access)."""
        if self.labeller is None:
            return None
        return self.labeller.labels(np.arange(self.labeller.track_count))

    @property
    def last_classification(self) -> Classification | None:
        """The classifier's answer after the latest call (features included), for status
        and tests (computed on access)."""
        return self.labeller.classification() if self.labeller is not None else None

    def set_receivers(self, silence: dict[str, float | None]) -> None:
        """The Remote ID receivers' state by sensor name (None: port down; else seconds
        since each last sent anything): a receiver that is unplugged or silent hears
        nothing, so no track is then non-cooperative
        (:meth:`~towerd.identity.RemoteIdFusion.set_receivers`)."""
        assert self.identity is not None
        self.identity.set_receivers(silence)

    def zone_of(self, lat_deg: float, lon_deg: float) -> set[str]:
        """Names of the configured zones containing a WGS84 point (for sharing rules)."""
        return self.threat.zone_of(lat_deg, lon_deg)

    @property
    def tracks_active(self) -> int:
        """Live radar tracks plus live RF tracks and ID-only tracks."""
        return len(self.tracker.tracks.track_id) + len(self.rf.tracks) + self.identity.id_only_count


_NO_RECORDS = np.zeros(0, dtype=TRACK_RECORD_DTYPE)


def _join(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return a if len(b) == 0 else b if len(a) == 0 else np.concatenate([a, b])
