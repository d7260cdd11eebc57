"""Scenario radio emitters and interferers: defaults, validation, YAML, timing."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from numpy.testing import assert_allclose

from towerd.errors import ConfigError
from towerd.sim.scenario import (
    ELRS_EU868_MHZ,
    ELRS_FCC915_MHZ,
    EMITTER_KINDS,
    Emitter,
    Interferer,
    Scenario,
    Target,
    WaypointPath,
    builtin_scenario,
    load_scenario,
)


def test_defaults_per_kind_follow_the_notes():
    assert len(ELRS_FCC915_MHZ) == 40 and (ELRS_FCC915_MHZ[0], ELRS_FCC915_MHZ[-1]) == (903.5, 926.9)
    assert len(ELRS_EU868_MHZ) == 13 and (ELRS_EU868_MHZ[0], ELRS_EU868_MHZ[-1]) == (863.275, 869.575)
    oc = Emitter.of("ocusync")
    assert (oc.centres_mhz, oc.bandwidth_mhz, oc.duty_cycle) == ((2459.5,), 10.0, 1.0)
    assert Emitter.of("droneid").duty_cycle == pytest.approx(0.001)  # 600 us every 600 ms
    assert Emitter.of("analog_video").bandwidth_mhz == 16.0
    v = Emitter.of("ocusync", centres_mhz=[5785.5], bandwidth_mhz=20)
    assert v.centres_mhz == (5785.5,) and v.bandwidth_mhz == 20
    assert set(EMITTER_KINDS) == {"ocusync", "elrs", "analog_video", "droneid", "wifi", "cw", "bluetooth"}


@pytest.mark.parametrize(
    "kw",
    [
        {"kind": "zigbee"},
        {"centres_mhz": ()},
        {"centres_mhz": (-5.0,)},
        {"bandwidth_mhz": 0.0},
        {"tx_power_dbm": 99.0},
        {"duty_cycle": 0.0},
        {"duty_cycle": 1.5},
    ],
)
def test_emitter_validation(kw):
    values = {"kind": "wifi", "centres_mhz": (2437.0,), "bandwidth_mhz": 20.0, "tx_power_dbm": 20.0,
              "duty_cycle": 0.3, **kw}
    with pytest.raises(ValueError):
        Emitter(**values)


def test_emitters_ride_on_present_targets_and_interferers_stay():
    path = WaypointPath(((10.0, 0.0, 100.0, 20.0), (20.0, 100.0, 100.0, 20.0)))
    drone = Target("d", "uas", -20.0, path, emitters=(Emitter.of("elrs"), Emitter.of("ocusync")))
    ap = Interferer("ap", 5.0, 6.0, 7.0, Emitter.of("wifi"))
    sc = Scenario("s", targets=(drone, Target("quiet", "bird", -25.0, path)), interferers=(ap,), duration_s=30.0)
    at15 = sc.emitters_at(15.0)
    assert [e.kind for e, _ in at15] == ["elrs", "ocusync", "wifi"]
    assert_allclose(at15[0][1], [50.0, 100.0, 20.0])
    assert_allclose(at15[2][1], [5.0, 6.0, 7.0])
    assert [e.kind for e, _ in sc.emitters_at(5.0)] == ["wifi"]  # drone not yet there
    assert [e.kind for e, _ in sc.emitters_at(45.0)] == ["elrs", "ocusync", "wifi"]  # wraps to 15 s
    # Old positional construction still works and carries no emitters.
    assert Target("t", "uas", -20.0, path).emitters == ()


def test_demo_drones_carry_links_and_the_yaml_agrees():
    demo = builtin_scenario("demo")
    kinds = {t.name: [e.kind for e in t.emitters] for t in demo.targets}
    assert kinds == {"crossing": ["ocusync", "droneid"], "orbiter": ["elrs", "analog_video"],
                     "climber": ["ocusync"]}
    assert demo.targets[1].emitters[0].centres_mhz == ELRS_EU868_MHZ
    assert [i.name for i in demo.interferers] == ["farm-ap"]
    assert load_scenario(Path(__file__).resolve().parents[1] / "config" / "scenarios" / "demo.yaml") == demo


GOOD = """
targets:
  - name: d
    kind: uas
    rcs_dbsm: -20
    waypoints: [[0, 0, 10, 5], [10, 10, 10, 5]]
    emitters:
      - {kind: ocusync, centre_mhz: 5785.5, bandwidth_mhz: 20}
      - {kind: elrs, centre_mhz: [868.0, 868.525], tx_power_dbm: 14, duty_cycle: 0.5}
interferers:
  - {name: ap, east_m: 1, north_m: 2, up_m: 3, kind: wifi, centre_mhz: 2412}
"""


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "sc.yaml"
    path.write_text(text)
    return path


def test_yaml_emitters_and_interferers(tmp_path):
    sc = load_scenario(_write(tmp_path, GOOD))
    oc, elrs = sc.targets[0].emitters
    assert oc == Emitter.of("ocusync", centres_mhz=(5785.5,), bandwidth_mhz=20.0)
    assert (elrs.centres_mhz, elrs.tx_power_dbm, elrs.duty_cycle, elrs.bandwidth_mhz) == ((868.0, 868.525), 14.0,
                                                                                         0.5, 0.5)
    assert sc.interferers == (Interferer("ap", 1.0, 2.0, 3.0, Emitter.of("wifi", centres_mhz=(2412.0,))),)


@pytest.mark.parametrize(
    ("old", "new", "message"),
    [
        ("kind: ocusync", "kind: lte", r"targets\[0\]\.emitters\[0\]\.kind: must be one of ocusync"),
        ("bandwidth_mhz: 20}", "bandwith_mhz: 20}", r"targets\[0\]\.emitters\[0\]\.bandwith_mhz: unknown key"),
        ("duty_cycle: 0.5", "duty_cycle: 2", r"targets\[0\]\.emitters\[1\]\.duty_cycle: must be in \(0, 1\]"),
        ("centre_mhz: [868.0, 868.525]", "centre_mhz: [868.0, x]", r"emitters\[1\]\.centre_mhz: must be a frequency"),
        ("tx_power_dbm: 14", "tx_power_dbm: 140", r"emitters\[1\]: tx_power_dbm must be in"),
        ("east_m: 1, ", "", r"interferers\[0\]\.east_m: is required"),
        ("kind: wifi", "kind: radar", r"interferers\[0\]\.kind: must be one of"),
    ],
)
def test_yaml_emitter_errors_name_file_and_key(tmp_path, old, new, message):
    assert old in GOOD
    with pytest.raises(ConfigError, match=message):
        load_scenario(_write(tmp_path, GOOD.replace(old, new, 1)))


def test_emitters_must_be_a_list(tmp_path):
    text = GOOD.replace("    emitters:\n      - {kind: ocusync", "    emitters: {kind: ocusync").replace(
        "bandwidth_mhz: 20}\n      - {kind: elrs, centre_mhz: [868.0, 868.525], tx_power_dbm: 14, duty_cycle: 0.5}",
        "bandwidth_mhz: 20}")
    with pytest.raises(ConfigError, match=r"targets\[0\]\.emitters: must be a list"):
        load_scenario(_write(tmp_path, text))
    assert np.isfinite(Emitter.of("cw").bandwidth_mhz)
