"""Tracking: CV model, batched Kalman filter, gated GNN association, M-of-N initiation,
deletion, and the tracker on a simulated radar scene with clutter."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pytest
from numpy.testing import assert_allclose

from towerd import geo
from towerd.clock import ManualClock
from towerd.detection.plots import Detections, MeasurementNoise, PlotConverter, SensorMount
from towerd.drivers.measurements import RadarPlots, empty_plots
from towerd.errors import ConfigError
from towerd.icd import Status
from towerd.reports.tracks import TrackReporter
from towerd.tracking.associator import GnnAssociator
from towerd.tracking.deleter import MissDeleter
from towerd.tracking.initiator import MofNInitiator
from towerd.tracking.models import ConstantVelocity
from towerd.tracking.predictor import KalmanPredictor
from towerd.tracking.state import TrackTable
from towerd.tracking.compose import build_tracker
from tracker_settings import tracker_settings
from towerd.tracking.tracker import Tracker
from towerd.tracking.updater import KalmanUpdater


def random_spd(rng: np.random.Generator, k: int, d: int, scale: float = 1.0) -> np.ndarray:
    a = rng.normal(size=(k, d, d))
    return scale * (a @ np.swapaxes(a, -1, -2) + d * np.eye(d))


# --- model ---------------------------------------------------------------------------


def test_constant_velocity_F_and_Q_values():
    model = ConstantVelocity(accel_noise_mps2=2.0)  # q = 4 m²/s³
    dt = 0.5
    I3, Z3 = np.eye(3), np.zeros((3, 3))
    assert_allclose(model.F(dt), np.block([[I3, 0.5 * I3], [Z3, I3]]), atol=0)
    q = 4.0
    expected_q = q * np.block([[dt**3 / 3 * I3, dt**2 / 2 * I3], [dt**2 / 2 * I3, dt * I3]])
    assert_allclose(model.Q(dt), expected_q, rtol=1e-15)
    assert_allclose(model.Q(dt)[0, 0], 4.0 * 0.125 / 3.0)
    assert_allclose(model.Q(dt)[3, 3], 2.0)  # velocity variance grows by q dt
    # Batched dt gives the stacked matrices.
    dts = np.array([0.0, 0.5, 2.0])
    assert_allclose(model.F(dts), np.stack([model.F(d) for d in dts]))
    assert_allclose(model.Q(dts), np.stack([model.Q(d) for d in dts]))
    assert_allclose(model.Q(0.0), np.zeros((6, 6)), atol=0)


# --- Kalman filter -------------------------------------------------------------------


def test_kalman_filter_converges_on_constant_velocity_target():
    rng = np.random.default_rng(3)
    predictor = KalmanPredictor(ConstantVelocity(accel_noise_mps2=0.5))
    updater = KalmanUpdater()
    sigma = 5.0
    R = np.eye(3)[None] * sigma**2
    v_true = np.array([10.0, -5.0, 1.0])
    p0 = np.array([100.0, 200.0, 50.0])
    dt = 0.1
    x = np.concatenate([p0 + rng.normal(0, sigma, 3), np.zeros(3)])[None]
    P = np.diag([sigma**2] * 3 + [20.0**2] * 3)[None]
    pos_err, vel_err, nees = [], [], []
    for k in range(1, 301):
        truth = np.concatenate([p0 + v_true * k * dt, v_true])
        x, P = predictor.predict(x, P, np.array([dt]))
        z = (truth[:3] + rng.normal(0, sigma, 3))[None]
        x, P = updater.update(x, P, z, R)
        err = x[0] - truth
        pos_err.append(np.linalg.norm(err[:3]))
        vel_err.append(np.linalg.norm(err[3:]))
        nees.append(err @ np.linalg.solve(P[0], err))
    late = slice(200, 300)
    # Measurements have 5 m per axis (8.7 m RMS in 3D); the filtered position is far better
    # (steady state: sqrt(trace P_pos) = 2.4 m, sqrt(trace P_vel) = 1.4 m/s).
    rms_pos = np.sqrt(np.mean(np.square(pos_err[late])))
    assert rms_pos < 0.35 * sigma * np.sqrt(3.0)
    assert np.sqrt(np.mean(np.square(vel_err[late]))) < 2.0
    assert np.linalg.norm(x[0, 3:] - v_true) < 3.0
    # The filter is consistent: mean NEES near the state dimension (6).
    assert 3.0 < np.mean(nees[late]) < 9.0


def test_batched_predict_and_update_equal_per_track_loop():
    rng = np.random.default_rng(4)
    k = 7
    predictor = KalmanPredictor(ConstantVelocity(accel_noise_mps2=1.5))
    updater = KalmanUpdater()
    x = rng.normal(0, 100, size=(k, 6))
    P = random_spd(rng, k, 6, 3.0)
    dt = rng.uniform(0.0, 2.0, k)
    z = x[:, :3] + rng.normal(0, 5, size=(k, 3))
    R = random_spd(rng, k, 3, 2.0)

    xp, Pp = predictor.predict(x, P, dt)
    xu, Pu = updater.update(xp, Pp, z, R)
    for i in range(k):
        xpi, Ppi = predictor.predict(x[i : i + 1], P[i : i + 1], dt[i : i + 1])
        assert_allclose(xpi[0], xp[i], rtol=1e-12)
        assert_allclose(Ppi[0], Pp[i], rtol=1e-12)
        # Independent textbook computation for the update.
        F, Q = predictor.model.F(dt[i]), predictor.model.Q(dt[i])
        assert_allclose(F @ x[i], xp[i], rtol=1e-12)
        assert_allclose(F @ P[i] @ F.T + Q, Pp[i], rtol=1e-12)
        H = np.hstack([np.eye(3), np.zeros((3, 3))])
        S = H @ Pp[i] @ H.T + R[i]
        K = Pp[i] @ H.T @ np.linalg.inv(S)
        assert_allclose(xp[i] + K @ (z[i] - H @ xp[i]), xu[i], rtol=1e-9)
        assert_allclose((np.eye(6) - K @ H) @ Pp[i], Pu[i], rtol=1e-8, atol=1e-9)


def test_joseph_update_keeps_covariance_symmetric_positive_definite():
    rng = np.random.default_rng(5)
    updater = KalmanUpdater()
    k = 50
    # A fresh, very uncertain track meets a very precise detection, many times over.
    x = rng.normal(0, 10, size=(k, 6))
    P = random_spd(rng, k, 6, 1e6)
    R = np.broadcast_to(np.eye(3) * 1e-6, (k, 3, 3))
    for _ in range(20):
        x, P = updater.update(x, P, x[:, :3] + rng.normal(0, 1e-3, size=(k, 3)), R)
        assert_allclose(P, np.swapaxes(P, -1, -2), atol=0)
        assert np.all(np.linalg.eigvalsh(P) > 0)
    # Position variance cannot be below what the measurements give.
    assert np.all(np.diagonal(P, axis1=1, axis2=2)[:, :3] < 1e-6)


# --- association ---------------------------------------------------------------------


def tracks_at(positions, pos_var=8.0):
    positions = np.asarray(positions, dtype=float)
    k = len(positions)
    x = np.hstack([positions, np.zeros((k, 3))])
    P = np.broadcast_to(np.diag([pos_var] * 3 + [1.0] * 3), (k, 6, 6)).copy()
    return x, P


def test_associator_gates_out_far_detection():
    assoc = GnnAssociator(gate_probability=0.999)
    assert_allclose(assoc.gate, 16.2662361962381, rtol=1e-9)
    x, P = tracks_at([[0.0, 0.0, 0.0]])  # S = 16 I with R = 8 I: d² = |y|² / 16
    R = np.broadcast_to(np.eye(3) * 8.0, (2, 3, 3))
    ti, di = assoc.associate(x, P, np.array([[1000.0, 0.0, 0.0], [17.0, 0.0, 0.0]]), R)
    assert ti.size == 0 and di.size == 0  # 17 m: d² = 18.06 > 16.27
    ti, di = assoc.associate(x, P, np.array([[1000.0, 0.0, 0.0], [15.0, 0.0, 0.0]]), R)
    assert ti.tolist() == [0] and di.tolist() == [1]  # 15 m: d² = 14.06 inside


def test_associator_resolves_ambiguity_to_global_best():
    # Tracks at 0 and 10 m, detections at 7 and 14 m; S = 16 I.
    # Greedy nearest-first takes (T1, D0) (3 m) and leaves T0 with D1 at 14 m (d² 12.25).
    # Global: (T0, D0) + (T1, D1) = 49/16 + 16/16 = 4.06 < (T1, D0) + (T0, D1) = 12.81.
    assoc = GnnAssociator()
    x, P = tracks_at([[0.0, 0.0, 0.0], [10.0, 0.0, 0.0]])
    z = np.array([[7.0, 0.0, 0.0], [14.0, 0.0, 0.0]])
    R = np.broadcast_to(np.eye(3) * 8.0, (2, 3, 3))
    ti, di = assoc.associate(x, P, z, R)
    assert ti.tolist() == [0, 1] and di.tolist() == [0, 1]
    # And a miss competes with a poor hit: one detection between two tracks goes to the nearer.
    ti, di = assoc.associate(x, P, z[:1], R[:1])
    assert ti.tolist() == [1] and di.tolist() == [0]


def test_associator_established_track_keeps_its_detection():
    # A confirmed track (tight covariance) and a fresh tentative one (wide velocity
    # covariance) both gate one detection; by d² alone the tentative track is "nearer".
    assoc = GnnAssociator()
    x, P = tracks_at([[0.0, 0.0, 0.0], [3.0, 0.0, 0.0]], pos_var=4.0)
    P[1, :3, :3] = np.eye(3) * 60.0
    z = np.array([[6.0, 0.0, 0.0]])
    R = np.eye(3)[None] * 4.0
    d2 = assoc.mahalanobis2(x, P, z, R, np.array([0, 1]), np.array([0, 0]))
    assert d2[0] < assoc.gate and d2[1] < d2[0]
    ti, di = assoc.associate(x, P, z, R)
    assert ti.tolist() == [1]
    ti, di = assoc.associate(x, P, z, R, established=np.array([True, False]))
    assert ti.tolist() == [0] and di.tolist() == [0]


def test_associator_radius_pregate_equals_all_pairs():
    rng = np.random.default_rng(6)
    k, n = 150, 220
    x, _ = tracks_at(rng.uniform(-3000, 3000, size=(k, 3)))
    P = random_spd(rng, k, 6, 4.0)
    z = np.vstack([x[:100, :3] + rng.normal(0, 4, size=(100, 3)), rng.uniform(-3000, 3000, size=(n - 100, 3))])
    R = random_spd(rng, n, 3, 3.0)
    dense = GnnAssociator(pregate_min_pairs=10**9).associate(x, P, z, R)
    tree = GnnAssociator(pregate_min_pairs=0).associate(x, P, z, R)
    assert len(dense[0]) >= 95
    assert_allclose(tree[0], dense[0])
    assert_allclose(tree[1], dense[1])
    # Each detection is used at most once.
    assert len(np.unique(dense[1])) == len(dense[1])


def test_associator_empty_inputs():
    assoc = GnnAssociator()
    x, P = tracks_at([[0.0, 0.0, 0.0]])
    ti, di = assoc.associate(x, P, np.zeros((0, 3)), np.zeros((0, 3, 3)))
    assert ti.size == 0 and di.size == 0
    ti, di = assoc.associate(np.zeros((0, 6)), np.zeros((0, 6, 6)), np.zeros((2, 3)), np.ones((2, 3, 3)))
    assert ti.size == 0 and di.size == 0


# --- initiation and deletion ---------------------------------------------------------


def one_detection(t: float, pos=(0.0, 0.0, 0.0), sigma_m: float = 2.0) -> Detections:
    return Detections(
        "radar1", t, np.array([pos], dtype=float), np.eye(3)[None] * sigma_m**2, np.array([np.nan]), np.array([np.nan])
    )


def test_initiator_initial_state_and_m_of_n():
    init = MofNInitiator(confirm_hits=3, confirm_window=5, initial_velocity_sigma_mps=15.0)
    det = Detections(
        "radar1", 2.5, np.array([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]]), np.stack([np.eye(3) * 4.0, np.eye(3) * 9.0]),
        np.zeros(2), np.zeros(2),
    )
    new = init.initiate(det, np.array([1]), first_id=40)
    assert new.track_id.tolist() == [40] and new.status.tolist() == [Status.TENTATIVE]
    assert_allclose(new.state[0], [4.0, 5.0, 6.0, 0.0, 0.0, 0.0])
    assert_allclose(new.cov[0], np.diag([9.0] * 3 + [225.0] * 3))
    assert new.hits[0] == 1 and new.hit_history[0] == 1 and new.t_created[0] == 2.5

    tab = TrackTable.concatenate([init.initiate(det, np.array([0]), first_id=1)] * 4)
    tab.hit_history[:] = [0b10101, 0b100011, 0b111, 0b1011]
    tab.status[3] = Status.CONFIRMED
    assert init.window_hits(tab).tolist() == [3, 2, 3, 3]
    assert init.to_confirm(tab).tolist() == [True, False, True, False]  # [3] is already confirmed
    with pytest.raises(ConfigError):
        MofNInitiator(confirm_hits=6, confirm_window=5)


def test_deleter_rules():
    deleter = MissDeleter(tentative_max_misses=2, confirmed_max_coast_s=3.0)
    tab = TrackTable.concatenate([MofNInitiator().initiate(one_detection(0.0), np.array([0]), 1)] * 4)
    tab.status[:] = [Status.TENTATIVE, Status.TENTATIVE, Status.CONFIRMED, Status.COASTING]
    tab.misses[:] = [2, 3, 10, 10]
    tab.t_last_update[:] = [9.0, 9.0, 7.0, 6.5]
    assert deleter.to_drop(tab, 10.0).tolist() == [False, True, False, False]
    assert deleter.to_end(tab, 10.0).tolist() == [False, False, False, True]  # 3.0 s is not longer than 3.0
    assert deleter.to_drop(tab, 12.5).tolist() == [True, True, False, False]  # stale tentative
    assert deleter.to_end(tab, 10.01).tolist() == [False, False, True, True]


def make_tracker(**kw) -> Tracker:
    args = dict(accel_noise_mps2=2.0, gate_probability=0.999, confirm_hits=3, confirm_window=5,
                tentative_max_misses=2, confirmed_max_coast_s=3.0)
    args.update(kw)
    return build_tracker(tracker_settings(**args))


def test_tracker_status_life_cycle():
    tracker = make_tracker()
    statuses = []
    for k in range(8):
        det = one_detection(0.1 * k, (10.0 + k, 0.0, 0.0)) if k not in (4, 6) else Detections.empty("radar1", 0.1 * k)
        update = tracker.step(det)
        assert len(update.tracks) == 1 and update.tracks.track_id[0] == 1
        statuses.append(int(update.tracks.status[0]))
    T, C, K = Status.TENTATIVE, Status.CONFIRMED, Status.COASTING
    assert statuses == [T, T, C, C, K, C, K, C]
    assert tracker.tracks.hits[0] == 6 and tracker.tracks.misses[0] == 0
    assert_allclose(tracker.tracks.t_mono[0], 0.7)
    # The handed-out table is read-only.
    with pytest.raises(ValueError):
        tracker.tracks.state[0, 0] = 0.0


def test_tracker_coasts_only_after_coast_after_s_without_measurement():
    # 10 Hz frames; single misses (k = 4, 6) are normal radar behaviour and must not flip
    # the status; three in a row (0.3 s > 0.25 s) make the track COASTING.
    tracker = make_tracker(coast_after_s=0.25)
    missing = {4, 6, 9, 10, 11}
    statuses = []
    for k in range(13):
        pos = (10.0 + k, 0.0, 0.0)
        det = Detections.empty("radar1", 0.1 * k) if k in missing else one_detection(0.1 * k, pos)
        statuses.append(int(tracker.step(det).tracks.status[0]))
    T, C, K = Status.TENTATIVE, Status.CONFIRMED, Status.COASTING
    assert statuses == [T, T, C, C, C, C, C, C, C, C, C, K, C]
    # expire() applies the same rule when no frames arrive at all.
    update = tracker.expire(1.2 + 0.26)
    assert update.tracks.status.tolist() == [K]
    with pytest.raises(ConfigError):
        make_tracker(coast_after_s=3.0)  # must be below confirmed_max_coast_s


def test_second_return_of_a_tracked_target_starts_no_duplicate_track():
    # Each frame the target gives a second detection 6 m away (a different scatterer, not
    # merged by clustering). Once the target's track is established, that leftover lies
    # inside its gate and must not start a track that would be confirmed as a duplicate.
    tracker = make_tracker()
    for k in range(30):
        t = 0.1 * k
        centre = np.array([100.0 + 5.0 * t, 50.0, 20.0])
        pos = [centre] if k < 3 else [centre, centre + [0.0, 0.0, 6.0]]
        det = Detections("radar1", t, np.array(pos), np.broadcast_to(np.eye(3) * 4.0, (len(pos), 3, 3)).copy(),
                         np.full(len(pos), np.nan), np.full(len(pos), np.nan))
        update = tracker.step(det)
    confirmed = update.tracks.rows_with_status(Status.CONFIRMED, Status.COASTING)
    assert np.count_nonzero(confirmed) == 1
    assert tracker.next_track_id == 2  # not even a tentative track was started


def test_tracker_end_all_ends_every_track_and_keeps_ids_unique():
    tracker = make_tracker()
    for k in range(4):
        tracker.step(one_detection(0.1 * k, (10.0 + k, 0.0, 0.0)))
    update = tracker.end_all(0.5)
    assert update.ended.track_id.tolist() == [1] and update.ended.status.tolist() == [Status.ENDED]
    assert len(update.tracks) == 0 and len(tracker.tracks) == 0
    assert tracker.step(one_detection(0.6)).tracks.track_id.tolist() == [2]


def test_tracker_tentative_track_dropped_after_misses_and_ids_not_reused():
    tracker = make_tracker()
    update = tracker.step(one_detection(0.0, (500.0, 0.0, 0.0)))
    assert update.tracks.track_id.tolist() == [1]
    for k in range(1, 3):
        assert len(tracker.step(Detections.empty("radar1", 0.1 * k)).tracks) == 1
    update = tracker.step(Detections.empty("radar1", 0.3))  # third consecutive miss
    assert len(update.tracks) == 0
    assert update.ended.track_id.tolist() == [1] and update.ended.status.tolist() == [Status.ENDED]
    update = tracker.step(one_detection(0.4, (500.0, 0.0, 0.0)))
    assert update.tracks.track_id.tolist() == [2]


def test_tracker_expire_drops_stale_tentative_without_detections():
    tracker = make_tracker(confirmed_max_coast_s=1.0)
    tracker.step(one_detection(0.0))
    assert len(tracker.expire(1.0).tracks) == 1
    update = tracker.expire(1.01)
    assert len(update.tracks) == 0 and update.ended.track_id.tolist() == [1]
    assert len(tracker.expire(2.0).ended) == 0


def test_tracker_older_frame_is_clamped_not_retrodicted():
    tracker = make_tracker()
    tracker.step(one_detection(1.0, (0.0, 0.0, 0.0)))
    update = tracker.step(one_detection(0.9, (1.0, 0.0, 0.0)))
    assert_allclose(update.tracks.t_mono, [1.0])
    assert update.tracks.hits[0] == 2
    assert np.all(np.linalg.eigvalsh(update.tracks.cov[0]) > 0)


def test_build_tracker_rejects_bad_settings():
    with pytest.raises(ConfigError):
        make_tracker(confirm_hits=4, confirm_window=3)
    with pytest.raises(ConfigError):
        make_tracker(gate_probability=1.0)
    with pytest.raises(ConfigError):
        make_tracker(confirmed_max_coast_s=0.0)
    with pytest.raises(ConfigError):
        make_tracker(accel_noise_mps2=-1.0)


# --- the tracker on a simulated scene ------------------------------------------------


@dataclass
class Target:
    p0: np.ndarray  # ENU metres at t = 0
    v: np.ndarray  # ENU m/s
    t_end: float  # last time it is visible

    def at(self, t: float) -> np.ndarray:
        return self.p0 + self.v * t


MOUNT = SensorMount(position_enu_m=(0.0, 0.0, 15.0), boresight_azimuth_deg=45.0, tilt_deg=3.0)
NOISE = MeasurementNoise(range_sigma_m=2.0, azimuth_sigma_deg=0.4, elevation_sigma_deg=1.0)


def simulate_frame(rng, t, targets, frame, p_detect=0.95, clutter_rate=4.0) -> RadarPlots:
    """Radar plots in the sensor frame: noisy target returns plus uniform clutter."""
    rot = geo.mount_rotation(MOUNT.boresight_azimuth_deg, MOUNT.tilt_deg)
    rows = []
    for tgt in targets:
        if t <= tgt.t_end and rng.random() < p_detect:
            s = rot.T @ (tgt.at(t) - np.array(MOUNT.position_enu_m))
            r, az, el = geo.cartesian_to_spherical(s)
            az = (az + 180.0) % 360.0 - 180.0
            rows.append((r + rng.normal(0, NOISE.range_sigma_m), az + rng.normal(0, NOISE.azimuth_sigma_deg),
                         el + rng.normal(0, NOISE.elevation_sigma_deg)))
    n_clutter = rng.poisson(clutter_rate)
    for _ in range(n_clutter):
        rows.append((rng.uniform(100.0, 1000.0), rng.uniform(-60.0, 60.0), rng.uniform(-2.0, 15.0)))
    plots = empty_plots(len(rows))
    if rows:
        arr = np.array(rows)
        plots["range_m"], plots["azimuth_deg"], plots["elevation_deg"] = arr[:, 0], arr[:, 1], arr[:, 2]
        plots["snr_db"] = rng.uniform(8.0, 25.0, len(rows))
    return RadarPlots(sensor="radar1", t_mono=t, frame_number=frame, plots=plots)


def test_tracker_on_two_targets_with_clutter():
    rng = np.random.default_rng(2024)
    targets = [
        Target(np.array([150.0, 250.0, 60.0]), np.array([-6.0, 3.0, 0.0]), t_end=8.0),
        Target(np.array([350.0, 120.0, 40.0]), np.array([3.0, 8.0, 0.5]), t_end=3.0),  # vanishes
    ]
    converter = PlotConverter(MOUNT, NOISE)
    tracker = make_tracker(accel_noise_mps2=1.0)
    clock = ManualClock()
    reporter = TrackReporter(geo.Site(31.76, -106.48, 1150.0), interval_s=1.0)
    dt, n_scans = 0.1, 81

    seen_ids: set[int] = set()
    confirmed_at: dict[int, float] = {}  # track id -> time of confirmation
    target_of: dict[int, int] = {}  # track id -> index of the target nearest at confirmation
    reported_ids: set[int] = set()
    dropped_tentative: set[int] = set()
    ended: dict[int, tuple[float, float]] = {}  # track id -> (time ended, its t_last_update)
    errors: dict[int, list[float]] = {}

    def process(update):
        live = update.tracks
        assert len(np.unique(live.track_id)) == len(live)
        new_ids = set(live.track_id.tolist()) - seen_ids
        if new_ids:
            assert min(new_ids) > max(seen_ids, default=0)  # monotonic, never reused
        seen_ids.update(new_ids)
        truth = np.array([tgt.at(update.t_mono) for tgt in targets])
        for i, tid in enumerate(live.track_id.tolist()):
            if live.status[i] != Status.TENTATIVE and tid not in confirmed_at:
                confirmed_at[tid] = update.t_mono
                target_of[tid] = int(np.argmin(np.linalg.norm(truth - live.state[i, :3], axis=1)))
        for i, tid in enumerate(update.ended.track_id.tolist()):
            if tid in confirmed_at:
                ended[tid] = (update.t_mono, float(update.ended.t_last_update[i]))
            else:
                dropped_tentative.add(tid)
        reported_ids.update(reporter.build(update, clock)["track_id"].tolist())

    for k in range(n_scans):
        t = k * dt
        clock.advance(t - clock.monotonic())
        update = tracker.step(converter.convert(simulate_frame(rng, t, targets, k)))
        process(update)
        live = update.tracks
        for i, tid in enumerate(live.track_id.tolist()):
            tgt = targets[target_of.get(tid, 0)]
            if tid in confirmed_at and t - confirmed_at[tid] >= 1.0 and t <= tgt.t_end:
                errors.setdefault(tid, []).append(float(np.linalg.norm(live.state[i, :2] - tgt.at(t)[:2])))

    # Exactly the two targets were confirmed, one track each, within the M-of-N window
    # (5 scans from their first plots at t = 0).
    assert sorted(target_of.values()) == [0, 1], (confirmed_at, target_of)
    assert all(t_conf <= 4 * dt + 1e-9 for t_conf in confirmed_at.values()), confirmed_at
    # Clutter started tentative tracks; they were dropped and none was ever reported.
    assert len(dropped_tentative) > 50
    assert reported_ids == set(confirmed_at)
    # Confirmed tracks stay within a few metres of their target (horizontal; azimuth sigma
    # 0.4 deg is 2-3 m cross-range at these ranges).
    assert set(errors) == set(confirmed_at)
    for tid, errs in errors.items():
        assert np.max(errs) < 5.0, (tid, np.max(errs))
        assert np.sqrt(np.mean(np.square(errs))) < 2.5, (tid, np.sqrt(np.mean(np.square(errs))))

    # The vanished target's track coasted and ended on the first frame more than 3 s after
    # its last update (a stray clutter hit while coasting may have moved that update, and
    # then it ends in the expire() calls below).
    (vanished,) = [tid for tid, tgt in target_of.items() if tgt == 1]
    (survivor,) = [tid for tid, tgt in target_of.items() if tgt == 0]
    assert set(ended) <= {vanished}
    if ended:
        t_last_vanished = ended[vanished][1]
    else:
        t_last_vanished = float(tracker.tracks.t_last_update[tracker.tracks.track_id == vanished][0])
    assert t_last_vanished >= 2.5

    # Then the radar falls silent: expire() ends the remaining tracks after 3 s, not before.
    t = (n_scans - 1) * dt
    while len(tracker.tracks):
        t += 0.25
        process(tracker.expire(t))
    assert set(ended) == set(confirmed_at)
    for tid, (t_end, t_last) in ended.items():
        granularity = dt if t_end <= (n_scans - 1) * dt else 0.25
        assert 3.0 < t_end - t_last <= 3.0 + granularity + 1e-9, (tid, t_end, t_last)
    assert ended[survivor][1] >= 7.5
    assert reported_ids == set(confirmed_at)
