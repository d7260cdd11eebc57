"""Measurement update: correct predicted tracks with associated position measurements."""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

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
        K  = P Hᵀ S⁻¹                        gain (computed with a solve, not an inverse)
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
        PHt = P[..., :, POS]  # P Hᵀ, (K, 6, 3)
        # K = P Hᵀ S⁻¹  <=>  Kᵀ = S⁻¹ H P (S, P symmetric)
        gain = np.swapaxes(np.linalg.solve(S, np.swapaxes(PHt, -1, -2)), -1, -2)  # (K, 6, 3)
        x_new = x + np.einsum("kij,kj->ki", gain, y)
        I_KH = np.eye(STATE_DIM) - gain @ H
        P_new = I_KH @ P @ np.swapaxes(I_KH, -1, -2) + gain @ R @ np.swapaxes(gain, -1, -2)
        return x_new, 0.5 * (P_new + np.swapaxes(P_new, -1, -2))

    def update_tracks(self, tracks: TrackTable, rows: np.ndarray, z: np.ndarray, R: np.ndarray) -> None:
        """Update the rows ``rows`` (M,) of ``tracks`` (writable) with z (M, 3), R (M, 3, 3),
        in place."""
        if len(rows):
            tracks.state[rows], tracks.cov[rows] = self.update(tracks.state[rows], tracks.cov[rows], z, R)
