"""Geometry: sensor frame -> local ENU -> WGS84, and ENU -> range/azimuth/elevation.

Frames:
- sensor frame (TI convention, used by every driver): x right, y along boresight,
  z up, metres, origin at the antenna;
- local ENU: east, north, up, metres, origin at the tower's reference point (the point
  whose WGS84 position is configured as ``tower.latitude_deg`` etc.);
- WGS84 geodetic latitude/longitude (degrees) and ellipsoidal height (metres).

ENU <-> geodetic uses pymap3d (maintained, vectorised, shipped by Debian) rather than
hand-written ECEF algebra. ENU -> geodetic, once per report, runs pymap3d's own
algorithm (You 2000, closed form) on the per-site constants cached: the same floating-point
operations in the same order, so the same bits, without pymap3d's fixed cost of ~220 µs a
call (masking for the poles, ``isclose``, ellipsoid lookups), which it falls back to for
the rare points that need that care.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import math
from dataclasses import dataclass
from math import pi

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
    """(N, 3) ENU metres -> latitude_deg, longitude_deg, height_m (each (N,)).

    The result is bit for bit ``pymap3d.enu2geodetic`` (WGS84) of the same inputs
    (tests/test_geo_fast.py): ENU -> ECEF (rotation about the site, plus the site's ECEF
    position), then ECEF -> geodetic by You (2000), "Transformation of Cartesian to
    Geodetic Coordinates without Iterations", J. Surv. Eng. 126(1), the closed form
    pymap3d.ecef2geodetic uses, with the same operations in the same order:

        r = |p|,  E² = a² − b²,  u² = ½(r² − E²) + ½·hypot(r² − E², 2Ez)
        β0 = atan(hypot(u, E)/u · z/hypot(x, y))                      (4b)
        β = β0 + (b·u − a·hypot(u, E) + E²)·sin β0 / (a·hypot(u, E)/cos β0 − E² cos β0)   (13)
        lat = atan(a/b · tan β),  lon = atan2(y, x)                    (4c)
        h = ±hypot(z − b sin β, hypot(x, y) − a cos β)  (− inside the ellipsoid)   (7)

    Points where pymap3d takes a special branch (u or hypot(x, y) within 1e-8 of 0: the
    poles, the Earth's centre; β within one ulp of ±90°) go to pymap3d itself.
    """
    enu_m = np.asarray(enu_m, dtype=float).reshape(-1, 3)
    east, north, up = enu_m[:, 0], enu_m[:, 1], enu_m[:, 2]
    x, y, z = _enu_to_ecef(_site_frame(site), east, north, up)
    x2, y2, z2 = x**2, y**2, z**2  # each computed once where pymap3d computes it twice: same values
    u = _you_u(x2 + y2 + z2, z, _E, _E2, np.sqrt, np.hypot)  # >= 0 (or NaN)
    hxy = np.hypot(x, y)
    if len(u) == 0 or min(u.min(), hxy.min()) <= 1e-8:  # pymap3d's isclose(., 0) branches
        return _enu_to_geodetic_pymap3d(site, enu_m)
    beta = _you_beta(u, hxy, z, _E, _E2, np.hypot, np.arctan, np.sin, np.cos)
    if np.abs(beta).max() >= _LIM_PI2:  # pymap3d's float32 patches at ±90°
        return _enu_to_geodetic_pymap3d(site, enu_m)
    lat, alt = _you_lat_height(beta, z, hxy, np.hypot, np.arctan, np.tan, np.sin, np.cos)
    np.negative(alt, out=alt, where=x2 / _A2 + y2 / _A2 + z2 / _B2 < 1)  # inside the ellipsoid
    return np.degrees(lat), np.degrees(np.arctan2(y, x)), alt


def _enu_to_ecef(frame: tuple, east, north, up) -> tuple:
    """pymap3d.enu2uvw, then enu2ecef's sum, about the site ``frame`` (_site_frame):
    arrays or floats (the same operations either way)."""
    x0, y0, z0, cos_lat0, sin_lat0, cos_lon0, sin_lon0 = frame
    t = cos_lat0 * up - sin_lat0 * north
    w = sin_lat0 * up + cos_lat0 * north
    return x0 + (cos_lon0 * t - sin_lon0 * east), y0 + (sin_lon0 * t + cos_lon0 * east), z0 + w


def _you_u(r2, z, e, e2, sqrt, hypot):
    """You (2000)'s u from r² = x² + y² + z² (pymap3d.ecef2geodetic's operations; arrays
    or floats, with ``sqrt`` and ``hypot`` to match; ``e``, ``e2``: E and E²)."""
    r = sqrt(r2)
    r2_e2 = r * r - e2  # NumPy squares r**2 as r * r; a float r**2 is pow()
    return sqrt(0.5 * r2_e2 + 0.5 * hypot(r2_e2, 2 * e * z))


def _you_beta(u, hxy, z, e, e2, hypot, atan, sin, cos):
    """β of (4b) corrected by (13), as pymap3d computes it (a·hue·1/cos β)."""
    hue = hypot(u, e)
    beta = atan(hue / u * z / hxy)
    a_hue, cos_beta = _A * hue, cos(beta)
    return beta + ((_B * u - a_hue + e2) * sin(beta)) / (a_hue / cos_beta - e2 * cos_beta)


def _you_lat_height(beta, z, hxy, hypot, atan, tan, sin, cos):
    """Latitude (radians) by (4c) and |height| by (7)."""
    return atan(_A / _B * tan(beta)), hypot(z - _B * sin(beta), hxy - _A * cos(beta))


def enu_to_report_geometry(site: Site, east: float, north: float, up: float) -> tuple[float, ...] | None:
    """One finite ENU point -> (latitude_deg, longitude_deg, height_m, range_m,
    azimuth_deg, elevation_deg): :func:`enu_to_geodetic` and :func:`cartesian_to_spherical`
    in plain Python floats, for the few tracks of one report, where NumPy's per-call cost
    is most of the work. The same operations in the same order give the same bits: +, −,
    ×, ÷ and sqrt are exact IEEE; hypot is the C library's (through ctypes), which NumPy's
    hypot calls; sin, cos, tan, atan and atan2 are the C library's, NumPy's own here
    (tests/test_geo_fast.py checks the whole against the arrays' path on random points).
    None where :func:`enu_to_geodetic` takes pymap3d's branches, or without the C
    library's hypot: then use the arrays' functions."""
    hypot = _LIBM_HYPOT
    if hypot is None:
        return None
    x, y, z = _enu_to_ecef(_site_floats(site), east, north, up)
    x2, y2, z2 = x * x, y * y, z * z
    u = _you_u(x2 + y2 + z2, z, _E_F, _E2_F, math.sqrt, hypot)
    hxy = hypot(x, y)
    if not u > 1e-8 or not hxy > 1e-8:
        return None
    beta = _you_beta(u, hxy, z, _E_F, _E2_F, hypot, math.atan, math.sin, math.cos)
    if not abs(beta) < _LIM_PI2:
        return None
    lat, alt = _you_lat_height(beta, z, hxy, hypot, math.atan, math.tan, math.sin, math.cos)
    if x2 / _A2 + y2 / _A2 + z2 / _B2 < 1:
        alt = -alt
    horiz = hypot(east, north)
    rng = hypot(horiz, up)
    az = math.degrees(math.atan2(east, north)) % 360.0
    el = math.degrees(math.atan2(up, horiz))
    return math.degrees(lat), math.degrees(math.atan2(y, x)), alt, rng, az, el


@functools.lru_cache(maxsize=16)
def _site_floats(site: Site) -> tuple[float, ...]:
    """:func:`_site_frame` as Python floats."""
    return tuple(float(v) for v in _site_frame(site))


def _libm_hypot():
    """The C library's hypot (NumPy's float64 hypot calls it), or None if not found."""
    try:
        f = ctypes.CDLL(ctypes.util.find_library("m") or "libm.so.6").hypot
    except (OSError, AttributeError):
        return None
    f.restype, f.argtypes = ctypes.c_double, (ctypes.c_double, ctypes.c_double)
    return f


_WGS84 = (pymap3d.Ellipsoid.from_name("wgs84") if hasattr(pymap3d.Ellipsoid, "from_name")
          else pymap3d.Ellipsoid("wgs84"))  # pymap3d < 3 (Debian 12's python3-pymap3d 2.9.1): by model name
_A: float = _WGS84.semimajor_axis
_B: float = _WGS84.semiminor_axis
_E = np.sqrt(_A**2 - _B**2)  # pymap3d: sqrt(ell.semimajor_axis**2 - ell.semiminor_axis**2)
_E2 = _E**2
_A2, _B2 = _A**2, _B**2  # pymap3d: ell.semimajor_axis**2, ell.semiminor_axis**2
_LIM_PI2 = pi / 2 - np.finfo(np.float64).eps
_E_F, _E2_F = float(_E), float(_E2)
_LIBM_HYPOT = _libm_hypot()


@functools.lru_cache(maxsize=16)
def _site_frame(site: Site) -> tuple[float, ...]:
    """The site's ECEF position and the sines/cosines of its latitude and longitude, as
    pymap3d.enu2ecef computes them on every call."""
    x0, y0, z0 = pymap3d.geodetic2ecef(site.latitude_deg, site.longitude_deg, site.height_m)
    lat0, lon0 = np.radians(site.latitude_deg), np.radians(site.longitude_deg)
    return x0, y0, z0, np.cos(lat0), np.sin(lat0), np.cos(lon0), np.sin(lon0)


def _enu_to_geodetic_pymap3d(site: Site, enu_m: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """:func:`enu_to_geodetic` by pymap3d itself (every branch; ~220 µs a call)."""
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
