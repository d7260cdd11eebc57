"""Scenarios with known truth for measuring the tracker: several drones with clutter,
two crossing drones, a mix of drones, birds, vehicles and a walker, and a scalable
field of N targets for the benchmarks.

All are :class:`~towerd.sim.scenario.Scenario` objects (waypoint and orbit paths), for a
radar at :data:`RADAR_POSITION_ENU_M` looking north (boresight 0°) with the TI
emulator's field of view (±60° azimuth, ±30° elevation, 200 m), except :func:`field`,
which is a plain area of any size for the benchmarks' Cartesian sensor.

Target kinds are drawn as they behave (the classifier is measured on them):
- drones fly steady legs, orbit at constant speed, or hover and then move on (taking
  a second to reach speed or to stop, as a multirotor does);
- birds never hover and never hold a speed: every 0.4–1.2 s (a flap/glide cycle) they
  change speed by up to ±40 % about their own mean (3–14 m/s), turn by a random
  heading change (σ 25°), and drift up or down; they wander about a home point;
- ground vehicles drive straight along roads at ground height (up 0 m) at 8–20 m/s;
- a walker walks at about 1.4 m/s at ground height.
Random paths come from the ``rng`` passed in, so a seed gives the same scenario.
"""

from __future__ import annotations

import logging
import math

import numpy as np

from towerd.sim.scenario import ClutterPoint, MeasurementNoise, OrbitPath, Scenario, Target, WaypointPath

log = logging.getLogger(__name__)

RADAR_POSITION_ENU_M = (0.0, 0.0, 10.0)
RADAR_BORESIGHT_DEG = 0.0

LAMP_POSTS = (
    ClutterPoint(15.0, 40.0, 8.0, 10.0),
    ClutterPoint(-50.0, 120.0, 5.0, 20.0),
    ClutterPoint(60.0, 100.0, 6.0, 0.0),
    ClutterPoint(-20.0, 170.0, 12.0, 5.0),
)
"""Static reflectors (lamp posts, a barn corner, a tree, a mast) in the field of view."""

NOISE = MeasurementNoise(range_sigma_m=0.5, azimuth_sigma_deg=1.0, elevation_sigma_deg=1.5, doppler_sigma_mps=0.1)


def multi_drone(duration_s: float = 40.0) -> Scenario:
    """Six drones (straight legs, orbits, a hover then a dash, a climb) among four
    static reflectors and three false alarms per frame on average."""
    d = duration_s
    targets = (
        Target("east-west", "uas", -20.0, WaypointPath(((0.0, -90.0, 110.0, 30.0), (d, 90.0, 110.0, 30.0)))),
        Target("orbit-a", "uas", -18.0, OrbitPath((20.0, 70.0), 25.0, 6.0, 180.0, 28.0, 0.0, None)),
        Target("orbit-b", "uas", -22.0, OrbitPath((-60.0, 140.0), 18.0, -5.0, 90.0, 45.0, 2.0, None)),
        Target("hover-dash", "uas", -15.0, WaypointPath((
            (3.0, -30.0, 60.0, 20.0), (12.0, -30.0, 60.0, 20.0), (13.0, -27.7, 63.0, 20.4),
            (21.0, 37.7, 147.0, 34.6), (22.0, 40.0, 150.0, 35.0), (d, 40.0, 150.0, 35.0),
        ))),
        Target("climber", "uas", -17.0, WaypointPath((
            (0.0, 70.0, 40.0, 5.0), (8.0, 70.0, 40.0, 5.0), (25.0, 80.0, 90.0, 60.0), (d, 100.0, 130.0, 60.0),
        ))),
        Target("inbound", "uas", -20.0, WaypointPath(((5.0, 0.0, 195.0, 50.0), (d, 10.0, 40.0, 25.0)))),
    )
    return Scenario(name="multi-drone", targets=targets, clutter=LAMP_POSTS, false_alarms_per_frame=3.0,
                    noise=NOISE)


def crossing(angle_deg: float = 40.0, speed_mps: float = 8.0, t_cross_s: float = 10.0,
             cross_at: tuple[float, float, float] = (0.0, 110.0, 30.0)) -> Scenario:
    """Two drones at the same height and speed whose paths cross at ``cross_at`` at the
    same instant ``t_cross_s``, at ``angle_deg`` to each other (symmetric about north),
    each flying for 2 t_cross_s; false alarms as in :func:`multi_drone`."""
    e0, n0, u0 = cross_at
    targets = []
    for name, sign in (("cross-left", -1.0), ("cross-right", 1.0)):
        h = math.radians(sign * angle_deg / 2.0)
        v = np.array([math.sin(h), math.cos(h)]) * speed_mps
        start = np.array([e0, n0]) - v * t_cross_s
        end = np.array([e0, n0]) + v * t_cross_s
        targets.append(Target(name, "uas", -20.0, WaypointPath((
            (0.0, float(start[0]), float(start[1]), u0), (2.0 * t_cross_s, float(end[0]), float(end[1]), u0),
        ))))
    return Scenario(name="crossing", targets=tuple(targets), clutter=LAMP_POSTS[:2], false_alarms_per_frame=3.0,
                    noise=NOISE)


def bird_path(rng: np.random.Generator, home: tuple[float, float, float], t0: float, t1: float,
              mean_speed_mps: float, wander_radius_m: float = 50.0) -> WaypointPath:
    """A bird's flight about ``home`` (east, north, up) from t0 to t1; see the module
    docstring. It steers back towards home when farther than ``wander_radius_m``."""
    home_v = np.asarray(home, dtype=float)
    p = home_v + np.append(rng.uniform(-0.5, 0.5, 2) * wander_radius_m, 0.0)
    heading = rng.uniform(0.0, 2.0 * math.pi)
    t = t0
    rows = [(t, *p)]
    while t < t1:
        leg = rng.uniform(0.4, 1.2)
        away = p[:2] - home_v[:2]
        if np.hypot(*away) > wander_radius_m:
            home_bearing = math.atan2(-away[0], -away[1])
            heading += 0.5 * math.remainder(home_bearing - heading, 2.0 * math.pi)
        heading += rng.normal(0.0, math.radians(25.0))
        speed = mean_speed_mps * rng.uniform(0.6, 1.4)
        climb = rng.normal(0.0, 0.8) + 0.3 * (home_v[2] - p[2]) / max(leg, 1.0)
        p = p + leg * np.array([speed * math.sin(heading), speed * math.cos(heading), climb])
        p[2] = max(p[2], 3.0)
        t += leg
        rows.append((t, *p))
    return WaypointPath(tuple(tuple(float(v) for v in r) for r in rows))


def mixed(rng: np.random.Generator, duration_s: float = 40.0) -> Scenario:
    """Drones, birds, ground vehicles and a walker, with static reflectors and false
    alarms: the classification scenario."""
    d = duration_s
    targets = [
        Target("drone-cruise", "uas", -20.0, WaypointPath((
            (0.0, -80.0, 120.0, 35.0), (15.0, 40.0, 120.0, 35.0), (30.0, 40.0, 60.0, 35.0), (d, 90.0, 60.0, 35.0),
        ))),
        Target("drone-orbit", "uas", -18.0, OrbitPath((-40.0, 90.0), 22.0, 6.0, 0.0, 40.0, 0.0, None)),
        Target("drone-hover", "uas", -15.0, WaypointPath((
            (0.0, 50.0, 150.0, 25.0), (6.0, 30.0, 130.0, 25.0), (20.0, 30.0, 130.0, 25.0), (d, -30.0, 160.0, 45.0),
        ))),
    ]
    homes = ((-60.0, 60.0, 20.0), (70.0, 110.0, 35.0), (0.0, 150.0, 25.0))
    for i, home in enumerate(homes):
        targets.append(Target(f"bird-{i}", "bird", float(rng.uniform(-30.0, -22.0)),
                              bird_path(rng, home, 0.0, d, mean_speed_mps=float(rng.uniform(6.0, 11.0)))))
    targets += [
        Target("truck", "vehicle", 12.0, WaypointPath(((0.0, -110.0, 75.0, 0.0), (d * 0.6, 110.0, 75.0, 0.0)))),
        Target("car", "vehicle", 8.0, WaypointPath(((2.0, 100.0, 170.0, 0.0), (d, -30.0, 100.0, 0.0)))),
        Target("walker", "person", -3.0, WaypointPath(((0.0, -30.0, 45.0, 0.0), (d, 20.0, 45.0, 0.0)))),
    ]
    return Scenario(name="mixed", targets=tuple(targets), clutter=LAMP_POSTS, false_alarms_per_frame=2.0,
                    noise=NOISE)


def field(rng: np.random.Generator, n_targets: int, duration_s: float, *, spacing_m: float = 300.0,
          speed_mps: tuple[float, float] = (5.0, 20.0), height_m: tuple[float, float] = (20.0, 150.0)) -> Scenario:
    """``n_targets`` drones on straight paths at random headings and speeds, spread over a
    square whose side gives each about ``spacing_m`` × ``spacing_m``, centred on the
    origin; for the scaling benchmarks (no sensor geometry: any sensor sees all)."""
    side = spacing_m * math.sqrt(n_targets)
    start = np.column_stack([rng.uniform(-side / 2, side / 2, (n_targets, 2)), rng.uniform(*height_m, n_targets)])
    heading = rng.uniform(0.0, 2.0 * math.pi, n_targets)
    speed = rng.uniform(*speed_mps, n_targets)
    vel = np.column_stack([speed * np.sin(heading), speed * np.cos(heading), np.zeros(n_targets)])
    end = start + vel * duration_s
    targets = tuple(
        Target(f"t{i}", "uas", -20.0, WaypointPath(((0.0, *map(float, start[i])), (duration_s, *map(float, end[i])))))
        for i in range(n_targets)
    )
    return Scenario(name=f"field-{n_targets}", targets=targets, noise=NOISE)


def truth_enu(scenario: Scenario, t_s: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(names (n,), kinds (n,), positions (n, 3) ENU m) of the targets present at t_s."""
    truth = scenario.truth(t_s)
    pos = np.column_stack([truth["east_m"], truth["north_m"], truth["up_m"]]) if len(truth) else np.zeros((0, 3))
    return truth["name"], truth["kind"], pos
