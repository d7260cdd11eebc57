"""Scenario model: paths, truth, YAML loading and the built-in demo."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from numpy.testing import assert_allclose

from towerd import geo
from towerd.errors import ConfigError
from towerd.sim.scenario import (
    TRUTH_DTYPE,
    ClutterPoint,
    MeasurementNoise,
    OrbitPath,
    Scenario,
    Target,
    WaypointPath,
    builtin_scenario,
    load_scenario,
)

REPO = Path(__file__).resolve().parents[1]
DEMO_YAML = REPO / "config" / "scenarios" / "demo.yaml"


def test_waypoints_interpolate_linearly_and_report_leg_velocity():
    path = WaypointPath(((10.0, 0.0, 0.0, 0.0), (20.0, 100.0, 0.0, 10.0), (30.0, 100.0, 50.0, 10.0)))
    present, pos, vel = path.state(15.0)
    assert present
    assert_allclose(pos, [50.0, 0.0, 5.0])
    assert_allclose(vel, [10.0, 0.0, 1.0])
    present, pos, vel = path.state(20.0)  # shared waypoint: the later leg
    assert_allclose(pos, [100.0, 0.0, 10.0])
    assert_allclose(vel, [0.0, 5.0, 0.0])
    present, pos, vel = path.state(30.0)  # last waypoint: the last leg, still present
    assert present
    assert_allclose(pos, [100.0, 50.0, 10.0])
    assert_allclose(vel, [0.0, 5.0, 0.0])


def test_waypoint_target_absent_outside_its_times():
    path = WaypointPath(((10.0, 0.0, 0.0, 0.0), (20.0, 1.0, 0.0, 0.0)))
    for t in (9.999, 20.001, -5.0, 1e6):
        present, pos, vel = path.state(t)
        assert not present and np.isnan(pos).all() and np.isnan(vel).all()


@pytest.mark.parametrize(
    "rows",
    [
        ((0.0, 0.0, 0.0, 0.0),),
        ((0.0, 0.0, 0.0, 0.0), (0.0, 1.0, 0.0, 0.0)),
        ((1.0, 0.0, 0.0, 0.0), (0.5, 1.0, 0.0, 0.0)),
        ((0.0, 0.0, 0.0), (1.0, 1.0, 0.0)),
    ],
)
def test_bad_waypoints_rejected(rows):
    with pytest.raises(ValueError):
        WaypointPath(rows)


def test_orbit_geometry_speed_and_direction():
    orbit = OrbitPath(centre_enu_m=(20.0, 60.0), radius_m=25.0, speed_mps=6.0, start_deg=180.0, up_m=30.0)
    present, pos, vel = orbit.state(0.0)
    assert present
    assert_allclose(pos, [20.0, 35.0, 30.0], atol=1e-12)  # due south of the centre
    assert_allclose(vel, [-6.0, 0.0, 0.0], atol=1e-12)  # clockwise from south = heading west
    for t in np.linspace(0.0, 100.0, 17):
        _, pos, vel = orbit.state(t)
        assert_allclose(np.hypot(pos[0] - 20.0, pos[1] - 60.0), 25.0)
        assert_allclose(np.linalg.norm(vel), 6.0)
        assert_allclose(np.dot(vel[:2], pos[:2] - [20.0, 60.0]), 0.0, atol=1e-9)  # tangent
    # Velocity is the derivative of position.
    h = 1e-4
    _, p0, _ = orbit.state(10.0 - h)
    _, p1, v = orbit.state(10.0)
    _, p2, _ = orbit.state(10.0 + h)
    assert_allclose((p2 - p0) / (2 * h), v, atol=1e-6)
    # A quarter turn takes (π r / 2) / speed seconds and ends due west of the centre.
    _, pos, _ = orbit.state(np.pi * 25.0 / 2.0 / 6.0)
    assert_allclose(pos, [-5.0, 60.0, 30.0], atol=1e-9)


def test_orbit_anticlockwise_and_time_window():
    orbit = OrbitPath((0.0, 0.0), 10.0, -2.0, start_deg=0.0, t_start_s=5.0, t_end_s=8.0)
    assert not orbit.state(4.9)[0] and not orbit.state(8.1)[0]
    present, pos, vel = orbit.state(5.0)
    assert present
    assert_allclose(pos, [0.0, 10.0, 0.0], atol=1e-12)
    assert_allclose(vel, [-2.0, 0.0, 0.0], atol=1e-12)  # north of centre, anticlockwise = west


def _scenario(**kw) -> Scenario:
    targets = (
        Target("a", "uas", -20.0, WaypointPath(((0.0, 0.0, 10.0, 5.0), (10.0, 10.0, 10.0, 5.0)))),
        Target("b", "bird", -25.0, WaypointPath(((5.0, 0.0, 0.0, 0.0), (15.0, 0.0, 20.0, 0.0)))),
    )
    return Scenario(name="t", targets=targets, **kw)


def test_truth_lists_present_targets_in_structured_form():
    sc = _scenario()
    truth = sc.truth(7.0)
    assert truth.dtype == TRUTH_DTYPE
    assert list(truth["name"]) == ["a", "b"] and list(truth["kind"]) == ["uas", "bird"]
    assert_allclose(truth[["east_m", "north_m", "up_m"]].tolist(), [(7.0, 10.0, 5.0), (0.0, 4.0, 0.0)])
    assert_allclose(truth[["vel_east_mps", "vel_north_mps", "vel_up_mps"]].tolist(), [(1, 0, 0), (0, 2, 0)])
    assert list(sc.truth(12.0)["name"]) == ["b"]
    assert sc.truth(20.0).shape == (0,) and sc.truth(20.0).dtype == TRUTH_DTYPE


def test_duration_wraps_time_and_none_does_not():
    looping = _scenario(duration_s=16.0)
    assert_allclose(looping.truth(16.0 + 7.0)["east_m"], looping.truth(7.0)["east_m"])
    assert looping.scenario_time(40.0) == pytest.approx(8.0)
    assert _scenario().truth(16.0 + 7.0).shape == (0,)


def test_scenario_validation():
    with pytest.raises(ValueError):
        Target("x", "balloon", 0.0, WaypointPath(((0, 0, 0, 0), (1, 0, 0, 0))))
    with pytest.raises(ValueError):
        _scenario(duration_s=0.0)
    with pytest.raises(ValueError):
        _scenario(false_alarms_per_frame=-1.0)
    with pytest.raises(ValueError):
        MeasurementNoise(range_sigma_m=-0.1)


def test_demo_yaml_and_builtin_agree():
    from_file = load_scenario(DEMO_YAML)
    builtin = builtin_scenario("demo")
    assert from_file == builtin
    for t in np.arange(0.0, 120.0, 0.7):
        a, b = from_file.truth(t), builtin.truth(t)
        assert a.tolist() == b.tolist()


def test_demo_fits_the_brief():
    demo = builtin_scenario("demo")
    assert {t.kind for t in demo.targets} == {"uas"} and 2 <= len(demo.targets) <= 3
    assert any(isinstance(t.path, OrbitPath) for t in demo.targets)
    assert 0.5 <= demo.false_alarms_per_frame <= 2.0 and len(demo.clutter) >= 2
    radar = np.array([0.0, 0.0, 10.0])
    rot = geo.mount_rotation(0.0)
    climbs = False
    counts = []
    for t in np.arange(0.0, demo.duration_s, 0.25):
        truth = demo.truth(t)
        counts.append(len(truth))
        assert len(truth) >= 1
        pos = np.column_stack([truth["east_m"], truth["north_m"], truth["up_m"]])
        s = (pos - radar) @ rot
        rng, az, el = geo.cartesian_to_spherical(s)
        az = np.where(az > 180.0, az - 360.0, az)
        assert np.all((rng > 30.0) & (rng < 150.0)), (t, rng)
        assert np.all(np.abs(az) < 55.0) and np.all(np.abs(el) < 27.0), (t, az, el)
        climbs |= bool(np.any(truth["vel_up_mps"] > 0.5))
    assert climbs
    assert np.mean(np.array(counts) >= 2) > 0.9 and max(counts) == 3
    for c in demo.clutter:
        assert isinstance(c, ClutterPoint)


def test_unknown_builtin_rejected():
    with pytest.raises(ConfigError, match="unknown built-in scenario 'nope'.*demo"):
        builtin_scenario("nope")


# ----------------------------------------------------------------------------- YAML errors

GOOD = """
name: t
duration_s: 30
false_alarms_per_frame: 0.5
noise: {range_sigma_m: 1, azimuth_sigma_deg: 0.5, elevation_sigma_deg: 1, doppler_sigma_mps: 0.2}
clutter:
  - {east_m: 1, north_m: 2, up_m: 3, rcs_dbsm: 4}
targets:
  - name: w
    kind: uas
    rcs_dbsm: -20
    waypoints: [[0, 0, 10, 5], [10, 10, 10, 5]]
  - name: o
    kind: bird
    rcs_dbsm: -25
    orbit: {centre_enu_m: [0, 50], radius_m: 10, speed_mps: 8, up_m: 20}
"""


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "sc.yaml"
    path.write_text(text)
    return path


def test_load_good_yaml(tmp_path):
    sc = load_scenario(_write(tmp_path, GOOD))
    assert sc.name == "t" and sc.duration_s == 30.0 and sc.false_alarms_per_frame == 0.5
    assert sc.noise == MeasurementNoise(1.0, 0.5, 1.0, 0.2)
    assert sc.clutter == (ClutterPoint(1.0, 2.0, 3.0, 4.0),)
    assert sc.targets[1].path == OrbitPath((0.0, 50.0), 10.0, 8.0, 0.0, 20.0, 0.0, None)


def test_name_defaults_to_file_stem_and_duration_to_none(tmp_path):
    sc = load_scenario(_write(tmp_path, "targets: []\n"))
    assert sc.name == "sc" and sc.duration_s is None and sc.targets == ()


@pytest.mark.parametrize(
    ("old", "new", "message"),
    [
        ("duration_s: 30", "duration_s: 30\nspeed: 3", r"sc\.yaml: speed: unknown key"),
        ("rcs_dbsm: -20", "rcs_dbsm: -20\n    colour: red", r"targets\[0\]\.colour: unknown key"),
        ("kind: bird", "kind: balloon", r"targets\[1\]\.kind: must be one of uas, bird"),
        ("radius_m: 10", "radius_m: -1", r"targets\[1\]\.orbit\.radius_m: must be > 0"),
        ("radius_m: 10, ", "", r"targets\[1\]\.orbit\.radius_m: is required"),
        ("[10, 10, 10, 5]", "[0, 10, 10, 5]", r"targets\[0\]\.waypoints\[1\]: time 0\.0 does not increase"),
        ("[10, 10, 10, 5]", "[10, 10, 5]", r"targets\[0\]\.waypoints\[1\]: must be a list of 4"),
        ("rcs_dbsm: -25", "rcs_dbsm: loud", r"targets\[1\]\.rcs_dbsm: must be a finite number"),
        ("false_alarms_per_frame: 0.5", "false_alarms_per_frame: -1", r"false_alarms_per_frame: must be >= 0"),
        ("doppler_sigma_mps: 0.2", "doppler_sigma: 0.2", r"noise\.doppler_sigma: unknown key"),
        ("up_m: 3, ", "", r"clutter\[0\]\.up_m: is required"),
        ("name: o", "name: w", r"targets\[1\]\.name: duplicate target name 'w'"),
        ("    waypoints: [[0, 0, 10, 5], [10, 10, 10, 5]]\n", "", r"targets\[0\]: needs exactly one of"),
    ],
)
def test_yaml_errors_name_file_and_key(tmp_path, old, new, message):
    assert old in GOOD
    path = _write(tmp_path, GOOD.replace(old, new, 1))
    with pytest.raises(ConfigError, match=message) as info:
        load_scenario(path)
    assert all(p.startswith(f"{path}: ") for p in info.value.problems)


def test_every_problem_is_reported(tmp_path):
    text = GOOD.replace("kind: bird", "kind: balloon").replace("duration_s: 30", "duration_s: -3")
    with pytest.raises(ConfigError) as info:
        load_scenario(_write(tmp_path, text))
    assert len(info.value.problems) == 2


def test_missing_file_and_bad_yaml(tmp_path):
    with pytest.raises(ConfigError, match=r"nope\.yaml: cannot read scenario"):
        load_scenario(tmp_path / "nope.yaml")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_scenario(_write(tmp_path, "targets: [\n"))
    with pytest.raises(ConfigError, match="must be a mapping"):
        load_scenario(_write(tmp_path, "- 1\n- 2\n"))
    with pytest.raises(ConfigError, match="targets: is required"):
        load_scenario(_write(tmp_path, "name: x\n"))
