"""Radial speed (Doppler) in association and confirmation.

A radar measures the radial speed of each point. A track predicts it from its state
x = [p, v] (ENU position and velocity) and the antenna position s:

    d = p − s,   ρ = |d|,   û = d / ρ
    h_r(x) = û · v                                   predicted radial speed, m/s (positive away)
    J = ∂h_r/∂x = [ (v − h_r û)ᵀ / ρ ,  ûᵀ ]         (1, 6): position part, velocity part

and its variance J P Jᵀ (first order). With a measured radial speed r (variance σ_r²):

    e = fold(r − h_r(x)),   s² = J P Jᵀ + σ_r²,   ε = e² / s²          (χ² with 1 dof)

``fold`` maps e into [−A, A) when the sensor folds Doppler at ±A
(``unambiguous_speed_mps`` A > 0): e ← ((e + A) mod 2A) − A; with A = 0 it does nothing.

Three uses, all through :class:`DopplerGate`:

- **association** (predicted): x, P the track's prediction to the frame time; a pair
  whose ε exceeds γ_r = χ²₁⁻¹(gate_probability) is outside the gate, whatever its
  position distance. Points without a radial speed (NaN) are gated on position alone.
  Here s² also holds σ_m² (``manoeuvre_sigma_mps``): a filter fed positions learns a
  change of velocity only over several frames, while the Doppler shows it at once, so
  without it a drone braking or a bird changing pace would fall out of its own gate.
- **initiation** (implied): a track started from one point has no velocity of its own
  (v = 0 with a wide prior), so its prediction says nothing of the radial speed. For
  its second point ε is taken with the state updated by that point's position
  (x⁺, P⁺: the velocity the two points imply, with its covariance). By the chain rule of
  Gaussians the joint 4-dof distance of (position, radial speed) is d²(position) +
  ε(x⁺, P⁺), so this is the radial half of a joint gate, exact for a linear h_r.
- **confirmation** (consistency): after every hit from the second point on, ε is taken
  with the updated state and folded into a per-track mean
  c ← (1 − w) c + w min(ε, γ_r), w = max(λ, 1/n) for the n-th value (a plain mean of the
  first 1/λ values, then fading with weight λ, so that at confirmation, with two or
  three values, the latest counts in full; NaN: none yet). Bounded by γ_r; a track
  whose points keep carrying a radial speed other than the one its motion implies
  (zero-Doppler clutter strung into a moving track) has a high c, and is not confirmed
  while c > ``max_mean_nis``. For a true target ε is χ²₁ (mean 1).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from functools import cached_property

import numpy as np

from towerd.errors import ConfigError
from towerd.gates import chi2_quantile
from towerd.schema import spec
from towerd.tracking.linalg import inv3, mv, norm_rows, quad, sym
from towerd.tracking.state import POS, VEL

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DopplerSettings:
    """``tracking.doppler``: radial speed in association and confirmation."""

    enabled: bool = spec(True, doc="gate and confirm on radial speed where points carry one")
    gate_probability: float = spec(
        0.999, doc="chi-square (1 dof) probability of the radial-speed gate", lo=0.5, hi=0.999999)
    fading: float = spec(
        0.3, doc="radial-speed consistency: a plain mean of the first 1/fading hits, then each new hit "
        "weighs this much (fading mean)", lo=0.01, hi=1.0)
    max_mean_nis: float = spec(
        4.0, doc="a tentative track is not confirmed while its consistency (mean normalised squared "
        "radial-speed error, 1 for a true target) exceeds this", lo=1.0, hi=1000.0)
    manoeuvre_sigma_mps: float = spec(
        3.0, doc="radial-speed change a track's velocity may lag behind in a manoeuvre, one sigma, added "
        "to the association gate's radial-speed variance", unit="m/s", lo=0.0, hi=100.0)


@dataclass(frozen=True)
class RadialSpeeds:
    """The radial speeds of one frame's detections: speed_mps (N,) (NaN: unknown),
    var_mps2 (N,) (m/s)², sensor_pos_enu_m (3,), unambiguous_speed_mps (0: no folding)."""

    speed_mps: np.ndarray
    var_mps2: np.ndarray
    sensor_pos_enu_m: np.ndarray
    unambiguous_speed_mps: float = 0.0

    @classmethod
    def of(cls, det: object) -> RadialSpeeds:
        """From a :class:`~towerd.detection.plots.Detections`."""
        return cls(det.radial_vel_mps, det.radial_vel_var_mps2, det.sensor_pos_enu_m,  # type: ignore[attr-defined]
                   float(det.unambiguous_speed_mps))  # type: ignore[attr-defined]

    @cached_property
    def known(self) -> np.ndarray:
        """(N,) rows with a usable radial speed (finite, with a finite variance)."""
        return np.isfinite(self.speed_mps) & np.isfinite(self.var_mps2)

    @cached_property
    def all_known(self) -> bool:
        """Every row has a usable radial speed (a TI radar's frame): no masking needed."""
        return bool(self.known.all())


def radial_velocity(x: np.ndarray, sensor_pos_enu_m: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """x (M, 6) -> (h_r (M,) m/s, J (M, 6)); see the module docstring. A track at the
    antenna itself (ρ = 0) gets h_r = 0 and J = 0."""
    d = x[:, POS] - sensor_pos_enu_m
    rho = norm_rows(d)
    if len(rho) == 0 or rho.min() > 0:  # (NaN: not > 0)
        safe = rho[:, None]
        u = d / safe
    else:
        safe = np.where(rho > 0, rho, 1.0)[:, None]
        u = np.where(rho[:, None] > 0, d / safe, 0.0)
    v = x[:, VEL]
    hr = np.add.reduce(u * v, axis=1)
    J = np.empty((len(x), 6))
    np.divide(v - hr[:, None] * u, safe, out=J[:, :3])
    J[:, 3:] = u
    return hr, J


def fold(e: np.ndarray, unambiguous_speed_mps: float) -> np.ndarray:
    """e folded into [−A, A) for A > 0; e unchanged for A = 0."""
    a = float(unambiguous_speed_mps)
    return e if a <= 0 else np.mod(e + a, 2.0 * a) - a


def position_update(x: np.ndarray, P: np.ndarray, z: np.ndarray | None = None, R: np.ndarray | None = None, *,
                    S_inv: np.ndarray | None = None, y: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Kalman update on position alone (H = [I₃ 0]) without the Joseph form, for the
    implied-velocity test: x (M, 6), P (M, 6, 6), z (M, 3), R (M, 3, 3) -> (x⁺, P⁺):
    K = P Hᵀ S⁻¹, x⁺ = x + K (z − H x), P⁺ = P − K H P. A caller that has S⁻¹ (M, 3, 3)
    of S = H P Hᵀ + R and y = z − H x (M, 3) (the gate's) gives them instead of z and R."""
    if S_inv is None:
        S_inv = inv3(P[:, POS, POS] + R)[0]
    if y is None:
        y = z - x[:, POS]
    K = P[:, :, POS] @ S_inv
    x_new = x + mv(K, y)
    return x_new, sym(P - K @ P[:, POS, :])


@dataclass(frozen=True)
class DopplerGate:
    """Radial-speed gate and consistency statistic; see the module docstring."""

    gate_probability: float = 0.999
    fading: float = 0.3
    max_mean_nis: float = 4.0
    manoeuvre_sigma_mps: float = 3.0

    def __post_init__(self) -> None:
        if not 0.0 < self.gate_probability < 1.0:
            raise ConfigError(f"doppler gate_probability must be in (0, 1), got {self.gate_probability!r}")
        if not 0.0 < self.fading <= 1.0:
            raise ConfigError(f"doppler fading must be in (0, 1], got {self.fading!r}")
        if not self.max_mean_nis > 0:
            raise ConfigError(f"doppler max_mean_nis must be > 0, got {self.max_mean_nis!r}")
        if not (np.isfinite(self.manoeuvre_sigma_mps) and self.manoeuvre_sigma_mps >= 0):
            raise ConfigError(f"doppler manoeuvre_sigma_mps must be >= 0, got {self.manoeuvre_sigma_mps!r}")

    @classmethod
    def from_settings(cls, s: DopplerSettings) -> DopplerGate | None:
        """The gate ``s`` describes, None when disabled."""
        return cls(s.gate_probability, s.fading, s.max_mean_nis, s.manoeuvre_sigma_mps) if s.enabled else None

    @cached_property
    def gate(self) -> float:
        """γ_r = χ²₁⁻¹(gate_probability)."""
        return float(chi2_quantile(self.gate_probability, 1))

    def nis(self, x: np.ndarray, P: np.ndarray, radial: RadialSpeeds, di: np.ndarray,
            extra_var: float = 0.0) -> np.ndarray:
        """ε (M,) of states x (M, 6), P (M, 6, 6) against detections ``di`` (M,), with
        ``extra_var`` (m/s)² added to s²; NaN where the detection has no radial speed."""
        e, s2 = self.residual(x, P, radial, di, extra_var)
        return e**2 / s2

    def residual(self, x: np.ndarray, P: np.ndarray, radial: RadialSpeeds, di: np.ndarray,
                 extra_var: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
        """(e (M,) m/s, s² (M,) (m/s)²) of states x (M, 6), P (M, 6, 6) against detections
        ``di`` (M,), ``extra_var`` added to s²; both NaN where the detection has no radial speed."""
        if radial.all_known:
            return self._residual(x, P, radial, di, extra_var)
        e_out, s2_out = np.full(len(di), np.nan), np.full(len(di), np.nan)
        known = radial.known[di]
        if known.any():
            e_out[known], s2_out[known] = self._residual(x[known], P[known], radial, di[known], extra_var)
        return e_out, s2_out

    @staticmethod
    def _residual(x: np.ndarray, P: np.ndarray, radial: RadialSpeeds, di: np.ndarray,
                  extra_var: float) -> tuple[np.ndarray, np.ndarray]:
        """:meth:`residual` of rows that all have a radial speed."""
        hr, J = radial_velocity(x, radial.sensor_pos_enu_m)
        e = fold(radial.speed_mps[di] - hr, radial.unambiguous_speed_mps)
        return e, quad(P, J) + radial.var_mps2[di] + extra_var

    def passes(self, eps: np.ndarray) -> np.ndarray:
        """(M,) ε within the gate, or unknown (NaN)."""
        return ~(eps > self.gate)

    def consistency(self, previous: np.ndarray, count: np.ndarray, eps: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(mean, count) after one more hit: previous (M,) mean (NaN: none yet) of
        ``count`` (M,) values, ε (M,) (NaN: this hit had no radial speed, both kept)."""
        known = np.isfinite(eps)
        every = bool(known.all())  # a TI radar's frame: every hit has a radial speed
        if every:
            w = np.maximum(self.fading, 1.0 / (count + 1.0))  # count + 1 >= 1
        else:
            w = np.maximum(self.fading, 1.0 / np.maximum(count.astype(float) + known, 1.0))
        e = np.minimum(eps, self.gate)
        mixed = np.where(np.isfinite(previous), (1.0 - w) * previous + w * e, e)
        if every:
            return mixed, count + count.dtype.type(1)
        return np.where(known, mixed, previous), count + known.astype(count.dtype)

    def consistent(self, score: np.ndarray) -> np.ndarray:
        """(K,) tracks whose consistency allows confirmation (or that have none)."""
        return ~(score > self.max_mean_nis)
