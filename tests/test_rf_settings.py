"""RF settings: valid through the YAML schema validator (types, ranges, cross-checks),
defaults as documented."""

from __future__ import annotations

import pytest

from towerd.rf.processor import DEFAULT_BANDS, RfSettings
from towerd.schema import Validator, compose

YAML = """\
bands:
  - {name: "2g4", start_mhz: 2400.0, stop_mhz: 2483.5}
  - {name: "5g8", start_mhz: 5725.0, stop_mhz: 5875.0}
cfar:
  kind: ca
  pfa: 1.0e-4
  reference_cells: 24
  guard_cells: 3
  looks: 8
floor:
  time_constant_s: 60
tracking:
  confirm_hits: 2
  confirm_window: 3
classify:
  video_bands_mhz: [[2400.0, 2483.5], [5645.0, 5945.0]]
fusion:
  min_jaccard: 0.9
reports:
  non_drone: true
"""


def build(text: str):
    node, problems = compose(text, "rf.yaml")
    assert not problems
    v = Validator()
    value = v.build(node, RfSettings)
    return value, [p.format("rf.yaml") for p in v.problems]


def test_rf_settings_load_from_yaml():
    s, problems = build(YAML)
    assert problems == []
    assert s.cfar.kind == "ca" and s.cfar.pfa == 1e-4 and s.cfar.looks == 8 and s.cfar.reference_cells == 24
    assert [b.name for b in s.bands] == ["2g4", "5g8"]
    assert s.classify.video_bands_mhz == ((2400.0, 2483.5), (5645.0, 5945.0))
    assert s.tracking.confirm_hits == 2 and s.fusion.min_jaccard == 0.9 and s.reports.non_drone


@pytest.mark.parametrize(
    "text,message",
    [
        ("cfar: {pfa: 0.5}", "rf.yaml:1:13: cfar.pfa: 0.5 is out of range, expected 1e-12..0.01"),
        ("cfar: {kind: median}", "cfar.kind: 'median' is not allowed, expected one of 'ca', 'os'"),
        ("cfar: {reference_cells: 15}", "reference_cells must be even"),
        ("tracking: {confirm_hits: 5, confirm_window: 3}", "confirm_hits <= confirm_window"),
        ("bands: [{name: a, start_mhz: 2500, stop_mhz: 2400}]", "must be below stop_mhz"),
        ("bands: [{name: a, start_mhz: 1, stop_mhz: 2}, {name: a, start_mhz: 3, stop_mhz: 4}]", "repeated: a"),
        ("flor: {}", "unknown key, did you mean 'floor'?"),
    ],
)
def test_rf_settings_problems_are_located(text, message):
    _, problems = build(text)
    assert any(message in p for p in problems), problems


def test_defaults_are_the_documented_band_plan_and_detector():
    s = RfSettings()
    assert [(b.name, b.start_mhz, b.stop_mhz) for b in DEFAULT_BANDS] == [
        ("433", 433.05, 434.79), ("868", 863.0, 870.0), ("915", 902.0, 928.0),
        ("2g4", 2400.0, 2483.5), ("5g8", 5725.0, 5875.0),
    ]
    assert s.bands == DEFAULT_BANDS
    assert (s.cfar.kind, s.cfar.pfa, s.cfar.reference_cells, s.cfar.guard_cells, s.cfar.looks) == ("os", 1e-3, 16, 2, 1)
