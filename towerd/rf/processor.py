"""The RF chain for spectrum-analyser sweeps: band plan, detection, emitters, tracks.

One :class:`RfProcessor` per tower holds, for each (sensor, band) pair it has seen, a
:class:`BandDetector` (noise floor + CFAR) and a :class:`~towerd.rf.tracker.BandTracker`.
A sweep is cut into the bands of the band plan it overlaps (cells whose frequency lies
within a band's edges); cells outside every band are ignored. With an empty band plan
the whole sweep is one band, named after ``Spectrum.band`` (or ``sweep``).

Per band and sweep (see :mod:`towerd.rf.cfar` and :mod:`towerd.rf.floor`):

1. p = 10^(dBm/10), linear mW; z = p / floor (the floor learnt from earlier sweeps; on
   a band's first sweep it is learnt from that sweep first, leaving out in a few rounds
   the cells found above each estimate). When the noise (the cells not held by
   emitters) has moved by more than ``floor.relearn_db`` from the floor, the level of
   the whole band changed: the floor is relearnt from this sweep;
2. excluded = occupancy test on z | cells detected in any of the band's last
   ``floor.hold_sweeps`` sweeps (so the references of a cell inside a wide emitter come
   from beyond its edges; the history is independent of this sweep's noise, so it does
   not bias the false-alarm rate);
3. CFAR on z with those exclusions -> detected cells; within each run of cells that a
   looser occupancy test (``emitters.bridge_pfa``) marks, the cells between the first
   and last detected one are detected too (:func:`~towerd.rf.emitters.bridge_occupied`:
   a wide emitter's dips);
4. the floor folds in this sweep, leaving out the cells detected in any of the last
   ``floor.hold_sweeps`` sweeps and their neighbours (an emitter's skirts: each run
   widened by ``floor.smooth_cells`` / 2 + 1 cells or ``floor.skirt_fraction`` of its
   width, whichever is more). A single-look detector misses a cell of a strong emitter
   now and then; were that cell to teach the floor, the floor would rise under the
   emitter, more of it would be missed, and so on - so one detection holds a cell out for
   several sweeps. And only detections: what keeps a cell out of the floor must not rest
   on the floor itself, or a floor wrong somewhere would stay wrong there;
5. detected cells -> emitters -> the band's tracker.

Every threshold is in :class:`RfSettings` (``rf:`` in the YAML).
"""

from __future__ import annotations

import functools
import logging
import math
from dataclasses import dataclass

import numpy as np

from towerd.drivers.measurements import Spectrum
from towerd.rf.cfar import Cfar, CfarSettings
from towerd.rf.classify import ClassifierSettings
from towerd.rf.emitters import EmitterSettings, bridge_occupied, dbm_to_mw, merge_cells
from towerd.rf.floor import NoiseFloor, NoiseFloorSettings
from towerd.rf.fusion import FusionSettings, RfReportSettings
from towerd.rf.tracker import BandTracker, RfTrackingSettings
from towerd.rf.tracks import TrackIds, empty_rf_tracks
from towerd.rows import join_rows
from towerd.schema import spec

log = logging.getLogger(__name__)

_EMPTY_TRACKS = empty_rf_tracks()
_EMPTY_TRACKS.flags.writeable = False

_AGE_MAX = int(np.iinfo(np.int32).max)  # "never detected" in BandDetector.age

RF_TRACK_ID_BASE = 0x8000_0000
"""First RF track id. ICD track ids share one space per stream with the radar tracker's
(which counts up from 1): RF ids have bit 31 set so the two never meet."""

BAND_NAME_PATTERN = r"[A-Za-z0-9][A-Za-z0-9._-]{0,31}"
MODEL_CALCULATORS = frozenset({"normal", "avg", "overwrite"})
"""Device trace modes whose bins follow the mean-of-K-looks model the thresholds assume."""


@dataclass(frozen=True)
class BandSettings:
    """One band of the RF band plan."""

    name: str = spec(doc="band name in logs and diagnostics", pattern=BAND_NAME_PATTERN)
    start_mhz: float = spec(doc="lower edge", unit="MHz", lo=0.001, hi=100000.0)
    stop_mhz: float = spec(doc="upper edge", unit="MHz", lo=0.001, hi=100000.0)

    def __post_init__(self) -> None:
        if not self.start_mhz < self.stop_mhz:
            raise ValueError(f"band {self.name}: start_mhz ({self.start_mhz}) must be below stop_mhz ({self.stop_mhz})")


DEFAULT_BANDS = (
    BandSettings("433", 433.05, 434.79),  # ISM 433: LoRa/FSK control and telemetry
    BandSettings("868", 863.0, 870.0),  # EU SRD: ELRS / Crossfire EU (863.275-869.575)
    BandSettings("915", 902.0, 928.0),  # US ISM: ELRS FCC (903.5-926.9), Crossfire
    BandSettings("2g4", 2400.0, 2483.5),  # ISM 2.4: OcuSync, ELRS 2.4, Wi-Fi, Bluetooth
    BandSettings("5g8", 5725.0, 5875.0),  # 5.8: OcuSync 5.8, analog FPV, Wi-Fi
)
"""Default band plan: the ISM/SRD bands drone control and video links use."""


@dataclass(frozen=True)
class RfSettings:
    """Everything the RF chain reads from the YAML (``rf:``)."""

    bands: tuple[BandSettings, ...] = spec(DEFAULT_BANDS, doc="band plan; empty: each sweep is one band")
    cfar: CfarSettings = spec(CfarSettings())
    floor: NoiseFloorSettings = spec(NoiseFloorSettings())
    emitters: EmitterSettings = spec(EmitterSettings())
    tracking: RfTrackingSettings = spec(RfTrackingSettings())
    classify: ClassifierSettings = spec(ClassifierSettings())
    fusion: FusionSettings = spec(FusionSettings())
    reports: RfReportSettings = spec(RfReportSettings())

    def __post_init__(self) -> None:
        names = [b.name for b in self.bands]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise ValueError(f"band names must be unique, repeated: {', '.join(dup)}")


@dataclass(frozen=True, eq=False)
class BandResult:
    """Detection in one band of one sweep (for diagnostics, tests and tuning).

    All arrays (n,) over the band's cells: freq_mhz; power_dbm as measured; floor_mw the
    noise floor used; threshold_mw the level each cell was compared with (linear, mW; in
    dBm as :attr:`floor_dbm` and :attr:`threshold_dbm`, converted when first read: only the
    web console reads them, for the latest sweep); detected bool. emitters (E,) EMITTER_DTYPE.
    """

    sensor: str
    band: str
    t_mono: float
    freq_mhz: np.ndarray
    power_dbm: np.ndarray
    floor_mw: np.ndarray
    threshold_mw: np.ndarray
    detected: np.ndarray
    emitters: np.ndarray

    @functools.cached_property
    def floor_dbm(self) -> np.ndarray:
        with np.errstate(divide="ignore"):
            return 10.0 * np.log10(self.floor_mw)

    @functools.cached_property
    def threshold_dbm(self) -> np.ndarray:
        with np.errstate(divide="ignore"):
            return 10.0 * np.log10(self.threshold_mw)


@dataclass(frozen=True, eq=False)
class RfUpdate:
    """What one processor call produced.

    tracks: every live RF track after the call (RF_TRACK_DTYPE, read-only); ended: the
    tracks ended in this call (status ENDED, last state); bands: one BandResult per band
    processed (empty for expire / end_all).
    """

    t_mono: float
    tracks: np.ndarray
    ended: np.ndarray
    bands: tuple[BandResult, ...] = ()


class BandDetector:
    """Noise floor and CFAR of one band segment of ``n`` cells spaced ``step_mhz``."""

    def __init__(
        self,
        cfar: Cfar,
        floor_settings: NoiseFloorSettings,
        n: int,
        step_mhz: float,
        bridge_pfa: float = EmitterSettings().bridge_pfa,
    ) -> None:
        self.cfar = cfar
        self.bridge_pfa = bridge_pfa
        self.floor = NoiseFloor(floor_settings, n, step_mhz, cfar.settings.looks)
        self.age = np.full(n, _AGE_MAX, dtype=np.int64)
        """Sweeps since each cell was detected (not counted on while :attr:`min_age` >= hold_sweeps)."""
        self.min_age = _AGE_MAX
        """Sweeps since any cell was detected."""
        self.cfar_detected = np.zeros(n, dtype=bool)  # the last sweep's CFAR detections before bridging
        self._skirt_cache: dict[bytes, np.ndarray] = {}

    def detect(self, power_mw: np.ndarray, t_mono: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(detected bool, threshold mW, floor mW), each (n,), for one sweep.

        While no cell was detected in the last ``hold_sweeps`` sweeps (a quiet band: the
        usual case), no cell is recent or held, so the history steps are skipped: the
        ages are not counted on then (they only matter as ``age < hold_sweeps``, which
        stays False for every cell), and the floor folds in the sweep with no exclusions."""
        if not self.floor.ready:
            self._learn(power_mw, t_mono)
        hold = self.floor.settings.hold_sweeps
        floor = self.floor.floor_mw  # update() replaces it: this sweep's floor stays as it is
        z = power_mw / floor
        n = z.shape[0]
        mean = self.cfar.window_mean(z)  # the occupancy tests' common part
        occupied = mean > self.cfar.occupancy_level(n)
        excluded = occupied if self.min_age >= hold else occupied | (self.age < hold)
        shift = self.floor.shift_db(power_mw, excluded, z=z)
        if abs(shift) > self.floor.settings.relearn_db:
            log.info("band level moved %+.1f dB: noise floor relearnt", shift)
            self._learn(power_mw, t_mono)
            self.age[:] = _AGE_MAX
            self.min_age = _AGE_MAX
            floor = self.floor.floor_mw
            z = power_mw / floor
            mean = self.cfar.window_mean(z)
            excluded = mean > self.cfar.occupancy_level(n)  # | recent, all False now
        out = self.cfar.detect(z, excluded)
        self.cfar_detected = out.detected  # before bridging: how much of an emitter the CFAR saw itself
        if out.detected.any():
            detected = bridge_occupied(out.detected, mean > self.cfar.occupancy_level(n, self.bridge_pfa))
            self.age = np.where(detected, 0, np.minimum(self.age + 1, _AGE_MAX))
            self.min_age = 0
        else:
            detected = out.detected.copy()  # nothing to bridge
            if self.min_age < hold:
                self.age = np.minimum(self.age + 1, _AGE_MAX)
            self.min_age = min(self.min_age + 1, _AGE_MAX)
        if self.min_age < hold:
            self.floor.update(power_mw, self._skirts(self.age < hold), t_mono)
        else:  # nothing held
            self.floor.update(power_mw, None, t_mono)
        return detected, out.threshold * floor, floor

    def _skirts(self, held: np.ndarray) -> np.ndarray:
        """:func:`widen_runs` of the held cells (read-only; cached per pattern: a cell stays
        held for hold_sweeps sweeps, so the pattern repeats)."""
        key = held.tobytes()
        out = self._skirt_cache.get(key)
        if out is None:
            if len(self._skirt_cache) >= 256:
                self._skirt_cache.clear()
            fs = self.floor.settings
            out = self._skirt_cache[key] = widen_runs(held, fs.smooth_cells // 2 + 1, fs.skirt_fraction)
            out.flags.writeable = False
        return out

    def _learn(self, power_mw: np.ndarray, t_mono: float, rounds: int = 3) -> None:
        """Learn the floor from one sweep with no history: a window's low quantile is
        still pulled up when emitters fill much of it, so the cells the (loose) occupancy
        test finds above each estimate are left out of the next."""
        self.floor.learn(power_mw, t_mono)
        for _ in range(rounds):
            occupied = self.cfar.occupied(power_mw / self.floor.floor_mw, self.bridge_pfa)
            if not np.any(occupied) or not self.floor.learn(power_mw, t_mono, occupied):
                return


def _joined(parts: list[np.ndarray]) -> np.ndarray:
    """The rows of ``parts`` (RF_TRACK_DTYPE) in one read-only array: new when there are
    several, the part itself (made read-only) when there is one (a band tracker hands out
    a new array for every change and never writes one it handed out)."""
    if not parts:
        return _EMPTY_TRACKS
    out = parts[0] if len(parts) == 1 else join_rows(parts)
    out.flags.writeable = False
    return out


def widen_runs(mask: np.ndarray, cells: int, fraction: float) -> np.ndarray:
    """``mask`` (n,) bool with each run of True widened on both sides by
    max(``cells``, ``fraction`` · its length) cells (an emitter's skirts scale with it)."""
    n = mask.shape[0]
    if not np.any(mask):
        return mask.copy()
    edges = np.diff(np.concatenate(([0], mask.view(np.int8), [0])))
    starts = np.flatnonzero(edges == 1)
    ends = np.flatnonzero(edges == -1)
    grow = np.maximum(cells, np.ceil(fraction * (ends - starts))).astype(np.intp)
    marks = np.zeros(n + 1, dtype=np.intp)
    np.add.at(marks, np.maximum(starts - grow, 0), 1)
    np.add.at(marks, np.minimum(ends + grow, n), -1)
    return np.cumsum(marks[:-1]) > 0


_Segment = tuple[str, slice, np.ndarray, tuple[float, float, int]]
"""A band's part of a sweep grid: band name, cells, their frequencies (read-only) and
the grid (first cell MHz rounded to 1 Hz, step MHz, cells) its detector was made for."""


@dataclass
class _Band:
    index: int
    grid: tuple[float, float, int]
    detector: BandDetector
    tracker: BandTracker


class RfProcessor:
    """Spectrum sweeps -> RF tracks, for all RF sensors of a tower (see the module
    docstring). ``first_track_id``: the first RF track id (ids never reused)."""

    def __init__(self, settings: RfSettings, *, first_track_id: int = RF_TRACK_ID_BASE) -> None:
        self.settings = settings
        self.cfar = Cfar(settings.cfar)
        self.ids = TrackIds(first_track_id)
        self.band_keys: list[tuple[str, str]] = []
        """(sensor, band name) of each band index used in RF_TRACK_DTYPE ``band``."""
        self._bands: dict[tuple[str, str], _Band] = {}
        self._warned: set[tuple[str, str]] = set()
        self._tracks = empty_rf_tracks()
        self._tracks.flags.writeable = False
        self._parts: list[np.ndarray] = []  # the band trackers' track arrays self._tracks was joined from
        self._segment_cache: dict[tuple, tuple[np.ndarray, list[_Segment]]] = {}
        self.sweeps = 0

    @property
    def tracks(self) -> np.ndarray:
        """Live RF tracks (RF_TRACK_DTYPE, read-only)."""
        return self._tracks

    @property
    def next_track_id(self) -> int:
        """The id the next new RF track will get."""
        return self.ids.next

    def process(self, spectrum: Spectrum) -> RfUpdate:
        """Run one sweep through detection and tracking."""
        t = float(spectrum.t_mono)
        p_dbm = np.asarray(spectrum.power_dbm, dtype=float)
        n = p_dbm.shape[0]
        step = float(spectrum.step_freq_mhz)
        finite = math.isfinite(float(p_dbm.sum())) or bool(np.isfinite(p_dbm).all())  # (a sum can overflow)
        if n < 3 or not math.isfinite(step) or step <= 0 or not finite:
            self._warn_once(
                spectrum.sensor, "bad-sweep",
                "sweep %d of %s dropped (and any like it): %d points, step %r MHz, non-finite power %s",
                spectrum.sweep_number, spectrum.sensor, n, step, not np.all(np.isfinite(p_dbm)),
            )
            return RfUpdate(t_mono=t, tracks=self._tracks, ended=empty_rf_tracks())
        if spectrum.calculator not in MODEL_CALCULATORS:
            self._warn_once(
                spectrum.sensor, "calculator:" + spectrum.calculator,
                "%s sends %r traces; CFAR thresholds assume the mean of %d looks per bin, "
                "so the false-alarm rate will be higher than configured",
                spectrum.sensor, spectrum.calculator, self.settings.cfar.looks,
            )
        freq, segments = self._segments(spectrum, n)
        results = []
        ended = []
        for name, sel, f, grid in segments:
            dbm = p_dbm[sel]
            band = self._band(spectrum.sensor, name, grid, step)
            p = dbm_to_mw(dbm)
            detected, threshold, floor = band.detector.detect(p, t)
            emitters = merge_cells(detected, f, p, floor, self.settings.emitters,
                                   cfar_detected=band.detector.cfar_detected, threshold_mw=threshold,
                                   looks=self.settings.cfar.looks)
            res = band.tracker.step(emitters, t, cells=f.shape[0], step_mhz=step, pfa=self.settings.cfar.pfa)
            ended.append(res.ended)
            result = object.__new__(BandResult)  # the frozen dataclass's fields, without its __init__
            result.__dict__.update(sensor=spectrum.sensor, band=name, t_mono=t, freq_mhz=f, power_dbm=dbm,
                                   floor_mw=floor, threshold_mw=threshold, detected=detected, emitters=emitters)
            results.append(result)
        self.sweeps += 1
        return self._update(t, ended, tuple(results))

    def expire(self, t_mono: float) -> RfUpdate:
        """Apply the time rules to every band (call it periodically: a sensor that stops
        sending must not leave its tracks alive)."""
        t = float(t_mono)
        bands = [b for b in self._bands.values() if b.tracker.tracks.shape[0]]  # a band without tracks has none to end
        return self._update(t, [b.tracker.expire(t).ended for b in bands], ())

    def end_all(self, t_mono: float) -> RfUpdate:
        """End every live RF track (the daemon is stopping)."""
        t = float(t_mono)
        return self._update(t, [b.tracker.end_all(t).ended for b in self._bands.values()], ())

    # -- internals -------------------------------------------------------------------

    def _update(self, t: float, ended: list[np.ndarray], bands: tuple[BandResult, ...]) -> RfUpdate:
        update = object.__new__(RfUpdate)  # the frozen dataclass's fields, without its __init__
        update.__dict__.update(t_mono=t, tracks=self._live(), ended=_joined([e for e in ended if e.shape[0]]),
                               bands=bands)
        return update

    def _live(self) -> np.ndarray:
        """The bands' live tracks joined (read-only); the previous array again when no
        band's tracks changed (a band tracker replaces its array on every change)."""
        parts = [b.tracker.tracks for b in self._bands.values()]
        if len(parts) != len(self._parts) or any(a is not b for a, b in zip(parts, self._parts)):
            self._parts = parts
            self._tracks = _joined([a for a in parts if a.shape[0]])
        return self._tracks

    def _segments(self, spectrum: Spectrum, n: int) -> tuple[np.ndarray, list[_Segment]]:
        """The sweep's cell frequencies (read-only) and the segment of each band it covers
        with 3+ cells; cached per sweep grid (a scan plan repeats a few grids)."""
        plan = self.settings.bands
        key = (spectrum.start_freq_mhz, spectrum.step_freq_mhz, n, "" if plan else spectrum.band)
        cached = self._segment_cache.get(key)
        if cached is None:
            if len(self._segment_cache) >= 64:
                self._segment_cache.clear()
            freq = spectrum.freq_mhz
            freq.flags.writeable = False
            cached = self._segment_cache[key] = (freq, self._cut(spectrum, freq))
        if not cached[1]:
            self._warn_once(
                spectrum.sensor, f"outside:{spectrum.band}",
                "%s sweep %.3f-%.3f MHz (band %r) covers no band of the RF band plan with 3 or more points",
                spectrum.sensor, float(cached[0][0]), float(cached[0][-1]), spectrum.band,
            )
        return cached

    def _cut(self, spectrum: Spectrum, freq: np.ndarray) -> list[_Segment]:
        """The segment of each band ``freq`` (ascending) covers with 3+ cells."""
        plan = self.settings.bands
        cells = []
        if not plan:
            cells.append((spectrum.band or "sweep", slice(0, freq.shape[0])))
        else:
            eps = 1e-9 * max(1.0, float(np.max(np.abs(freq))))
            for b in plan:
                sel = np.flatnonzero((freq >= b.start_mhz - eps) & (freq <= b.stop_mhz + eps))
                if sel.shape[0] >= 3:
                    cells.append((b.name, slice(int(sel[0]), int(sel[-1]) + 1)))
        step = round(float(spectrum.step_freq_mhz), 9)
        return [(name, sel, freq[sel], (round(float(freq[sel.start]), 6), step, sel.stop - sel.start))
                for name, sel in cells]

    def _band(self, sensor: str, name: str, grid: tuple[float, float, int], step: float) -> _Band:
        """The detector and tracker of (sensor, band), new for a band first seen; its
        detector anew when the band's ``grid`` (first cell MHz, step MHz, cells) changed."""
        key = (sensor, name)
        n = grid[2]
        band = self._bands.get(key)
        if band is None:
            index = len(self.band_keys)
            self.band_keys.append(key)
            tracker = BandTracker(index, self.settings.tracking, self.settings.classify, self.ids)
            band = _Band(index, grid, self._detector(n, step), tracker)
            self._bands[key] = band
        elif band.grid != grid:
            log.info("%s band %s: sweep grid changed %s -> %s, noise floor relearnt", sensor, name, band.grid, grid)
            band.grid = grid
            band.detector = self._detector(n, step)
        return band

    def _detector(self, n: int, step: float) -> BandDetector:
        return BandDetector(self.cfar, self.settings.floor, n, step, self.settings.emitters.bridge_pfa)

    def _warn_once(self, sensor: str, what: str, msg: str, *args: object) -> None:
        if (sensor, what) not in self._warned:
            self._warned.add((sensor, what))
            log.warning(msg, *args)
