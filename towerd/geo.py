"""Geometry: sensor frame -> local ENU -> WGS84, and ENU -> range/azimuth/elevation.

Frames:
- sensor frame (TI convention, used by every driver): x right, y along boresight,
  z up, metres, origin at the antenna;
- local ENU: east, north, up, metres, origin at the tower's reference point (the point
  whose WGS84 position is configured as ``tower.latitude_deg`` etc.);
- WGS84 geodetic latitude/longitude (degrees) and ellipsoidal height (metres).

ENU <-> geodetic uses pymap3d (maintained, vectorised, shipped by Debian) rather than
hand-written ECEF algebra.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pymap3d


@dataclass(frozen=True)
class Site:
    """WGS84 position of the tower reference point (origin of local ENU)."""

    latitude_deg: float
    longitude_deg: float
    height_m: float


def mount_rotation(boresight_azimuth_deg: float, tilt_deg: float = 0.0) -> np.ndarray:
    """Rotation R (3, 3) with ``enu = R @ sensor`` for a sensor whose boresight points at
    azimuth A (clockwise from true north) and is tilted up by T:

        right    = ( cos A,        -sin A,        0     )
        boresight= ( sin A cos T,   cos A cos T,  sin T )
        up'      = (-sin A sin T,  -cos A sin T,  cos T )

    The columns of R are these three unit vectors.
    """
    a = np.radians(boresight_azimuth_deg)
    t = np.radians(tilt_deg)
    right = [np.cos(a), -np.sin(a), 0.0]
    bore = [np.sin(a) * np.cos(t), np.cos(a) * np.cos(t), np.sin(t)]
    up = [-np.sin(a) * np.sin(t), -np.cos(a) * np.sin(t), np.cos(t)]
    return np.column_stack([right, bore, up])


def spherical_to_cartesian(range_m: np.ndarray, azimuth_deg: np.ndarray, elevation_deg: np.ndarray) -> np.ndarray:
    """(N,) range, azimuth clockwise from the y axis, elevation -> (N, 3) x, y, z.

    x = r cos(el) sin(az), y = r cos(el) cos(az), z = r sin(el)
    """
    az = np.radians(azimuth_deg)
    el = np.radians(elevation_deg)
    ce = np.cos(el)
    return np.stack([range_m * ce * np.sin(az), range_m * ce * np.cos(az), range_m * np.sin(el)], axis=-1)


def cartesian_to_spherical(xyz_m: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(N, 3) -> range_m, azimuth_deg in [0, 360) clockwise from y, elevation_deg."""
    x, y, z = xyz_m[..., 0], xyz_m[..., 1], xyz_m[..., 2]
    horiz = np.hypot(x, y)
    rng = np.hypot(horiz, z)
    az = np.mod(np.degrees(np.arctan2(x, y)), 360.0)
    el = np.degrees(np.arctan2(z, horiz))
    return rng, az, el


def enu_to_geodetic(site: Site, enu_m: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(N, 3) ENU metres -> latitude_deg, longitude_deg, height_m (each (N,))."""
    enu_m = np.asarray(enu_m, dtype=float).reshape(-1, 3)
    lat, lon, h = pymap3d.enu2geodetic(
        enu_m[:, 0], enu_m[:, 1], enu_m[:, 2], site.latitude_deg, site.longitude_deg, site.height_m
    )
    return np.asarray(lat, float), np.asarray(lon, float), np.asarray(h, float)


def geodetic_to_enu(site: Site, lat_deg: np.ndarray, lon_deg: np.ndarray, height_m: np.ndarray) -> np.ndarray:
    """Latitude/longitude/height arrays -> (N, 3) ENU metres about ``site``."""
    e, n, u = pymap3d.geodetic2enu(
        np.asarray(lat_deg, float), np.asarray(lon_deg, float), np.asarray(height_m, float),
        site.latitude_deg, site.longitude_deg, site.height_m,
    )
    return np.stack([np.atleast_1d(e), np.atleast_1d(n), np.atleast_1d(u)], axis=-1)
