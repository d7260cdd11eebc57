"""NMEA radar: emulator sentences against the parser, the driver's scans and plot form,
and both together over real ptys at line rate, with every fault."""

from __future__ import annotations

import math
import queue
import time
from pathlib import Path

import numpy as np
import pytest
from numpy.testing import assert_allclose, assert_array_equal

from towerd import geo
from towerd.config import parse_config
from towerd.detection.plots import MeasurementNoise as PlotNoise
from towerd.detection.plots import PlotConverter, SensorMount
from towerd.drivers import driver_class
from towerd.drivers.measurements import GEO_PLOT_DTYPE, PLOT_DTYPE, GeoPlots, RadarPlots
from towerd.drivers.nmea_radar.driver import NmeaRadarDriver, NmeaRadarSettings
from towerd.drivers.nmea_radar.protocol import NmeaParser, sentence
from towerd.errors import ConfigError
from towerd.sensors import SensorRunner, SensorState
from towerd.sim.nmea_radar import NmeaRadarEmulator
from towerd.sim.scenario import MeasurementNoise, Scenario, Target, WaypointPath, builtin_scenario

NO_NOISE = MeasurementNoise(0.0, 0.0, 0.0, 0.0)
SITE = geo.Site(27.5036, -99.5076, 130.0)


def line_target(name: str, start, end, t_end: float = 1000.0) -> Target:
    """Constant velocity from ``start`` (east, north) at t=0 to ``end`` at t_end, 20 m up."""
    return Target(name, "vehicle", 10.0, WaypointPath(((0.0, *start, 20.0), (t_end, *end, 20.0))))


def emulator(scenario: Scenario, **kw) -> NmeaRadarEmulator:
    kw.setdefault("rng", np.random.default_rng(3))
    return NmeaRadarEmulator(scenario, **kw)


def decode(data: bytes) -> np.ndarray:
    parser = NmeaParser()
    consumed, rows = parser.feed(data)
    assert consumed == len(data) and parser.stats.bad_sentences == 0, parser.stats
    return rows


# ----------------------------------------------------------------------------- emulator bytes


@pytest.mark.parametrize("units", ["N", "K", "S"])
@pytest.mark.parametrize(("bearing_ref", "course_ref"), [("T", "T"), ("R", "R"), ("R", "T")])
def test_emulated_ttm_matches_truth_in_every_unit_and_reference(units, bearing_ref, course_ref):
    heading = 30.0
    mount = np.array([5.0, -3.0, 12.0])
    sc = Scenario("two", targets=(line_target("a", (300.0, 400.0), (300.0, 1400.0)),
                                  line_target("b", (-800.0, -100.0), (200.0, -100.0))), noise=NO_NOISE)
    em = emulator(sc, heading_deg=heading, position_enu_m=tuple(mount), units=units, bearing_ref=bearing_ref,
                  course_ref=course_ref)
    rows = decode(em.scan_bytes(10.0))
    truth = sc.truth(10.0)
    assert len(rows) == 2 and set(rows["target_number"]) == {1, 2}
    by_name = {em._name(n): i for i, n in enumerate(truth["name"])}
    for row in rows:
        i = by_name[row["name"]]
        rel = np.array([truth["east_m"][i], truth["north_m"][i]]) - mount[:2]
        bearing = math.degrees(math.atan2(rel[0], rel[1])) % 360.0
        course = math.degrees(math.atan2(truth["vel_east_mps"][i], truth["vel_north_mps"][i])) % 360.0
        if bearing_ref == "R":
            bearing = (bearing - heading) % 360.0
        if course_ref == "R":
            course = (course - heading) % 360.0
        assert row["bearing_true"] == (bearing_ref == "T") and row["course_true"] == (course_ref == "T")
        unit_m = {"N": 1852.0, "K": 1000.0, "S": 1609.344}[units]
        assert_allclose(row["distance_m"], np.hypot(*rel), atol=0.5e-4 * unit_m)
        assert_allclose(row["bearing_deg"], bearing, atol=0.05)
        assert_allclose(row["speed_mps"], 1.0, atol=0.005 * unit_m / 3600.0)
        assert_allclose(row["course_deg"], course, atol=0.05)  # the parser keeps R courses as sent
        assert row["status"] == "Q" and row["units"] == units


def test_target_numbers_status_and_lost_targets():
    sc = Scenario("s", targets=(
        line_target("stays", (0.0, 500.0), (0.0, 600.0)),
        Target("leaves", "uas", -20.0, WaypointPath(((0.0, 100.0, 100.0, 20.0), (3.0, 100.0, 130.0, 20.0)))),
        Target("late", "uas", -20.0, WaypointPath(((4.0, -100.0, 100.0, 20.0), (100.0, -100.0, 200.0, 20.0)))),
    ), noise=NO_NOISE)
    em = emulator(sc, acquire_scans=2)
    scans = [decode(em.scan_bytes(t)) for t in (0.0, 1.0, 2.0, 3.5, 5.0)]
    numbers = [dict(zip(s["name"], s["target_number"])) for s in scans]
    statuses = [dict(zip(s["name"], s["status"])) for s in scans]
    assert numbers[0] == {"stays": 1, "leaves": 2}
    assert statuses[0] == {"stays": "Q", "leaves": "Q"} and statuses[2] == {"stays": "T", "leaves": "T"}
    assert statuses[3] == {"stays": "T", "leaves": "L"}  # reported lost once
    lost = scans[3][scans[3]["status"] == "L"][0]
    assert math.isnan(lost["distance_m"]) and lost["target_number"] == 2
    assert numbers[4] == {"stays": 1, "late": 2}  # the freed number is reused


def test_thirteen_field_form_and_tll_positions():
    mount = np.array([10.0, 20.0, 12.0])
    sc = Scenario("one", targets=(line_target("t", (350.0, -250.0), (350.0, 750.0)),), noise=NO_NOISE)
    em = emulator(sc, sentences=("TTM", "TLL"), site=SITE, position_enu_m=tuple(mount), ttm_fields=13,
                  talker="TI")
    data = em.scan_bytes(5.0)
    ttm_line = data.split(b"\r\n")[0]
    assert ttm_line.startswith(b"$TITTM,01,") and ttm_line.count(b",") == 13
    ttm, tll = decode(data)
    assert ttm["talker"] == "TI" and tll["sentence"] == "TLL" and tll["target_number"] == 1
    truth = sc.truth(5.0)
    enu = geo.geodetic_to_enu(SITE, tll["latitude_deg"], tll["longitude_deg"], SITE.height_m + mount[2])[0]
    assert_allclose(enu[:2], [truth["east_m"][0], truth["north_m"][0]], atol=0.5)


# ----------------------------------------------------------------------------- driver


def feed(driver: NmeaRadarDriver, data: bytes, t: float) -> list:
    return driver.feed(data, t)


def test_driver_gathers_a_scan_until_a_number_repeats_or_the_line_goes_quiet():
    d = NmeaRadarDriver("radar1", NmeaRadarSettings(port="/dev/null", scan_gap_s=0.5))
    a = sentence("RATTM,01,1.0,10.0,T,10.0,90.0,T,0.5,1.0,N,,T,,,A")
    b = sentence("RATTM,02,2.0,350.0,R,5.0,180.0,R,0.5,1.0,N,,Q,,,A")
    lost = sentence("RATTM,03,,,T,,,T,,,N,,L,,,A")
    bare = sentence("RATTM,04,,,T,,,T,,,N,,T,,,A")
    assert feed(d, a + b + lost + bare, 1.0) == []
    (scan,) = feed(d, a, 1.1)  # target 1 again: the previous scan is complete
    assert isinstance(scan, RadarPlots) and scan.frame_number == 1 and scan.t_mono == 1.0
    p = scan.plots
    assert p.dtype == PLOT_DTYPE and list(p["target_id"]) == [1, 2]
    assert_allclose(p["range_m"], [1852.0, 3704.0])
    assert_allclose(p["azimuth_deg"], [10.0, -10.0])  # relative bearing 350 -> -10 from boresight
    assert list(p["azimuth_is_true"]) == [True, False]
    assert_allclose(p["speed_mps"], [10 * 1852 / 3600, 5 * 1852 / 3600])
    assert p["course_deg"][0] == 90.0 and math.isnan(p["course_deg"][1])  # relative course unknown here
    assert np.isnan(p["elevation_deg"]).all() and np.isnan(p["radial_vel_mps"]).all()
    assert (d.lost_targets, d.incomplete_targets, d.relative_courses) == (1, 1, 1)
    assert d.poll(1.5) == []
    (quiet,) = d.poll(1.61)  # 0.5 s after the last sentence
    assert quiet.frame_number == 2 and list(quiet.plots["target_id"]) == [1]
    assert d.poll(5.0) == []
    c = d.counters
    assert (c.frames, c.bad_frames) == (5, 0)


RELAY = Path(__file__).parent / "captures" / "nmea_radar" / "broadband4g_marpa_2015.nmea"


def paced_seconds(data: bytes) -> list[tuple[float, bytes]]:
    """The recording cut at each $GPZDA (the bus sends one a second; the log has no read
    times), each second's bytes read at that second."""
    out: list[tuple[float, bytes]] = []
    for chunk in data.split(b"$GPZDA,")[1:]:
        hhmmss = chunk[:6]
        out.append((int(hhmmss[:2]) * 3600.0 + int(hhmmss[2:4]) * 60.0 + int(hhmmss[4:6]), b"$GPZDA," + chunk))
    return out


@pytest.mark.parametrize(("scan_gap_s", "targets_per_scan"), [(0.5, 1), (2.0, 3)])
def test_a_relay_sending_one_target_a_second_gives_whole_scans_with_a_longer_gap(scan_gap_s, targets_per_scan):
    """The real Broadband 4G relay (tests/captures/nmea_radar) sends one target's TLL and
    TTM a second, in turn, not one burst a revolution. With the default gap every target is
    a scan of its own (the tracker then counts the others missed); with a gap above the
    one-second spacing a scan is one turn through the targets (mostly three here): no
    number twice, one reading every turn."""
    data = RELAY.read_bytes()
    assert data.startswith(b"$GPZDA,")
    d = NmeaRadarDriver("radar1", NmeaRadarSettings(port="/dev/null", scan_gap_s=scan_gap_s))
    scans = []
    for t, chunk in paced_seconds(data):
        scans += d.poll(t) + d.feed(chunk, t)
    scans += d.poll(1e9)
    ids = [list(s.plots["target_id"]) for s in scans]
    assert all(len(set(i)) == len(i) for i in ids)
    assert sum(len(i) for i in ids) == 201  # every TTM not lost, once
    assert np.median([len(i) for i in ids]) == targets_per_scan
    assert np.median(np.diff([s.t_mono for s in scans])) == targets_per_scan  # seconds: one target a second


def test_driver_tll_becomes_geo_plots_and_sentences_setting_filters():
    ttm = sentence("RATTM,01,1.0,10.0,T,10.0,90.0,T,0.5,1.0,N,,T,,,A")
    tll = sentence("RATLL,01,2730.000,N,09930.000,W,,,T,")
    for which, kinds in (("ttm", [RadarPlots]), ("tll", [GeoPlots]), ("both", [RadarPlots, GeoPlots])):
        d = NmeaRadarDriver("r", NmeaRadarSettings(port="/dev/null", sentences=which))
        feed(d, ttm + tll, 1.0)
        out = d.poll(2.0)
        assert [type(o) for o in out] == kinds
        for o in out:
            if isinstance(o, GeoPlots):
                assert o.plots.dtype == GEO_PLOT_DTYPE
                assert_allclose([o.plots["latitude_deg"][0], o.plots["longitude_deg"][0]], [27.5, -99.5])
                assert o.plots["target_id"][0] == 1 and np.isnan(o.plots["height_m"][0])


def test_registry_and_settings_validation_through_the_config_loader():
    assert driver_class("nmea_radar") is NmeaRadarDriver
    text = """\
version: 1
tower: {id: t1, latitude_deg: 27.5, longitude_deg: -99.5, height_m: 130.0}
sensors:
  - name: arpa0
    driver: nmea_radar
    settings:
      port: /dev/towerd/arpa0
      baudrate: 38400
      sentences: both
    mount: {boresight_azimuth_deg: 90.0}
"""
    cfg = parse_config(text, "t.yaml")
    s = cfg.sensors[0].settings
    assert isinstance(s, NmeaRadarSettings) and (s.baudrate, s.sentences, s.scan_gap_s) == (38400, "both", 0.5)
    bad = text.replace("sentences: both", "sentences: all").replace("baudrate: 38400", "baudrate: 100")
    with pytest.raises(ConfigError) as info:
        parse_config(bad, "t.yaml")
    problems = "\n".join(info.value.problems)
    assert "t.yaml:8:17: sensors[0].settings.baudrate: 100 is out of range, expected 300..921600 baud" in problems
    assert "t.yaml:9:18: sensors[0].settings.sentences: 'all' is not allowed" in problems
    with pytest.raises(ValueError, match="scan_gap_s"):
        NmeaRadarSettings(port="/dev/x", scan_gap_s=0.0)


def test_relative_and_true_bearings_land_on_the_same_earth_position():
    """The design end to end: a radar with heading 120 deg reporting relative bearings
    and one reporting true bearings give the same ENU point after the detection layer's
    PlotConverter (which rotates only the relative ones by the mount's boresight)."""
    heading = 120.0
    mount = (0.0, 0.0, 8.0)
    sc = Scenario("one", targets=(line_target("t", (-400.0, 300.0), (600.0, 300.0)),), noise=NO_NOISE)
    truth = sc.truth(7.0)
    converter = PlotConverter(SensorMount(mount, heading, 0.0), PlotNoise(5.0, 1.0, 2.0))
    for ref in ("T", "R"):
        d = NmeaRadarDriver("r", NmeaRadarSettings(port="/dev/null"))
        feed(d, emulator(sc, heading_deg=heading, position_enu_m=mount, bearing_ref=ref).scan_bytes(7.0), 1.0)
        (plots,) = d.poll(9.0)
        det = converter.convert(plots)
        assert_allclose(det.pos_enu_m[0], [truth["east_m"][0], truth["north_m"][0], mount[2]], atol=0.6)


# ----------------------------------------------------------------------------- over real ptys


def _read_until(driver: NmeaRadarDriver, n: int, timeout_s: float = 8.0) -> list:
    out: list = []
    deadline = time.monotonic() + timeout_s
    while len(out) < n and time.monotonic() < deadline:
        out += driver.read()
    return out


def test_demo_over_pty_every_present_target_is_reported_within_noise(pty_pair):
    demo = builtin_scenario("demo")
    mount = np.array([0.0, 0.0, 10.0])
    em = emulator(demo, baudrate=38400, scan_period_s=0.25, units="K", position_enu_m=tuple(mount),
                  rng=np.random.default_rng(5))
    with NmeaRadarDriver("arpa", NmeaRadarSettings(port=pty_pair.path, baudrate=38400, scan_gap_s=0.1)) as d:
        em.start(pty_pair)
        try:
            scans = _read_until(d, 6)
        finally:
            em.stop()
    assert len(scans) >= 6 and em.error is None and d.counters.bad_frames == 0
    sig = demo.noise
    for scan in scans[1:]:
        k = round((scan.t_mono - em.t0_mono) / 0.25 - 0.5)  # the scan slot this reading came from
        truth = demo.truth(k * 0.25)
        rel = np.column_stack([truth["east_m"], truth["north_m"]]) - mount[:2]
        rng_true = np.hypot(rel[:, 0], rel[:, 1])
        brg_true = np.degrees(np.arctan2(rel[:, 0], rel[:, 1])) % 360.0
        p = scan.plots
        assert len(p) == len(truth) and p["azimuth_is_true"].all()
        for r, b in zip(rng_true, brg_true):
            close = (np.abs(p["range_m"] - r) < 5 * sig.range_sigma_m + 1.0) & \
                (np.abs((p["azimuth_deg"] - b + 180.0) % 360.0 - 180.0) < 5 * sig.azimuth_sigma_deg)
            assert close.any(), (scan.frame_number, r, b)


def test_line_rate_is_the_baud_rate(pty_pair):
    """At 4800 baud the emulator cannot send faster than 480 bytes/s, whatever it has queued."""
    targets = tuple(line_target(f"t{i}", (50.0 * i, 200.0), (50.0 * i, 1200.0)) for i in range(12))
    em = emulator(Scenario("many", targets=targets), baudrate=4800, scan_period_s=0.5)
    with NmeaRadarDriver("arpa", NmeaRadarSettings(port=pty_pair.path)) as d:
        em.start(pty_pair)
        try:
            deadline = time.monotonic() + 1.5
            first = None
            while time.monotonic() < deadline:
                d.read()
                if first is None and d.counters.bytes_in:
                    first = (time.monotonic(), d.counters.bytes_in)
            received = d.counters.bytes_in - first[1]
            elapsed = time.monotonic() - first[0]
        finally:
            em.stop()
    assert_allclose(received / elapsed, 480.0, rtol=0.15)
    assert d.counters.bad_frames == 0


def test_faults_over_pty_are_counted_and_survived(pty_pair):
    sc = Scenario("two", targets=(line_target("a", (0.0, 300.0), (0.0, 1300.0)),
                                  line_target("b", (200.0, 300.0), (200.0, 1300.0))), noise=NO_NOISE)
    em = emulator(sc, baudrate=38400, scan_period_s=0.1, rng=np.random.default_rng(8))
    with NmeaRadarDriver("arpa", NmeaRadarSettings(port=pty_pair.path, baudrate=38400, scan_gap_s=0.05)) as d:
        em.start(pty_pair)
        try:
            assert len(_read_until(d, 2)) >= 2
            em.inject_garbage(300)
            em.inject_bad_checksum()
            after = _read_until(d, 2)
            em.inject_truncated()
            after += _read_until(d, 2)
            stats = d.parser.stats
            assert stats.bad_checksum == 1 and d.counters.dropped_bytes >= 300 and d.counters.resyncs >= 2
            em.inject_stall(0.6)
            started = last = time.monotonic()
            seen, silence = d.counters.bytes_in, 0.0
            while time.monotonic() - started < 3.0 and not (silence > 0.4 and time.monotonic() - last < 0.2):
                d.read()
                now = time.monotonic()
                if d.counters.bytes_in != seen:  # longest time without a byte
                    silence = max(silence, now - last)
                    seen, last = d.counters.bytes_in, now
        finally:
            em.stop()
    assert len(after) >= 4 and all(len(s.plots) >= 1 for s in after[1:])
    assert 0.45 <= silence < 1.5 and em.scans_skipped >= 4
    assert d.counters.bad_frames == d.parser.stats.bad_sentences >= 1


def test_runner_marks_a_stalled_radar_degraded_then_ok(pty_pair):
    readings: queue.Queue = queue.Queue()
    events: queue.Queue = queue.Queue()
    sc = Scenario("one", targets=(line_target("a", (0.0, 300.0), (0.0, 1300.0)),))
    em = emulator(sc, baudrate=38400, scan_period_s=0.1)
    driver = NmeaRadarDriver("arpa", NmeaRadarSettings(port=pty_pair.path, baudrate=38400, scan_gap_s=0.05))
    runner = SensorRunner(driver, readings.put, events.put, degraded_after_s=0.5, reconnect_max_s=1.0)
    em.start(pty_pair)
    try:
        runner.start()
        assert events.get(timeout=5.0).code == "sensor.up"
        readings.get(timeout=5.0)
        em.inject_stall(1.5)
        assert events.get(timeout=5.0).code == "sensor.degraded"
        assert runner.state is SensorState.DEGRADED
        assert events.get(timeout=5.0).code == "sensor.up"  # "data flowing again"
        status = runner.status()
        assert status["frames"] > 0 and status["device"]["talkers"] == ["RA"] and status["device"]["scans"] > 0
    finally:
        runner.stop()
        em.stop()


def test_unplug_is_a_read_error_and_garbage_only_never_grows_the_buffer(pty_pair):
    d = NmeaRadarDriver("arpa", NmeaRadarSettings(port=pty_pair.path, baudrate=38400))
    d.open()
    rng = np.random.default_rng(1)
    for _ in range(20):
        pty_pair.write(rng.integers(0, 256, 2000, dtype=np.uint8).tobytes().replace(b"\n", b"x"))
        d.read()
        assert len(d._buf) < d.settings.max_sentence_chars
    assert d.counters.dropped_bytes > 30000
    d.close()
    assert_array_equal(d.poll(1e9), [])
