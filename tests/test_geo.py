"""towerd.geo: mount rotation, spherical <-> cartesian, ENU <-> WGS84."""

from __future__ import annotations

import numpy as np
import pytest
from numpy.testing import assert_allclose

from towerd import geo

WGS84_A = 6378137.0


@pytest.mark.parametrize(
    "azimuth_deg, tilt_deg", [(0.0, 0.0), (90.0, 0.0), (237.5, 12.0), (-30.0, -8.0), (359.0, 45.0)]
)
def test_mount_rotation_is_proper_orthonormal(azimuth_deg, tilt_deg):
    R = geo.mount_rotation(azimuth_deg, tilt_deg)
    assert_allclose(R.T @ R, np.eye(3), atol=1e-12)
    assert_allclose(np.linalg.det(R), 1.0, atol=1e-12)


@pytest.mark.parametrize("azimuth_deg, tilt_deg", [(0.0, 0.0), (90.0, 0.0), (237.5, 12.0), (300.0, -8.0), (45.0, 60.0)])
def test_mount_rotation_maps_boresight_to_configured_direction(azimuth_deg, tilt_deg):
    R = geo.mount_rotation(azimuth_deg, tilt_deg)
    rng, az, el = geo.cartesian_to_spherical(R @ np.array([0.0, 1.0, 0.0]))  # ENU: x east, y north
    assert_allclose([rng, az, el], [1.0, azimuth_deg % 360.0, tilt_deg], atol=1e-9)
    # The sensor's x axis ("right") stays horizontal and points 90 deg clockwise of boresight.
    right = R @ np.array([1.0, 0.0, 0.0])
    assert_allclose(right[2], 0.0, atol=1e-12)
    assert_allclose(geo.cartesian_to_spherical(right)[1], (azimuth_deg + 90.0) % 360.0, atol=1e-9)


def test_mount_rotation_known_value_east_facing():
    R = geo.mount_rotation(90.0, 0.0)
    assert_allclose(R @ np.array([3.0, 5.0, 7.0]), [5.0, -3.0, 7.0], atol=1e-12)


def test_spherical_cartesian_round_trip():
    rng = np.random.default_rng(1)
    r = rng.uniform(1.0, 5000.0, 500)
    az = rng.uniform(0.0, 360.0, 500)
    el = rng.uniform(-89.0, 89.0, 500)
    xyz = geo.spherical_to_cartesian(r, az, el)
    assert xyz.shape == (500, 3)
    r2, az2, el2 = geo.cartesian_to_spherical(xyz)
    assert_allclose(r2, r, rtol=1e-12)
    assert_allclose(el2, el, atol=1e-9)
    # Azimuth compared on the circle.
    assert_allclose(np.mod(az2 - az + 180.0, 360.0) - 180.0, 0.0, atol=1e-9)
    assert np.all((az2 >= 0.0) & (az2 < 360.0))


def test_spherical_known_value():
    assert_allclose(
        geo.spherical_to_cartesian(np.array([2.0]), np.array([90.0]), np.array([0.0])), [[2.0, 0.0, 0.0]], atol=1e-12
    )
    assert_allclose(
        geo.spherical_to_cartesian(np.array([2.0]), np.array([0.0]), np.array([30.0])),
        [[0.0, np.sqrt(3.0), 1.0]],
        atol=1e-12,
    )


def test_enu_geodetic_round_trip():
    site = geo.Site(31.7619, -106.4850, 1150.0)
    rng = np.random.default_rng(2)
    enu = rng.uniform([-5000, -5000, -50], [5000, 5000, 1500], size=(200, 3))
    lat, lon, h = geo.enu_to_geodetic(site, enu)
    assert_allclose(geo.geodetic_to_enu(site, lat, lon, h), enu, atol=1e-6)


def test_enu_to_geodetic_known_value_on_equator():
    # 1 km east of (0, 0, 0) on the tangent plane is ECEF (a, 1000, 0):
    # longitude atan(1000 / a), height sqrt(a² + 1000²) − a, latitude 0.
    site = geo.Site(0.0, 0.0, 0.0)
    lat, lon, h = geo.enu_to_geodetic(site, np.array([[1000.0, 0.0, 0.0], [0.0, 0.0, 250.0]]))
    assert_allclose(lat, [0.0, 0.0], atol=1e-12)
    assert_allclose(lon, [np.degrees(np.arctan2(1000.0, WGS84_A)), 0.0], rtol=1e-12, atol=1e-12)
    assert_allclose(h, [np.hypot(WGS84_A, 1000.0) - WGS84_A, 250.0], atol=1e-6)
