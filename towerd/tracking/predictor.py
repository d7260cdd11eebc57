"""Prediction: move every track's state and covariance forward in time."""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

from towerd.tracking.models import MotionModel
from towerd.tracking.state import TrackTable

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class KalmanPredictor:
    """Linear Kalman prediction with the injected motion model, batched over K tracks:

        x' = F(dt) x
        P' = F(dt) P F(dt)ᵀ + Q(dt)

    with F and Q from ``model`` (see :class:`~towerd.tracking.models.ConstantVelocity`).
    """

    model: MotionModel

    def predict(self, x: np.ndarray, P: np.ndarray, dt: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """x (K, 6), P (K, 6, 6), dt (K,) seconds (>= 0) -> predicted (x, P), new arrays."""
        dt = np.broadcast_to(np.asarray(dt, dtype=float), x.shape[:1])
        F = self.model.F(dt)
        x_pred = np.einsum("kij,kj->ki", F, x)
        P_pred = F @ P @ np.swapaxes(F, -1, -2) + self.model.Q(dt)
        return x_pred, 0.5 * (P_pred + np.swapaxes(P_pred, -1, -2))

    def attach(self, tracks: TrackTable) -> TrackTable:
        """Give new tracks whatever per-track filter state this predictor needs: none."""
        return tracks

    def predict_tracks(self, tracks: TrackTable, dt: np.ndarray | float) -> None:
        """Predict every row of ``tracks`` (writable) by its own dt (K,) seconds (a float:
        the same for every row), in place."""
        tracks.state, tracks.cov = self.predict(tracks.state, tracks.cov, dt)
