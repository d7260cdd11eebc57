"""Track score: the sequential log-likelihood ratio of "target" over "clutter", with the
clutter density measured from the plots, for confirmation (Blackman & Popoli, *Design and
Analysis of Modern Tracking Systems*, 1999, §6.2; Wald's sequential test).

M-of-N counts hits, whatever their luck: in dense clutter a tentative track with a wide
gate (a few points, velocity barely known) finds a plot in it on most frames, and three
hits in five confirm it. The score weighs each hit by how much likelier it is under the
track than as a false plot there:

    L₁ = 0                                      (first plot: even prior odds)
    hit:   ΔL = ln P_D − ln β(z) + ln N(y; 0, S) + ΔL_r
              = ln P_D − ln β(z) − ½ (3 ln 2π + ln |S| + yᵀ S⁻¹ y) + ΔL_r
    miss:  ΔL = ln(1 − P_D)
    ΔL_r = ln N(e; 0, s²) + ln w_r = −½ (ln 2π s² + e² / s²) + ln w_r   (radial speed known)

with y = z − H x̂, S = H P̂ Hᵀ + R the position innovation and its covariance (x̂, P̂ the
prediction to the frame; for a track's second point the same, since its one-point prior
already spans the speeds it may have), e, s² the radial-speed residual and its variance
(:meth:`towerd.tracking.doppler.DopplerGate.residual`: predicted, with the manoeuvre
allowance; for the second point taken with the velocity the two points imply), w_r the
span of radial speeds a false plot may carry (twice the sensor's unambiguous speed, or
``doppler_span_mps``), P_D the detection probability, and β(z) the false-plot density
(per m³ a frame) where the plot is.

β is measured, per sensor, from the plots no established track took: their rate per
frame in range shells of ``density_range_bin_m`` (a fading mean with time constant
``density_time_constant_s``, a plain mean over the first frames), divided by the shell's
volume in the field of view, Ω (r₂³ − r₁³) / 3, Ω = Δaz · 2 sin(Δel / 2) from
``fov_azimuth_deg`` × ``fov_elevation_deg``; at least ``min_density_per_m3``. Range shells
follow the way radar false alarms fall (uniformly over range cells, so densest near the
antenna) without assuming it.

A tentative track is confirmed when M-of-N passes and L ≥ ln(1 / α), Wald's upper
threshold ln((1 − β_w) / α) for a negligible chance β_w of rejecting a true target, with
α = ``false_track_probability``: the chance that a track started on a false plot is
confirmed, if the clutter is as measured.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from functools import cached_property

import numpy as np

from towerd.errors import ConfigError
from towerd.schema import spec
from towerd.tracking.doppler import DopplerGate, RadialSpeeds, position_update
from towerd.tracking.linalg import inv3, norm_rows, quad
from towerd.tracking.state import POS

log = logging.getLogger(__name__)

MAX_SHELLS = 4096
"""Range shells kept per sensor (41 km at 10 m): plots beyond fall in the last."""
_LOG_2PI = float(np.log(2.0 * np.pi))


@dataclass(frozen=True)
class ScoreSettings:
    """``tracking.score``: confirmation on the track's log-likelihood ratio; see the module docstring."""

    enabled: bool = spec(True, doc="confirm a tentative track only once its score passes the threshold too")
    false_track_probability: float = spec(
        1e-6, doc="alpha: chance that a track started on a false plot is confirmed (the threshold is ln(1/alpha))",
        lo=1e-15, hi=0.1)
    detection_probability: float = spec(0.9, doc="P_D: chance that a target gives a plot in a frame", lo=0.05,
                                        hi=0.999)
    fov_azimuth_deg: float = spec(120.0, doc="the radars' field of view across, to turn plot rates into densities",
                                  unit="deg", lo=1.0, hi=360.0)
    fov_elevation_deg: float = spec(60.0, doc="the radars' field of view in elevation", unit="deg", lo=1.0, hi=180.0)
    density_range_bin_m: float = spec(10.0, doc="range shell of the false-plot density", unit="m", lo=0.5,
                                      hi=10000.0)
    density_time_constant_s: float = spec(60.0, doc="time constant of the false-plot rate's fading mean", unit="s",
                                          lo=1.0, hi=86400.0)
    min_density_per_m3: float = spec(1e-8, doc="floor of the false-plot density (per m^3 a frame)", lo=0.0, hi=1.0)
    doppler_span_mps: float = spec(
        40.0, doc="span of a false plot's radial speed for sensors that do not fold Doppler (else twice the "
        "unambiguous speed)", unit="m/s", lo=0.1, hi=1000.0)


@dataclass
class _Shells:
    """One sensor's false-plot rate per range shell: rate (B,) plots a frame, frames seen, last frame time."""

    rate: np.ndarray
    frames: int = 0
    t_last: float = float("nan")


@dataclass
class PlotDensity:
    """False-plot density per sensor and range shell; see the module docstring."""

    bin_m: float = 10.0
    time_constant_s: float = 60.0
    solid_angle_sr: float = 2.0 * np.pi / 3.0
    min_density_per_m3: float = 1e-8
    _sensors: dict[str, _Shells] = field(default_factory=dict, repr=False)
    _volume_cache: dict[tuple[float, float], np.ndarray] = field(default_factory=dict, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not (self.bin_m > 0 and self.time_constant_s > 0 and self.solid_angle_sr > 0 and self.min_density_per_m3 >= 0):
            raise ConfigError(f"plot density: bin_m, time_constant_s and solid_angle_sr must be > 0 and "
                              f"min_density_per_m3 >= 0, got {self.bin_m!r}, {self.time_constant_s!r}, "
                              f"{self.solid_angle_sr!r}, {self.min_density_per_m3!r}")

    def _shell(self, rho_m: np.ndarray) -> np.ndarray:
        return np.minimum((np.asarray(rho_m, dtype=float) / self.bin_m).astype(np.intp), MAX_SHELLS - 1)

    def observe(self, sensor: str, t_mono: float, rho_m: np.ndarray) -> None:
        """One frame of ``sensor`` at t_mono whose false plots (those no established track
        took) lie at ranges ``rho_m`` (n,) from the antenna. Every frame must be observed,
        with or without plots: the rate is per frame."""
        s = self._sensors.get(sensor)
        if s is None:
            s = self._sensors[sensor] = _Shells(np.zeros(1))
        counts = np.bincount(self._shell(rho_m), minlength=len(s.rate)).astype(float)
        if len(counts) > len(s.rate):
            s.rate = np.concatenate([s.rate, np.zeros(len(counts) - len(s.rate))])
        s.frames += 1
        seen = math.isfinite(s.t_last)
        dt = max(float(t_mono) - s.t_last, 0.0) if seen else 0.0
        w = max(1.0 - np.exp(-dt / self.time_constant_s), 1.0 / s.frames)
        s.rate += w * (counts - s.rate)
        s.t_last = max(float(t_mono), s.t_last) if seen else float(t_mono)

    def density(self, sensor: str, rho_m: np.ndarray) -> np.ndarray:
        """(n,) false plots per m³ a frame at ranges ``rho_m`` (n,) of ``sensor`` (the floor
        for a sensor not seen yet)."""
        rho_m = np.asarray(rho_m, dtype=float)
        s = self._sensors.get(sensor)
        if s is None:
            return np.full(rho_m.shape, self.min_density_per_m3)
        i = self._shell(rho_m)
        if len(i) and i.max() < len(s.rate):  # every plot in a shell that has a rate (the usual case)
            rate = s.rate[i]
        else:
            rate = np.where(i < len(s.rate), s.rate[np.minimum(i, len(s.rate) - 1)], 0.0)
        return np.maximum(rate / self._volumes()[i], self.min_density_per_m3)

    def _volumes(self) -> np.ndarray:
        """(MAX_SHELLS,) m³: each shell's volume in the field of view, Ω bin³ ((i + 1)³ − i³) / 3
        (computed once per setting: the same bits as shell by shell)."""
        key = (self.solid_angle_sr, self.bin_m)
        got = self._volume_cache.get(key)
        if got is None:
            i = np.arange(MAX_SHELLS)
            got = self.solid_angle_sr * self.bin_m**3 * ((i + 1.0) ** 3 - i**3) / 3.0
            got.flags.writeable = False
            self._volume_cache.clear()
            self._volume_cache[key] = got
        return got

    def reconfigure(self, other: PlotDensity) -> None:
        """Take ``other``'s settings; the rates measured so far are kept unless the shells changed."""
        if other.bin_m != self.bin_m:
            self._sensors.clear()
        self.bin_m, self.time_constant_s = other.bin_m, other.time_constant_s
        self.solid_angle_sr, self.min_density_per_m3 = other.solid_angle_sr, other.min_density_per_m3


@dataclass
class TrackScorer:
    """Keeps every track's score (``TrackTable.score``) and the plot density it needs;
    see the module docstring. ``threshold`` = ln(1 / α) is what confirmation asks for."""

    false_track_probability: float = 1e-6
    detection_probability: float = 0.9
    doppler_span_mps: float = 40.0
    density: PlotDensity = field(default_factory=PlotDensity)

    def __post_init__(self) -> None:
        if not 0.0 < self.false_track_probability < 1.0:
            raise ConfigError(f"false_track_probability must be in (0, 1), got {self.false_track_probability!r}")
        if not 0.0 < self.detection_probability < 1.0:
            raise ConfigError(f"detection_probability must be in (0, 1), got {self.detection_probability!r}")
        if not self.doppler_span_mps > 0:
            raise ConfigError(f"doppler_span_mps must be > 0, got {self.doppler_span_mps!r}")

    @classmethod
    def from_settings(cls, s: ScoreSettings) -> TrackScorer | None:
        """The scorer ``s`` describes, None when disabled."""
        if not s.enabled:
            return None
        omega = np.radians(s.fov_azimuth_deg) * 2.0 * np.sin(np.radians(min(s.fov_elevation_deg, 180.0)) / 2.0)
        return cls(s.false_track_probability, s.detection_probability, s.doppler_span_mps,
                   PlotDensity(s.density_range_bin_m, s.density_time_constant_s, float(omega), s.min_density_per_m3))

    @property
    def threshold(self) -> float:
        """ln(1 / α): the score a tentative track needs to be confirmed."""
        return float(-np.log(self.false_track_probability))

    def observe(self, det: object, free: np.ndarray, rho: np.ndarray | None = None) -> None:
        """Measure the false-plot density on a frame (a
        :class:`~towerd.detection.plots.Detections`): ``free`` (N,) bool, the detections
        no established track took; ``rho`` (N,) m: every detection's range from its
        sensor, when the caller has it (:func:`ranges`)."""
        free = np.asarray(free, dtype=bool)
        rho = ranges(det)[free] if rho is None else rho[free]
        self.density.observe(det.sensor, det.t_mono, rho)  # type: ignore[attr-defined]

    def hit_increments(self, x_pred: np.ndarray, P_pred: np.ndarray, det: object, di: np.ndarray,
                       doppler: DopplerGate | None, second: np.ndarray) -> np.ndarray:
        """ΔL (M,) of M hits: predicted states x_pred (M, 6), P_pred (M, 6, 6) against
        detections ``di`` (M,) of ``det``; ``second`` (M,) bool: the track's second point
        (radial speed taken with the velocity the pair implies)."""
        z, R = det.pos_enu_m[di], det.cov_enu_m2[di]  # type: ignore[attr-defined]
        S_inv, det_S = inv3(P_pred[:, POS, POS] + R)
        e = s2 = None
        if doppler is not None:
            x, P = x_pred.copy(), P_pred.copy()
            second = np.asarray(second, dtype=bool)
            if np.any(second):
                x[second], P[second] = position_update(x[second], P[second], z[second], R[second])
            e, s2 = doppler.residual(x, P, RadialSpeeds.of(det), di, doppler.manoeuvre_sigma_mps**2)
        return self.increments(det, di, quad(S_inv, z - x_pred[:, POS]), det_S, e, s2)

    def increments(self, det: object, di: np.ndarray, d2: np.ndarray, det_S: np.ndarray,
                   e_r: np.ndarray | None = None, s2_r: np.ndarray | None = None,
                   rho: np.ndarray | None = None) -> np.ndarray:
        """ΔL (M,) of M hits on detections ``di`` (M,) of ``det`` from their position
        innovations' d² (M,) and |S| (M,) and, with a Doppler gate, their radial-speed
        residuals e_r (M,) and variances s2_r (M,), manoeuvre allowance included (NaN: no
        radial speed); see the module docstring. ``rho`` (N,) m: every detection's range
        (:func:`ranges`), when the caller has it."""
        rho = ranges(det)[di] if rho is None else rho[di]
        beta = self.density.density(det.sensor, rho)  # type: ignore[attr-defined]
        dl = self._log_pd - np.log(beta) - 0.5 * (3.0 * _LOG_2PI + np.log(det_S) + d2)
        if e_r is not None and s2_r is not None:
            a = float(det.unambiguous_speed_mps)  # type: ignore[attr-defined]
            span = 2.0 * a if a > 0 else self.doppler_span_mps
            radial = -0.5 * (_LOG_2PI + np.log(s2_r) + e_r**2 / s2_r) + np.log(span)
            dl += radial if np.isfinite(radial).all() else np.nan_to_num(radial, nan=0.0)
        return dl

    @cached_property
    def _log_pd(self) -> float:
        """ln P_D (np.log's value, taken once)."""
        return np.log(self.detection_probability)

    @cached_property
    def miss_increment(self) -> float:
        """ΔL of a frame without a plot for the track: ln(1 − P_D)."""
        return float(np.log1p(-self.detection_probability))


def ranges(det: object) -> np.ndarray:
    """(N,) m: each detection's range from its sensor, |pos − sensor| (row by row, so a
    subset's ranges are the same bits as the subset of these)."""
    return norm_rows(det.pos_enu_m - det.sensor_pos_enu_m)  # type: ignore[attr-defined]
