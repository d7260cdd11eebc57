"""TI mmWave CLI: the shipped .cfg, the host's reply scanner, the emulated device CLI, and
the configuration push end to end over real ptys (driver <-> emulator)."""

from __future__ import annotations

import os
import queue
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import serial
from numpy.testing import assert_allclose

from towerd.drivers.ti_mmwave.cli import (
    PROMPT,
    CliReplyScanner,
    doppler_resolution_mps,
    load_chirp_config,
    parse_chirp_config,
    push_config,
)
from towerd.drivers.ti_mmwave.driver import TiMmwaveDriver, TiMmwaveSettings
from towerd.drivers.ti_mmwave.protocol import TiFrameParser
from towerd.errors import ConfigError, DriverInitError, DriverIOError, DriverTimeoutError
from towerd.sensors import SensorRunner
from towerd.sim.pty import PtyPair
from towerd.sim.scenario import builtin_scenario
from towerd.sim.ti_cli import FULL_CONFIG_NEEDED, PARTIAL_CONFIG, TiDemoCli
from towerd.sim.ti_mmwave import SDK2_VERSION, TiMmwaveEmulator

REPO = Path(__file__).resolve().parents[1]
SHIPPED_CFG = REPO / "config" / "ti_mmwave" / "iwr6843_demo.cfg"


@pytest.fixture
def cli_pty():
    pair = PtyPair.open()
    yield pair
    pair.close()


def emulator(**kw) -> TiMmwaveEmulator:
    kw.setdefault("boresight_azimuth_deg", 0.0)
    kw.setdefault("position_enu_m", (0.0, 0.0, 10.0))
    kw.setdefault("rng", np.random.default_rng(7))
    return TiMmwaveEmulator(builtin_scenario("demo"), **kw)


def write_cfg(tmp_path: Path, text: str, name: str = "test.cfg", newline: str = "\n") -> Path:
    path = tmp_path / name
    path.write_bytes(text.replace("\n", newline).encode("ascii"))
    return path


def shipped_commands() -> list[str]:
    return [line.text for line in load_chirp_config(SHIPPED_CFG)]


# ----------------------------------------------------------------------------- the .cfg file


def test_shipped_cfg_is_a_complete_sdk3_demo_configuration():
    lines = load_chirp_config(SHIPPED_CFG)
    commands = [line.command for line in lines]
    assert commands[:3] == ["sensorStop", "flushCfg", "dfeDataOutputMode"] and commands[-1] == "sensorStart"
    for needed in ("channelCfg", "adcCfg", "profileCfg", "chirpCfg", "frameCfg", "guiMonitor", "cfarCfg"):
        assert needed in commands
    text = SHIPPED_CFG.read_text().splitlines()
    for line in lines:  # line numbers point at the file's own lines
        assert text[line.line_no - 1].strip() == line.text
    # The device CLI accepts every line with its argument count and starts at the end.
    cli = TiDemoCli()
    out = cli.receive("".join(c + "\n" for c in shipped_commands()).encode())
    assert b"Error" not in out and b"not recognized" not in out
    assert cli.started and cli.applied.frame_period_ms == 100.0 and cli.applied.range_bins == 256
    assert_allclose(cli.applied.range_resolution_m, 0.044, atol=5e-4)  # the profile's stated resolution


def test_parse_skips_comments_and_blank_lines_and_accepts_crlf():
    text = "% header\n\n  sensorStop  \n%flushCfg\nprofileCfg   0 60 7\r\n\t\nsensorStart\n"
    lines = parse_chirp_config(text)
    assert [(line.line_no, line.text) for line in lines] == [(3, "sensorStop"), (5, "profileCfg 0 60 7"),
                                                              (7, "sensorStart")]
    with pytest.raises(ValueError, match="line 2: 300 characters"):
        parse_chirp_config("sensorStop\n" + "x" * 300 + "\n")


def test_load_refuses_missing_empty_and_binary_files(tmp_path):
    with pytest.raises(DriverInitError, match="cannot read"):
        load_chirp_config(tmp_path / "nope.cfg")
    with pytest.raises(DriverInitError, match="no commands"):
        load_chirp_config(write_cfg(tmp_path, "% only a comment\n"))
    (tmp_path / "bin.cfg").write_bytes(b"sensorStop\n\xff\xfe\n")
    with pytest.raises(DriverInitError, match="cannot read"):
        load_chirp_config(tmp_path / "bin.cfg")


# ----------------------------------------------------------------------------- host reply scanner


@pytest.mark.parametrize(
    ("command", "reply", "ok", "status", "lines"),
    [
        ("flushCfg", b"flushCfg\nDone\n\rmmwDemo:/>", True, "done", ["Done"]),
        ("sensorStop", b"sensorStop\nIgnored: Sensor is already stopped\n\rDone\n\rmmwDemo:/>", True, "done",
         ["Ignored: Sensor is already stopped", "Done"]),
        ("flushCfg", b"flushCfg\r\nDone\r\n\r\nmmwDemo:/>", True, "done", ["Done"]),
        # A public AWR1843 transcript of a refused start (explanation, then "Error -1").
        ("sensorStart", b"sensorStart\r\nError: You have provided partial configuration between stop and this "
                        b"command and partial configuration cannot be undone.Issue the full configuration and do "
                        b"\"sensorStart\" \n\rError -1\n\rmmwDemo:/>", False, "error",
         [PARTIAL_CONFIG.strip(), "Error -1"]),
        ("profileCfg 0", b"profileCfg 0\nError: Invalid usage of the CLI command\n\rError -1\n\rmmwDemo:/>", False,
         "error", ["Error: Invalid usage of the CLI command", "Error -1"]),
        ("frob 1", b"frob 1\n'frob' is not recognized as a CLI command\n\rmmwDemo:/>", False, "not-recognized",
         ["'frob' is not recognized as a CLI command"]),
        ("% x", b"% x\nSkipped\n\rmmwDemo:/>", True, "skipped", ["Skipped"]),
        # Prompt glued in front of the echo (a leftover prompt of the previous command).
        ("flushCfg", b"mmwDemo:/>flushCfg\nDone\n\r", True, "done", ["Done"]),
        # An explanation ended by the prompt without an error code still fails.
        ("x", b"x\nError: something\n\rmmwDemo:/>", False, "error", ["Error: something"]),
    ],
)
def test_scanner_verdicts_whole_and_byte_by_byte(command, reply, ok, status, lines):
    whole = CliReplyScanner(command).feed(reply)
    assert (whole.ok, whole.status, whole.lines) == (ok, status, lines)
    scanner = CliReplyScanner(command)
    verdicts = [v for v in (scanner.feed(reply[i : i + 1]) for i in range(len(reply))) if v is not None]
    assert (verdicts[0].ok, verdicts[0].status, verdicts[0].lines) == (ok, status, lines)


def test_scanner_waits_until_the_verdict_and_keeps_the_prompt_as_remainder():
    scanner = CliReplyScanner("flushCfg")
    assert scanner.feed(b"flushCfg\nDo") is None and scanner.heard == []
    verdict = scanner.feed(b"ne\n\rmmwDemo:/>")
    assert verdict.ok and PROMPT in scanner.remainder
    flood = CliReplyScanner("x")
    assert flood.feed(b"\x00" * 20000).ok is False


# ----------------------------------------------------------------------------- emulated device CLI


def test_device_cli_echo_line_ends_and_prompts():
    cli = TiDemoCli()
    assert cli.boot().endswith(b"\n\rmmwDemo:/>") and b"MMW Demo" in cli.boot()
    assert cli.receive(b"flushCfg\n") == b"flushCfg\nDone\n\rmmwDemo:/>"
    # CR LF: CR is echoed CR LF and ends the line; the LF is an empty command (prompt only).
    assert cli.receive(b"flushCfg\r\n") == b"flushCfg\r\nDone\n\rmmwDemo:/>\nmmwDemo:/>"
    assert cli.receive(b"% a comment\n") == b"% a comment\nSkipped\n\rmmwDemo:/>"
    assert cli.receive(b"\n") == b"\nmmwDemo:/>"
    assert cli.receive(b"bogus 1 2\n").endswith(b"'bogus' is not recognized as a CLI command\n\rmmwDemo:/>")
    assert cli.receive(b"channelCfg 15 5\n").endswith(
        b"Error: Invalid usage of the CLI command\n\rError -1\n\rmmwDemo:/>")
    # Tabs are not separators for the firmware's strtok: "a\tb" is one unknown token.
    assert b"'channelCfg\t15' is not recognized" in cli.receive(b"channelCfg\t15 5 0\n")
    # Input is read 255 characters at a time.
    out = cli.receive(b"x" * 300 + b"\n")
    assert out.count(b"is not recognized") == 2


def test_device_cli_start_stop_rules():
    cli = TiDemoCli()
    assert b"Ignored: Sensor is already stopped\n\rDone" in cli.receive(b"sensorStop\n")
    assert FULL_CONFIG_NEEDED.encode() in cli.receive(b"sensorStart\n") and not cli.started
    assert b"Error -1" in cli.receive(b"sensorStart 0\n")
    cli.receive("".join(c + "\n" for c in shipped_commands()).encode())
    assert cli.started and cli.starts == 1
    assert b"Ignored: Sensor is already started\n\rDone" in cli.receive(b"sensorStart\n")
    assert b"Ignored: This command is not allowed after sensor has started" in cli.receive(b"calibData 0 0 0\n")
    assert cli.receive(b"sensorStop\n").endswith(b"Done\n\rmmwDemo:/>") and not cli.started
    cli.receive(b"flushCfg\nframeCfg 0 1 32 0 50 1 0\n")
    assert PARTIAL_CONFIG.encode() in cli.receive(b"sensorStart\n") and not cli.started
    assert b"Done" in cli.receive(b"sensorStart 0\n") and cli.started  # restart with what was applied
    assert cli.applied.frame_period_ms == 100.0


# ----------------------------------------------------------------------------- push over real ptys


def _frames(port: serial.Serial, parser: TiFrameParser, n: int, timeout_s: float = 5.0):
    """Up to n frames and the monotonic time each was complete."""
    buf, out, times = bytearray(), [], []
    deadline = time.monotonic() + timeout_s
    while len(out) < n and time.monotonic() < deadline:
        buf += port.read(4096)
        consumed, frames = parser.feed(buf)
        del buf[:consumed]
        out += frames
        times += [time.monotonic()] * len(frames)
    return out, times


def test_push_with_pyserial_then_frames_flow_only_between_start_and_stop(pty_pair, cli_pty):
    em = emulator(frame_rate_hz=50.0)
    em.start(pty_pair, cli_pty)
    try:
        with serial.Serial(pty_pair.path, 921600, timeout=0.05) as data, \
                serial.Serial(cli_pty.path, 115200, timeout=0.05) as cli:
            assert data.read(4096) == b""  # booted, not started: silent data UART
            result = push_config(cli, load_chirp_config(SHIPPED_CFG), source="demo.cfg", timeout_s=2.0)
            assert [line.text for line, _ in result.replies] == shipped_commands()
            assert [line.command for line, _ in result.ignored] == ["sensorStop"]
            assert em.cli.commands == shipped_commands()
            frames, times = _frames(data, TiFrameParser(), 12)
            assert len(frames) == 12
            # frameCfg periodicity 100 ms, not the constructor's 50 Hz
            assert_allclose(11 / (times[-1] - times[0]), 10.0, rtol=0.2)
            with_points = [f for f in frames if f.num_detected_obj]
            assert with_points and all(f.tlv_types == (1, 7, 2, 3, 6) for f in with_points)
            push_config(cli, parse_chirp_config("sensorStop\n"), source="stop", timeout_s=2.0)
            sent = em.frames_sent
            data.reset_input_buffer()
            heard, deadline = b"", time.monotonic() + 0.3  # silence for 3 frame periods
            while time.monotonic() < deadline:
                heard += data.read(4096)
            assert heard == b"" and em.frames_sent == sent
    finally:
        em.stop()
    assert em.error is None


@pytest.mark.parametrize("sdk", ["3.5", "2.1-xwr14xx"])
def test_driver_pushes_the_shipped_cfg_and_reads_plots(pty_pair, cli_pty, sdk):
    em = emulator() if sdk == "3.5" else emulator(version=SDK2_VERSION, platform=0xA1443)
    em.start(pty_pair, cli_pty)
    settings = TiMmwaveSettings(port=pty_pair.path, cli_port=cli_pty.path, chirp_config=str(SHIPPED_CFG),
                                cli_timeout_s=2.0)
    try:
        with TiMmwaveDriver("radar", settings) as driver:
            assert driver.config_pushes == 1 and len(driver.last_push.replies) == len(shipped_commands())
            out = []
            deadline = time.monotonic() + 5.0
            while len(out) < 5 and time.monotonic() < deadline:
                out += driver.read()
            assert len(out) >= 5 and driver.counters.bad_frames == 0
            assert driver.parser.stats.unknown_tlvs == 0  # TLV 2, 3 and 6 are known and skipped
            # Both ends took the Doppler resolution from the same profile: SDK 2.x points
            # carry radial velocities as SDK 3.x ones do.
            assert_allclose(driver.parser.doppler_resolution_mps, em.doppler_resolution_mps, rtol=1e-9)
            plots = np.concatenate([o.plots for o in out])
            assert len(plots) and np.isfinite(plots["radial_vel_mps"]).all()
        assert not driver.is_open and driver._cli is None
    finally:
        em.stop()


@pytest.mark.parametrize(
    ("bad_line", "answer"),
    [
        ("profileCfg 0 60 7 3 24", "Error: Invalid usage of the CLI command / Error -1"),
        ("frobnicate 1", "'frobnicate' is not recognized as a CLI command"),
    ],
)
def test_a_refused_line_stops_the_push_with_file_line_and_answer(tmp_path, pty_pair, cli_pty, bad_line, answer):
    cfg = write_cfg(tmp_path, f"% test\nsensorStop\nflushCfg\n\n{bad_line}\nsensorStart\n", newline="\r\n")
    em = emulator()
    em.start(pty_pair, cli_pty)
    driver = TiMmwaveDriver("radar", TiMmwaveSettings(port=pty_pair.path, cli_port=cli_pty.path,
                                                      chirp_config=str(cfg), cli_timeout_s=2.0))
    try:
        with pytest.raises(DriverInitError) as info:
            driver.open()
    finally:
        em.stop()
    message = str(info.value)
    assert f"{cfg}:5: the radar refused '{bad_line}': {answer}" in message
    assert em.cli.commands == ["sensorStop", "flushCfg", bad_line]  # nothing sent after the refusal
    assert not driver.is_open and driver._cli is None and em.frames_sent == 0
    # Both ports were released: they can be opened exclusively again.
    for path in (pty_pair.path, cli_pty.path):
        serial.Serial(path, exclusive=True).close()


def test_silent_cli_times_out_with_a_hint(tmp_path, pty_pair, cli_pty):
    cfg = write_cfg(tmp_path, "sensorStop\nsensorStart\n")
    driver = TiMmwaveDriver("radar", TiMmwaveSettings(port=pty_pair.path, cli_port=cli_pty.path,
                                                      chirp_config=str(cfg), cli_timeout_s=0.3))
    started = time.monotonic()
    with pytest.raises(DriverTimeoutError, match=r"test.cfg:1: no answer to 'sensorStop' within 0.3 s.*CLI UART"):
        driver.open()
    assert time.monotonic() - started < 3.0 and not driver.is_open


def test_close_aborts_a_push_in_progress(tmp_path, pty_pair, cli_pty):
    cfg = write_cfg(tmp_path, "sensorStop\nsensorStart\n")
    driver = TiMmwaveDriver("radar", TiMmwaveSettings(port=pty_pair.path, cli_port=cli_pty.path,
                                                      chirp_config=str(cfg), cli_timeout_s=30.0))
    errors: queue.Queue = queue.Queue()

    def opener():
        try:
            driver.open()
        except Exception as exc:  # handed to the test thread
            errors.put(exc)

    thread = threading.Thread(target=opener)
    thread.start()
    deadline = time.monotonic() + 5.0
    while driver._cli_pushing is None and time.monotonic() < deadline:
        time.sleep(0.01)
    started = time.monotonic()
    driver.close()
    thread.join(5.0)
    assert not thread.is_alive() and time.monotonic() - started < 2.0
    assert isinstance(errors.get_nowait(), DriverIOError)
    assert not driver.is_open


def test_settings_problems_are_located_in_the_yaml():
    from towerd.config import parse_config

    text = """\
version: 1
tower: {id: t1, latitude_deg: 27.5, longitude_deg: -99.5, height_m: 130.0}
sensors:
  - name: radar0
    driver: ti_mmwave
    settings: {port: /dev/towerd/radar0-data, cli_port: /dev/towerd/radar0-cli}
    mount: {boresight_azimuth_deg: 90.0}
"""
    with pytest.raises(ConfigError) as info:
        parse_config(text, "t.yaml")
    assert info.value.problems == ["t.yaml:6:15: sensors[0].settings: ti_mmwave settings: cli_port needs chirp_config "
                                   "(the .cfg file to push, e.g. iwr6843_demo.cfg)"]


def test_settings_need_cfg_and_port_together():
    with pytest.raises(ConfigError, match="cli_port needs chirp_config"):
        TiMmwaveSettings(port="/dev/ttyACM1", cli_port="/dev/ttyACM0")
    with pytest.raises(ConfigError, match="cli_timeout_s must be"):
        TiMmwaveSettings(port="/dev/ttyACM1", cli_port="/dev/ttyACM0", chirp_config="x.cfg", cli_timeout_s=0)


def test_reopen_after_unplug_pushes_the_configuration_again(tmp_path):
    """SensorRunner over symlinked ports: the radar is unplugged (both ptys vanish) and
    plugged back (new ptys, a freshly booted emulator): the runner reconnects and the
    driver pushes the configuration again before frames flow."""
    data_link, cli_link = tmp_path / "radar0-data", tmp_path / "radar0-cli"
    readings: queue.Queue = queue.Queue()
    events: queue.Queue = queue.Queue()
    driver = TiMmwaveDriver("radar0", TiMmwaveSettings(port=str(data_link), cli_port=str(cli_link),
                                                       chirp_config=str(SHIPPED_CFG), cli_timeout_s=2.0))
    runner = SensorRunner(driver, readings.put, events.put, degraded_after_s=5.0, reconnect_max_s=0.2)
    runner.backoff_initial_s = 0.05

    def plug():
        data, cli = PtyPair.open(), PtyPair.open()
        em = emulator()
        em.start(data, cli)
        os.symlink(data.path, data_link)
        os.symlink(cli.path, cli_link)
        return data, cli, em

    def next_event(code):
        deadline = time.monotonic() + 10.0
        while time.monotonic() < deadline:
            try:
                ev = events.get(timeout=0.1)
            except queue.Empty:
                continue
            if ev.code == code:
                return ev
        pytest.fail(f"no {code} event")

    data, cli, em = plug()
    try:
        runner.start()
        next_event("sensor.up")
        readings.get(timeout=5.0)
        assert driver.config_pushes == 1 and em.cli.starts == 1
    finally:
        em.stop()
        os.unlink(data_link)
        os.unlink(cli_link)
        data.close()
        cli.close()
    try:
        next_event("sensor.down")
        data, cli, em = plug()
        next_event("sensor.up")
        while not readings.empty():
            readings.get_nowait()
        readings.get(timeout=5.0)
        assert driver.config_pushes == 2 and em.cli.starts == 1 and em.cli.commands == shipped_commands()
        assert driver.counters.reconnects == 1
    finally:
        runner.stop()
        em.stop()
        data.close()
        cli.close()


def test_doppler_resolution_of_the_shipped_and_a_real_sdk2_profile():
    shipped = load_chirp_config(REPO / "config" / "ti_mmwave" / "iwr6843_demo.cfg")
    # 60 GHz, idle 7 us + ramp end 24 us, chirps 0..1 x 32 loops: TI's profile_2d gives 1.26 m/s
    assert_allclose(doppler_resolution_mps(shipped), 3e8 / (2 * 60e9 * 31e-6 * 64), rtol=1e-12)
    real = load_chirp_config(REPO / "tests" / "captures" / "ti_mmwave" / "awr1642_sdk2_1_piatek.cfg")
    assert abs(doppler_resolution_mps(real) - 0.13) < 0.01  # its header: "Radial velocity resolution(m/s):0.13"


@pytest.mark.parametrize("text, message", [
    ("frameCfg 0 1 16 0 100 1 0\n", "exactly one profileCfg"),
    ("profileCfg 0 77 429 7 57.14 0 0 70 1 256 5209 0 0 30\n", "exactly one profileCfg and one frameCfg"),
    ("dfeDataOutputMode 3\nprofileCfg 0 77 429 7 57.14\nframeCfg 0 1 16 0 100 1 0\n", "dfeDataOutputMode"),
    ("profileCfg 0 77 x 7 57.14\nframeCfg 0 1 16 0 100 1 0\n", "cannot read"),
    ("profileCfg 0 77 0 7 0\nframeCfg 0 1 16 0 100 1 0\n", "no positive"),
])
def test_doppler_resolution_refuses_what_it_cannot_compute(text, message):
    with pytest.raises(ValueError, match=message):
        doppler_resolution_mps(parse_chirp_config(text))
