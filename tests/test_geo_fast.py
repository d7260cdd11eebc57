"""geo.enu_to_geodetic runs pymap3d's ENU -> geodetic (You 2000) with the site's constants
cached: its results must be pymap3d's, bit for bit, since the reports quantise them
(lat/lon to 1e-7 degree, height to float32) and the golden reports must not move."""

from __future__ import annotations

import numpy as np
import pymap3d
import pytest
from numpy.testing import assert_allclose

from towerd import geo

SITES = (
    geo.Site(27.5036, -99.5076, 130.0),  # the benchmarks' tower
    geo.Site(-33.86, 151.21, 5.0),
    geo.Site(69.65, 18.96, 400.0),
    geo.Site(0.0, 0.0, 0.0),
    geo.Site(48.14, 11.58, -20.0),
    geo.Site(89.99, -45.0, 2800.0),
)


def reference(site: geo.Site, enu: np.ndarray) -> tuple[np.ndarray, ...]:
    lat, lon, h = pymap3d.enu2geodetic(enu[:, 0], enu[:, 1], enu[:, 2], site.latitude_deg, site.longitude_deg,
                                       site.height_m)
    return np.asarray(lat, float), np.asarray(lon, float), np.asarray(h, float)


@pytest.mark.parametrize("site", SITES)
@pytest.mark.parametrize("scale_m", [50.0, 3_000.0, 40_000.0, 400_000.0])
def test_enu_to_geodetic_is_pymap3d_bit_for_bit(site: geo.Site, scale_m: float) -> None:
    rng = np.random.default_rng(int(scale_m) + abs(int(site.latitude_deg * 100)))
    for _ in range(25):
        n = int(rng.integers(1, 70))
        enu = rng.uniform(-scale_m, scale_m, size=(n, 3))
        enu[:, 2] = rng.uniform(-300.0, min(scale_m, 30_000.0), n)
        got, want = geo.enu_to_geodetic(site, enu), reference(site, enu)
        for g, w in zip(got, want):
            assert_allclose(g, w, rtol=0, atol=1e-9)
            assert g.tobytes() == w.tobytes()  # identical bits, not merely close


def test_the_report_quantisation_sees_no_difference() -> None:
    """Many track positions at tower ranges: lat/lon in 1e-7 degree and height in float32
    as the reports carry them."""
    site = SITES[0]
    rng = np.random.default_rng(3)
    enu = np.column_stack([rng.uniform(-5e3, 5e3, 20_000), rng.uniform(-5e3, 5e3, 20_000), rng.uniform(0, 500, 20_000)])
    for rows in np.array_split(np.arange(len(enu)), 2_000):
        lat, lon, h = geo.enu_to_geodetic(site, enu[rows])
        rlat, rlon, rh = reference(site, enu[rows])
        assert np.array_equal(np.round(lat * 1e7).astype(np.int32), np.round(rlat * 1e7).astype(np.int32))
        assert np.array_equal(np.round(lon * 1e7).astype(np.int32), np.round(rlon * 1e7).astype(np.int32))
        assert np.array_equal(h.astype(np.float32), rh.astype(np.float32))


def test_pymap3d_special_cases_are_pymap3d_itself() -> None:
    """The pole (on the axis, where pymap3d takes its special branch), the Earth's centre
    and points inside the ellipsoid (negative height)."""
    site = geo.Site(90.0, 0.0, 0.0)
    enu = np.array([[0.0, 0.0, 100.0], [10.0, 0.0, 50.0], [0.0, 0.0, -6356752.31424518], [0.0, 0.0, -1000.0]])
    for g, w in zip(geo.enu_to_geodetic(site, enu), reference(site, enu)):
        assert g.tobytes() == w.tobytes()
    lat, _, h = geo.enu_to_geodetic(SITES[0], np.array([[0.0, 0.0, -500.0]]))
    assert h[0] == pytest.approx(-370.0, abs=1e-6) and lat[0] == pytest.approx(SITES[0].latitude_deg, abs=1e-9)


def test_empty_input() -> None:
    lat, lon, h = geo.enu_to_geodetic(SITES[0], np.zeros((0, 3)))
    assert lat.shape == lon.shape == h.shape == (0,)


@pytest.mark.parametrize("site", SITES)
def test_report_geometry_of_one_point_is_the_arrays_bit_for_bit(site: geo.Site) -> None:
    """enu_to_report_geometry (plain Python, for a report's few tracks) gives the bits of
    enu_to_geodetic and cartesian_to_spherical, or None where they take pymap3d's branches.
    Where NumPy's float64 trigonometry is its own (AVX-512 builds), not the C library's that
    the one-point path calls, bit equality cannot hold: the values are then compared to
    far below what a report keeps (1e-7 degree, float32 metres; measured on an AVX-512
    Xeon: height within 705 ulp, 6e-10 m, the angles within 2 ulp)."""
    exact = _numpy_trig_is_libms()
    rng = np.random.default_rng(abs(int(site.latitude_deg * 100)) + 7)
    enu = np.column_stack([rng.uniform(-40e3, 40e3, 3_000), rng.uniform(-40e3, 40e3, 3_000),
                           rng.uniform(-300.0, 5e3, 3_000)])
    enu[:5] = [[0.0, 0.0, 0.0], [1e-9, 0.0, 0.0], [0.0, -1e-9, 0.0], [-1e-9, 1000.0, 0.0], [0.0, 0.0, 100.0]]
    lat, lon, h = geo.enu_to_geodetic(site, enu)
    rng_m, az, el = geo.cartesian_to_spherical(enu)
    got = [geo.enu_to_report_geometry(site, *p) for p in enu.tolist()]
    if site.latitude_deg < 89.0:
        assert all(g is not None for g in got)
    for i, g in enumerate(got):
        if g is not None:
            want = (lat[i], lon[i], h[i], rng_m[i], az[i], el[i])
            if exact:
                assert np.array(g).tobytes() == np.array(want).tobytes(), i
            else:  # degrees, degrees, m, m, degrees, degrees
                assert_allclose(g, want, rtol=0, atol=1e-9, err_msg=str(i))


def _numpy_trig_is_libms() -> bool:
    """Whether NumPy's float64 sin, cos, tan, arctan and arctan2 give the C library's
    results (through Python's math) on a sample of this host."""
    import math
    x = np.random.default_rng(3).uniform(-4.0, 4.0, 20_000)
    y = np.random.default_rng(4).uniform(-4.0, 4.0, 20_000)
    pairs = ((np.sin, math.sin), (np.cos, math.cos), (np.tan, math.tan), (np.arctan, math.atan))
    if any(f(x).tobytes() != np.array([g(v) for v in x.tolist()]).tobytes() for f, g in pairs):
        return False
    return np.arctan2(y, x).tobytes() == np.array([math.atan2(b, a) for a, b in zip(x.tolist(), y.tolist())]).tobytes()
