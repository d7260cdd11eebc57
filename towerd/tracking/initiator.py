"""Track initiation: start tentative tracks and confirm them by M-of-N."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from functools import cached_property

import numpy as np

from towerd.detection.plots import Detections
from towerd.errors import ConfigError
from towerd.icd import Status
from towerd.schema import spec
from towerd.tracking.linalg import norm_rows
from towerd.tracking.state import POS, VEL, TrackTable, row_dtype

log = logging.getLogger(__name__)

MAX_WINDOW = 64
"""hit_history is a u8 bitmask: at most 64 updates of memory."""


@dataclass(frozen=True)
class InitiationSettings:
    """``tracking.initiation``: how new tracks start."""

    max_speed_mps: float = spec(
        50.0, doc="fastest target a new track may follow: bounds the second point of a track (two-point "
        "initiation) and the speed at confirmation (FPV racers 30-45 m/s, road vehicles up to 40)",
        unit="m/s", lo=1.0, hi=400.0)
    min_range_m: float = spec(
        15.0, doc="no track starts on a detection nearer its sensor than this (tracks already held are "
        "followed in): a radar's false alarms, uniform in range, are densest at the antenna", unit="m",
        lo=0.0, hi=10000.0)


@dataclass
class MofNInitiator:
    """Starts a TENTATIVE track on every detection no track took, and confirms it when it
    has at least ``confirm_hits`` (M) hits in its last ``confirm_window`` (N) updates.

    The initiating detection counts as the first hit, so a target seen on every scan is
    confirmed on its M-th scan. Initial state: position = the detection, velocity 0;
    covariance block-diagonal: the detection's position covariance, and
    ``initial_velocity_sigma_mps``² I₃ for velocity (wide enough to cover a small drone's
    cruise speed, so the second hit is gated in whatever its direction).

    Two-point initiation bounded by a maximum speed: :func:`velocity_sigma_for` gives the
    σ_v for which the second point's gate, noise apart, holds exactly the displacements
    |z₂ − z₁| <= max_speed · dt (the radial-speed test of that pair is the associator's).
    Confirmation also needs the track's speed estimate |v| <= ``max_speed_mps`` and its
    radial-speed consistency (``TrackTable.doppler_score``, NaN: none) <= ``max_mean_nis``
    (:mod:`towerd.tracking.doppler`), and its score (``TrackTable.score``, the
    log-likelihood ratio of :mod:`towerd.tracking.score`) >= ``min_score``; infinite
    bounds (the defaults) leave M-of-N alone.

    No track starts on a detection within ``min_range_m`` of its sensor
    (``Detections.sensor_pos_enu_m``): a CFAR's false alarms fall uniformly over range
    cells, so their density per m³ grows as 1/r² towards the antenna, and there a
    tentative track finds a point in its gate nearly every frame and a tangential path
    (zero Doppler) through them cannot be refuted by radial speed.
    """

    confirm_hits: int = 3
    confirm_window: int = 5
    initial_velocity_sigma_mps: float = 15.0
    max_speed_mps: float = float("inf")
    max_mean_nis: float = float("inf")
    min_range_m: float = 0.0
    min_score: float = float("-inf")

    def __post_init__(self) -> None:
        if not 1 <= self.confirm_hits <= self.confirm_window <= MAX_WINDOW:
            raise ConfigError(
                f"need 1 <= confirm_hits <= confirm_window <= {MAX_WINDOW}, got "
                f"{self.confirm_hits} of {self.confirm_window}"
            )
        if not np.isfinite(self.initial_velocity_sigma_mps) or self.initial_velocity_sigma_mps <= 0:
            raise ConfigError(f"initial_velocity_sigma_mps must be > 0, got {self.initial_velocity_sigma_mps!r}")
        if not (self.min_range_m >= 0 and np.isfinite(self.min_range_m)):
            raise ConfigError(f"min_range_m must be finite and >= 0, got {self.min_range_m!r}")
        if np.isnan(self.min_score):
            raise ConfigError("min_score must be a number (-inf: no score needed), got nan")
        if not (self.max_speed_mps > 0 and self.max_mean_nis > 0):
            raise ConfigError(f"max_speed_mps and max_mean_nis must be > 0, got {self.max_speed_mps!r}, "
                              f"{self.max_mean_nis!r}")

    def select(self, det: Detections, unassociated: np.ndarray) -> np.ndarray:
        """Which of the unassociated detection indices start a track: those at least
        ``min_range_m`` from their sensor. (A subclass may refuse more, e.g. detections
        inside a clutter map cell.)"""
        if self.min_range_m <= 0 or len(unassociated) == 0:
            return unassociated
        rho = norm_rows(det.pos_enu_m[unassociated] - det.sensor_pos_enu_m)
        return unassociated[rho >= self.min_range_m]

    def initiate(self, det: Detections, det_idx: np.ndarray, first_id: int) -> TrackTable:
        """New TENTATIVE tracks from the detections ``det_idx``, ids first_id, first_id + 1, ..."""
        n = len(det_idx)
        table = self._new_rows(n)
        rows = table.rows
        rows["track_id"] = np.arange(first_id, first_id + n, dtype=np.uint32)
        rows["state"][:, POS] = det.pos_enu_m[det_idx]
        rows["cov"][:, POS, POS] = det.cov_enu_m2[det_idx]
        rows["t_mono"] = rows["t_last_update"] = rows["t_created"] = det.t_mono
        return table

    def _new_rows(self, n: int) -> TrackTable:
        """n copies of :attr:`_template` (one byte copy)."""
        template = self._template
        raw = np.empty((n, len(template)), dtype=np.uint8)
        raw[...] = template
        return TrackTable.of_bytes(raw, row_dtype(0))

    @cached_property
    def _template(self) -> np.ndarray:
        """The bytes of a new track's row before its detection is written in: TENTATIVE,
        one hit (the initiating detection), velocity covariance σ_v² I₃ (m/s)², no
        radial-speed consistency yet (NaN), everything else 0."""
        row = np.zeros(1, dtype=row_dtype(0))
        row["status"] = Status.TENTATIVE.value
        row["hits"] = row["hit_history"] = 1
        row["cov"][:, VEL, VEL] = np.eye(3) * self.initial_velocity_sigma_mps**2
        row["doppler_score"] = np.nan
        raw = row.view(np.uint8).copy()
        raw.flags.writeable = False
        return raw

    def window_hits(self, tracks: TrackTable) -> np.ndarray:
        """(K,) number of hits in each track's last ``confirm_window`` updates."""
        return np.bitwise_count(tracks.hit_history & np.uint64((1 << self.confirm_window) - 1))

    def to_confirm(self, tracks: TrackTable) -> np.ndarray:
        """(K,) mask of TENTATIVE tracks that now pass M-of-N, within the speed bound,
        radial-speed consistent and with the score asked for."""
        tentative = tracks.status == int(Status.TENTATIVE)
        ok = tentative & (self.window_hits(tracks) >= self.confirm_hits)
        if not ok.any():  # most frames: no tentative track has its M hits
            return ok
        if np.isfinite(self.max_speed_mps):
            ok &= np.einsum("ki,ki->k", tracks.state[:, VEL], tracks.state[:, VEL]) <= self.max_speed_mps**2
        if np.isfinite(self.max_mean_nis):
            ok &= ~(tracks.doppler_score > self.max_mean_nis)
        if np.isfinite(self.min_score):
            ok &= tracks.score >= self.min_score
        return ok


def velocity_sigma_for(max_speed_mps: float, gate: float) -> float:
    """σ_v of a one-point track whose position gate γ (3 dof) holds, noise apart, the
    second points within max_speed · dt: √γ σ_v dt = max_speed dt, σ_v = max_speed / √γ."""
    return float(max_speed_mps) / float(np.sqrt(gate))
