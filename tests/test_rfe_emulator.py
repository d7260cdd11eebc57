"""RF Explorer emulator: lines at the vendor positions, commands and refusals, sweep
variants, the noise and emitter model, faults, pacing over a real pty.

Lines are checked at the vendor's fixed positions directly and by decoding with the
independent parser in towerd.drivers.rfexplorer.protocol.
"""

from __future__ import annotations

import os
import select
import time

import numpy as np
import pytest

from towerd.drivers.rfexplorer.protocol import EEOT, RfeConfig, RfeModel, RfeParser, RfeReset, RfeSweep
from towerd.sim.rfexplorer import RfExplorerEmulator, fspl_db
from towerd.sim.scenario import Emitter, Interferer, Scenario, Target, WaypointPath


def emulator(scenario: Scenario | None = None, **kw) -> RfExplorerEmulator:
    kw.setdefault("rng", np.random.default_rng(11))
    return RfExplorerEmulator(scenario, **kw)


def decode(data: bytes, parser: RfeParser | None = None) -> list:
    parser = parser or RfeParser()
    consumed, msgs = parser.feed(data)
    assert consumed == len(data), parser.stats
    return msgs


def hover(east: float, north: float, up: float, *emitters: Emitter) -> Target:
    return Target("h", "uas", -20.0, WaypointPath(((0.0, east, north, up), (1e6, east, north, up))),
                  emitters=emitters)


# ----------------------------------------------------------------------------- lines


def test_config_line_at_vendor_positions():
    em = emulator(boot_start_mhz=2400.0, boot_end_mhz=2483.5, amp_offset_db=-7, calculator=4)
    line = em.config_line()
    text = line[:-2].decode()
    assert line.endswith(b"\r\n") and text.startswith("#C2-F:") and len(text) == 81
    # RFEConfiguration.py: [6:13] start kHz, [14:21] step Hz, [22:26] top, [27:31] bottom,
    # [32:36] points, [37] expansion, [39:42] mode, [43:50] min, [51:58] max, [59:66] span,
    # [67:72] RBW, [73:77] offset, [78:81] calculator.
    assert int(text[6:13]) == 2400000 and int(text[14:21]) == em.state.step_hz == 752252
    assert (int(text[22:26]), int(text[27:31]), int(text[32:36])) == (-30, -118, 112)
    assert (text[37], int(text[39:42]), int(text[43:50]), int(text[51:58]), int(text[59:66])) == (
        "0", 0, 15000, 6100000, 600000)
    assert (int(text[67:72]), int(text[73:77]), int(text[78:81])) == (em.state.rbw_khz, -7, 4)
    (cfg,) = decode(line)
    assert cfg.start_khz == 2400000 and cfg.offset_db == -7 and cfg.calculator_name == "max-hold"


def test_c2f_lower_and_eight_digit_step_round_trip():
    em = emulator(points=12000)
    assert em.config_line().startswith(b"#C2-f:") and decode(em.config_line())[0].points == 12000
    em = emulator(step_digits=8)
    line = em.config_line()
    assert line[14:22] == b"%08d" % em.state.step_hz
    assert decode(line)[0].step_hz == em.state.step_hz


def test_model_line():
    (m,) = decode(emulator(main_model=6, expansion_model=4, firmware="01.12B20").model_line())
    assert isinstance(m, RfeModel) and (m.main_model, m.expansion_model, m.firmware) == (6, 4, "01.12B20")


# ----------------------------------------------------------------------------- commands


def test_request_config_hold_and_retune():
    em = emulator()
    reply = em.handle(b"#\x04C0")
    model, cfg = decode(reply)
    assert isinstance(model, RfeModel) and isinstance(cfg, RfeConfig) and em.state.streaming
    assert em.handle(b"#\x04CH") == b"" and not em.state.streaming
    (cfg,) = decode(em.handle(b"#\x20C2-F:0863000,0870000,-020,-110"))
    assert (cfg.start_khz, cfg.amp_top_dbm, cfg.amp_bottom_dbm) == (863000, -20, -110)
    assert cfg.step_hz == 7_000_000 // 111 and cfg.end_mhz == pytest.approx(870.0, abs=1e-4)
    assert em.commands == [b"#\x04C0", b"#\x04CH", b"#\x20C2-F:0863000,0870000,-020,-110"]


def test_command_framing_survives_junk_and_split_writes():
    em = emulator()
    cmd = b"#\x20C2-F:0863000,0870000,-020,-110"
    assert em.handle(b"xx#\x00" + cmd[:10]) == b""
    (cfg,) = decode(em.handle(cmd[10:]))
    assert cfg.start_khz == 863000 and em.commands == [cmd]


@pytest.mark.parametrize(
    ("cmd", "why"),
    [
        (b"#\x20C2-F:0010000,0020000,-010,-120", "outside"),  # below min 15 MHz
        (b"#\x20C2-F:6000000,6200000,-010,-120", "outside"),  # above max 6100 MHz
        (b"#\x20C2-F:1000000,1700000,-010,-120", "span"),  # 700 MHz > 600 MHz
        (b"#\x20C2-F:0433000,0433050,-010,-120", "below"),  # 50 kHz < 112 kHz
        (b"#\x20C2-F:0870000,0863000,-010,-120", "end not above start"),
        (b"#\x20C2-F:08630x0,0870000,-010,-120", "malformed"),
        (b"#\x1dC2-F:0863000,0870000,-10,-120", "malformed"),
    ],
)
def test_out_of_range_or_malformed_retune_is_refused_silently(cmd, why):
    em = emulator()
    before = em.config_line()
    assert em.handle(cmd) == b""
    assert em.refused and why in em.refused[-1][1] and em.config_line() == before


def test_sweep_points_commands_clamp_and_reset_the_band():
    em = emulator(boot_start_mhz=2400.0, boot_end_mhz=2483.5)
    em.handle(b"#\x20C2-F:0863000,0870000,-010,-120")
    (cfg,) = decode(em.handle(b"#\x05CJ\x20"))
    assert cfg.points == 512 and cfg.start_khz == 2400000  # the quirk: back to the boot band
    assert decode(em.handle(b"#\x05CJ\x00"))[0].points == 4096
    assert decode(em.handle(b"#\x05CJ\x01"))[0].points == 112  # 16 -> clamped to 112
    assert decode(em.handle(b"#\x06Cj\x27\x10"))[0].points == 10000
    assert em.handle(b"#\x04ZZ") == b"" and em.unknown == [b"#\x04ZZ"]


def test_retune_while_streaming_cuts_the_sweep_with_the_marker():
    em = emulator()
    em.handle(b"#\x04C0")
    reply = em.handle(b"#\x20C2-F:0863000,0870000,-010,-120")
    assert EEOT in reply and reply.startswith(b"$S")
    parser = RfeParser()
    msgs = decode(reply, parser)
    assert [type(m) for m in msgs] == [RfeConfig] and parser.stats.early_ends == 1


# ----------------------------------------------------------------------------- sweeps


@pytest.mark.parametrize(("points", "head"), [(112, b"$S\x70"), (240, b"$S\xf0"), (512, b"$s\x20"),
                                              (4096, b"$s\x00"), (10000, b"$z\x27\x10"), (300, b"$z\x01\x2c")])
def test_variant_follows_the_point_count(points, head):
    em = emulator(points=points)
    data = em.sweep_bytes(0.0)
    assert data.startswith(head) and data.endswith(b"\r\n") and len(data) == len(head) + points + 2
    parser = RfeParser()
    (sweep,) = decode(em.config_line() + data, parser)[1:]
    assert isinstance(sweep, RfeSweep) and len(sweep.power_dbm) == points


def test_forced_variant_and_impossible_ones():
    assert emulator(variant="$z").sweep_bytes(0.0).startswith(b"$z\x00\x70")
    assert emulator(variant="$s").sweep_bytes(0.0).startswith(b"$s\x07")
    with pytest.raises(ValueError):
        emulator(variant="$S", points=4096).sweep_bytes(0.0)
    with pytest.raises(ValueError):
        emulator(variant="$q")


def wire_power_mw(em: RfExplorerEmulator, n: int, t_s: float = 0.0) -> np.ndarray:
    """(n, points) linear power decoded from the bytes the emulator sends."""
    parser = RfeParser()
    msgs = decode(em.config_line() + b"".join(em.sweep_bytes(t_s) for _ in range(n)), parser)
    return 10.0 ** (np.array([m.power_dbm for m in msgs if isinstance(m, RfeSweep)], dtype=float) / 10.0)


@pytest.mark.parametrize("looks", [1, 8])
def test_noise_floor_level_and_k_look_statistics(looks):
    em = emulator(noise_floor_dbm_per_mhz=-105.0, looks=looks, boot_start_mhz=863.0, boot_end_mhz=870.0)
    rbw_mhz = em.state.rbw_khz / 1e3
    expected = 10.0 ** ((-105.0 + 10.0 * np.log10(rbw_mhz)) / 10.0)
    x = wire_power_mw(em, 400).ravel()  # 44800 cells
    assert x.mean() == pytest.approx(expected, rel=0.03)
    # Gamma(K, mean/K): variance / mean^2 = 1/K (0.5 dB quantisation adds < 1 %).
    assert x.var() / x.mean() ** 2 == pytest.approx(1.0 / looks, rel=0.08)


def test_emitter_level_follows_free_space_loss():
    link = Emitter.of("ocusync", centres_mhz=(2441.0,), bandwidth_mhz=20.0, tx_power_dbm=20.0)
    em = emulator(Scenario("one", targets=(hover(0.0, 400.0, 30.0, link),)), position_enu_m=(0.0, 0.0, 30.0),
                  looks=4)
    f = em.state.freqs_mhz()
    rbw = em.state.rbw_khz / 1e3
    p_rx_dbm = 20.0 - fspl_db(400.0, 2441.0)
    assert fspl_db(400.0, 2441.0) == pytest.approx(20 * np.log10(0.4) + 20 * np.log10(2441.0) + 32.44)
    x = wire_power_mw(em, 200).mean(axis=0)
    noise, signal = em.mean_power_mw(0.0)
    inside = np.abs(f - 2441.0) < 10.0 - rbw
    expected = noise[inside] + 10 ** (p_rx_dbm / 10) * rbw / 20.0
    np.testing.assert_allclose(signal[inside], 10 ** (p_rx_dbm / 10) * rbw / 20.0, rtol=1e-9)
    np.testing.assert_allclose(x[inside].mean(), expected.mean(), rtol=0.1)
    assert np.all(signal[np.abs(f - 2441.0) > 10.0 + rbw] == 0.0)


def test_hopping_link_shows_a_comb_only_in_max_hold():
    elrs = Emitter.of("elrs", tx_power_dbm=20.0, duty_cycle=1.0)  # 40 channels, 903.5-926.9 MHz
    em = emulator(Scenario("one", targets=(hover(0.0, 200.0, 20.0, elrs),)), boot_start_mhz=902.0,
                  boot_end_mhz=928.0, points=1024, looks=4)
    parser = RfeParser()
    msgs = decode(em.config_line() + b"".join(em.sweep_bytes(0.1 * k) for k in range(400)), parser)
    x = np.array([m.power_dbm for m in msgs if isinstance(m, RfeSweep)], dtype=float)
    f = em.state.freqs_mhz()
    noise_db = 10 * np.log10(em.mean_power_mw(0.0)[0][0])
    on_channel = np.min(np.abs(f[:, None] - np.array(elrs.centres_mhz)[None, :]), axis=1) < 0.15
    # One sweep: the radio is on one channel at a time (20 ms each), and the sweep passes
    # a channel in ~0.6 ms, so a channel's points light up in about 1 sweep of 40.
    lit = (x[:, on_channel] > noise_db + 15).mean()
    assert 0.005 < lit < 0.06
    # Max-hold over the sweeps: every channel shows.
    held = x.max(axis=0)
    for c in elrs.centres_mhz:
        assert held[np.abs(f - c) < 0.15].max() > noise_db + 20, c
    between = np.min(np.abs(f[:, None] - np.array(elrs.centres_mhz)[None, :]), axis=1) > 0.3
    assert np.median(held[between]) < noise_db + 10


def test_bursts_are_seen_in_proportion_to_their_duty_cycle():
    bursts = Emitter.of("droneid", centres_mhz=(2441.0,), duty_cycle=0.05, tx_power_dbm=20.0)
    em = emulator(Scenario("one", targets=(hover(0.0, 100.0, 10.0, bursts),)), looks=4)
    f = em.state.freqs_mhz()
    x = 10 * np.log10(wire_power_mw(em, 300))
    inside = np.abs(f - 2441.0) < 4.0
    noise_db = 10 * np.log10(em.mean_power_mw(0.0)[0][0])
    assert (x[:, inside] > noise_db + 20).mean() == pytest.approx(0.05, abs=0.015)


def test_interferer_and_absent_targets():
    ap = Interferer("ap", 0.0, 300.0, 5.0, Emitter.of("wifi", duty_cycle=1.0))
    late = Target("late", "uas", -20.0, WaypointPath(((100.0, 0.0, 50.0, 10.0), (200.0, 0.0, 50.0, 10.0))),
                  emitters=(Emitter.of("ocusync", centres_mhz=(2460.0,)),))
    em = emulator(Scenario("s", targets=(late,), interferers=(ap,)))
    f = em.state.freqs_mhz()
    _, signal = em.mean_power_mw(0.0)
    assert signal[np.abs(f - 2437.0) < 5].min() > 0 and np.all(signal[np.abs(f - 2460.0) < 3] == 0)
    _, signal = em.mean_power_mw(150.0)
    assert signal[np.abs(f - 2460.0) < 3].min() > 0


# ----------------------------------------------------------------------------- faults


def streaming(**kw) -> tuple[RfExplorerEmulator, RfeParser]:
    em = emulator(**kw)
    parser = RfeParser()
    decode(em.handle(b"#\x04C0"), parser)
    return em, parser


def test_faults_on_the_next_sweep():
    em, parser = streaming()
    em.inject_garbage(40)
    data = em.next_chunk(0.0) + em.next_chunk(0.1)
    assert len(data) == 40 + 2 * 117
    em.inject_truncated()
    data += em.next_chunk(0.2)
    assert not data.endswith(b"\r\n")
    data += em.next_chunk(0.3) + em.next_chunk(0.4)
    em.inject_bad_crlf()
    data += em.next_chunk(0.5)
    assert data.endswith(b"\n\r")
    data += b"#ACK\r\n" + em.next_chunk(0.6)
    em.inject_eeot()
    eeot = em.next_chunk(0.7)
    assert eeot.endswith(EEOT)
    data += eeot + em.next_chunk(0.8)
    consumed, msgs = parser.feed(data)
    s = parser.stats
    assert consumed == len(data) and s.early_ends == 1 and s.bad_frames == 2 and s.dropped_bytes >= 40
    assert s.sweeps >= 3


def test_reset_sends_the_banner_and_goes_quiet():
    em, parser = streaming(points=512)
    em.handle(b"#\x05CJ\x10")  # 256 points
    em.inject_reset()
    banner = em.next_chunk(1.0)
    msgs = decode(banner, parser)
    assert [type(m) for m in msgs] == [RfeReset, RfeReset]
    assert em.next_chunk(1.1) == b"" and not em.state.streaming and em.state.points == 512
    assert em.handle(b"#\x03r").startswith(b"(C) Ariel Rocholl ")  # Request_Reboot, size 3


# ----------------------------------------------------------------------------- over a pty


def read_pty(pty_pair, seconds: float) -> list[tuple[float, bytes]]:
    """What the device side wrote during ``seconds``, as (arrival time, bytes)."""
    chunks = []
    deadline = time.monotonic() + seconds
    while (left := deadline - time.monotonic()) > 0:
        r, _, _ = select.select([pty_pair.slave_fd], [], [], left)
        if r:
            chunks.append((time.monotonic(), os.read(pty_pair.slave_fd, 65536)))
    return chunks


def test_pacing_and_commands_over_a_real_pty(pty_pair):
    em = emulator(sweep_rate_hz=40.0)
    em.start(pty_pair)
    try:
        assert read_pty(pty_pair, 0.15) == []  # silent until asked
        os.write(pty_pair.slave_fd, b"#\x04C0")
        chunks = read_pty(pty_pair, 1.0)
    finally:
        em.stop()
        em.stop()
    data = b"".join(c for _, c in chunks)
    parser = RfeParser()
    consumed, msgs = parser.feed(data)
    sweeps = [m for m in msgs if isinstance(m, RfeSweep)]
    assert isinstance(msgs[0], RfeModel) and isinstance(msgs[1], RfeConfig)
    assert 34 <= len(sweeps) <= 46 and parser.stats.bad_frames == 0
    assert em.bytes_dropped == 0 and em.error is None and not em.running


def test_stall_silences_the_device(pty_pair):
    em = emulator(sweep_rate_hz=50.0)
    em.start(pty_pair)
    try:
        os.write(pty_pair.slave_fd, b"#\x04C0")
        read_pty(pty_pair, 0.2)
        em.inject_stall(0.5)
        start = time.monotonic()
        chunks = read_pty(pty_pair, 0.9)
    finally:
        em.stop()
    gaps = np.diff([start] + [t for t, _ in chunks])
    assert gaps.max() >= 0.4  # nothing for the stall, then sweeps again
    assert 10 <= len(chunks) <= 25  # 0.9 s at 50 Hz less the 0.5 s stall


def test_second_start_refused_and_stop_is_idempotent(pty_pair):
    em = emulator()
    em.stop()
    em.start(pty_pair)
    try:
        with pytest.raises(RuntimeError):
            em.start(pty_pair)
    finally:
        em.stop()
    em.stop()
    assert not em.running
