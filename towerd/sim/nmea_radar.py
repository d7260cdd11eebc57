"""Emulated ARPA radar with NMEA 0183 target output (TTM, optionally TLL) on a pty.

:meth:`NmeaRadarEmulator.scan_bytes` turns a :class:`~towerd.sim.scenario.Scenario` at
time t into the sentences a radar's target tracker sends for one antenna revolution;
:meth:`NmeaRadarEmulator.start` does that once per ``scan_period_s`` from a background
thread and writes the bytes to a :class:`~towerd.sim.pty.PtyPair` no faster than the
line carries them (``baudrate`` / 10 bytes per second for 8N1, written in chunks of
about 20 ms), as a real 4800 or 38400 baud line does.

Sentences are built here with plain string formatting from the NMEA 0183 field order,
independently of ``towerd.drivers.nmea_radar.protocol`` (tests cross-check the two):

    $<talker>TTM,nn,d.ddd,bbb.b,T|R,s.s,ccc.c,T|R,cpa,tcpa,K|N|S,name,status,,hhmmss.ss,A*hh
    (13-field form: without the last two fields)
    $<talker>TLL,nn,ddmm.mmmm,N|S,dddmm.mmmm,E|W,name,hhmmss.ss,status,*hh

Model, per scan at scenario time t (the radar is 2D and sees all round):
- a target is tracked while its horizontal distance from the antenna is within
  [min_range_m, max_range_m]; it gets the radar's own target number on first sight
  (the lowest free number from 1, up to ``max_target_number``) and keeps it;
- distance and bearing are the true horizontal ones plus Gaussian noise with the
  scenario's range and azimuth sigmas; speed and course are the true horizontal
  velocity's; bearing and course are sent true (T) or relative to the radar's heading
  (R, heading = the antenna's boresight) as configured;
- CPA/TCPA are those of the target's straight track relative to the (fixed) radar;
  TCPA is negative once the target is past its closest point (range opening);
- status is Q for the first ``acquire_scans`` scans of a track, then T; a target that
  leaves is reported once more with status L, then its number is freed.

Fault injection (each applies to what is sent next): :meth:`inject_garbage`,
:meth:`inject_bad_checksum`, :meth:`inject_truncated` (a sentence cut short with no line
end, the next one glued to it), :meth:`inject_stall` (nothing sent for a while).
Unplugging is closing the pty.
"""

from __future__ import annotations

import logging
import math
import re
import threading
from dataclasses import dataclass
from typing import Any

import numpy as np

from towerd import geo
from towerd.clock import Clock, SystemClock
from towerd.sim.faults import LineFaults
from towerd.sim.pty import PtyPair
from towerd.sim.writer import EmulatorThread
from towerd.sim.scenario import Scenario

log = logging.getLogger(__name__)

UNIT_METRES = {"K": 1000.0, "N": 1852.0, "S": 1609.344}


def _checksum(body: str) -> str:
    value = 0
    for byte in body.encode("ascii"):
        value ^= byte
    return f"{value:02X}"


def _utc_text(utc_us: int) -> str:
    seconds = (utc_us // 10_000) % 8_640_000 / 100.0  # centiseconds of the day
    h = int(seconds // 3600)
    m = int(seconds % 3600 // 60)
    return f"{h:02d}{m:02d}{seconds % 60:05.2f}"


def _ddmm(value: float, degree_digits: int) -> str:
    value = abs(value)
    degrees = int(value)
    minutes = (value - degrees) * 60.0
    if round(minutes, 4) >= 60.0:
        degrees, minutes = degrees + 1, 0.0
    return f"{degrees:0{degree_digits}d}{minutes:07.4f}"


@dataclass
class _Track:
    number: int
    scans: int = 0


class NmeaRadarEmulator(LineFaults, EmulatorThread):
    """Scenario -> NMEA TTM/TLL sentences, on demand or paced onto a pty at line rate."""

    def __init__(
        self,
        scenario: Scenario,
        *,
        rng: np.random.Generator,
        heading_deg: float = 0.0,
        position_enu_m: tuple[float, float, float] = (0.0, 0.0, 0.0),
        site: geo.Site | None = None,
        scan_period_s: float = 2.5,
        baudrate: int = 4800,
        talker: str = "RA",
        units: str = "N",
        bearing_ref: str = "T",
        course_ref: str = "T",
        sentences: tuple[str, ...] = ("TTM",),
        ttm_fields: int = 15,
        min_range_m: float = 10.0,
        max_range_m: float = 5000.0,
        max_target_number: int = 99,
        acquire_scans: int = 2,
        clock: Clock | None = None,
    ) -> None:
        if units not in UNIT_METRES:
            raise ValueError("units must be K, N or S")
        if bearing_ref not in ("T", "R") or course_ref not in ("T", "R"):
            raise ValueError("bearing_ref and course_ref must be T or R")
        if not set(sentences) <= {"TTM", "TLL"} or not sentences:
            raise ValueError("sentences must be a non-empty subset of TTM, TLL")
        if "TLL" in sentences and site is None:
            raise ValueError("TLL needs the site (the radar's WGS84 reference point)")
        if ttm_fields not in (13, 15):
            raise ValueError("ttm_fields must be 13 (NMEA 2.x) or 15")
        if not (scan_period_s > 0 and baudrate > 0 and 0 <= min_range_m < max_range_m):
            raise ValueError("scan_period_s and baudrate must be > 0, 0 <= min_range_m < max_range_m")
        if not (len(talker) == 2 and talker.isalnum() and 1 <= max_target_number <= 999):
            raise ValueError("talker must be 2 letters, max_target_number in 1..999")
        self.scenario = scenario
        self.rng = rng
        self.heading_deg = float(heading_deg)
        self.position_enu_m = np.asarray(position_enu_m, dtype=float).reshape(3)
        self.site = site
        self.scan_period_s = float(scan_period_s)
        self.baudrate = int(baudrate)
        self.talker = talker
        self.units = units
        self.bearing_ref = bearing_ref
        self.course_ref = course_ref
        self.sentences = tuple(sentences)
        self.ttm_fields = ttm_fields
        self.min_range_m = float(min_range_m)
        self.max_range_m = float(max_range_m)
        self.max_target_number = max_target_number
        self.acquire_scans = acquire_scans
        self.clock: Clock = clock or SystemClock()

        self.tracks: dict[str, _Track] = {}
        """Targets the radar tracks now, by scenario name, with their target number."""
        self.t0_mono: float | None = None
        self.scans_sent = 0
        self.scans_skipped = 0  # scan slots missed (thread late or stalled)
        self.bytes_sent = 0
        self.bytes_dropped = 0  # bytes the pty did not take (nobody reading)
        self.error: BaseException | None = None
        self._lock = threading.Lock()  # guards rng, tracks and the fault state
        self._bad_checksums = 0
        self._init_faults()
        self._init_thread()

    @property
    def bytes_per_s(self) -> float:
        """8N1: ten bit times per byte."""
        return self.baudrate / 10.0

    # ------------------------------------------------------------------ sentences

    def _free_number(self) -> int:
        used = {t.number for t in self.tracks.values()}
        for number in range(1, self.max_target_number + 1):
            if number not in used:
                return number
        raise RuntimeError("no free target number")

    def scan_sentences(self, t_s: float, t_mono: float | None = None) -> list[str]:
        """Sentence bodies (between $ and *) of one scan at elapsed time ``t_s``; advances
        the radar's track table. UTC of data from ``clock`` at ``t_mono`` (now if None)."""
        utc = _utc_text(self.clock.utc_us(t_mono))
        truth = self.scenario.truth(t_s)
        noise = self.scenario.noise
        bodies: list[str] = []
        with self._lock:
            present: set[str] = set()
            rel = np.column_stack([truth["east_m"], truth["north_m"]]) - self.position_enu_m[:2] if len(truth) else \
                np.zeros((0, 2))
            dist = np.hypot(rel[:, 0], rel[:, 1])
            for i in np.flatnonzero((dist >= self.min_range_m) & (dist <= self.max_range_m)):
                name = str(truth["name"][i])
                track = self.tracks.get(name)
                if track is None:
                    if len(self.tracks) >= self.max_target_number:
                        continue
                    track = self.tracks[name] = _Track(self._free_number())
                track.scans += 1
                present.add(name)
                vel = np.array([truth["vel_east_mps"][i], truth["vel_north_mps"][i]])
                bodies += self._target(track, name, rel[i], vel, noise, "Q" if track.scans <= self.acquire_scans
                                       else "T", utc)
            for name in [n for n in self.tracks if n not in present]:
                track = self.tracks.pop(name)
                bodies.append(self._ttm(track.number, math.nan, math.nan, math.nan, math.nan, math.nan, math.nan,
                                        name, "L", utc))
        return bodies

    def _target(self, track: _Track, name: str, rel: np.ndarray, vel: np.ndarray, noise, status: str,
                utc: str) -> list[str]:
        r_true = float(np.hypot(*rel))
        b_true = math.degrees(math.atan2(rel[0], rel[1]))
        r = max(0.0, r_true + self.rng.normal(0.0, noise.range_sigma_m))
        b = (b_true + self.rng.normal(0.0, noise.azimuth_sigma_deg)) % 360.0
        speed = float(np.hypot(*vel))
        course = math.degrees(math.atan2(vel[0], vel[1])) % 360.0
        v2 = float(vel @ vel)
        tcpa_s = -float(rel @ vel) / v2 if v2 > 1e-9 else 0.0
        cpa = float(np.hypot(*(rel + vel * tcpa_s)))
        bodies = []
        if "TTM" in self.sentences:
            bodies.append(self._ttm(track.number, r, b, speed, course, cpa, tcpa_s / 60.0, name, status, utc))
        if "TLL" in self.sentences:
            assert self.site is not None
            b_rad = math.radians(b)
            enu = self.position_enu_m + np.array([r * math.sin(b_rad), r * math.cos(b_rad), 0.0])
            lat, lon, _ = geo.enu_to_geodetic(self.site, enu[None, :])
            bodies.append(
                f"{self.talker}TLL,{track.number:02d},{_ddmm(lat[0], 2)},{'N' if lat[0] >= 0 else 'S'},"
                f"{_ddmm(lon[0], 3)},{'E' if lon[0] >= 0 else 'W'},{self._name(name)},{utc},{status},"
            )
        return bodies

    @staticmethod
    def _name(name: str) -> str:
        return re.sub(r"[^A-Za-z0-9_-]", "", name)[:12]

    def _ttm(self, number: int, r: float, b: float, speed: float, course: float, cpa: float, tcpa_min: float,
             name: str, status: str, utc: str) -> str:
        unit = UNIT_METRES[self.units]

        def f(value: float, fmt: str) -> str:
            return "" if math.isnan(value) else format(value, fmt)

        if not math.isnan(b) and self.bearing_ref == "R":
            b = (b - self.heading_deg) % 360.0
        if not math.isnan(course) and self.course_ref == "R":
            course = (course - self.heading_deg) % 360.0
        fields = [
            f"{number:02d}", f(r / unit, ".4f"), f(b, ".1f"), self.bearing_ref, f(speed * 3600.0 / unit, ".2f"),
            f(course, ".1f"), self.course_ref, f(cpa / unit, ".4f"), f(tcpa_min, ".2f"), self.units,
            self._name(name), status, "",
        ]
        if self.ttm_fields == 15:
            fields += [utc, "A"]
        return f"{self.talker}TTM," + ",".join(fields)

    def scan_bytes(self, t_s: float, t_mono: float | None = None) -> bytes:
        """One scan as wire bytes, faults included (see the module docstring)."""
        bodies = self.scan_sentences(t_s, t_mono)
        with self._lock:
            lines = []
            for body in bodies:
                checksum = _checksum(body)
                if self._bad_checksums:
                    self._bad_checksums -= 1
                    checksum = f"{int(checksum, 16) ^ 0x5A:02X}"
                lines.append(f"${body}*{checksum}\r\n".encode("ascii"))
            return self._with_faults(lines)

    # ------------------------------------------------------------ fault injection

    def inject_bad_checksum(self, count: int = 1) -> None:
        """Send the next ``count`` sentences with a wrong checksum."""
        with self._lock:
            self._bad_checksums += max(0, int(count))

    # ------------------------------------------------------------------ thread

    # ------------------------------------------------------------------ towerd sim

    @classmethod
    def from_sim_args(cls, scenario: Scenario, args: Any, rng: np.random.Generator) -> "NmeaRadarEmulator":
        """The emulator for ``towerd sim``'s options (heading, position, scan period, line
        speed, units, bearing reference, TLL with the site); ValueError when they do not fit."""
        if args.tll and not args.site:
            raise ValueError("--tll needs --site LAT LON H (the scenario origin's WGS84 position)")
        site = geo.Site(*args.site) if args.site else None
        return cls(scenario, rng=rng, heading_deg=args.boresight, position_enu_m=tuple(args.position), site=site,
                   scan_period_s=args.scan_period, baudrate=args.baud, units=args.units,
                   bearing_ref=args.bearing_ref, course_ref=args.bearing_ref,
                   sentences=("TTM", "TLL") if args.tll else ("TTM",))

    def sim_status(self) -> str:
        """One line for ``towerd sim``'s ``status`` command."""
        return f"scans sent {self.scans_sent}, skipped {self.scans_skipped}, bytes {self.bytes_sent}"

    def start(self, pty: PtyPair) -> None:
        """Start sending: scan k is built at t0 + k * scan_period_s for scenario time
        k * scan_period_s and its bytes leave at line rate."""
        self._begin()
        self.t0_mono = self.clock.monotonic()
        self._launch(self._run, (pty,), "nmea-emulator")

    def _run(self, pty: PtyPair) -> None:
        def next_bytes(k: int, now: float, skipped: int, stalled: bool) -> bytes:
            self.scans_skipped += skipped + stalled  # a stalled line sends nothing of its scan
            if stalled:
                return b""
            self.scans_sent += 1
            return self.scan_bytes(k * self.scan_period_s, now)

        self._paced_run(pty, self.scan_period_s, next_bytes, "NMEA")

    def __enter__(self) -> "NmeaRadarEmulator":
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()
