"""Remote ID receiver emulator: its lines against the scenario's truth (decoded by the
driver's parser, whose decoding the protocol tests check against the reference), every
form, silent and spoofing drones, range, rate; the scenario file's remote_id section; and
`towerd sim --device remoteid` as a real subprocess."""

from __future__ import annotations

import math
import os
import select
import time
from pathlib import Path

import numpy as np
import pytest
from numpy.testing import assert_allclose

from processes import Sim

from towerd import geo
from towerd.sim.writer import EmulatorThread
from towerd.clock import ManualClock, SystemClock
from towerd.drivers.measurements import RidSource
from towerd.drivers.remoteid.protocol import RidParser
from towerd.sim.remoteid import RemoteIdEmulator, encode_location
from towerd.drivers.remoteid.driver import RemoteIdDriver, RemoteIdSettings
from towerd.errors import ConfigError
from towerd.sim.rid_spec import RemoteIdSpec
from towerd.sim.scenario import Scenario, Target, WaypointPath, load_scenario, parse_scenario

REPO = Path(__file__).resolve().parents[1]

SITE = geo.Site(27.5036, -99.5076, 130.0)
OPERATOR = (-40.0, 10.0, 1.5)


def flyer(name: str, east: float = 0.0, north: float = 300.0) -> Target:
    """Flies north at 4 m/s, 30 m up, from (east, north) for 1000 s."""
    return Target(name, "uas", -20.0, WaypointPath(((0.0, east, north, 30.0), (1000.0, east, north + 4000.0, 30.0))))


def lines_of(specs: dict[str, RemoteIdSpec], t_s: float, *, targets=None, seed: int = 1,
             **kw) -> tuple[list, RidParser, RemoteIdEmulator]:
    """Everything the emulator sends up to ``t_s`` (noise-free), decoded: (items, parser, emulator)."""
    targets = targets or tuple(flyer(name, east=100.0 * i) for i, name in enumerate(specs))
    em = RemoteIdEmulator(Scenario("rid", targets=targets), rng=np.random.default_rng(seed), site=SITE, specs=specs,
                          gnss_sigma_m=0.0, rssi_sigma_db=0.0, clock=ManualClock(), **kw)
    parser = RidParser()
    data = em.line_bytes(t_s, 0.0)
    consumed, items = parser.feed(bytearray(data))
    assert consumed == len(data) and parser.stats.bad_lines == 0 and parser.stats.text == 0, parser.stats
    return items, parser, em


def truth_geodetic(target: Target, t_s: float, offset_enu=(0.0, 0.0)) -> tuple[float, float, float]:
    _, pos, _ = target.state(t_s)
    pos = pos + np.array([*offset_enu, 0.0])
    lat, lon, h = geo.enu_to_geodetic(SITE, pos[None, :])
    return float(lat[0]), float(lon[0]), float(h[0])


@pytest.mark.parametrize("transport", ["ble", "bt5", "beacon", "nan"])
def test_f3411_hex_broadcasts_carry_the_truth_identity_and_pilot(transport):
    spec = RemoteIdSpec(uas_id="1581F5FKD229400001", transport=transport, operator_enu_m=OPERATOR,
                        operator_id="FIN87astrdge12k8", self_id="Survey flight")
    items, parser, em = lines_of({"d": spec}, 10.0)
    target = em.scenario.targets[0]
    expected_broadcasts = math.floor(10.0 - em.drones[0].phase_s) + 1  # at phase + k s, k = 0, 1, ...
    assert em.broadcasts == expected_broadcasts >= 10
    per_broadcast = 2 if transport == "ble" else 1
    assert len(items) == per_broadcast * expected_broadcasts
    source = {"ble": RidSource.BLUETOOTH_LEGACY, "bt5": RidSource.BLUETOOTH_LONG_RANGE,
              "beacon": RidSource.WIFI_BEACON, "nan": RidSource.WIFI_NAN}[transport]
    assert all(i["source"] == source and i["transmitter"] == spec.mac_for("d") for i in items)
    located = [i for i in items if "lat_deg" in i]
    assert len(located) == expected_broadcasts
    for k, item in enumerate(located):
        t_b = em.drones[0].phase_s + k
        lat, lon, h = truth_geodetic(target, t_b)
        assert_allclose([item["lat_deg"], item["lon_deg"]], [lat, lon], atol=1e-7)
        assert item["alt_geo_m"] == pytest.approx(h, abs=0.5) and item["height_m"] == pytest.approx(30.0, abs=0.5)
        assert item["speed_mps"] == pytest.approx(4.0, abs=0.25) and item["course_deg"] == 0.0
        rng_m = float(np.linalg.norm(target.state(t_b)[1] - np.array([0.0, 0.0, 10.0])))
        assert item["rssi_dbm"] == round(-40.0 - 20.0 * math.log10(rng_m))
        assert item["h_accuracy_m"] == 3.0 and item["v_accuracy_m"] == 10.0 and item["status"] == 2
    merged: dict = {}
    for item in items:
        merged.update(item)
    assert (merged["uas_id"], merged["operator_id"], merged["self_id"]) == (
        "1581F5FKD229400001", "FIN87astrdge12k8", "Survey flight")
    op_lat, op_lon, _ = geo.enu_to_geodetic(SITE, np.array([OPERATOR]))
    assert_allclose([merged["operator_lat_deg"], merged["operator_lon_deg"]], [op_lat[0], op_lon[0]], atol=1e-7)
    if transport != "ble":  # a pack: every broadcast says it all
        assert all("uas_id" in i and "operator_lat_deg" in i for i in items)


def test_json_and_dji_forms_and_the_silent_and_the_spoofing_drone():
    specs = {
        "mesh": RemoteIdSpec(uas_id="1581F8LQC255L00227P5", form="json", operator_enu_m=OPERATOR),
        "dji": RemoteIdSpec(uas_id="3NZCH7K0010ABC", form="dji", operator_enu_m=(5.0, -5.0, 1.0)),
        "quiet": RemoteIdSpec(silent=True),
        "liar": RemoteIdSpec(uas_id="SPOOF-1", form="json", spoof_offset_m=250.0, spoof_bearing_deg=90.0),
    }
    items, parser, em = lines_of(specs, 3.0)
    targets = {t.name: t for t in em.scenario.targets}
    by_id = {}
    for item in items:
        by_id.setdefault(item["uas_id"], []).append(item)
    assert set(by_id) == {"1581F8LQC255L00227P5", "3NZCH7K0010ABC", "SPOOF-1"}  # the silent drone says nothing
    drone = {d.name: d for d in em.drones}
    for name, uas_id in (("mesh", "1581F8LQC255L00227P5"), ("liar", "SPOOF-1")):
        first = by_id[uas_id][0]
        lat, lon, h = truth_geodetic(targets[name], drone[name].phase_s, (250.0, 0.0) if name == "liar" else (0, 0))
        assert_allclose([first["lat_deg"], first["lon_deg"]], [lat, lon], atol=1e-6)  # %.6f
        assert first["alt_geo_m"] == float(int(h)) and first["transmitter"] == specs[name].mac_for(name)
    assert "operator_lat_deg" not in by_id["SPOOF-1"][0]  # pilot 0.000000: not heard
    dji = by_id["3NZCH7K0010ABC"][0]
    lat, lon, _ = truth_geodetic(targets["dji"], drone["dji"].phase_s)
    assert dji["source"] == RidSource.DJI_DRONEID and dji["transmitter"] == ""
    assert_allclose([dji["lat_deg"], dji["lon_deg"], dji["speed_mps"], dji["course_deg"], dji["height_m"]],
                    [lat, lon, 4.0, 0.0, 30.0], atol=1e-7)
    assert "operator_lat_deg" in dji and "home_lat_deg" in dji


def test_beyond_the_receivers_sensitivity_nothing_is_heard():
    far = RemoteIdSpec(uas_id="FAR", rssi_at_1m_dbm=-40.0)
    items, _, em = lines_of({"far": far}, 5.0, targets=(flyer("far", north=2000.0),), sensitivity_dbm=-95.0)
    assert items == [] and em.missed >= 5 and em.broadcasts == 0  # -40 - 20 log10(2000) = -106 dBm


def test_rate_and_phase_broadcasts_at_rate_hz_each_on_its_own_schedule():
    specs = {"a": RemoteIdSpec(uas_id="A", transport="beacon", rate_hz=1.0),
             "b": RemoteIdSpec(uas_id="B", transport="beacon", rate_hz=4.0)}
    targets = (flyer("a"), flyer("b", east=50.0))
    em = RemoteIdEmulator(Scenario("r", targets=targets), rng=np.random.default_rng(2), site=SITE, specs=specs,
                          clock=ManualClock())
    parser = RidParser()
    counts = {"A": 0, "B": 0}
    for step in range(1, 201):  # 20 s in 0.1 s steps, as the writer's ticks would ask
        _, items = parser.feed(bytearray(em.line_bytes(step * 0.1, 0.0)))
        for item in items:
            counts[item["uas_id"]] += 1
    assert counts == {"A": pytest.approx(20, abs=1), "B": pytest.approx(80, abs=1)}
    assert em.drones[0].phase_s != em.drones[1].phase_s


def test_location_encoder_unknowns_round_trip():
    msg = encode_location(status=2, lat=float("nan"), lon=float("nan"), alt_geo=float("nan"), height=10.0,
                          speed=float("nan"), course=float("nan"), vertical=float("nan"), timestamp_s=float("nan"))
    parser = RidParser()
    _, items = parser.feed(bytearray(msg.hex().encode() + b"\n"))
    (item,) = items
    for key in ("lat_deg", "alt_geo_m", "speed_mps", "course_deg", "vertical_speed_mps", "broadcast_time_s"):
        assert math.isnan(item[key]), key
    assert item["height_m"] == 10.0


def test_scenario_files_carry_remote_id_and_name_every_problem_in_it():
    scenario = load_scenario(REPO / "config" / "scenarios" / "remoteid.yaml")
    specs = {t.name: t.remote_id for t in scenario.targets}
    assert specs["silent"].silent and specs["spoofer"].spoof_offset_m == 300.0
    assert {s.form for s in specs.values()} == {"json", "f3411-hex", "dji"}
    assert specs["hex-ble"] == RemoteIdSpec(uas_id="1581F5FKD229400001", operator_enu_m=(-40.0, 10.0, 1.5),
                                            operator_id="FIN87astrdge12k8", self_id="Survey flight")
    raw = {"targets": [{"name": "a", "kind": "uas", "rcs_dbsm": -20, "waypoints": [[0, 0, 0, 10], [10, 0, 100, 10]],
                        "remote_id": {"uas_id": 1581, "colour": "red", "rate_hz": 0, "form": "morse"}}]}
    with pytest.raises(ConfigError) as err:
        parse_scenario(raw, "s.yaml")
    text = "\n".join(err.value.problems)
    for key in ("remote_id.uas_id", "remote_id.colour", "remote_id.rate_hz", "remote_id.form"):
        assert f"targets[0].{key}" in text, text
    raw["targets"][0]["remote_id"] = {"operator_id": "OP"}
    with pytest.raises(ConfigError, match="uas_id is required unless the drone is silent"):
        parse_scenario(raw, "s.yaml")


def test_towerd_sim_runs_the_receiver_on_a_pty_from_a_scenario_file(towerd_exe, tmp_path):
    """`towerd sim --device remoteid` as field users run it; its port read by the driver."""
    sim = Sim(towerd_exe, tmp_path, "--device", "remoteid", "--scenario",
              str(REPO / "config" / "scenarios" / "remoteid.yaml"), "--site", "27.5036", "-99.5076", "130.0",
              "--link", str(tmp_path / "rid0"))
    try:
        log = sim.wait_for("ready")
        assert "remoteid" in log
        with RemoteIdDriver("rid0", RemoteIdSettings(port=str(tmp_path / "rid0"))) as driver:
            heard: dict[str, dict] = {}
            deadline = time.monotonic() + 15.0
            while len(heard) < 5 and time.monotonic() < deadline:
                for r in driver.read():
                    if r.uas_id:
                        heard.setdefault(r.uas_id, {"source": r.source})
        sim.send("status")
        sim.wait_for("broadcasts ")
    finally:
        assert sim.stop() == 0, sim.log()
    assert set(heard) == {"1581F5FKD229400001", "1581F8LQC255L00227P5", "1581F4QWD215P00A0042",
                          "1581F6ZZX001SPOOF000", "1581F9FAR000000000F1"}  # not the silent one
    assert heard["1581F4QWD215P00A0042"]["source"] == RidSource.DJI_DRONEID
    assert driver.counters.bad_frames == 0


def test_towerd_sim_remoteid_without_site_is_refused(towerd_exe, tmp_path):
    sim = Sim(towerd_exe, tmp_path, "--device", "remoteid", "--scenario",
              str(REPO / "config" / "scenarios" / "remoteid.yaml"))
    assert sim.proc.wait(15) == 2  # options that do not fit the device: a usage error, as for the other emulators
    sim.stop()
    assert "needs --site" in sim.log()


class _Ticker(EmulatorThread):
    """The smallest line device on the shared paced writer: one byte per tick."""

    def __init__(self, period_s: float) -> None:
        self._init_thread()
        self.clock, self.period_s = SystemClock(), period_s
        self.bytes_per_s, self.bytes_sent, self.bytes_dropped, self.error = 1e6, 0, 0, None
        self.ticks: list[tuple[int, int, bool]] = []
        self._stall_until = -math.inf

    def start(self, pty) -> None:
        self._begin()
        self.t0_mono = self.clock.monotonic()
        self._launch(self._paced_run, (pty, self.period_s, self._next, "ticker"), "ticker")

    def _next(self, k: int, now: float, skipped: int, stalled: bool) -> bytes:
        self.ticks.append((k, skipped, stalled))
        return bytes([65 + k % 26])


def test_the_shared_paced_writer_numbers_ticks_passes_over_late_ones_and_drops_a_stall(pty_pair):
    """Both line emulators' loop (EmulatorThread._paced_run): tick k follows k - 1 - skipped,
    and what a stalled line's ticks make never reaches the wire."""
    ticker = _Ticker(0.01)
    ticker.start(pty_pair)
    try:
        deadline = time.monotonic() + 10.0
        while len(ticker.ticks) < 20 and time.monotonic() < deadline:
            time.sleep(0.01)  # polling another thread's progress
        ticker._stall_until = ticker.clock.monotonic() + 0.1
        while not any(s for _, _, s in ticker.ticks) and time.monotonic() < deadline:
            time.sleep(0.01)
        while ticker.clock.monotonic() < ticker._stall_until + 0.05 and time.monotonic() < deadline:
            time.sleep(0.01)
    finally:
        ticker.stop()
    ks = [k for k, _, _ in ticker.ticks]
    assert ks[0] == ticker.ticks[0][1]  # tick 0, or the first tick the thread was in time for
    assert all(k == prev + 1 + skipped for prev, (k, skipped, _) in zip(ks, ticker.ticks[1:]))
    sent = bytes(65 + k % 26 for k, _, stalled in ticker.ticks if not stalled)
    got = b""
    while len(got) < len(sent) and select.select([pty_pair.slave_fd], [], [], 2.0)[0]:  # the wire, port side
        got += os.read(pty_pair.slave_fd, 4096)
    assert any(stalled for _, _, stalled in ticker.ticks) and got == sent and ticker.bytes_sent == len(sent)
