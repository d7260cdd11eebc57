"""Threat: zones as WGS84 polygons, point-in-polygon and time-to-zone in local ENU, the
rules, and the settings through the schema."""

from __future__ import annotations

import numpy as np
import pytest
from numpy.testing import assert_allclose

from towerd import geo
from towerd.icd import Category, Threat
from towerd.schema import INVALID, Validator, compose
from towerd.threat import ThreatAssessor, ThreatSettings, ZoneRule, ZoneSettings

SITE = geo.Site(27.5036, -99.5076, 130.0)


def wgs84(en_points) -> tuple[tuple[float, float], ...]:
    """ENU (east, north) metres about SITE -> ((lat, lon), ...)."""
    en = np.asarray(en_points, dtype=float)
    lat, lon, _ = geo.enu_to_geodetic(SITE, np.column_stack([en, np.zeros(len(en))]))
    return tuple(zip(lat.tolist(), lon.tolist()))


# A border strip 200 m north of the tower, 100 m deep and 2 km wide, and an L-shaped port
# of entry to the east (concave: the even-odd test must get the notch right).
STRIP = wgs84([(-1000, 200), (1000, 200), (1000, 300), (-1000, 300)])
PORT = wgs84([(300, -100), (500, -100), (500, 100), (400, 100), (400, 0), (300, 0)])

RULES = ThreatSettings(
    zones=(
        ZoneSettings(name="border-strip", polygon=STRIP, approach_time_s=30.0, rules=(
            ZoneRule(categories=("uas",), level="high"),
            ZoneRule(categories=("unknown",), level="medium", where="inside"),
            ZoneRule(categories=("person", "ground_vehicle"), level="low", where="inside", min_confidence=60),
        )),
        ZoneSettings(name="port", polygon=PORT, rules=(
            ZoneRule(categories=("uas",), level="medium", where="inside"),
            ZoneRule(categories=("uas",), level="high", where="inside", min_hover_fraction=0.5),
            ZoneRule(categories=("bird",), level="low", where="inside", max_height_m=10.0),
        )),
    ),
)


@pytest.fixture
def assessor() -> ThreatAssessor:
    return ThreatAssessor(RULES, SITE)


def test_zone_vertices_come_back_in_local_enu(assessor):
    assert assessor.zone_names == ("border-strip", "port")
    assert_allclose(assessor.zones[0].vertices_en_m, [(-1000, 200), (1000, 200), (1000, 300), (-1000, 300)], atol=1e-3)


def test_point_in_polygon_including_a_concave_notch(assessor):
    pts = np.array([
        [0.0, 250.0],  # strip
        [0.0, 150.0],  # south of it
        [1200.0, 250.0],  # east of it
        [350.0, 50.0],  # port's notch (x in 300..400, y in 0..100): outside
        [450.0, 50.0],  # port's east arm
        [350.0, -50.0],  # port's south bar
        [-999.0, 299.0],  # strip's corner
    ])
    inside = assessor.zones_at_enu(pts)
    assert inside.tolist() == [
        [True, False], [False, False], [False, False], [False, False], [False, True], [False, True], [True, False],
    ]
    # The same through WGS84, vectorised and one point at a time.
    lat_lon = np.array(wgs84(pts))
    assert_allclose(assessor.zones_at(lat_lon[:, 0], lat_lon[:, 1]), inside)
    assert assessor.zone_of(*lat_lon[0]) == {"border-strip"}
    assert assessor.zone_of(*lat_lon[3]) == set()
    assert assessor.zone_of(*lat_lon[4]) == {"port"}


def test_time_to_zone_along_the_velocity(assessor):
    strip = assessor.zones[0]
    p = np.array([[0.0, 100.0], [0.0, 100.0], [0.0, 100.0], [0.0, 250.0], [-1100.0, 250.0], [0.0, 100.0]])
    v = np.array([[0.0, 10.0], [0.0, -10.0], [10.0, 0.0], [0.0, 5.0], [10.0, 0.0], [10.0, 10.0]])
    t = strip.time_to_enter(p, v)
    # 100 m at 10 m/s; heading away; parallel; inside; 100 m from the west end; diagonal
    # reaches y = 200 after 10 s (at x = 100, inside the edge).
    assert_allclose(t, [10.0, np.inf, np.inf, 0.0, 10.0, 10.0], atol=1e-4)  # vertices via WGS84


def test_rules_category_confidence_place_and_behaviour(assessor):
    U, B, V, P, N = Category.UAS, Category.BIRD, Category.GROUND_VEHICLE, Category.PERSON, Category.UNKNOWN
    pos = np.array([
        [0.0, 250.0, 30.0],  # 0 uas in the strip -> high
        [0.0, 50.0, 30.0],  # 1 uas heading north at 10 m/s: reaches the strip in 15 s <= 30 s -> high
        [0.0, -200.0, 30.0],  # 2 uas heading north, 40 s away -> baseline low
        [0.0, 250.0, 30.0],  # 3 bird in the strip -> none
        [0.0, 250.0, 30.0],  # 4 unknown in the strip -> medium
        [0.0, 250.0, 1.0],  # 5 person in the strip, confidence 50 < 60 -> none
        [0.0, 250.0, 1.0],  # 6 ground vehicle in the strip, confidence 80 -> low
        [450.0, 50.0, 30.0],  # 7 uas in the port -> medium
        [450.0, 50.0, 30.0],  # 8 uas hovering in the port -> high
        [450.0, 50.0, 5.0],  # 9 bird low over the port -> low
        [450.0, 50.0, 40.0],  # 10 bird high over the port -> none
        [0.0, 50.0, 30.0],  # 11 unknown approaching the strip (rule is inside only) -> none
    ])
    vel = np.zeros((12, 3))
    vel[[1, 2, 11], 1] = 10.0
    category = np.array([U, U, U, B, N, P, V, U, U, B, B, N])
    confidence = np.array([90, 90, 90, 90, 0, 50, 80, 90, 90, 90, 90, 0])
    hover = np.array([0.0] * 8 + [0.9, 0.0, 0.0, 0.0])
    height = pos[:, 2]
    out = assessor.assess(pos, vel, category, confidence, hover_fraction=hover, height_m=height)
    H, M, L, Z = Threat.HIGH, Threat.MEDIUM, Threat.LOW, Threat.NONE
    assert out.threat.tolist() == [H, H, L, Z, M, Z, L, M, H, L, Z, Z]
    assert out.inside[:, 0].tolist() == [True, False, False, True, True, True, True] + [False] * 5
    assert_allclose(out.time_to_zone_s[[1, 2], 0], [15.0, 40.0], atol=1e-4)
    # Without behaviour inputs, rules that need them do not apply.
    out = assessor.assess(pos, vel, category, confidence)
    assert out.threat[8] == M and out.threat[9] == Z


def test_no_zones_gives_the_baseline():
    a = ThreatAssessor(ThreatSettings(baseline_uas="medium", baseline_unknown="low"), SITE)
    out = a.assess(np.zeros((3, 3)), np.zeros((3, 3)), np.array([Category.UAS, Category.UNKNOWN, Category.BIRD]),
                   np.array([90, 0, 90]))
    assert out.threat.tolist() == [Threat.MEDIUM, Threat.LOW, Threat.NONE]
    assert out.inside.shape == (3, 0) and a.zone_of(27.5, -99.5) == set()


def build(text: str):
    root, problems = compose(text, "towerd.yaml")
    assert not problems
    v = Validator()
    return v.build(root, ThreatSettings), [p.format("towerd.yaml") for p in v.problems]


def test_zones_from_yaml():
    value, problems = build("""\
zones:
  - name: border-strip
    polygon: [[27.5054, -99.5178], [27.5054, -99.4974], [27.5063, -99.4974], [27.5063, -99.5178]]
    approach_time_s: 45
    rules:
      - {categories: [uas], level: high}
      - {categories: [unknown, bird], level: low, where: inside, min_confidence: 0}
baseline_uas: medium
""")
    assert problems == []
    z = value.zones[0]
    assert z.name == "border-strip" and len(z.polygon) == 4 and z.approach_time_s == 45.0
    assert z.rules[0].where == "inside_or_approaching" and z.rules[1].categories == ("unknown", "bird")
    a = ThreatAssessor(value, SITE)
    assert a.zone_of(27.5058, -99.50) == {"border-strip"}
    # Mistakes are reported with their place.
    value, problems = build("""\
zones:
  - name: a
    polygon: [[27.5, -99.5], [27.6, -99.5]]
    rules: [{categories: [drone], level: high}]
  - name: b
    polygon: [[27.5, -99.5], [27.6, -99.5], [27.6, -99.4]]
    rules: [{categories: [uas], level: severe}]
""")
    assert value is INVALID
    text = "\n".join(problems)
    assert "towerd.yaml:4:" in text and "drone" in text
    assert "zones[1].rules[0].level" in text and "severe" in text
    _, problems = build("zones:\n  - {name: a, polygon: [[1, 2], [1, 3]], rules: [{categories: [uas], level: low}]}\n")
    assert "at least 3 vertices" in problems[0]
    _, problems = build("""\
zones:
  - {name: a, polygon: [[1, 2], [1, 3], [2, 2]], rules: [{categories: [uas], level: low}]}
  - {name: a, polygon: [[1, 2], [1, 3], [2, 2]], rules: [{categories: [uas], level: low}]}
""")
    assert "duplicate zone names: a" in problems[0]
