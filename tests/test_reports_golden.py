"""The same scenario gives byte-identical reports: a golden of every record the pipeline
produced for a scenario (radar and RF), labels included.

The scenario exercises every label: drones (classified uas), static reflectors (tracks
withheld, the clutter map learnt), a drone's video link (an RF track, radar/RF fusion by
timing, RF-only records before it) and two threat zones (inside, approaching, hovering
and height rules).
The TI and RF Explorer emulators build the bytes, the real drivers decode them, a real
:class:`~towerd.pipeline.Pipeline` (ManualClock) turns them into records, with
``expire`` every 0.25 s as the daemon calls it. The golden
(``tests/goldens/scenario_records.bin``, TRACK_RECORD_DTYPE rows in order) was written by
commit 88a59ac's pipeline, which labelled every track on every call; computing labels
on report or on change must not change one byte. Regenerate it only for an intended
change of the reports: ``python tests/test_reports_golden.py --write``.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

from towerd.clock import ManualClock
from towerd.config import parse_config
from towerd.drivers.rfexplorer.driver import RfExplorerDriver, RfExplorerSettings
from towerd.drivers.ti_mmwave.driver import TiMmwaveDriver, TiMmwaveSettings
from towerd.icd import TRACK_RECORD_DTYPE
from towerd.pipeline import Pipeline
from towerd.sim.rfexplorer import RfExplorerEmulator
from towerd.sim.scenario import ClutterPoint, Emitter, Interferer, OrbitPath, Scenario, Target, WaypointPath
from towerd.sim.ti_mmwave import TiMmwaveEmulator

GOLDEN = Path(__file__).parent / "goldens" / "scenario_records.bin"
DURATION_S = 30.0
RATE_HZ = 10.0
EXPIRE_S = 0.25
CONFIG = """\
version: 1
tower: {id: tx-golden-001, latitude_deg: 27.5036, longitude_deg: -99.5076, height_m: 130.0}
sensors:
  - name: radar0
    driver: ti_mmwave
    settings: {port: /dev/null}
    mount: {boresight_azimuth_deg: 0, position_enu_m: [0, 0, 10]}
  - name: rf0
    driver: rfexplorer
    settings: {port: /dev/null}
rf: {cfar: {looks: 8}}
threat:
  zones:
    - name: yard
      polygon: [[27.5039, -99.5080], [27.5039, -99.5072], [27.5046, -99.5072], [27.5046, -99.5080]]
      approach_time_s: 20
      rules:
        - {categories: [uas], level: high}
        - {categories: [unknown], level: medium, where: inside}
        - {categories: [uas], level: medium, where: approaching, max_height_m: 50}
    - name: strip
      polygon: [[27.5043, -99.5090], [27.5043, -99.5060], [27.5050, -99.5060], [27.5050, -99.5090]]
      rules:
        - {categories: [uas, unknown], level: low, where: inside, min_hover_fraction: 0.05}
        - {categories: [bird], level: low, where: inside_or_approaching, min_confidence: 30}
"""


def scenario() -> Scenario:
    """A drone whose video link starts with it (radar/RF fusion by timing), a drone without
    a link that hovers for a while, a bird, the demo's three static reflectors and a Wi-Fi
    access point."""
    return Scenario(
        name="golden",
        duration_s=DURATION_S,
        false_alarms_per_frame=1.0,
        clutter=(ClutterPoint(15.0, 40.0, 8.0, 10.0), ClutterPoint(-50.0, 120.0, 5.0, 20.0),
                 ClutterPoint(60.0, 100.0, 6.0, 0.0)),
        targets=(
            Target("linked", "uas", -18.0, OrbitPath(centre_enu_m=(0.0, 80.0), radius_m=20.0, speed_mps=6.0,
                                                     start_deg=90.0, up_m=40.0, t_start_s=3.0, t_end_s=None),
                   emitters=(Emitter.of("ocusync", centres_mhz=(2472.0,), bandwidth_mhz=10.0),)),
            Target("hoverer", "uas", -20.0, WaypointPath(((0.0, -40.0, 60.0, 30.0), (8.0, -10.0, 70.0, 30.0),
                                                          (18.0, -10.0, 70.0, 30.0), (30.0, 30.0, 90.0, 30.0)))),
            Target("bird", "bird", -30.0, WaypointPath(((0.0, 40.0, 30.0, 15.0), (30.0, -40.0, 140.0, 25.0)))),
        ),
        interferers=(Interferer("farm-ap", -150.0, 260.0, 6.0, Emitter.of("wifi")),),
    )


def scenario_records() -> np.ndarray:
    """Every record the pipeline produced for the scenario, in order."""
    scenario_ = scenario()
    clock = ManualClock()
    pipeline = Pipeline(parse_config(CONFIG, "golden.yaml"), clock)
    radar = TiMmwaveEmulator(scenario_, boresight_azimuth_deg=0.0, position_enu_m=(0.0, 0.0, 10.0),
                             frame_rate_hz=RATE_HZ, rng=np.random.default_rng(16))
    rf = RfExplorerEmulator(scenario_, rng=np.random.default_rng(17), position_enu_m=(0.0, 0.0, 10.0),
                            sweep_rate_hz=RATE_HZ)
    ti = TiMmwaveDriver("radar0", TiMmwaveSettings(port="/dev/null"))
    rfe = RfExplorerDriver("rf0", RfExplorerSettings(port="/dev/null"))
    out = [pipeline.process(r) for r in rfe.feed(rf.model_line() + rf.config_line(), 0.0)]
    next_expire = 0.0
    for k in range(int(DURATION_S * RATE_HZ)):
        t = k / RATE_HZ
        clock.advance(t - clock.monotonic())
        out += [pipeline.process(r) for r in ti.feed(radar.frame_bytes(t, k + 1), t)]
        t_rf = t + 0.5 / RATE_HZ  # sweeps half way between frames
        clock.advance(t_rf - clock.monotonic())
        out += [pipeline.process(r) for r in rfe.feed(rf.sweep_bytes(t_rf), t_rf)]
        if t_rf >= next_expire:
            out.append(pipeline.expire(t_rf))
            next_expire = t_rf + EXPIRE_S
    out.append(pipeline.end_all(DURATION_S))
    return np.concatenate(out).astype(TRACK_RECORD_DTYPE, copy=False)


def describe(records: np.ndarray) -> str:
    return (f"{len(records)} records, tracks {len(np.unique(records['track_id']))}, categories "
            f"{np.unique(records['category']).tolist()}, threats {np.unique(records['threat']).tolist()}, "
            f"sources {np.unique(records['sources']).tolist()}")


def test_scenario_gives_the_golden_records_byte_for_byte():
    got = scenario_records()
    want = np.frombuffer(GOLDEN.read_bytes(), dtype=TRACK_RECORD_DTYPE)
    if got.tobytes() != want.tobytes():
        n = min(len(got), len(want))
        diff = np.flatnonzero(got[:n].view(np.uint8).reshape(n, -1).astype(np.int16)
                              .__sub__(want[:n].view(np.uint8).reshape(n, -1)).any(axis=1))
        first = int(diff[0]) if len(diff) else n
        raise AssertionError(f"got {describe(got)}; golden {describe(want)}; first difference at record {first}: "
                             f"{got[first] if first < len(got) else None} != {want[first] if first < len(want) else None}")
    # The scenario exercises what the labels say: classified drones, threat levels from
    # the zones, RF-linked radar tracks and RF-only tracks.
    assert 1 in got["category"]
    assert len(np.unique(got["threat"])) >= 3
    assert set(np.unique(got["sources"]).tolist()) >= {1, 2, 3}


if __name__ == "__main__":
    if sys.argv[1:] == ["--write"]:
        records = scenario_records()
        GOLDEN.parent.mkdir(exist_ok=True)
        GOLDEN.write_bytes(records.tobytes())
        print(f"wrote {GOLDEN}: {describe(records)}")
