"""Measurement update: correct predicted tracks with associated position measurements."""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

from towerd.tracking.linalg import inv3, mv, sym
from towerd.tracking.state import POS, STATE_DIM, TrackTable

log = logging.getLogger(__name__)

MEAS_DIM = 3

H = np.zeros((MEAS_DIM, STATE_DIM))
H[:, POS] = np.eye(MEAS_DIM)
H.flags.writeable = False
"""Measurement matrix (3, 6) = [I₃ 0]: detections measure ENU position only."""


@dataclass(frozen=True)
class KalmanUpdater:
    """Linear Kalman update for ENU position measurements z = H x + v, v ~ N(0, R),
    H = [I₃ 0], batched over K (track, measurement) pairs:

        y  = z − H x                         innovation
        S  = H P Hᵀ + R                      innovation covariance
        K  = P Hᵀ S⁻¹                        gain (S⁻¹ of the 3x3 by cofactors: linalg.inv3)
        x' = x + K y
        P' = (I − K H) P (I − K H)ᵀ + K R Kᵀ   Joseph form

    The Joseph form keeps P' symmetric positive definite under rounding even when R is
    small against P (a fresh track meeting a precise detection), where P' = (I − K H) P
    can lose definiteness.
    """

    def predicted_measurement(self, x: np.ndarray) -> np.ndarray:
        """H x: x (..., 6) -> (..., 3) metres."""
        return x[..., POS]

    def innovation_covariance(self, P: np.ndarray, R: np.ndarray) -> np.ndarray:
        """S = H P Hᵀ + R; P (..., 6, 6), R (..., 3, 3) broadcast -> (..., 3, 3) m²."""
        return P[..., POS, POS] + R

    def innovation(
        self, x: np.ndarray, P: np.ndarray, z: np.ndarray, R: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """y = z − H x and S = H P Hᵀ + R, broadcast over leading axes: x (K, 6),
        P (K, 6, 6) with z (3,) / R (3, 3) or z (K, 3) / R (K, 3, 3) -> y (K, 3), S (K, 3, 3)."""
        return z - self.predicted_measurement(x), self.innovation_covariance(P, R)

    def update(
        self, x: np.ndarray, P: np.ndarray, z: np.ndarray, R: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """x (K, 6), P (K, 6, 6), z (K, 3) m, R (K, 3, 3) m² -> updated (x, P), new arrays.
        Equations in the class docstring."""
        y, S = self.innovation(x, P, z, R)
        return self.update_given(x, P, y, R, inv3(S)[0])

    def update_given(
        self, x: np.ndarray, P: np.ndarray, y: np.ndarray, R: np.ndarray, S_inv: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """:meth:`update` from the innovation y (K, 3) and S⁻¹ (K, 3, 3), for callers that
        need them too (the IMM's likelihoods)."""
        gain = P[..., :, POS] @ S_inv  # K = P Hᵀ S⁻¹, (K, 6, 3)
        x_new = x + mv(gain, y)
        # The Joseph form's two products by I − K H, with H = [I₃ 0] taken as the rows or
        # columns it selects: (I − K H) P = P − K (H P) = A, and
        # A (I − K H)ᵀ + K R Kᵀ = A + (K R − A Hᵀ) Kᵀ (one product by Kᵀ for both terms).
        A = P - gain @ P[..., POS, :]
        P_new = A + (gain @ R - A[..., :, POS]) @ gain.swapaxes(-1, -2)
        return x_new, sym(P_new)

    def update_tracks(self, tracks: TrackTable, rows: np.ndarray, z: np.ndarray, R: np.ndarray) -> None:
        """Update the rows ``rows`` (M,) of ``tracks`` (writable) with z (M, 3), R (M, 3, 3),
        in place."""
        if len(rows):
            tracks.state[rows], tracks.cov[rows] = self.update(tracks.state[rows], tracks.cov[rows], z, R)
