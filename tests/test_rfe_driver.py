"""RF Explorer driver: settings, Spectrum output, and the scan plan against the emulator
over real ptys (commands checked on the emulator side)."""

from __future__ import annotations

import logging
import threading
import time

import numpy as np
import pytest
from numpy.testing import assert_allclose

from towerd.clock import ManualClock
from towerd.drivers import driver_class
from towerd.drivers.measurements import Spectrum
from towerd.drivers.rfexplorer.driver import DEFAULT_BANDS, Band, RfExplorerDriver, RfExplorerSettings
from towerd.drivers.rfexplorer.protocol import cmd_analyzer_config
from towerd.errors import DriverInitError, DriverTimeoutError
from towerd.schema import Validator, compose
from towerd.sensors import SensorRunner
from towerd.sim.rfexplorer import RfExplorerEmulator
from towerd.sim.scenario import Emitter, Scenario, Target, WaypointPath

B433 = Band("b433", start_mhz=433.0, end_mhz=435.0, dwell_s=1.0)
B868 = Band("b868", start_mhz=863.0, end_mhz=870.0, dwell_s=2.0)
B2G4 = Band("b2g4", centre_mhz=2441.75, span_mhz=83.5, dwell_s=3.0)


def settings(port: str, **kw) -> RfExplorerSettings:
    kw.setdefault("bands", (B433, B868, B2G4))
    kw.setdefault("command_gap_s", 0.0)
    kw.setdefault("config_timeout_s", 2.0)
    kw.setdefault("stall_timeout_s", 600.0)
    return RfExplorerSettings(port=port, **kw)


def emulator(**kw) -> RfExplorerEmulator:
    kw.setdefault("rng", np.random.default_rng(5))
    kw.setdefault("sweep_rate_hz", 50.0)
    return RfExplorerEmulator(kw.pop("scenario", None), **kw)


def read_until(driver: RfExplorerDriver, done, timeout_s: float = 5.0) -> list[Spectrum]:
    """Read until ``done(readings)`` holds; fail on the deadline."""
    out: list[Spectrum] = []
    deadline = time.monotonic() + timeout_s
    while not done(out):
        assert time.monotonic() < deadline, f"timed out with {len(out)} readings, counters {driver.rf_counters}"
        out += driver.read()
    return out


def of_band(name: str, n: int = 1):
    return lambda out: sum(r.band == name for r in out) >= n


def retunes(em: RfExplorerEmulator) -> list[bytes]:
    return [c[2:] for c in em.commands_like(b"C2-F:")]


def c2f(band: Band) -> bytes:
    return cmd_analyzer_config(band.start_khz, band.end_khz, -10, -120)[2:]


# ----------------------------------------------------------------------------- settings


def test_registry_kind_and_defaults():
    assert driver_class("rfexplorer") is RfExplorerDriver
    s = RfExplorerSettings(port="/dev/ttyUSB0")
    assert (s.baudrate, s.bands, s.sweep_points, s.amp_top_dbm, s.amp_bottom_dbm) == (500000, DEFAULT_BANDS, None,
                                                                                      -10, -120)
    assert [(b.name, b.lo_mhz, b.hi_mhz) for b in DEFAULT_BANDS] == [
        ("ism433", 433.05, 434.79), ("srd868", 863.0, 870.0), ("ism915", 902.0, 928.0),
        ("ism2400", 2400.0, 2483.5), ("ism5800", 5725.0, 5875.0)]
    assert RfExplorerSettings(port="x", baudrate=2400).baudrate == 2400


@pytest.mark.parametrize(
    ("kw", "message"),
    [
        ({"baudrate": 115200}, "baudrate must be 500000 or 2400"),
        ({"bands": ()}, "at least one band"),
        ({"bands": (B433, B433)}, "unique"),
        ({"amp_top_dbm": -120, "amp_bottom_dbm": -100}, "below amp_top_dbm"),
        ({"sweep_points": 200}, "multiple of 16"),
        ({"port": ""}, "port must be a non-empty string"),
    ],
)
def test_settings_validation(kw, message):
    with pytest.raises(ValueError, match=message):
        RfExplorerSettings(**{"port": "/dev/ttyUSB0", **kw})


def test_band_forms():
    b = Band("x", centre_mhz=2441.75, span_mhz=83.5)
    assert (b.lo_mhz, b.hi_mhz, b.start_khz, b.end_khz) == (2400.0, 2483.5, 2400000, 2483500)
    for kw in ({}, {"start_mhz": 1.0}, {"start_mhz": 1.0, "end_mhz": 2.0, "centre_mhz": 1.5},
               {"start_mhz": 5.0, "end_mhz": 4.0}, {"centre_mhz": 1.0, "span_mhz": 4.0}):
        with pytest.raises(ValueError):
            Band("x", **kw)


def test_yaml_settings_through_the_schema_validator():
    text = """
port: /dev/serial/by-id/usb-Silicon_Labs_CP2102_USB_to_UART_Bridge_Controller_0001-if00-port0
sweep_points: 512
bands:
  - {name: srd868, start_mhz: 863, end_mhz: 870, dwell_s: 1.5}
  - {name: ism2400, centre_mhz: 2441.75, span_mhz: 83.5}
"""
    node, problems = compose(text, "rfe.yaml")
    v = Validator()
    s = v.build(node, RfExplorerSettings)
    assert not problems and not v.problems
    assert s.sweep_points == 512 and s.bands[1].lo_mhz == 2400.0 and s.bands[0].dwell_s == 1.5
    node, _ = compose(text.replace("dwell_s: 1.5", "dwell_s: 0").replace("span_mhz: 83.5", "spam_mhz: 83.5"), "x")
    v = Validator()
    v.build(node, RfExplorerSettings)
    msgs = [p.format("rfe.yaml") for p in v.problems]
    assert any("bands[0].dwell_s: 0 is out of range" in m for m in msgs), msgs
    assert any("bands[1].spam_mhz: unknown key, did you mean 'span_mhz'" in m for m in msgs), msgs


# ----------------------------------------------------------------------------- decoding without a port


def test_feed_yields_spectrum_with_band_from_the_plan():
    em = emulator(boot_start_mhz=863.0, boot_end_mhz=870.0, amp_offset_db=3, calculator=4)
    driver = RfExplorerDriver("rf1", settings("loop://"))
    data = em.stream(3)
    out = driver.feed(data, 42.0)
    assert [type(r) for r in out] == [Spectrum] * 3 and [r.sweep_number for r in out] == [1, 2, 3]
    r = out[0]
    assert (r.sensor, r.t_mono, r.band, r.calculator) == ("rf1", 42.0, "b868", "max-hold")
    assert r.start_freq_mhz == 863.0 and r.step_freq_mhz == pytest.approx(7.0 / 111, abs=1e-6)
    assert r.rbw_khz == em.state.rbw_khz and r.power_dbm.dtype == np.float32 and r.power_dbm.shape == (112,)
    assert_allclose(r.freq_mhz[[0, -1]], [863.0, 863.0 + 111 * em.state.step_hz / 1e6])
    floor = em.noise_floor_dbm_per_mhz + 10 * np.log10(em.state.rbw_khz / 1e3) + 3  # offset added
    assert abs(np.median(np.concatenate([o.power_dbm for o in out])) - floor) < 2.0
    c = driver.counters
    assert (c.frames, c.bad_frames, c.dropped_bytes) == (5, 0, 0) and driver.device_model.firmware == "01.33"
    # An off-plan configuration labels its sweeps "".
    off = emulator(boot_start_mhz=100.0, boot_end_mhz=110.0).stream(1)
    assert [r.band for r in driver.feed(off, 43.0)] == [""]


# ----------------------------------------------------------------------------- over a pty


def test_open_requests_config_then_tunes_the_first_band(pty_pair):
    em = emulator()
    em.start(pty_pair)
    try:
        with RfExplorerDriver("rf", settings(pty_pair.path)) as driver:
            out = read_until(driver, of_band("b433", 3))
            assert em.commands[0] == b"#\x04C0"
            assert retunes(em) == [c2f(B433)]
            got = [r for r in out if r.band == "b433"]
            assert all(abs(r.start_freq_mhz - 433.0) < 1e-9 and abs(r.freq_mhz[-1] - 435.0) < 0.02 for r in got)
            assert driver.device_model.main_model == 5 and driver.status()["band"] == "b433"
            assert driver.counters.bad_frames == 0
        # hold on close, as the vendor client does; the emulator reads it on its own thread
        assert em.wait_for(lambda e: e.commands[-1] == b"#\x04CH", timeout_s=5.0), em.commands[-3:]
    finally:
        em.stop()


def test_scan_plan_cycles_through_bands_after_each_dwell(pty_pair):
    clock = ManualClock(start_mono=100.0)
    em = emulator()
    em.start(pty_pair)
    try:
        with RfExplorerDriver("rf", settings(pty_pair.path), clock=clock) as driver:
            read_until(driver, of_band("b433", 2))
            clock.advance(0.9)  # dwell of b433 is 1.0 s: not yet
            assert not [r for r in read_until(driver, lambda o: len(o) >= 3) if r.band != "b433"]
            assert retunes(em) == [c2f(B433)]
            for band in (B868, B2G4, B433, B868):
                clock.advance(band_before(band).dwell_s)
                out = read_until(driver, of_band(band.name, 2))
                mine = [r for r in out if r.band == band.name]
                assert all(abs(r.start_freq_mhz - band.lo_mhz) < 1e-9 for r in mine)
                assert abs(mine[0].freq_mhz[-1] - band.hi_mhz) < 2 * mine[0].step_freq_mhz
            assert retunes(em) == [c2f(b) for b in (B433, B868, B2G4, B433, B868)]
            assert driver.rf_counters.retunes == 5 and driver.parser.stats.early_ends >= 4  # cut by retunes
            assert driver.counters.bad_frames == 0
    finally:
        em.stop()


def band_before(band: Band) -> Band:
    order = [B433, B868, B2G4]
    return order[(order.index(band) - 1) % 3]


def test_commands_are_spaced_by_the_command_gap(pty_pair):
    clock = ManualClock()
    em = emulator(boot_start_mhz=100.0, boot_end_mhz=110.0)
    em.start(pty_pair)
    try:
        with RfExplorerDriver("rf", settings(pty_pair.path, sweep_points=512, command_gap_s=0.5),
                              clock=clock) as driver:
            sent = lambda: [c[2:4] for c in em.commands]  # noqa: E731
            for _ in range(5):
                driver.read()
            assert sent() == [b"C0"]  # sweep points and retune wait for the gap
            clock.advance(0.5)
            driver.read()
            assert em.wait_for(lambda e: len(e.commands) == 2, 2.0) and sent() == [b"C0", b"CJ"]
            for _ in range(5):
                driver.read()
            assert sent() == [b"C0", b"CJ"]
            clock.advance(0.5)
            out = read_until(driver, of_band("b433"))
            assert sent() == [b"C0", b"CJ", b"C2"] and len(out[-1].power_dbm) == 512
    finally:
        em.stop()


def test_sweep_points_command_precedes_the_retune_and_is_honoured(pty_pair):
    em = emulator()
    em.start(pty_pair)
    try:
        with RfExplorerDriver("rf", settings(pty_pair.path, sweep_points=512)) as driver:
            out = read_until(driver, of_band("b433", 2))
            assert em.commands[1] == b"#\x05CJ\x20"  # 512 / 16
            assert retunes(em) == [c2f(B433)]
            assert {len(r.power_dbm) for r in out if r.band == "b433"} == {512}
    finally:
        em.stop()


def test_large_sweeps_use_cj_lower_c2f_lower_and_z(pty_pair):
    em = emulator(sweep_rate_hz=20.0)
    em.start(pty_pair)
    try:
        with RfExplorerDriver("rf", settings(pty_pair.path, sweep_points=10000)) as driver:
            out = read_until(driver, of_band("b433", 2))
            assert em.commands[1] == b"#\x06Cj\x27\x10"
            assert {len(r.power_dbm) for r in out if r.band == "b433"} == {10000}
            assert driver.device_config.line.startswith("#C2-f:")
    finally:
        em.stop()


def test_bands_outside_the_device_are_skipped(pty_pair):
    em = emulator(min_mhz=240.0, max_mhz=960.0, max_span_mhz=100.0)
    wide = Band("wide", start_mhz=300.0, end_mhz=500.0)
    em.start(pty_pair)
    try:
        with RfExplorerDriver("rf", settings(pty_pair.path, bands=(B2G4, wide, B868))) as driver:
            read_until(driver, of_band("b868"))
            assert [b.name for b in driver.plan] == ["b868"] and driver.rf_counters.bands_skipped == 2
            assert retunes(em) == [c2f(B868)]
    finally:
        em.stop()


def test_no_band_fitting_the_device_is_an_init_error(pty_pair):
    em = emulator(min_mhz=240.0, max_mhz=960.0)
    em.start(pty_pair)
    try:
        driver = RfExplorerDriver("rf", settings(pty_pair.path, bands=(B2G4,)))
        with pytest.raises(DriverInitError, match="no band of the scan plan fits"):
            driver.open()
        assert not driver.is_open
    finally:
        em.stop()


def test_silent_device_is_a_timeout(pty_pair):
    driver = RfExplorerDriver("rf", settings(pty_pair.path, config_timeout_s=0.4))
    t0 = time.monotonic()
    with pytest.raises(DriverTimeoutError, match="no configuration"):
        driver.open()
    assert 0.4 <= time.monotonic() - t0 < 1.5 and not driver.is_open
    assert pty_pair.read() == b"#\x04C0"


def test_sweeps_before_the_configuration_are_dropped(pty_pair):
    """The device was left streaming another band: three of its sweeps reach us before
    the answer to our configuration request."""
    em = emulator(boot_start_mhz=100.0, boot_end_mhz=110.0)

    def device() -> None:
        heard = b""
        deadline = time.monotonic() + 5.0
        while b"C0" not in heard and time.monotonic() < deadline:
            heard += pty_pair.read() or b""
            time.sleep(0.005)
        pty_pair.write(b"".join(em.sweep_bytes(0.0) for _ in range(3)) + em.handle(heard))

    responder = threading.Thread(target=device)
    responder.start()
    try:
        driver = RfExplorerDriver("rf", settings(pty_pair.path))
        driver.open()
        responder.join()
        em.start(pty_pair)
        out = read_until(driver, of_band("b433", 2))
        assert driver.parser.stats.sweeps_without_config == 3
        assert all(r.band == ("b433" if abs(r.start_freq_mhz - 433.0) < 1e-9 else "") for r in out)
        driver.close()
    finally:
        responder.join()
        em.stop()


def test_reset_banner_triggers_a_new_configuration(pty_pair):
    em = emulator()
    em.start(pty_pair)
    try:
        with RfExplorerDriver("rf", settings(pty_pair.path, sweep_points=512), clock=ManualClock()) as driver:
            read_until(driver, of_band("b433", 2))
            n_before = len(em.commands)
            em.inject_reset()
            read_until(driver, lambda o: driver.rf_counters.resets == 1)
            out = read_until(driver, of_band("b433", 2))
            after = [c[2:] for c in em.commands[n_before:]]
            assert after == [b"C0", b"CJ\x20", c2f(B433)]  # the restart forgot the points too
            assert {len(r.power_dbm) for r in out if r.band == "b433"} == {512}
            # Two banner lines ("(C) Ariel Rocholl ", "RF Explorer "): one restart.
            assert driver.parser.stats.resets == 2 and driver.rf_counters.resets == 1
            assert driver.counters.bad_frames == 0
    finally:
        em.stop()


def test_config_changed_behind_our_back_is_set_up_again(pty_pair):
    em = emulator()
    em.start(pty_pair)
    try:
        with RfExplorerDriver("rf", settings(pty_pair.path), clock=ManualClock()) as driver:
            read_until(driver, of_band("b433"))
            pty_pair.write(em.handle(b"#\x20C2-F:0100000,0110000,-010,-120"))  # as from the front panel
            read_until(driver, lambda o: len(retunes(em)) == 3)
            read_until(driver, of_band("b433"))
            assert retunes(em) == [c2f(B433), b"C2-F:0100000,0110000,-010,-120", c2f(B433)]
            assert driver.rf_counters.retunes == 2 and driver.status()["band"] == "b433"
    finally:
        em.stop()


def test_early_end_marker_over_the_pty(pty_pair):
    em = emulator()
    em.start(pty_pair)
    try:
        with RfExplorerDriver("rf", settings(pty_pair.path)) as driver:
            first = read_until(driver, of_band("b433", 2))
            ends = driver.parser.stats.early_ends  # the retune at open may have cut a sweep
            em.inject_eeot()
            later = read_until(driver, lambda o: len(o) >= 4)
            numbers = [r.sweep_number for r in first + later]
            assert numbers == list(range(1, len(numbers) + 1))
            assert driver.parser.stats.early_ends == ends + 1 and driver.counters.bad_frames == 0
    finally:
        em.stop()


@pytest.mark.parametrize("fault", ["garbage", "truncated", "bad_crlf"])
def test_faults_are_counted_and_survived(pty_pair, fault):
    em = emulator()
    em.start(pty_pair)
    try:
        with RfExplorerDriver("rf", settings(pty_pair.path)) as driver:
            read_until(driver, of_band("b433", 2))
            c, s = driver.counters, driver.parser.stats
            before = (c.bad_frames, c.resyncs, c.dropped_bytes, s.sweeps, em.sweeps_sent)
            {"garbage": lambda: em.inject_garbage(300), "truncated": em.inject_truncated,
             "bad_crlf": em.inject_bad_crlf}[fault]()
            read_until(driver, lambda o: len(o) >= 6)
            if fault == "garbage":
                assert c.dropped_bytes - before[2] >= 300 and c.resyncs - before[1] == 1
            else:
                assert (c.bad_frames - before[0], c.resyncs - before[1]) == (1, 1)
            assert em.wait_for(lambda e: e.sweeps_sent >= before[4] + 8, 2.0)
            read_until(driver, lambda o: s.sweeps >= before[3] + 6)
            lost = (em.sweeps_sent - before[4]) - (s.sweeps - before[3])
            assert lost <= 3  # the damaged sweep, the one a skip to CR LF swallows, one in flight
    finally:
        em.stop()


def test_stall_makes_the_driver_ask_again(pty_pair):
    clock = ManualClock()
    em = emulator()
    em.start(pty_pair)
    try:
        with RfExplorerDriver("rf", settings(pty_pair.path, stall_timeout_s=5.0), clock=clock) as driver:
            read_until(driver, of_band("b433"))
            em.inject_stall(1.0)
            while driver.read() or driver._buf:  # drain what was sent before the stall
                pass
            clock.advance(5.0)
            driver.read()
            assert driver.rf_counters.requeries == 1
            assert em.wait_for(lambda e: len(e.commands_like(b"C0")) == 2, 2.0)
            read_until(driver, lambda o: len(o) >= 2)
    finally:
        em.stop()


def test_unconfirmed_retune_is_resent_then_skipped(pty_pair):
    clock = ManualClock()
    tiny = Band("tiny", start_mhz=433.0, end_mhz=433.05)  # 50 kHz: below the device's minimum span
    em = emulator(min_span_mhz=0.112)
    em.start(pty_pair)
    try:
        with RfExplorerDriver("rf", settings(pty_pair.path, bands=(tiny, B868), retune_attempts=2,
                                             retune_timeout_s=1.0), clock=clock) as driver:
            assert em.wait_for(lambda e: len(e.refused) == 1, 2.0)
            for expected_refusals in (2,):
                clock.advance(1.0)
                driver.read()
                assert em.wait_for(lambda e: len(e.refused) == expected_refusals, 2.0)
            clock.advance(1.0)
            out = read_until(driver, of_band("b868"))
            assert driver.rf_counters.retune_timeouts == 2 and driver.rf_counters.bands_failed == 1
            assert retunes(em) == [c2f(tiny), c2f(tiny), c2f(B868)]
            assert all(r.band in ("", "b868") for r in out)
    finally:
        em.stop()


def test_runner_delivers_spectra_and_reports_up(pty_pair):
    target = Target("d", "uas", -20.0, WaypointPath(((0.0, 0.0, 300.0, 50.0), (1000.0, 0.0, 300.0, 50.0))),
                    emitters=(Emitter.of("ocusync", centres_mhz=(2441.5,), bandwidth_mhz=20.0),))
    em = emulator(scenario=Scenario("one", targets=(target,)))
    got: list[Spectrum] = []
    events = []
    enough = threading.Event()

    def sink(reading):
        got.append(reading)
        if sum(r.band == "b2g4" for r in got) >= 5:
            enough.set()

    driver = RfExplorerDriver("rf", settings(pty_pair.path, bands=(B2G4,)))
    runner = SensorRunner(driver, sink, events.append)
    em.start(pty_pair)
    try:
        runner.start()
        assert enough.wait(5.0)
    finally:
        runner.stop()
        em.stop()
    assert [e.code for e in events] == ["sensor.up"]
    sweeps = [r for r in got if r.band == "b2g4"]
    power = np.mean([r.power_dbm for r in sweeps], axis=0)
    freq = sweeps[0].freq_mhz
    inband = np.abs(freq - 2441.5) < 8.0
    outband = np.abs(freq - 2441.5) > 12.0
    assert np.median(power[inband]) - np.median(power[outband]) > 20.0
    status = runner.status()
    assert status["frames"] >= 5 and status["frame_bytes"] > 5 * 112
    device = status["device"]  # the driver's own status, as HEALTH carries it
    assert (device["band"], device["plan"], device["points"], device["model"]) == ("b2g4", ["b2g4"], 112,
                                                                                     "WSUB3G/none fw 01.33")


def test_replayed_bytes_are_labelled_like_live_ones():
    em = emulator(boot_start_mhz=2400.0, boot_end_mhz=2483.5)
    data = em.stream(4)
    live, replay = RfExplorerDriver("a", settings("loop://")), RfExplorerDriver("b", settings("loop://"))
    a = live.feed(data, 1.0)
    b = []
    for i in range(0, len(data), 7):
        b += replay.feed(data[i:i + 7], 1.0)
    assert [r.band for r in a] == [r.band for r in b] == ["b2g4"] * 4
    assert all(np.array_equal(x.power_dbm, y.power_dbm) for x, y in zip(a, b))


def test_healthy_emulator_through_a_pty_leaves_error_counters_at_zero(pty_pair, caplog):
    """Issue 14 item 8: a healthy device retuning through its scan plan (every retune cuts
    the sweep in progress with the early-end marker, at any point of it) must not raise
    resyncs, dropped bytes, bad frames or retune timeouts. Item 10: routine retunes are
    not info-level lines (one per band and session, then debug)."""
    caplog.set_level(logging.DEBUG, logger="towerd.drivers.rfexplorer")
    plan = tuple(Band(b.name, start_mhz=b.lo_mhz, end_mhz=b.hi_mhz, dwell_s=0.1) for b in (B433, B868, B2G4))
    em = emulator(sweep_rate_hz=100.0, rng=np.random.default_rng(11))
    em.start(pty_pair)
    try:
        with RfExplorerDriver("rf", settings(pty_pair.path, bands=plan)) as driver:
            out = read_until(driver, lambda o: driver.rf_counters.retunes >= 30, timeout_s=20.0)
            c, st, rc = driver.counters, driver.parser.stats, driver.rf_counters
            assert (c.resyncs, c.dropped_bytes, c.bad_frames) == (0, 0, 0), st
            assert (rc.retune_timeouts, rc.bands_failed, rc.requeries, rc.resets) == (0, 0, 0, 0), rc
            assert st.early_ends >= 20 and {r.band for r in out} == {"b433", "b868", "b2g4"}
            assert c.bytes_in - st.frame_bytes < 200  # only a sweep still in the driver's buffer
        info = [r.getMessage() for r in caplog.records if r.levelno >= logging.INFO]
        tuned = [m for m in info if "tuned to band" in m]
        assert len(tuned) == 3 and len(info) <= 5, info  # + the model line and nothing else
        assert sum("tuned to band" in r.getMessage() for r in caplog.records) >= 25  # the rest at debug
    finally:
        em.stop()
