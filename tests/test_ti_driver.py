"""TI mmWave driver: settings, plot conversion, counters, and the emulator over a real pty."""

from __future__ import annotations

import struct
import time

import numpy as np
import pytest
from numpy.testing import assert_allclose, assert_array_equal

from towerd import geo
from towerd.drivers import driver_class
from towerd.drivers.measurements import PLOT_DTYPE, RadarPlots
from towerd.drivers.ti_mmwave.driver import TiMmwaveDriver, TiMmwaveSettings
from towerd.errors import ConfigError
from towerd.sim.scenario import MeasurementNoise, OrbitPath, Scenario, Target, WaypointPath, builtin_scenario
from towerd.sim.ti_mmwave import SDK2_VERSION, SDK_VERSION, TiMmwaveEmulator

SYNC = bytes([2, 1, 4, 3, 6, 5, 8, 7])


def frame(points, side=None, frame_number: int = 1) -> bytes:
    """SDK 3.x frame built from the vendor layout (header, TLV 1, optional TLV 7, padding)."""
    n = len(points)
    body = struct.pack("<II", 1, 16 * n) + b"".join(struct.pack("<4f", *p) for p in points)
    if side is not None:
        body += struct.pack("<II", 7, 4 * n) + b"".join(struct.pack("<hh", *s) for s in side)
    total = -(-(40 + len(body)) // 32) * 32
    header = SYNC + struct.pack("<8I", 0x03050004, total, 0xA6843, frame_number, 0, n, 1 + (side is not None), 0)
    return header + body + b"\x0f" * (total - 40 - len(body))


def test_registry_and_kind():
    assert driver_class("ti_mmwave") is TiMmwaveDriver
    assert TiMmwaveDriver.kind == "ti_mmwave" and TiMmwaveDriver.Settings is TiMmwaveSettings


def test_settings_defaults_and_validation():
    s = TiMmwaveSettings(port="/dev/ttyACM1")
    assert (s.baudrate, s.cli_port, s.cli_baudrate, s.chirp_config, s.cli_timeout_s) == (921600, None, 115200, None, 5.0)
    with pytest.raises(Exception):
        s.baudrate = 1  # frozen
    with pytest.raises(ConfigError, match="baudrate must be a positive integer"):
        TiMmwaveSettings(port="/dev/ttyACM1", baudrate=0)
    with pytest.raises(ConfigError, match="port must be a non-empty string"):
        TiMmwaveSettings(port="")
    with pytest.raises(ConfigError, match="chirp_config needs cli_port"):
        TiMmwaveSettings(port="/dev/ttyACM1", chirp_config="profile.cfg")


def test_points_convert_to_common_plots():
    points = [
        (0.0, 10.0, 0.0, -1.5),  # straight ahead
        (10.0, 10.0, 0.0, 0.0),  # 45 deg right
        (-3.0, 4.0, 12.0, 2.0),  # left and up: range 13, elevation atan2(12, 5)
        (-0.0, -5.0, 0.0, 0.0),  # straight behind: +180, never -180
        (-1.0, -1.0, -1.0, 0.0),  # behind-left, below
    ]
    side = [(153, 400), (-12, 385), (0, 0), (1, 1), (2, 2)]
    driver = TiMmwaveDriver("r1", TiMmwaveSettings(port="/dev/null"))
    (out,) = driver.feed(frame(points, side, frame_number=77), 12.5)
    assert isinstance(out, RadarPlots)
    assert (out.sensor, out.t_mono, out.frame_number) == ("r1", 12.5, 77)
    p = out.plots
    assert p.dtype == PLOT_DTYPE and len(p) == 5
    assert_allclose(p["range_m"], [10.0, np.hypot(10, 10), 13.0, 5.0, np.sqrt(3)], rtol=1e-6)
    assert_allclose(p["azimuth_deg"], [0.0, 45.0, np.degrees(np.arctan2(-3, 4)), 180.0, -135.0], atol=1e-5)
    assert_allclose(p["elevation_deg"], [0.0, 0.0, np.degrees(np.arctan2(12, 5)), 0.0, -35.26438968], atol=1e-5)
    assert_allclose(p["radial_vel_mps"], [-1.5, 0.0, 2.0, 0.0, 0.0])
    assert_allclose(p["snr_db"], [15.3, -1.2, 0.0, 0.1, 0.2], atol=1e-5)
    assert not p["azimuth_is_true"].any()
    assert_array_equal(p["target_id"], -1)
    assert np.isnan(p["speed_mps"]).all() and np.isnan(p["course_deg"]).all()
    # Same answer as the shared geometry helper (which uses [0, 360)).
    rng, az, el = geo.cartesian_to_spherical(np.array([pt[:3] for pt in points]))
    assert_allclose(np.mod(p["azimuth_deg"], 360.0), az, atol=1e-5)
    assert_allclose(p["elevation_deg"], el, atol=1e-5)


def test_missing_side_info_gives_nan_snr_and_empty_frames_give_empty_plots():
    driver = TiMmwaveDriver("r1", TiMmwaveSettings(port="/dev/null"))
    (a,) = driver.feed(frame([(1.0, 2.0, 3.0, 0.0)]), 1.0)
    assert np.isnan(a.plots["snr_db"]).all()
    (b,) = driver.feed(frame([]), 2.0)
    assert b.plots.shape == (0,) and b.plots.dtype == PLOT_DTYPE


def test_non_finite_points_are_dropped():
    driver = TiMmwaveDriver("r1", TiMmwaveSettings(port="/dev/null"))
    (out,) = driver.feed(frame([(np.nan, 1.0, 0.0, 0.0), (0.0, 5.0, 0.0, 0.0), (np.inf, 1.0, 0.0, 0.0)]), 1.0)
    assert_allclose(out.plots["range_m"], [5.0])
    assert driver.nonfinite_points == 2


def test_counters_follow_the_parser():
    driver = TiMmwaveDriver("r1", TiMmwaveSettings(port="/dev/null"))
    bad = SYNC + struct.pack("<8I", 0x02000000, 64, 0, 0, 0, 0, 0, 0) + bytes(24)  # SDK 2.x: dropped
    data = b"garbage" + frame([], frame_number=1) + bad + frame([], frame_number=2)
    out = []
    for i in range(0, len(data), 5):  # a few bytes per read, as a UART delivers them
        out += driver.feed(data[i : i + 5], float(i))
    assert [o.frame_number for o in out] == [1, 2]
    c = driver.counters
    assert (c.frames, c.bad_frames, c.resyncs, c.dropped_bytes) == (2, 1, 2, 7 + len(bad))
    assert driver.parser.stats.unsupported_version == 1


# ----------------------------------------------------------------------------- over a real pty


def _read_frames(driver: TiMmwaveDriver, n: int, timeout_s: float = 5.0) -> list[RadarPlots]:
    out: list[RadarPlots] = []
    deadline = time.monotonic() + timeout_s
    while len(out) < n and time.monotonic() < deadline:
        out += driver.read()
    return out


NOISE = MeasurementNoise(range_sigma_m=0.5, azimuth_sigma_deg=1.0, elevation_sigma_deg=2.0, doppler_sigma_mps=0.1)


@pytest.mark.parametrize("version, platform", [(SDK_VERSION, 0xA6843), (SDK2_VERSION, 0xA1443),
                                               (SDK2_VERSION, 0xA1642)], ids=["sdk3", "sdk2-xwr14xx", "sdk2-xwr16xx"])
def test_driver_over_pty_matches_scenario_truth_within_noise(pty_pair, version, platform):
    """One target, no clutter or false alarms: every plot must be within 5 sigma of the
    truth at its frame's scenario time (frame k+1 carries time k / rate). SDK 2.x frames
    (36-byte header on xWR14xx, Q-format objects) give the same plots, Doppler quantised
    to the resolution the driver is told."""
    rate = 20.0
    target = Target("t", "uas", -15.0, OrbitPath((10.0, 80.0), 20.0, 8.0, start_deg=200.0, up_m=30.0))
    scenario = Scenario("one", targets=(target,), noise=NOISE)
    mount = np.array([2.0, -1.0, 10.0])
    boresight, tilt = 10.0, 5.0
    resolution = 0.125
    em = TiMmwaveEmulator(scenario, boresight_azimuth_deg=boresight, tilt_deg=tilt, position_enu_m=tuple(mount),
                          frame_rate_hz=rate, rng=np.random.default_rng(2), version=version, platform=platform,
                          doppler_resolution_mps=resolution)
    settings = TiMmwaveSettings(port=pty_pair.path, doppler_resolution_mps=resolution if version >> 24 == 2 else None)
    with TiMmwaveDriver("radar", settings) as driver:
        em.start(pty_pair)
        try:
            reports = _read_frames(driver, 12)
        finally:
            em.stop()
    assert len(reports) == 12 and em.error is None
    rot = geo.mount_rotation(boresight, tilt)
    ranges, azs, els, dops, want = [], [], [], [], []
    for rep in reports:
        t = (rep.frame_number - 1) / rate
        lag = rep.t_mono - (em.t0_mono + t)
        assert 0.0 <= lag < 0.5, lag
        truth = scenario.truth(t)
        pos = np.column_stack([truth["east_m"], truth["north_m"], truth["up_m"]])[0]
        vel = np.column_stack([truth["vel_east_mps"], truth["vel_north_mps"], truth["vel_up_mps"]])[0]
        s = (pos - mount) @ rot
        r_true, az_true, el_true = geo.cartesian_to_spherical(s[None, :])
        az_true = np.where(az_true > 180.0, az_true - 360.0, az_true)
        doppler_true = (vel @ rot) @ s / np.linalg.norm(s)
        p = rep.plots
        assert 1 <= len(p) <= 3
        ranges.append(p["range_m"])
        azs.append(p["azimuth_deg"])
        els.append(p["elevation_deg"])
        dops.append(p["radial_vel_mps"])
        want.append(np.repeat([[r_true[0], az_true[0], el_true[0], doppler_true]], len(p), axis=0))
    want = np.concatenate(want)
    assert_allclose(np.concatenate(ranges), want[:, 0], rtol=0, atol=5 * NOISE.range_sigma_m)
    assert_allclose(np.concatenate(azs), want[:, 1], rtol=0, atol=5 * NOISE.azimuth_sigma_deg)
    assert_allclose(np.concatenate(els), want[:, 2], rtol=0, atol=5 * NOISE.elevation_sigma_deg)
    quantum = resolution / 2 if version >> 24 == 2 else 0.0
    assert_allclose(np.concatenate(dops), want[:, 3], rtol=0, atol=5 * NOISE.doppler_sigma_mps + quantum)
    assert driver.counters.bad_frames == 0 and driver.counters.frames >= 12


def test_demo_scenario_over_pty_every_target_is_seen(pty_pair):
    """Demo (clutter and false alarms included): each present drone has a plot within
    5 sigma (range and angles) of its truth in every frame."""
    rate = 20.0
    demo = builtin_scenario("demo")
    mount = np.array([0.0, 0.0, 10.0])
    em = TiMmwaveEmulator(demo, boresight_azimuth_deg=0.0, position_enu_m=tuple(mount), frame_rate_hz=rate,
                          rng=np.random.default_rng(4))
    with TiMmwaveDriver("radar", TiMmwaveSettings(port=pty_pair.path)) as driver:
        em.start(pty_pair)
        try:
            reports = _read_frames(driver, 8)
        finally:
            em.stop()
    assert len(reports) == 8
    sig = demo.noise
    for rep in reports:
        truth = demo.truth((rep.frame_number - 1) / rate)
        s = np.column_stack([truth["east_m"], truth["north_m"], truth["up_m"]]) - mount
        r, az, el = geo.cartesian_to_spherical(s)
        az = np.where(az > 180.0, az - 360.0, az)
        p = rep.plots
        for i in range(len(truth)):
            close = (
                (np.abs(p["range_m"] - r[i]) < 5 * sig.range_sigma_m)
                & (np.abs(p["azimuth_deg"] - az[i]) < 5 * sig.azimuth_sigma_deg)
                & (np.abs(p["elevation_deg"] - el[i]) < 5 * sig.elevation_sigma_deg)
            )
            assert close.any(), (rep.frame_number, truth["name"][i])


def test_injected_faults_over_pty_are_counted_and_survived(pty_pair):
    rate = 25.0
    scenario = Scenario("one", targets=(Target("t", "uas", -10.0, WaypointPath(((0, 0, 50, 10), (100, 0, 150, 10)))),))
    em = TiMmwaveEmulator(scenario, boresight_azimuth_deg=0.0, frame_rate_hz=rate, rng=np.random.default_rng(9))
    with TiMmwaveDriver("radar", TiMmwaveSettings(port=pty_pair.path)) as driver:
        em.start(pty_pair)
        try:
            first = _read_frames(driver, 2)
            em.inject_garbage(500)
            em.inject_truncated()
            later = _read_frames(driver, 4)
        finally:
            em.stop()
    numbers = [r.frame_number for r in first + later]
    assert len(numbers) == 6 and numbers == sorted(numbers)
    assert len(set(range(numbers[0], numbers[-1] + 1)) - set(numbers)) == 1  # exactly the cut frame lost
    c = driver.counters
    assert c.bad_frames == 1 and c.resyncs >= 1 and c.dropped_bytes >= 500


# ----------------------------------------------------------------------------- SDK 2.x and held frames


def sdk2_frame(objects, q: int = 9, frame_number: int = 1, platform: int = 0xA1443) -> bytes:
    """SDK 2.x frame from the vendor layout: 36-byte header on xWR14xx, 40 on xWR16xx."""
    n = len(objects)
    body = struct.pack("<II", 1, 4 + 12 * n) + struct.pack("<2H", n, q)
    body += b"".join(struct.pack("<HhHhhh", *o) for o in objects)
    header_len = 36 if platform == 0xA1443 else 40
    total = -(-(header_len + len(body)) // 32) * 32
    fields = [0x02010004, total, platform, frame_number, 0, n, 1] + ([0] if header_len == 40 else [])
    header = SYNC + struct.pack(f"<{len(fields)}I", *fields)
    return header + body + b"\x0f" * (total - header_len - len(body))


@pytest.mark.parametrize("platform", [0xA1443, 0xA1642])
def test_sdk2_frames_give_the_same_plots_as_sdk3(platform):
    # Q9: x = 512 -> 1 m; Doppler index -3 at 0.25 m/s per bin -> -0.75 m/s.
    objs = [(40, -3, 900, 512, 5120, 0), (80, 2, 300, -2560, 2560, 256)]
    old = TiMmwaveDriver("r", TiMmwaveSettings(port="/dev/null", doppler_resolution_mps=0.25))
    new = TiMmwaveDriver("r", TiMmwaveSettings(port="/dev/null"))
    (p2,) = old.feed(sdk2_frame(objs, platform=platform), 1.0)
    (p3,) = new.feed(frame([(1.0, 10.0, 0.0, -0.75), (-5.0, 5.0, 0.5, 0.5)]), 1.0)
    for name in ("range_m", "azimuth_deg", "elevation_deg", "radial_vel_mps"):
        assert_allclose(p2.plots[name], p3.plots[name], rtol=1e-6, err_msg=name)
    assert np.isnan(p2.plots["snr_db"]).all()


def test_sdk2_without_a_resolution_has_unknown_doppler_and_says_so(caplog):
    driver = TiMmwaveDriver("r", TiMmwaveSettings(port="/dev/null"))
    with caplog.at_level("WARNING", logger="towerd.drivers.ti_mmwave.protocol"):
        (plots,) = driver.feed(sdk2_frame([(40, -3, 900, 512, 5120, 0)]), 1.0)
    assert np.isnan(plots.plots["radial_vel_mps"]).all() and plots.plots["range_m"][0] > 10
    assert "doppler_resolution_mps" in caplog.text


def test_doppler_resolution_settings():
    assert TiMmwaveSettings(port="/dev/null", doppler_resolution_mps=0.13).doppler_resolution_mps == 0.13
    for bad in (0, -1.0, 51, True, "0.1"):
        with pytest.raises(ConfigError, match="doppler_resolution_mps must be"):
            TiMmwaveSettings(port="/dev/null", doppler_resolution_mps=bad)
    with pytest.raises(ConfigError, match="read from chirp_config"):
        TiMmwaveSettings(port="/dev/null", cli_port="/dev/null", chirp_config="/x.cfg", doppler_resolution_mps=0.1)


def test_resolution_comes_from_the_chirp_profile(tmp_path):
    cfg = tmp_path / "sdk21.cfg"
    cfg.write_text("profileCfg 0 77 429 7 57.14 0 0 70 1 256 5209 0 0 30\nframeCfg 0 1 16 0 100 1 0\n")
    driver = TiMmwaveDriver("r", TiMmwaveSettings(port="/dev/null", cli_port="/dev/null", chirp_config=str(cfg)))
    # 3e8 / (2 * 77e9 * (429 + 57.14) us * 32 chirps), as TI's visualiser computes it
    assert_allclose(driver.parser.doppler_resolution_mps, 3e8 / (2 * 77e9 * 486.14e-6 * 32), rtol=1e-12)


def test_a_frame_ending_like_a_magic_is_held_then_stamped_with_its_own_time():
    held = frame([(1.0, 2.0, 0.0, 0.0)] * 2)  # 40 + 8 + 32 = 80 -> 96 bytes, 16 of padding
    held = held[:-1] + b"\x02"  # its last byte could begin the next frame's magic
    driver = TiMmwaveDriver("r", TiMmwaveSettings(port="/dev/null"))
    assert driver.feed(held, 10.0) == [] and driver.parser.holding
    assert driver.poll(10.0 + TiMmwaveDriver.HOLD_RELEASE_S / 2) == []
    (out,) = driver.poll(10.0 + 2 * TiMmwaveDriver.HOLD_RELEASE_S)  # the line stayed quiet: whole
    assert (out.frame_number, out.t_mono) == (1, 10.0)
    # Released by the next frame's bytes instead: same frame, same time.
    driver = TiMmwaveDriver("r", TiMmwaveSettings(port="/dev/null"))
    assert driver.feed(held, 10.0) == []
    first, second = driver.feed(frame([], frame_number=2), 10.1)
    assert (first.frame_number, first.t_mono, second.frame_number, second.t_mono) == (1, 10.0, 2, 10.1)
