"""Where the tower's sensors can see a drone: radar coverage (for the spoof check) and
Remote ID receiver coverage (for non-cooperative tracks). Local ENU, metres."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from towerd import geo
from towerd.detection.plots import SensorMount
from towerd.identity.settings import RadarCoverageSettings


class RadarCoverage:
    """The union of every radar's field of view: for a radar at p with rotation R
    (:func:`towerd.geo.mount_rotation`), a point q is seen when, in the sensor frame
    s = Rᵀ (q − p), its range r, azimuth from boresight a = atan2(sₓ, s_y) and elevation
    e = atan2(s_z, |sₓ, s_y|) satisfy min_range <= r, r + m <= max_range,
    |a| + m/r <= fov_az/2 (rad; skipped for fov_az = 360) and |e| + m/r <= fov_el/2, with
    m the point's ``margin_m`` (its position accuracy: a broadcast near the edge is not
    held against the radar), each radar with its own limits."""

    def __init__(self, radars: Sequence[tuple[SensorMount, RadarCoverageSettings]]) -> None:
        mounts = [m for m, _ in radars]
        self._pos = np.array([m.position_enu_m for m in mounts], dtype=float).reshape(-1, 3)
        rot = [geo.mount_rotation(m.boresight_azimuth_deg, m.tilt_deg) for m in mounts]
        self._rot = np.array(rot).reshape(-1, 3, 3)
        limits = [(c.min_range_m, c.max_range_m, c.fov_azimuth_deg, c.fov_elevation_deg) for _, c in radars]
        self._min_r, self._max_r, self._fov_az, self._fov_el = np.array(limits, dtype=float).reshape(-1, 4).T

    def covers(self, enu_m: np.ndarray, margin_m: np.ndarray | float = 0.0) -> np.ndarray:
        """(N, 3) points, (N,) or scalar margins -> (N,) bool: inside some radar's coverage."""
        q = np.asarray(enu_m, dtype=float).reshape(-1, 3)
        m = np.broadcast_to(np.asarray(margin_m, dtype=float), (len(q),))[:, None]  # (N, 1)
        if len(self._pos) == 0:
            return np.zeros(len(q), dtype=bool)
        s = np.einsum("mji,nmj->nmi", self._rot, q[:, None, :] - self._pos[None, :, :])  # (N, M, 3) Rᵀ(q − p)
        rng, az, el = geo.cartesian_to_spherical(s)
        az = (az + 180.0) % 360.0 - 180.0  # from boresight, (-180, 180]
        slack = np.degrees(m / np.maximum(rng, 1e-9))
        seen = (rng >= self._min_r) & (rng + m <= self._max_r)
        seen &= (self._fov_az >= 360.0) | (np.abs(az) + slack <= self._fov_az / 2.0)
        seen &= np.abs(el) + slack <= self._fov_el / 2.0
        return np.any(seen, axis=1)


class ReceiverCoverage:
    """Where the Remote ID receivers hear a drone: within ``range_m`` horizontally of the
    receiver at ``position_enu_m`` (0: nowhere, a tower without a receiver)."""

    def __init__(self, position_enu_m: Sequence[float], range_m: float) -> None:
        self.position_enu_m = np.asarray(position_enu_m, dtype=float).reshape(3)
        self.range_m = float(range_m)

    def covers(self, enu_m: np.ndarray) -> np.ndarray:
        """(N, 3) -> (N,) bool."""
        d = np.asarray(enu_m, dtype=float).reshape(-1, 3)[:, :2] - self.position_enu_m[:2]
        return np.hypot(d[:, 0], d[:, 1]) < self.range_m
