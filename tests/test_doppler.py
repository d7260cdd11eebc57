"""Radial speed (Doppler) in association, initiation and confirmation
(towerd.tracking.doppler), radial speed through the detection layer, and confirmed false
tracks under zero-Doppler clutter.

False tracks, measured (benchmarks/radar_clutter.py, docs/benchmarks.md): under uniform
zero-Doppler false alarms at 3 a frame (10 frames/s, no target) the tracker before
radial-speed gating confirmed 29 false tracks per hour (seed 1: 3 in its first
6 minutes); with it and the initiation bounds (maximum speed, minimum range), none in an
hour. The tests below run the tracker in-process on the driver's decoding of the
emulator's frames.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest
from numpy.testing import assert_allclose

from scenario_runs import pipeline_config
from towerd.clock import ManualClock
from towerd.detection.cluster import PointClusterer
from towerd.detection.plots import Detections, MeasurementNoise, PlotConverter, SensorMount
from towerd.drivers.measurements import RadarPlots, empty_plots
from towerd.drivers.ti_mmwave.driver import TiMmwaveDriver, TiMmwaveSettings
from towerd.errors import ConfigError
from towerd.icd import Status
from towerd.pipeline import Pipeline
from towerd.sim import radar_run, scenes
from towerd.sim.scenario import Scenario, Target, WaypointPath, parse_scenario
from towerd.sim.ti_mmwave import TiMmwaveEmulator
from towerd.tracking.associator import GnnAssociator
from towerd.tracking.doppler import DopplerGate, RadialSpeeds, fold, radial_velocity
from towerd.tracking.initiator import MofNInitiator, velocity_sigma_for
from towerd.tracking.models import ConstantVelocity
from towerd.tracking.predictor import KalmanPredictor
from towerd.tracking.state import TrackTable

SENSOR = np.array([0.0, 0.0, 10.0])


def _state(p, v):
    return np.concatenate([p, v])[None, :].astype(float)


def test_radial_velocity_value_and_jacobian_match_finite_differences():
    rng = np.random.default_rng(1)
    x = np.column_stack([rng.uniform(-100, 100, (5, 3)), rng.uniform(-20, 20, (5, 3))])
    hr, J = radial_velocity(x, SENSOR)
    d = x[:, :3] - SENSOR
    assert_allclose(hr, np.einsum("mi,mi->m", d, x[:, 3:]) / np.linalg.norm(d, axis=1))
    eps = 1e-6
    for i in range(6):
        dx = np.zeros(6)
        dx[i] = eps
        num = (radial_velocity(x + dx, SENSOR)[0] - radial_velocity(x - dx, SENSOR)[0]) / (2 * eps)
        assert_allclose(J[:, i], num, rtol=1e-6, atol=1e-8)
    # Straight away from the antenna at 10 m/s: +10; tangential: 0.
    assert_allclose(radial_velocity(_state([0, 50, 10], [0, 10, 0]), SENSOR)[0], [10.0])
    assert_allclose(radial_velocity(_state([0, 50, 10], [7, 0, 0]), SENSOR)[0], [0.0], atol=1e-12)


def test_fold_maps_into_the_unambiguous_interval():
    assert_allclose(fold(np.array([0.5, 9.0, -9.0, 16.0]), 8.0), [0.5, -7.0, 7.0, 0.0])
    assert_allclose(fold(np.array([30.0]), 0.0), [30.0])


def _radial(speeds, var=0.25):
    speeds = np.asarray(speeds, dtype=float)
    return RadialSpeeds(speeds, np.full(len(speeds), var), SENSOR)


def test_association_gates_radial_speed_against_the_prediction_and_ignores_nan():
    # An established track 60 m north flying away at 10 m/s, well known (P small).
    x = _state([0, 60, 10], [0, 10, 0])
    P = np.diag([1.0, 1.0, 1.0, 0.1, 0.1, 0.1])[None]
    z = np.array([[0.0, 61.0, 10.0]] * 3)
    R = np.broadcast_to(np.eye(3), (3, 3, 3)).copy()
    gate = DopplerGate(manoeuvre_sigma_mps=1.0)
    a = GnnAssociator(0.999, doppler=gate)
    for rv, hit in ((10.2, True), (0.0, False), (np.nan, True)):
        ti, di = a.associate(x, P, z[:1], R[:1], radial=_radial([rv]))
        assert (len(ti) == 1) is hit, rv
    # s² = J P Jᵀ + σ_r² + σ_m² = 0.1 + 0.25 + 1: the gate edge is 10 ± √(10.83 · 1.35).
    edge = np.sqrt(gate.gate * 1.35)
    assert len(a.associate(x, P, z[:1], R[:1], radial=_radial([10 - 0.99 * edge]))[0]) == 1
    assert len(a.associate(x, P, z[:1], R[:1], radial=_radial([10 - 1.01 * edge]))[0]) == 0
    # Without a Doppler gate, or without radial speeds, position alone decides.
    assert len(GnnAssociator(0.999).associate(x, P, z[:1], R[:1], radial=_radial([0.0]))[0]) == 1
    assert len(a.associate(x, P, z[:1], R[:1])[0]) == 1


def test_folded_doppler_of_a_fast_target_stays_in_its_gate():
    # 25 m/s away, read by a radar folding at ±20.16 m/s as 25 − 40.32 = −15.32.
    x = _state([0, 60, 10], [0, 25, 0])
    P = np.diag([1.0, 1.0, 1.0, 0.1, 0.1, 0.1])[None]
    z, R = np.array([[0.0, 61.0, 10.0]]), np.eye(3)[None]
    a = GnnAssociator(0.999, doppler=DopplerGate())
    folded = RadialSpeeds(np.array([-15.32]), np.array([0.25]), SENSOR, unambiguous_speed_mps=20.16)
    assert len(a.associate(x, P, z, R, radial=folded)[0]) == 1
    unfolded = RadialSpeeds(np.array([-15.32]), np.array([0.25]), SENSOR)
    assert len(a.associate(x, P, z, R, radial=unfolded)[0]) == 0


def test_second_point_is_gated_on_the_velocity_the_pair_implies():
    # A one-point track (v = 0, σ_v = 12.4): the next point 2 m farther out 0.1 s later
    # implies ~20 m/s outwards (shrunk by the prior); a zero Doppler contradicts it.
    init = MofNInitiator(initial_velocity_sigma_mps=velocity_sigma_for(50.0, 16.27))
    det = Detections("r", 0.0, np.array([[0.0, 60.0, 10.0]]), (0.05 * np.eye(3))[None], np.zeros(1), np.zeros(1))
    tr = init.initiate(det, np.array([0]), 1)
    x, P = KalmanPredictor(ConstantVelocity(1.0)).predict(tr.state, tr.cov, np.array([0.1]))
    z, R = np.array([[0.0, 62.0, 10.0]]), (0.05 * np.eye(3))[None]
    a = GnnAssociator(0.999, doppler=DopplerGate())
    assert len(a.associate(x, P, z, R, radial=_radial([0.0], 0.01))[0]) == 1  # the prediction alone cannot tell
    assert len(a.associate(x, P, z, R, radial=_radial([0.0], 0.01), initiating=np.array([True]))[0]) == 0
    assert len(a.associate(x, P, z, R, radial=_radial([19.0], 0.01), initiating=np.array([True]))[0]) == 1


def test_consistency_is_a_bounded_mean_then_fading():
    g = DopplerGate(fading=0.25)
    prev = np.array([np.nan, np.nan, 2.0, 2.0, 2.0, 2.0])
    count = np.array([0, 0, 1, 3, 9, 9], dtype=np.uint32)
    s, n = g.consistency(prev, count, np.array([1.0, 1e6, 4.0, 6.0, 6.0, np.nan]))
    # plain mean of the first 1/λ = 4 values, then weight λ = 0.25 per new value
    assert_allclose(s, [1.0, g.gate, 3.0, 3.0, 3.0, 2.0])
    assert list(n) == [1, 1, 2, 4, 10, 9]
    assert list(g.consistent(np.array([np.nan, 3.9, 4.1]))) == [True, True, False]
    with pytest.raises(ConfigError):
        DopplerGate(fading=0.0)


def _tracks(v, score):
    k = len(v)
    state = np.zeros((k, 6))
    state[:, 3:] = v
    return TrackTable(np.arange(k), np.zeros(k), np.full(k, 3), np.zeros(k), np.full(k, 7), state,
                      np.broadcast_to(np.eye(6), (k, 6, 6)), np.zeros(k), np.zeros(k), np.zeros(k),
                      doppler_score=np.asarray(score, dtype=float))


def test_no_track_starts_near_the_antenna():
    init = MofNInitiator(min_range_m=15.0)
    det = Detections("r", 0.0, np.array([[0.0, 10.0, 10.0], [0.0, 16.0, 10.0], [12.0, 0.0, 0.0]]),
                     np.broadcast_to(np.eye(3), (3, 3, 3)), np.zeros(3), np.zeros(3), sensor_pos_enu_m=SENSOR)
    assert list(init.select(det, np.arange(3))) == [1, 2]
    assert list(MofNInitiator().select(det, np.arange(3))) == [0, 1, 2]


def test_confirmation_needs_a_bounded_speed_and_consistent_radial_speeds():
    init = MofNInitiator(max_speed_mps=50.0, max_mean_nis=4.0)
    tr = _tracks([[10, 0, 0], [60, 0, 0], [10, 0, 0], [10, 0, 0]], [1.0, 1.0, 9.0, np.nan])
    assert list(init.to_confirm(tr)) == [True, False, False, True]
    assert list(MofNInitiator().to_confirm(tr)) == [True] * 4  # unbounded by default
    assert velocity_sigma_for(50.0, 16.0) == 12.5


def test_radial_speed_reaches_detections_from_doppler_and_from_a_reported_ground_velocity():
    mount = SensorMount((0.0, 0.0, 10.0), 0.0)
    conv = PlotConverter(mount, MeasurementNoise(1.0, 1.0, 1.0, radial_speed_sigma_mps=0.3, unambiguous_speed_mps=8.0))
    rows = empty_plots(3)
    rows["range_m"], rows["azimuth_deg"], rows["elevation_deg"] = 100.0, [0.0, 90.0, 0.0], 0.0
    rows["radial_vel_mps"][0] = -3.0
    rows["speed_mps"][1], rows["course_deg"][1] = 10.0, 90.0  # flying east, seen due east: +10 m/s
    det = conv.convert(RadarPlots("r", 1.0, 1, rows))
    assert_allclose(det.radial_vel_mps[:2], [-3.0, 10.0])
    assert np.isnan(det.radial_vel_mps[2]) and np.isnan(det.radial_vel_var_mps2[2])
    assert_allclose(det.radial_vel_var_mps2[:2], [0.09, 0.09])
    assert_allclose(det.sensor_pos_enu_m, [0.0, 0.0, 10.0])
    assert det.unambiguous_speed_mps == 8.0
    # Two points of one target merge: mean radial speed, variance mean/n + spread².
    two = Detections("r", 1.0, np.array([[0.0, 50.0, 10.0], [0.0, 50.2, 10.0]]), np.broadcast_to(np.eye(3), (2, 3, 3)),
                     np.array([10.0, 10.0]), np.array([4.0, 6.0]), radial_vel_var_mps2=np.array([0.04, 0.04]),
                     sensor_pos_enu_m=np.array([0.0, 0.0, 10.0]))
    one = PointClusterer().cluster(two)
    assert len(one) == 1
    assert_allclose(one.radial_vel_mps, [5.0])
    assert_allclose(one.radial_vel_var_mps2, [0.04 / 2 + 1.0])


def test_scenario_false_alarm_doppler_option_and_its_yaml_key():
    sc = parse_scenario({"targets": [], "false_alarms_per_frame": 3, "false_alarm_doppler_mps": 0}, "x.yaml")
    assert sc.false_alarm_doppler_mps == 0.0
    assert parse_scenario({"targets": []}, "x.yaml").false_alarm_doppler_mps is None
    with pytest.raises(ConfigError, match="false_alarm_doppler_mps"):
        parse_scenario({"targets": [], "false_alarm_doppler_mps": "fast"}, "x.yaml")
    em = TiMmwaveEmulator(Scenario("c", false_alarms_per_frame=20.0, false_alarm_doppler_mps=0.0),
                          boresight_azimuth_deg=0.0, rng=np.random.default_rng(1))
    points = em.detections(0.0)
    assert len(points) > 5 and np.all(points[:, 3] == 0.0)


def _confirmed_false_tracks(rate: float, duration_s: float, seed: int) -> int:
    """Tracks confirmed by the pipeline's tracker (detection and tracking only: the
    labels do not change what is confirmed) over ``duration_s`` of emulated TI frames,
    decoded by the real driver, with ``rate`` zero-Doppler false alarms a frame and no
    target: every one is false."""
    scenario = Scenario("clutter", false_alarms_per_frame=rate, noise=scenes.NOISE, false_alarm_doppler_mps=0.0)
    pipeline = Pipeline(pipeline_config(), ManualClock())
    confirmed: set[int] = set()
    for _, reading in radar_run.readings(scenario, duration_s=duration_s, seed=seed):
        tr = pipeline.tracker.step(pipeline.clusterer.cluster(pipeline.converters["radar0"].convert(reading))).tracks
        confirmed.update(tr.track_id[tr.rows_with_status(Status.CONFIRMED, Status.COASTING)].tolist())
    return len(confirmed)


@pytest.mark.slow
def test_no_confirmed_false_track_in_six_minutes_of_zero_doppler_clutter():
    # Seed 1 at 3 false alarms a frame: before radial-speed gating this confirmed 3
    # false tracks in these 6 minutes (at 69, 231 and 338 s); the goal is under 1 per hour.
    assert _confirmed_false_tracks(3.0, 360.0, seed=1) == 0


def test_dense_zero_doppler_clutter_confirms_no_false_track():
    # 10 a frame for 2 minutes, seed 3: 22 confirmed before radial-speed gating, 2 with
    # it (at that density a tentative track often finds a point in its gate every frame,
    # and a path across the line of sight carries zero Doppler like the clutter), none
    # with the track score as well (towerd.tracking.score, tests/test_track_score.py).
    assert _confirmed_false_tracks(10.0, 120.0, seed=3) == 0


def test_drone_through_a_pty_among_zero_doppler_clutter_is_confirmed_alone(pty_pair):
    """End to end over a real pseudo-terminal: a drone flying away among 3 zero-Doppler
    false alarms a frame is confirmed with a consistent radial-speed history, and no
    other track is confirmed."""
    rate = 20.0
    drone = Target("away", "uas", -15.0, WaypointPath(((0.0, 10.0, 40.0, 25.0), (20.0, 10.0, 160.0, 25.0))))
    scenario = Scenario("away", targets=(drone,), false_alarms_per_frame=3.0, noise=scenes.NOISE,
                        false_alarm_doppler_mps=0.0)
    em = TiMmwaveEmulator(scenario, boresight_azimuth_deg=scenes.RADAR_BORESIGHT_DEG,
                          position_enu_m=scenes.RADAR_POSITION_ENU_M, frame_rate_hz=rate, rng=np.random.default_rng(5))
    pipeline = Pipeline(pipeline_config(), ManualClock())
    confirmed: set[int] = set()
    drone_tracks: set[int] = set()
    n = 0
    with TiMmwaveDriver("radar0", TiMmwaveSettings(port=pty_pair.path)) as driver:
        em.start(pty_pair)
        try:
            deadline = time.monotonic() + 10.0
            while n < 60 and time.monotonic() < deadline:
                for reading in driver.read():
                    n += 1
                    pipeline.process(reading)
                    tr = pipeline.tracker.tracks
                    truth = scenario.truth((reading.frame_number - 1) / rate)
                    p = np.array([truth["east_m"][0], truth["north_m"][0], truth["up_m"][0]])
                    for k in np.flatnonzero(tr.rows_with_status(Status.CONFIRMED, Status.COASTING)):
                        confirmed.add(int(tr.track_id[k]))
                        if np.linalg.norm(tr.state[k, :3] - p) < 10.0:
                            drone_tracks.add(int(tr.track_id[k]))
                            assert tr.doppler_score[k] <= 4.0
        finally:
            em.stop()
    assert n >= 60 and em.error is None
    assert len(drone_tracks) == 1 and confirmed == drone_tracks, (confirmed, drone_tracks)


def test_settings_reach_the_tracker_and_doppler_can_be_switched_off():
    from towerd.config import load_config
    from towerd.tracking.doppler import DopplerSettings
    from towerd.tracking.initiator import InitiationSettings

    shipped = load_config(Path(__file__).resolve().parent.parent / "config" / "towerd.yaml").config
    assert shipped.tracking.initiation.max_speed_mps == 50.0 and shipped.tracking.doppler.enabled
    assert shipped.sensors[0].noise.unambiguous_speed_mps == 20.16
    p = Pipeline(pipeline_config(initiation=InitiationSettings(max_speed_mps=30.0),
                                 doppler=DopplerSettings(max_mean_nis=2.0, manoeuvre_sigma_mps=1.0)), ManualClock())
    init, assoc = p.tracker.initiator, p.tracker.associator
    assert init.min_range_m == 15.0
    assert init.max_speed_mps == 30.0 and init.max_mean_nis == 2.0 and assoc.doppler.manoeuvre_sigma_mps == 1.0
    assert_allclose(init.initial_velocity_sigma_mps, 30.0 / np.sqrt(assoc.gate))
    off = Pipeline(pipeline_config(doppler=DopplerSettings(enabled=False)), ManualClock())
    assert off.tracker.associator.doppler is None and off.tracker.initiator.max_mean_nis == np.inf
