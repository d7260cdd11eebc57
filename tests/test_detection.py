"""Detection: radar plots -> ENU detections with covariances, and clustering."""

from __future__ import annotations

import numpy as np
import pytest
from numpy.testing import assert_allclose

from towerd.detection.cluster import PointClusterer
from towerd.detection.plots import (
    UNKNOWN_ELEVATION_SIGMA_DEG,
    Detections,
    MeasurementNoise,
    PlotConverter,
    SensorMount,
)
from towerd.drivers.measurements import RadarPlots, empty_plots
from towerd.errors import ConfigError

NOISE = MeasurementNoise(range_sigma_m=2.0, azimuth_sigma_deg=0.5, elevation_sigma_deg=1.0)


def make_plots(range_m, azimuth_deg, elevation_deg, *, is_true=False, snr_db=np.nan, t_mono=5.0) -> RadarPlots:
    n = len(range_m)
    p = empty_plots(n)
    p["range_m"] = range_m
    p["azimuth_deg"] = azimuth_deg
    p["elevation_deg"] = elevation_deg
    p["azimuth_is_true"] = is_true
    p["snr_db"] = snr_db
    p["radial_vel_mps"] = np.arange(n, dtype=float)
    return RadarPlots(sensor="radar1", t_mono=t_mono, frame_number=7, plots=p)


def test_plot_to_enu_hand_computed():
    # Antenna 10 m up a mast, offset (1, 2); boresight due east, level.
    mount = SensorMount(position_enu_m=(1.0, 2.0, 10.0), boresight_azimuth_deg=90.0)
    det = PlotConverter(mount, NOISE).convert(make_plots([100.0, 200.0], [0.0, 30.0], [0.0, 10.0]))
    c10, s10 = np.cos(np.radians(10.0)), np.sin(np.radians(10.0))
    c30, s30 = np.cos(np.radians(30.0)), np.sin(np.radians(30.0))
    expected = np.array(
        [
            [1.0 + 100.0, 2.0, 10.0],  # straight along boresight: 100 m east
            # 30 deg clockwise of east (towards south-east), 10 deg up
            [1.0 + 200.0 * c10 * c30, 2.0 - 200.0 * c10 * s30, 10.0 + 200.0 * s10],
        ]
    )
    assert det.sensor == "radar1" and det.t_mono == 5.0 and len(det) == 2
    assert_allclose(det.pos_enu_m, expected, atol=1e-9)
    assert_allclose(det.radial_vel_mps, [0.0, 1.0])


def test_covariance_along_boresight():
    # Boresight east: range error along east, azimuth error across (north), elevation up.
    mount = SensorMount(position_enu_m=(0.0, 0.0, 0.0), boresight_azimuth_deg=90.0)
    r = 500.0
    det = PlotConverter(mount, NOISE).convert(make_plots([r], [0.0], [0.0]))
    expected = np.diag([2.0**2, (r * np.radians(0.5)) ** 2, (r * np.radians(1.0)) ** 2])
    assert_allclose(det.cov_enu_m2[0], expected, rtol=1e-12, atol=1e-9)


def test_covariance_matches_monte_carlo_with_tilt():
    """The linearised covariance agrees with the sample covariance of perturbed plots."""
    rng = np.random.default_rng(11)
    mount = SensorMount(position_enu_m=(3.0, -4.0, 25.0), boresight_azimuth_deg=217.0, tilt_deg=8.0)
    conv = PlotConverter(mount, NOISE)
    r0, az0, el0 = 800.0, -25.0, 6.0
    det = conv.convert(make_plots([r0], [az0], [el0]))
    n = 40_000
    samples = make_plots(
        r0 + rng.normal(0.0, NOISE.range_sigma_m, n),
        az0 + rng.normal(0.0, NOISE.azimuth_sigma_deg, n),
        el0 + rng.normal(0.0, NOISE.elevation_sigma_deg, n),
    )
    pts = conv.convert(samples).pos_enu_m
    sample_cov = np.cov(pts.T)
    scale = np.sqrt(np.outer(np.diag(sample_cov), np.diag(sample_cov)))
    assert_allclose(det.cov_enu_m2[0] / scale, sample_cov / scale, atol=0.03)
    # And the covariance is symmetric positive definite.
    assert_allclose(det.cov_enu_m2[0], det.cov_enu_m2[0].T, atol=0)
    assert np.all(np.linalg.eigvalsh(det.cov_enu_m2[0]) > 0)


def test_true_azimuth_rows_ignore_boresight():
    mount = SensorMount(position_enu_m=(1.0, 2.0, 10.0), boresight_azimuth_deg=90.0, tilt_deg=5.0)
    det = PlotConverter(mount, NOISE).convert(make_plots([100.0], [45.0], [0.0], is_true=True))
    h = 100.0 / np.sqrt(2.0)
    assert_allclose(det.pos_enu_m, [[1.0 + h, 2.0 + h, 10.0]], atol=1e-9)


@pytest.mark.parametrize("tilt_deg", [0.0, 7.0])
def test_nan_elevation_assumes_antenna_height(tilt_deg):
    mount = SensorMount(position_enu_m=(0.0, 0.0, 12.0), boresight_azimuth_deg=10.0, tilt_deg=tilt_deg)
    r = 1000.0
    det = PlotConverter(mount, NOISE).convert(make_plots([r, r], [0.0, 40.0], [np.nan, np.nan]))
    assert_allclose(det.pos_enu_m[:, 2], 12.0, atol=1e-9)
    assert_allclose(np.linalg.norm(det.pos_enu_m - [0.0, 0.0, 12.0], axis=1), r, rtol=1e-12)
    # On boresight the vertical sigma is the unknown-elevation sigma, not the radar's.
    if tilt_deg == 0.0:
        assert_allclose(np.sqrt(det.cov_enu_m2[0, 2, 2]), r * np.radians(UNKNOWN_ELEVATION_SIGMA_DEG), rtol=1e-12)


def test_non_finite_rows_dropped():
    mount = SensorMount(position_enu_m=(0.0, 0.0, 0.0), boresight_azimuth_deg=0.0)
    conv = PlotConverter(mount, NOISE)
    det = conv.convert(make_plots([100.0, np.nan, np.inf, 50.0], [0.0, 0.0, 0.0, np.nan], [0.0, 0.0, 0.0, 0.0]))
    assert len(det) == 1
    assert_allclose(det.pos_enu_m, [[0.0, 100.0, 0.0]], atol=1e-9)
    assert conv.dropped == 3
    assert len(conv.convert(make_plots([], [], []))) == 0


def test_bad_settings_rejected():
    with pytest.raises(ConfigError):
        MeasurementNoise(range_sigma_m=0.0, azimuth_sigma_deg=1.0, elevation_sigma_deg=1.0)
    with pytest.raises(ConfigError):
        SensorMount(position_enu_m=(0.0, 0.0), boresight_azimuth_deg=0.0)
    with pytest.raises(ConfigError):
        SensorMount(position_enu_m=(0.0, 0.0, 0.0), boresight_azimuth_deg=0.0, tilt_deg=120.0)


def make_detections(pos, snr_db=None, radial_vel=None, sigma_m=1.0) -> Detections:
    pos = np.asarray(pos, dtype=float)
    n = len(pos)
    return Detections(
        sensor="radar1",
        t_mono=1.0,
        pos_enu_m=pos,
        cov_enu_m2=np.broadcast_to(np.eye(3) * sigma_m**2, (n, 3, 3)).copy(),
        snr_db=np.full(n, np.nan) if snr_db is None else np.asarray(snr_db, dtype=float),
        radial_vel_mps=np.full(n, np.nan) if radial_vel is None else np.asarray(radial_vel, dtype=float),
    )


def test_clusterer_merges_one_target_and_keeps_two_apart():
    target_a = [[100.0, 50.0, 20.0], [101.0, 50.0, 20.0], [100.0, 51.0, 20.5]]
    target_b = [[140.0, 50.0, 20.0]]
    det = make_detections(target_a + target_b, snr_db=[10.0, 20.0, 10.0, 15.0], radial_vel=[1.0, 2.0, np.nan, 5.0])
    out = PointClusterer(extent_m=1.0).cluster(det)
    assert len(out) == 2
    a = np.argmin(out.pos_enu_m[:, 0])
    # Power weights 10, 100, 10 (linear SNR) -> centroid pulled to the strongest point.
    w = np.array([10.0, 100.0, 10.0]) / 120.0
    pts = np.array(target_a)
    centroid = w @ pts
    assert_allclose(out.pos_enu_m[a], centroid, atol=1e-12)
    assert_allclose(out.snr_db[a], 20.0)
    assert_allclose(out.radial_vel_mps[a], 1.5)  # mean of the known ones
    d = pts - centroid
    expected_cov = np.eye(3) * np.sum(w**2) + np.einsum("n,ni,nj->ij", w, d, d)
    assert_allclose(out.cov_enu_m2[a], expected_cov, atol=1e-12)
    # The lone point of target B is unchanged.
    b = 1 - a
    assert_allclose(out.pos_enu_m[b], target_b[0])
    assert_allclose(out.cov_enu_m2[b], np.eye(3), atol=1e-12)
    assert_allclose([out.snr_db[b], out.radial_vel_mps[b]], [15.0, 5.0])
    # Doppler spread: population std of the known radial velocities (1 and 2 m/s: 0.5);
    # unknown for a lone point.
    assert_allclose(out.doppler_spread_mps[a], 0.5)
    assert np.isnan(out.doppler_spread_mps[b])
    assert np.all(np.isnan(det.doppler_spread_mps))  # not given: unknown


def test_clusterer_is_transitive_and_uses_plain_mean_without_snr():
    # A chain: each link 6 m (d² = 36 / (2 + 2) = 9 <= 11.34: linked), ends 12 m apart
    # (d² = 36: not linked directly); all one cluster by single linkage.
    pos = [[0.0, 0.0, 0.0], [6.0, 0.0, 0.0], [12.0, 0.0, 0.0]]
    clusterer = PointClusterer(extent_m=1.0, gate_probability=0.99)
    assert clusterer.linked_pairs(make_detections(pos)).tolist() == [[0, 1], [1, 2]]
    out = clusterer.cluster(make_detections(pos, snr_db=[30.0, np.nan, 10.0]))
    assert len(out) == 1
    assert_allclose(out.pos_enu_m[0], [6.0, 0.0, 0.0], atol=1e-12)
    # Equal weights: mean covariance / n plus the spread.
    assert_allclose(out.cov_enu_m2[0], np.eye(3) / 3.0 + np.diag([24.0, 0.0, 0.0]), atol=1e-12)
    assert_allclose(out.snr_db[0], 30.0)
    assert np.isnan(out.radial_vel_mps[0])


def test_clusterer_disabled_or_nothing_to_merge():
    det = make_detections([[0.0, 0.0, 0.0], [1.0, 0.0, 0.0]])
    assert PointClusterer(enabled=False).cluster(det) is det
    assert len(PointClusterer(extent_m=1.0).cluster(det)) == 1
    # 7 m apart: d² = 49 / 4 = 12.25 > 11.34, separate targets.
    apart = make_detections([[0.0, 0.0, 0.0], [7.0, 0.0, 0.0]])
    assert len(PointClusterer(extent_m=1.0).cluster(apart)) == 2
    empty = Detections.empty("radar1", 0.0)
    assert len(PointClusterer(extent_m=1.0).cluster(empty)) == 0


def test_clusterer_merges_by_uncertainty_not_by_fixed_distance():
    # The same 5 m separation: two separate targets where the plots are precise (0.5 m),
    # one target where angular noise at long range makes them 4 m uncertain.
    pos = [[0.0, 0.0, 0.0], [5.0, 0.0, 0.0]]
    clusterer = PointClusterer(extent_m=0.5)
    assert len(clusterer.cluster(make_detections(pos, sigma_m=0.5))) == 2
    assert len(clusterer.cluster(make_detections(pos, sigma_m=4.0))) == 1


def test_clusterer_scales_to_a_point_cloud():
    rng = np.random.default_rng(5)
    centres = rng.uniform(-2000.0, 2000.0, size=(300, 3))
    separation = np.linalg.norm(centres[:, None, :] - centres[None, :, :], axis=2) + np.eye(300) * 1e9
    assert separation.min() > 10.0  # the scene has no two targets within merging distance
    pos = np.repeat(centres, 10, axis=0) + rng.normal(0.0, 0.3, size=(3000, 3))
    out = PointClusterer(extent_m=0.3).cluster(make_detections(pos, snr_db=rng.uniform(5, 30, 3000), sigma_m=0.3))
    assert len(out) == 300
    nearest = np.min(np.linalg.norm(out.pos_enu_m[:, None, :] - centres[None, :, :], axis=2), axis=1)
    assert np.all(nearest < 1.0)


def test_cartesian_points_are_placed_as_their_spherical_form():
    """A radar that measures Cartesian points (TI) is placed without the round trip through
    range/azimuth/elevation, to the same positions and covariances (on the vertical axis
    too, where the azimuth is undefined)."""
    from towerd.drivers.measurements import CARTESIAN_PLOT_DTYPE

    rng = np.random.default_rng(1)
    n = 200
    c = np.zeros(n, CARTESIAN_PLOT_DTYPE)
    c["x_m"], c["y_m"], c["z_m"] = rng.uniform(-100, 100, n), rng.uniform(-100, 150, n), rng.uniform(-30, 60, n)
    c["x_m"][:3] = c["y_m"][:3] = 0.0  # straight above, below, at the antenna
    c["z_m"][2] = 0.0
    c["y_m"][3] = 0.0  # on the x axis
    c["radial_vel_mps"], c["snr_db"] = rng.normal(0, 3, n), rng.uniform(5, 30, n)
    for tilt in (0.0, 7.0):
        conv = PlotConverter(SensorMount((1.0, 2.0, 10.0), 33.0, tilt), MeasurementNoise(0.5, 1.0, 2.0))
        reading = RadarPlots("radar1", 1.0, 1, cartesian=c)
        got = conv.convert(reading)
        want = conv.convert(RadarPlots("radar1", 1.0, 1, plots=reading.plots))
        assert_allclose(got.pos_enu_m, want.pos_enu_m, rtol=1e-12, atol=1e-9)
        assert_allclose(got.cov_enu_m2, want.cov_enu_m2, rtol=1e-9, atol=1e-9)
        assert_allclose(got.radial_vel_mps, want.radial_vel_mps)
        assert_allclose(got.snr_db, want.snr_db)


def test_components_number_clusters_as_scipy_does():
    """The clusterer's connected components (no sparse matrix) equal scipy's, numbering
    included, on random graphs: chains, loops, isolated nodes, repeated edges."""
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    from towerd.assignment import components

    rng = np.random.default_rng(0)
    for _ in range(500):
        n, m = int(rng.integers(1, 60)), int(rng.integers(0, 80))
        pairs = rng.integers(0, n, (m, 2))
        want = connected_components(coo_matrix((np.ones(m), (pairs[:, 0], pairs[:, 1])), shape=(n, n)),
                                    directed=False)
        got = components(pairs[:, 0], pairs[:, 1], n)
        assert got[0] == want[0] and np.array_equal(got[1], want[1])
    chain = np.column_stack([np.arange(39, 0, -1), np.arange(38, -1, -1)])  # 39-38-...-0
    assert components(chain[:, 0], chain[:, 1], 40)[0] == 1


@pytest.mark.parametrize("chunk", [1 << 18, 64])
def test_linked_pairs_equal_those_of_a_kd_tree_search(monkeypatch, chunk):
    """The brute-force neighbour search (in blocks of rows when the cloud is large: a
    64-element block forces many) links the pairs the k-d tree search it replaced links:
    candidates from cKDTree.query_pairs within the frame's largest possible radius, then
    the same Mahalanobis gate."""
    from scipy.spatial import cKDTree

    from towerd.detection import cluster

    monkeypatch.setattr(cluster, "CHUNK_ELEMENTS", chunk)
    rng = np.random.default_rng(3)
    clusterer = PointClusterer(extent_m=0.7)
    linked = 0
    for n in (2, 3, 17, 50, 240):
        pos = rng.uniform(-40.0, 40.0, (n, 3))
        A = rng.normal(0.0, rng.uniform(0.2, 3.0), (n, 3, 3))
        det = make_detections(pos)
        det = Detections(det.sensor, det.t_mono, pos, A @ np.swapaxes(A, 1, 2) + 0.01 * np.eye(3), det.snr_db,
                         det.radial_vel_mps)
        lam = float(np.linalg.eigvalsh(det.cov_enu_m2)[:, -1].max())
        radius = np.sqrt(clusterer.gate * (2.0 * lam + 2.0 * 0.7**2)) * (1.0 + 1e-9)
        cand = cKDTree(pos).query_pairs(radius, output_type="ndarray")
        d = pos[cand[:, 0]] - pos[cand[:, 1]]
        S = det.cov_enu_m2[cand[:, 0]] + det.cov_enu_m2[cand[:, 1]] + 2.0 * 0.7**2 * np.eye(3)
        d2 = np.einsum("mi,mi->m", d, np.linalg.solve(S, d[..., None])[..., 0])
        want = sorted(map(tuple, cand[d2 <= clusterer.gate].tolist()))
        got = clusterer.linked_pairs(det).tolist()
        assert got == [list(p) for p in want]
        linked += len(got)
    assert linked > 20  # the scenes do link pairs


def test_clustering_imports_no_scipy_spatial():
    """Detection needs no k-d tree (scipy.spatial and what it loads: ~20 MiB); fresh interpreter."""
    import json
    import subprocess
    import sys

    code = ("import sys, json, numpy as np\n"
            "from towerd.detection.cluster import PointClusterer\n"
            "from towerd.detection.plots import Detections\n"
            "n = 30\n"
            "pos = np.random.default_rng(1).uniform(0, 20, (n, 3))\n"
            "det = Detections('r', 0.0, pos, np.tile(np.eye(3), (n, 1, 1)), np.full(n, 10.0), np.zeros(n))\n"
            "assert len(PointClusterer().cluster(det)) < n\n"
            "print(json.dumps(sorted(m for m in sys.modules if m.startswith('scipy'))))\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    loaded = json.loads(done.stdout.strip().splitlines()[-1])
    assert "scipy.special" in loaded  # (chi2_quantile) the probe sees scipy modules
    assert [m for m in loaded if m.split(".")[1:2] and m.split(".")[1] in ("spatial", "optimize", "linalg", "sparse")] == []


def test_merging_a_frame_of_known_rows_gives_the_general_merges_floats():
    """Frames whose every row has SNR, radial speed, its variance and height (TI's) take the
    short merge; it must give the general merge's detections to the bit."""
    from towerd.assignment import components
    from towerd.detection.cluster import _merge, _merge_known

    rng = np.random.default_rng(11)
    clusterer = PointClusterer(extent_m=1.0)
    merged = 0
    for n in (2, 5, 30, 64):
        pos = rng.uniform(-30.0, 30.0, (n, 3))
        A = rng.normal(0.0, rng.uniform(0.1, 2.0), (n, 3, 3))
        det = Detections("r", 1.0, pos, A @ np.swapaxes(A, 1, 2) + 0.01 * np.eye(3), rng.uniform(3.0, 30.0, n),
                         rng.normal(0.0, 5.0, n), radial_vel_var_mps2=rng.uniform(0.01, 1.0, n),
                         sensor_pos_enu_m=np.array([1.0, 2.0, 3.0]))
        pairs = clusterer.linked_pairs(det)
        k, labels = components(pairs[:, 0], pairs[:, 1], n)
        fast, general = _merge_known(det, k, labels), _merge(det, k, labels)
        for name in ("pos_enu_m", "cov_enu_m2", "snr_db", "radial_vel_mps", "doppler_spread_mps",
                     "radial_vel_var_mps2", "sensor_pos_enu_m", "height_measured"):
            assert getattr(fast, name).tobytes() == getattr(general, name).tobytes(), name
        merged += n - k
    assert merged > 5  # the frames do merge rows


def test_rotated_covariance_gives_the_einsums_floats():
    """The Cartesian converter's covariance, written out term by term, equals the two
    einsums it replaced to the bit (signed zeros included: an untilted mount's rotation
    has exact zeros)."""
    from towerd import geo
    from towerd.detection.plots import _rotated_covariance

    rng = np.random.default_rng(12)
    for azimuth, tilt in ((0.0, 0.0), (90.0, 0.0), (33.0, 7.0), (181.0, -12.0)):
        rot = geo.mount_rotation(azimuth, tilt)
        jac = rng.normal(size=(40, 3, 3)) * rng.choice([1e-3, 1.0, 1e3], size=(40, 3, 3))
        jac[rng.random((40, 3, 3)) < 0.2] = 0.0
        jac[rng.random((40, 3, 3)) < 0.1] = -0.0
        var = np.array([0.25, np.radians(1.0) ** 2, np.radians(2.0) ** 2])
        rj = np.einsum("ij,njk->nik", rot, jac)
        cov = np.einsum("nik,k,njk->nij", rj, var, rj)
        want = 0.5 * (cov + np.swapaxes(cov, -1, -2))
        assert _rotated_covariance(rot, np.ascontiguousarray(jac.transpose(1, 2, 0)), var).tobytes() == want.tobytes()


def _reference_links(clusterer: PointClusterer, det: Detections) -> list[tuple[int, int]]:
    """The Mahalanobis gate as one LAPACK solve per candidate pair decides it (the
    clusterer's reference): candidates from the same block, the same floats."""
    from towerd.detection.cluster import _near_block

    cov = det.cov_enu_m2
    reach = (clusterer.gate * (1.0 + 1e-9)) * (cov.reshape(-1, 9)[:, ::4].sum(axis=1) + clusterer.extent_m**2)
    i, j, diff = _near_block(det.pos_enu_m, reach)
    d = diff.T
    S = cov.take(i, 0) + cov.take(j, 0) + 2.0 * clusterer.extent_m**2 * np.eye(3)
    keep = np.einsum("mi,mi->m", d, np.linalg.solve(S, d[..., None])[..., 0]) <= clusterer.gate
    return sorted(zip(i[keep].tolist(), j[keep].tolist()))


def test_gate_links_the_pairs_the_solve_links_on_the_boundary_too(monkeypatch):
    """The adjugate gate decides every pair as the per-pair solve does: in ordinary
    frames without calling the solve at all, and for pairs placed on the gate's boundary
    (d² = γ to a few ulps, where the two could round apart) by falling back to it."""
    rng = np.random.default_rng(21)
    clusterer = PointClusterer(extent_m=0.7)
    solves = []
    solve = np.linalg.solve
    monkeypatch.setattr(np.linalg, "solve", lambda a, b: solves.append(len(a)) or solve(a, b))
    linked = 0
    for n in (2, 9, 40, 120):
        pos = rng.uniform(-20.0, 20.0, (n, 3))
        A = rng.normal(0.0, rng.uniform(0.1, 3.0), (n, 3, 3))
        cov = A @ np.swapaxes(A, 1, 2) + 0.01 * np.eye(3)
        det = Detections("r", 0.0, pos, 0.5 * (cov + np.swapaxes(cov, 1, 2)), np.full(n, 10.0), np.zeros(n))
        want = _reference_links(clusterer, det)
        solves.clear()
        got = sorted(map(tuple, clusterer.linked_pairs(det).tolist()))
        assert got == want
        assert solves == []  # no pair near the boundary: decided without a solve
        linked += len(got)
    assert linked > 10
    # Pairs on the boundary: p₁ = p₀ + t u with t² uᵀ S⁻¹ u = γ.
    on_boundary = 0
    for _ in range(30):
        A = rng.normal(0.0, rng.uniform(0.1, 3.0), (2, 3, 3))
        cov = A @ np.swapaxes(A, 1, 2) + 0.01 * np.eye(3)
        cov = 0.5 * (cov + np.swapaxes(cov, 1, 2))
        u = rng.normal(size=3)
        S = cov[0] + cov[1] + 2.0 * 0.7**2 * np.eye(3)
        t = np.sqrt(clusterer.gate / (u @ np.linalg.solve(S, u)))
        pos = np.array([[1.0, 2.0, 3.0], [1.0, 2.0, 3.0] + t * u])
        det = Detections("r", 0.0, pos, cov, np.full(2, 10.0), np.zeros(2))
        want = _reference_links(clusterer, det)
        solves.clear()
        assert sorted(map(tuple, clusterer.linked_pairs(det).tolist())) == want
        assert solves == [1]  # too close to call: the reference decided
        on_boundary += len(want)
    assert 0 < on_boundary < 30  # the boundary pairs fall on both sides


def test_constant_columns_are_shared_read_only_views():
    """A Cartesian frame's constant columns (no Doppler spread, heights measured, the
    antenna) are read-only views of shared arrays, right for any frame size."""
    from towerd.drivers.measurements import CARTESIAN_PLOT_DTYPE

    conv = PlotConverter(SensorMount((1.0, 2.0, 10.0), 33.0), MeasurementNoise(0.5, 1.0, 2.0))
    for n in (3, 700, 5):
        c = np.zeros(n, CARTESIAN_PLOT_DTYPE)
        c["y_m"], c["snr_db"] = np.arange(1.0, n + 1.0), 10.0
        det = conv.convert(RadarPlots("radar1", 1.0, 1, cartesian=c))
        assert det.doppler_spread_mps.shape == det.height_measured.shape == (n,)
        assert np.isnan(det.doppler_spread_mps).all() and det.height_measured.all()
        assert det.sensor_pos_enu_m.tolist() == [1.0, 2.0, 10.0]
        for column in (det.doppler_spread_mps, det.height_measured, det.sensor_pos_enu_m):
            with pytest.raises(ValueError):
                column[0] = 0


@pytest.mark.parametrize("n", [1, 2, 3])
def test_rotated_covariance_gives_the_einsums_floats_for_tiny_frames(n):
    """As above for frames of one to three points, whose axes NumPy may lay out differently."""
    from towerd import geo
    from towerd.detection.plots import _rotated_covariance

    rng = np.random.default_rng(n)
    for azimuth, tilt in ((0.0, 0.0), (90.0, 0.0), (33.0, 7.0)):
        rot = geo.mount_rotation(azimuth, tilt)
        for _ in range(50):
            jac = rng.normal(size=(n, 3, 3)) * rng.choice([1e-3, 1.0, 1e3], size=(n, 3, 3))
            jac[rng.random((n, 3, 3)) < 0.3] = 0.0
            jac[rng.random((n, 3, 3)) < 0.2] = -0.0
            var = np.array([0.25, np.radians(1.0) ** 2, np.radians(2.0) ** 2])
            rj = np.einsum("ij,njk->nik", rot, jac)
            cov = np.einsum("nik,k,njk->nij", rj, var, rj)
            want = 0.5 * (cov + np.swapaxes(cov, -1, -2))
            got = _rotated_covariance(rot, np.ascontiguousarray(jac.transpose(1, 2, 0)), var)
            assert got.tobytes() == want.tobytes()
