"""NMEA 0183 radar target driver (marine/ground ARPA radars: TTM and TLL sentences).

Reads the radar's NMEA output (4800 baud 8N1, or 38400 for the high-speed variant),
decodes sentences with :class:`~towerd.drivers.nmea_radar.protocol.NmeaParser` and
yields one reading per radar scan.

Scans. An ARPA radar sends one TTM (and/or TLL) per tracked target per update, in a
burst once per antenna revolution; the tracker treats a reading as a scan (targets
missing from it count as misses), so sentences are gathered into one reading until the
scan ends: when a target number already in the batch arrives again (the next update
has begun), or when the line has been quiet for ``scan_gap_s`` (checked at each read
and by :meth:`NmeaRadarDriver.poll` in replay). ``t_mono`` of a reading is when its last
sentence was read. Some displays relay their radar's targets one a second, in turn
(a Navico Broadband 4G through its display does: tests/captures/nmea_radar): there
``scan_gap_s`` must exceed that spacing (2 s), else every target is a scan of its own
and the tracker counts the others missed; a scan then spans a turn through the targets,
so its first targets are up to a turn older than ``t_mono``.

TTM -> :class:`~towerd.drivers.measurements.RadarPlots` in the common plot form:

    range_m        = target distance (K/N/S units converted)
    azimuth_deg    = bearing; reference T: from true north, azimuth_is_true = True, in
                     [0, 360); reference R: relative to the radar's heading, which for a
                     fixed radar is its mount boresight, azimuth_is_true = False, in
                     (-180, 180] (the detection layer rotates it by the boresight)
    elevation_deg  = NaN (2D radar: the detection layer places the target at antenna height)
    speed_mps      = target speed;  course_deg = target course when its reference is T
                     (true), NaN when R or absent: a relative course needs the heading,
                     which only the detection layer knows, and the plot form carries
                     true courses only (counted in ``relative_courses``)
    target_id      = the radar's target number; radial_vel_mps, snr_db = NaN

TLL -> :class:`~towerd.drivers.measurements.GeoPlots` (WGS84 latitude/longitude). A TLL
cannot become a sensor-relative plot here: that needs the radar's own position, which
the driver does not know; the detection layer converts it with the tower's site. Most
radars send both sentences for each target, so ``sentences`` chooses which to use
(default ``ttm``; ``both`` gives each target twice per scan, once per reading type).

Status: targets with status L (lost) are dropped and counted (``lost_targets``): the
radar no longer tracks them and their last position is stale. Q (acquiring) and T
(tracking) are kept. TTMs without a distance or bearing are dropped and counted
(``incomplete_targets``).

Counters: ``frames`` counts checksummed sentences, ``bad_frames`` rejected ones (bad or
missing checksum, over-long, unprintable, malformed fields), ``resyncs`` and
``dropped_bytes`` as the parser counts them.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

import numpy as np

from towerd.clock import Clock
from towerd.drivers.base import ParserTotals, SensorDriver
from towerd.drivers.measurements import GeoPlots, RadarPlots, empty_geo_plots, empty_plots
from towerd.drivers.nmea_radar.protocol import MAX_SENTENCE_CHARS, NmeaParser
from towerd.schema import spec

log = logging.getLogger(__name__)

MAX_TALKERS = 8
"""Talker ids kept for status (a radar uses one or two; garbage cannot grow the set)."""


@dataclass(frozen=True)
class NmeaRadarSettings:
    """YAML ``settings:`` of an ``nmea_radar`` sensor."""

    port: str = spec(doc="the radar's NMEA output: device path or pyserial URL")
    baudrate: int = spec(4800, doc="4800 (NMEA 0183) or 38400 (high-speed variant)", unit="baud", lo=300,
                         hi=921600)
    sentences: Literal["ttm", "tll", "both"] = spec(
        "ttm", doc="which target sentences become readings: TTM (range/bearing), TLL (lat/lon) or both")
    scan_gap_s: float = spec(0.5, doc="a quiet line this long ends a scan", unit="s", lo=0.05, hi=60.0)
    max_sentence_chars: int = spec(MAX_SENTENCE_CHARS, doc="longest sentence accepted, $ to LF (standard: 82)",
                                   lo=82, hi=1024)

    def __post_init__(self) -> None:
        if not isinstance(self.port, str) or not self.port:
            raise ValueError(f"port must be a non-empty string, got {self.port!r}")
        if self.sentences not in ("ttm", "tll", "both"):
            raise ValueError(f"sentences must be ttm, tll or both, got {self.sentences!r}")
        for name, lo, hi in (("baudrate", 300, 921600), ("max_sentence_chars", 82, 1024)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
                raise ValueError(f"{name} must be an integer in {lo}..{hi}, got {value!r}")
        gap = self.scan_gap_s
        if isinstance(gap, bool) or not isinstance(gap, (int, float)) or not 0.05 <= gap <= 60.0:
            raise ValueError(f"scan_gap_s must be a number of seconds in 0.05..60, got {gap!r}")


class NmeaRadarDriver(SensorDriver):
    """NMEA 0183 TTM/TLL stream -> RadarPlots (TTM) and GeoPlots (TLL), one per scan."""

    kind: ClassVar[str] = "nmea_radar"
    Settings: ClassVar[type] = NmeaRadarSettings
    max_buffer_bytes: ClassVar[int] = 64 * 1024

    def __init__(self, name: str, settings: NmeaRadarSettings, *, clock: Clock | None = None) -> None:
        super().__init__(name, settings, clock=clock)
        self.parser = NmeaParser(settings.max_sentence_chars)
        self._use_ttm = settings.sentences in ("ttm", "both")
        self._use_tll = settings.sentences in ("tll", "both")
        self._ttm: list[np.void] = []
        self._tll: list[np.void] = []
        self._last_t = -math.inf
        self.scans = 0
        """Readings produced so far (the frame_number of the last one)."""
        self.lost_targets = 0
        self.incomplete_targets = 0
        self.relative_courses = 0
        self.talkers: set[str] = set()
        """Talker ids of the TTM/TLL sentences heard (RA radar, ...; at most MAX_TALKERS)."""

    def _decode(self, buf: bytearray, t_mono: float) -> tuple[int, list[Any]]:
        consumed, rows = self.parser.feed(buf)
        if len(rows) and len(self.talkers) < MAX_TALKERS:
            for talker in np.unique(rows["talker"])[:MAX_TALKERS - len(self.talkers)]:
                self.talkers.add(str(talker))
        out: list[Any] = []
        for row in rows:
            out += self._add(row, t_mono)
        return consumed, out

    def parser_totals(self) -> ParserTotals:
        st = self.parser.stats
        return ParserTotals(st.sentences, st.bad_sentences, st.resyncs, st.dropped_bytes, {
            "bad_checksum": st.bad_checksum, "no_checksum": st.no_checksum, "too_long": st.too_long,
            "not_printable": st.not_printable, "malformed": st.malformed, "other_sentences": st.ignored,
            "lost_targets": self.lost_targets, "incomplete_targets": self.incomplete_targets})

    def status(self) -> dict[str, Any]:
        """Which talkers the radar sends as, which sentences are used, scans so far."""
        return {"talkers": sorted(self.talkers), "sentences": self.settings.sentences, "scans": self.scans,
                "targets": self.parser.stats.targets, "relative_courses": self.relative_courses}

    def poll(self, t_mono: float) -> list[Any]:
        """End the scan when the line has been quiet for ``scan_gap_s``."""
        if (self._ttm or self._tll) and t_mono - self._last_t > self.settings.scan_gap_s:
            return self._flush()
        return []

    def _add(self, row: np.void, t_mono: float) -> list[Any]:
        kind = str(row["sentence"])
        if (kind == "TTM" and not self._use_ttm) or (kind == "TLL" and not self._use_tll):
            return []
        if row["status"] == "L":
            self.lost_targets += 1
            return []
        if kind == "TTM" and not (np.isfinite(row["distance_m"]) and np.isfinite(row["bearing_deg"])):
            self.incomplete_targets += 1
            return []
        out = self.poll(t_mono)
        batch = self._ttm if kind == "TTM" else self._tll
        if any(int(r["target_number"]) == int(row["target_number"]) for r in batch):
            out += self._flush()
            batch = self._ttm if kind == "TTM" else self._tll
        batch.append(row)
        self._last_t = t_mono
        return out

    def _flush(self) -> list[Any]:
        """Readings for the gathered scan (one per sentence type present), then reset."""
        out: list[Any] = []
        ttm, tll = self._ttm, self._tll
        self._ttm, self._tll = [], []
        if not ttm and not tll:
            return out
        self.scans += 1
        if ttm:
            out.append(self._radar_plots(np.array(ttm)))
        if tll:
            out.append(self._geo_plots(np.array(tll)))
        return out

    def _radar_plots(self, rows: np.ndarray) -> RadarPlots:
        plots = empty_plots(len(rows))
        is_true = rows["bearing_true"]
        bearing = rows["bearing_deg"]
        plots["range_m"] = rows["distance_m"]
        plots["azimuth_deg"] = np.where(is_true, bearing, np.where(bearing > 180.0, bearing - 360.0, bearing))
        plots["azimuth_is_true"] = is_true
        plots["speed_mps"] = rows["speed_mps"]
        relative = ~rows["course_true"] & np.isfinite(rows["course_deg"])
        self.relative_courses += int(np.count_nonzero(relative))
        plots["course_deg"] = np.where(rows["course_true"], rows["course_deg"], np.nan)
        plots["target_id"] = rows["target_number"]
        return RadarPlots(sensor=self.name, t_mono=self._last_t, frame_number=self.scans, plots=plots)

    def _geo_plots(self, rows: np.ndarray) -> GeoPlots:
        plots = empty_geo_plots(len(rows))
        plots["latitude_deg"] = rows["latitude_deg"]
        plots["longitude_deg"] = rows["longitude_deg"]
        plots["target_id"] = rows["target_number"]
        return GeoPlots(sensor=self.name, t_mono=self._last_t, frame_number=self.scans, plots=plots)
