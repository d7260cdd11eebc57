"""Distances between broadcasts and radar tracks: Mahalanobis, with the broadcast's own
accuracy combined with the track's covariance.

For broadcast n (z_n, diagonal variance r_n, received at t_n) and track k (state x_k,
covariance P_k at t_k), with the measured components H = rows [0, 1, 2, 3, 4] of the
6-state (east, north, up, vel east, vel north) and Δ = t_k − t_n:

    ẑ = z_n + Δ [v_e, v_n, 0, 0, 0]                (the broadcast carried to the track's time)
    y = ẑ − H x_k
    S = H P_k Hᵀ + diag(r_n) + Δ² diag(r_ve, r_vn, 0, 0, 0)
    d²_nk = yᵀ S⁻¹ y

A component the broadcast does not give has y = 0 and 10¹² m² added to its variance, so
it adds nothing; the gate is then γ_n = χ²⁻¹(p, dof_n) with dof_n the components given
(5 with altitude and velocity, 2 with neither).
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np

from towerd.gates import chi2_quantile
from towerd.identity.broadcasts import MEAS_DIM, Broadcasts
from towerd.tracking.state import TrackTable

UNKNOWN_VAR = 1e12
_H = np.arange(MEAS_DIM)


def mahalanobis(bc: Broadcasts, tracks: TrackTable) -> np.ndarray:
    """(N, K) squared Mahalanobis distances d² (equations in the module docstring)."""
    n, k = len(bc), len(tracks)
    if n == 0 or k == 0:
        return np.zeros((n, k))
    dt = tracks.t_mono[None, :] - bc.t_mono[:, None]  # (N, K)
    zhat = np.broadcast_to(bc.z[:, None, :], (n, k, MEAS_DIM)).copy()
    zhat[..., 0] += dt * bc.z[:, None, 3]
    zhat[..., 1] += dt * bc.z[:, None, 4]
    y = zhat - tracks.state[None, :, :MEAS_DIM]
    y = np.where(bc.known[:, None, :], y, 0.0)
    extra = np.broadcast_to(bc.var[:, None, :], (n, k, MEAS_DIM)).copy()
    extra[..., 0] += dt**2 * bc.var[:, None, 3]
    extra[..., 1] += dt**2 * bc.var[:, None, 4]
    extra += np.where(bc.known, 0.0, UNKNOWN_VAR)[:, None, :]
    s = np.broadcast_to(tracks.cov[None, :, :MEAS_DIM, :MEAS_DIM], (n, k, MEAS_DIM, MEAS_DIM)).copy()
    s[..., _H, _H] += extra
    return np.einsum("nki,nki->nk", y, np.linalg.solve(s, y[..., None])[..., 0])


def gates(bc: Broadcasts, probability: float) -> np.ndarray:
    """(N,) χ² gate of each broadcast for its number of given components."""
    return np.array([_gate(probability, int(d)) for d in bc.known.sum(axis=1)], dtype=float)


@lru_cache(maxsize=64)
def _gate(probability: float, dof: int) -> float:
    return chi2_quantile(probability, dof)
