"""TI mmWave emulator: wire bytes, measurement model, pacing and fault injection.

Bytes are checked both directly at the vendor offsets and by decoding them with the
independent parser in towerd.drivers.ti_mmwave.protocol.
"""

from __future__ import annotations

import struct
import time

import numpy as np
import pytest
from numpy.testing import assert_allclose

from towerd.drivers.ti_mmwave.driver import TiMmwaveDriver, TiMmwaveSettings
from towerd.drivers.ti_mmwave.protocol import TiFrame, TiFrameParser
from towerd.sim.scenario import ClutterPoint, MeasurementNoise, Scenario, Target, WaypointPath, builtin_scenario
from towerd.sim.ti_mmwave import NOISE_DB, SDK2_VERSION, SNR_REF_DB, TiMmwaveEmulator

NO_NOISE = MeasurementNoise(0.0, 0.0, 0.0, 0.0)


def hover(name: str, east: float, north: float, up: float, rcs: float = -20.0, vel=(0.0, 0.0, 0.0)) -> Target:
    """A target at (east, north, up) at t = 0 moving at ``vel`` for 1000 s."""
    end = (1000.0, east + 1000.0 * vel[0], north + 1000.0 * vel[1], up + 1000.0 * vel[2])
    return Target(name, "uas", rcs, WaypointPath(((0.0, east, north, up), end)))


def decode_one(data: bytes) -> TiFrame:
    parser = TiFrameParser(doppler_resolution_mps=0.125)
    consumed, frames = parser.feed(data, quiet=True)
    assert consumed == len(data) and len(frames) == 1, parser.stats
    return frames[0]


def emulator(scenario: Scenario, **kw) -> TiMmwaveEmulator:
    kw.setdefault("boresight_azimuth_deg", 0.0)
    kw.setdefault("rng", np.random.default_rng(1))
    return TiMmwaveEmulator(scenario, **kw)


# ----------------------------------------------------------------------------- bytes


def test_frame_layout_at_vendor_offsets():
    em = emulator(builtin_scenario("demo"), position_enu_m=(0, 0, 10), stats_tlv=True)
    for k in range(20):
        data = em.frame_bytes(k * 0.1, k + 1)
        assert data[:8] == bytes([2, 1, 4, 3, 6, 5, 8, 7])
        version, total, platform, number, cpu, n_obj, n_tlv, sub = struct.unpack_from("<8I", data, 8)
        assert (version, platform, number, sub) == (0x03050004, 0xA6843, k + 1, 0)
        assert total == len(data) and total % 32 == 0
        assert cpu == int(k * 0.1 * 200e6) & 0xFFFFFFFF
        off, types = 40, []
        for _ in range(n_tlv):
            t, length = struct.unpack_from("<II", data, off)
            types.append(t)
            if t == 1:
                assert length == 16 * n_obj
            if t == 7:
                assert length == 4 * n_obj
            off += 8 + length
        assert types == ([1, 7, 6] if n_obj else [1, 6])
        assert total - off < 32 and data[off:] == b"\x0f" * (total - off)
        f = decode_one(data)
        assert (f.frame_number, f.num_detected_obj, f.tlv_types) == (k + 1, n_obj, tuple(types))


def test_detected_objects_modes_follow_mmw_mss():
    empty = Scenario("empty")
    one = Scenario("one", targets=(hover("a", 0.0, 50.0, 0.0),))
    for mode, sc, types in [
        (1, empty, (1,)),  # SDK 3.x default: TLV 1 of length 0 in a frame without detections
        (1, one, (1, 7)),
        (2, empty, ()),
        (2, one, (1,)),
        (0, one, ()),
    ]:
        f = decode_one(emulator(sc, detected_objects_mode=mode).frame_bytes(0.0, 1))
        assert f.tlv_types == types, (mode, sc.name)
    f = decode_one(emulator(empty, detected_objects_mode=1).frame_bytes(0.0, 1))
    assert f.total_packet_len == 64 and len(f.points) == 0


# ----------------------------------------------------------------------------- model


@pytest.mark.parametrize(("boresight", "tilt"), [(0.0, 0.0), (90.0, 0.0), (-135.0, 10.0), (30.0, -5.0)])
def test_noise_free_points_sit_on_the_target_in_the_sensor_frame(boresight, tilt):
    # Place the target 60 m along a direction 20 deg right and 5 deg up of boresight.
    rot = TiMmwaveEmulator(Scenario("x"), boresight_azimuth_deg=boresight, tilt_deg=tilt,
                           rng=np.random.default_rng(0)).rotation
    s_true = 60.0 * np.array([np.cos(np.radians(5)) * np.sin(np.radians(20)),
                              np.cos(np.radians(5)) * np.cos(np.radians(20)), np.sin(np.radians(5))])
    mount = np.array([3.0, -4.0, 12.0])
    enu = rot @ s_true + mount
    los_enu = rot @ (s_true / 60.0)
    tangential = rot @ np.array([np.cos(np.radians(20)), -np.sin(np.radians(20)), 0.0])
    vel = 4.0 * los_enu + 7.0 * tangential  # 4 m/s away plus 7 m/s across
    sc = Scenario("one", targets=(hover("a", *enu, vel=tuple(vel)),), noise=NO_NOISE)
    em = emulator(sc, boresight_azimuth_deg=boresight, tilt_deg=tilt, position_enu_m=tuple(mount))
    f = decode_one(em.frame_bytes(0.0, 1))
    assert 1 <= len(f.points) <= 3
    xyz = np.column_stack([f.points["x_m"], f.points["y_m"], f.points["z_m"]])
    assert_allclose(xyz, np.tile(s_true, (len(xyz), 1)), rtol=1e-6, atol=1e-5)
    assert_allclose(f.points["doppler_mps"], 4.0, atol=1e-5)


def test_targets_outside_the_field_of_view_give_no_points():
    targets = (
        hover("behind", 0.0, -50.0, 0.0),
        hover("too-far", 0.0, 250.0, 0.0),
        hover("too-wide", 100.0, 50.0, 0.0),  # azimuth 63 deg > 60
        hover("too-high", 0.0, 50.0, 40.0),  # elevation 38.7 deg > 30
    )
    em = emulator(Scenario("out", targets=targets, noise=NO_NOISE))
    for k in range(10):
        assert len(decode_one(em.frame_bytes(k * 0.1, k)).points) == 0
    inside = emulator(Scenario("in", targets=(hover("ok", 80.0, 140.0, 0.0),), noise=NO_NOISE))
    assert len(decode_one(inside.frame_bytes(0.0, 1)).points) >= 1


def test_points_per_target_spread_and_noise_statistics():
    noise = MeasurementNoise(range_sigma_m=0.5, azimuth_sigma_deg=1.0, elevation_sigma_deg=2.0, doppler_sigma_mps=0.1)
    sc = Scenario("one", targets=(hover("a", 0.0, 100.0, 0.0, vel=(0.0, 3.0, 0.0)),), noise=noise)
    em = emulator(sc, rng=np.random.default_rng(5))
    counts, rows = [], []
    for k in range(400):
        f = decode_one(em.frame_bytes(0.0, k))
        counts.append(len(f.points))
        rows.append(f.points)
    assert set(counts) == {1, 2, 3}
    pts = np.concatenate(rows)
    x, y, z = (pts[c].astype(float) for c in ("x_m", "y_m", "z_m"))
    r = np.sqrt(x * x + y * y + z * z)
    az = np.degrees(np.arctan2(x, y))
    el = np.degrees(np.arctan2(z, np.hypot(x, y)))
    n = len(pts)
    for err, sigma in [(r - 100.0, 0.5), (az, 1.0), (el, 2.0), (pts["doppler_mps"] - 3.0, 0.1)]:
        assert abs(err.mean()) < 4 * sigma / np.sqrt(n)
        assert_allclose(err.std(), sigma, rtol=0.1)


def test_snr_follows_the_radar_equation_and_goes_negative():
    sc = Scenario("snr", targets=(hover("near", 0.0, 50.0, 0.0, rcs=-20.0), hover("far", 30.0, 190.0, 0.0, rcs=-35.0)),
                  noise=NO_NOISE)
    f = decode_one(emulator(sc, points_per_target=(1, 1)).frame_bytes(0.0, 1))
    r_far = np.hypot(30.0, 190.0)
    expect = [SNR_REF_DB - 20.0 - 40 * np.log10(0.5), SNR_REF_DB - 35.0 - 40 * np.log10(r_far / 100.0)]
    assert expect[1] < 0
    assert_allclose(f.points["snr_db"], np.round(np.array(expect) * 10) / 10, atol=1e-5)
    assert_allclose(f.points["noise_db"], NOISE_DB)


def test_clutter_is_static_and_false_alarms_are_poisson_in_the_fov():
    sc = Scenario("c", clutter=(ClutterPoint(10.0, 40.0, 0.0, 10.0), ClutterPoint(0.0, -40.0, 0.0, 10.0)),
                  false_alarms_per_frame=1.5)
    em = emulator(sc, rng=np.random.default_rng(11))
    n_frames = 1500
    total_points, clutter_seen = 0, 0
    for k in range(n_frames):
        pts = decode_one(em.frame_bytes(k * 0.1, k)).points
        static = pts["doppler_mps"] == 0.0
        clutter_seen += int(static.sum())
        total_points += len(pts)
        r = np.sqrt(pts["x_m"].astype(float) ** 2 + pts["y_m"] ** 2 + pts["z_m"] ** 2)
        az = np.degrees(np.arctan2(pts["x_m"], pts["y_m"]))
        el = np.degrees(np.arcsin(pts["z_m"] / r))
        assert np.all(r <= 200.0 + 1e-3) and np.all(np.abs(az) <= 60.0 + 1e-3) and np.all(np.abs(el) <= 30.0 + 1e-3)
    assert clutter_seen == n_frames  # one clutter point in view (the other is behind), one point each
    false_alarms = total_points - clutter_seen
    assert abs(false_alarms / n_frames - 1.5) < 4 * np.sqrt(1.5 / n_frames)


def test_points_are_sent_in_increasing_range():
    em = emulator(builtin_scenario("demo"), position_enu_m=(0, 0, 10))
    for k in range(20):
        p = decode_one(em.frame_bytes(k * 0.5, k)).points
        r = np.sqrt(p["x_m"].astype(float) ** 2 + p["y_m"] ** 2 + p["z_m"] ** 2)
        assert np.all(np.diff(r) >= -1e-4)


# ----------------------------------------------------------------------------- faults


def test_injected_garbage_and_truncation_are_real_and_recoverable():
    em = emulator(builtin_scenario("demo"), position_enu_m=(0, 0, 10))
    clean = em.next_chunk(0.0, 1)
    assert clean[:8] == bytes([2, 1, 4, 3, 6, 5, 8, 7])
    em.inject_garbage(123)
    dirty = em.next_chunk(0.1, 2)
    assert dirty[123:131] == clean[:8] and len(dirty) - 123 == struct.unpack_from("<I", dirty, 123 + 12)[0]
    em.inject_truncated()
    cut = em.next_chunk(0.2, 3)
    assert len(cut) < struct.unpack_from("<I", cut, 12)[0]
    after = em.next_chunk(0.3, 4)
    parser = TiFrameParser()
    buf = bytearray(clean + dirty + cut + after)
    consumed, frames = parser.feed(buf)
    assert [f.frame_number for f in frames] == [1, 2, 4]
    s = parser.stats
    assert s.bad_frames == 1 and s.dropped_bytes == 123 + len(cut)


# ----------------------------------------------------------------------------- thread


def _read_frames(driver, n: int, timeout_s: float = 5.0):
    out = []
    deadline = time.monotonic() + timeout_s
    while len(out) < n and time.monotonic() < deadline:
        out += driver.read()
    return out


def test_pacing_over_a_real_pty_meets_the_frame_rate(pty_pair):
    em = emulator(builtin_scenario("demo"), position_enu_m=(0, 0, 10), frame_rate_hz=10.0)
    with TiMmwaveDriver("radar", TiMmwaveSettings(port=pty_pair.path)) as driver:
        em.start(pty_pair)
        try:
            plots = _read_frames(driver, 11)
        finally:
            em.stop()
            em.stop()  # idempotent
    assert len(plots) == 11
    assert [p.frame_number for p in plots] == list(range(1, 12))
    span = plots[-1].t_mono - plots[0].t_mono
    assert_allclose(10 / span, 10.0, rtol=0.10)
    assert em.frames_sent >= 11 and em.bytes_dropped == 0 and em.error is None
    assert em.t0_mono is not None and em.t0_utc_us is not None
    assert not em.running


def test_stop_without_start_and_restart_refused(pty_pair):
    em = emulator(Scenario("empty"), frame_rate_hz=50.0)
    em.stop()
    em.start(pty_pair)
    try:
        with pytest.raises(RuntimeError):
            em.start(pty_pair)
    finally:
        em.stop()
    assert em.frames_sent >= 1


def test_injected_stall_is_a_silence_then_frames_resume(pty_pair):
    em = emulator(builtin_scenario("demo"), position_enu_m=(0, 0, 10), frame_rate_hz=20.0)
    with TiMmwaveDriver("radar", TiMmwaveSettings(port=pty_pair.path)) as driver:
        em.start(pty_pair)
        try:
            before = _read_frames(driver, 2)
            em.inject_stall(0.4)
            after = _read_frames(driver, 3, timeout_s=5.0)
        finally:
            em.stop()
    assert len(before) == 2 and len(after) == 3
    gaps = np.diff([p.t_mono for p in before + after])
    assert gaps.max() >= 0.3 and em.frames_stalled >= 6
    numbers = [p.frame_number for p in before + after]
    assert numbers == sorted(numbers) and numbers[-1] - numbers[0] >= 8  # the stalled slots are lost, not queued


@pytest.mark.parametrize("platform, header_len", [(0xA1443, 36), (0xA1642, 40)])
def test_sdk2_frames_at_vendor_offsets(platform, header_len):
    """SDK 2.1 layout: no subFrameNumber on xWR14xx, TLV 1 = descriptor + 12-byte objects
    in Q7, only when there are points, no TLV 7; decoded to the same points as SDK 3.x."""
    one = Scenario("one", targets=(hover("a", 3.0, 50.0, 2.0, vel=(0.0, -4.0, 0.0)),), noise=NO_NOISE)
    kw = dict(position_enu_m=(0, 0, 0), points_per_target=(1, 1), stats_tlv=True)
    sdk3 = emulator(one, **kw)
    sdk2 = emulator(one, version=SDK2_VERSION, platform=platform, doppler_resolution_mps=0.125, **kw)
    data = sdk2.frame_bytes(0.0, 5)
    version, total, plat, number, cpu, n_obj, n_tlv = struct.unpack_from("<7I", data, 8)
    assert (version, plat, number, n_obj, n_tlv, total) == (0x02010004, platform, 5, 1, 2, len(data))
    t, length = struct.unpack_from("<II", data, header_len)
    assert (t, length) == (1, 4 + 12)
    count, q = struct.unpack_from("<2H", data, header_len + 8)
    rng_idx, dop_idx, peak, x, y, z = struct.unpack_from("<HhHhhh", data, header_len + 12)
    assert (count, q, x, y, z) == (1, 7, 3 * 128, 50 * 128, 2 * 128)
    assert dop_idx == round(-4.0 * 50 / np.linalg.norm([3, 50, 2]) / 0.125)
    assert struct.unpack_from("<II", data, header_len + 8 + length) == (6, 24)
    want = decode_one(sdk3.frame_bytes(0.0, 5)).points
    got = decode_one(data)
    assert got.header_len == header_len and got.tlv_types == (1, 6)
    assert_allclose(got.points["x_m"], want["x_m"], atol=1 / 256)
    assert_allclose(got.points["doppler_mps"], want["doppler_mps"], atol=0.0625)
    empty = decode_one(emulator(Scenario("empty"), version=SDK2_VERSION, platform=platform).frame_bytes(0.0, 1))
    assert empty.tlv_types == () and len(empty.points) == 0
