"""Technician tools through real `towerd` subprocesses and real ptys: sim, tap, record,
replay; plus the capture file format."""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest

from processes import Child, Sim
from towerd.drivers.nmea_radar.protocol import NmeaParser
from towerd.sim.nmea_radar import NmeaRadarEmulator
from towerd.sim.scenario import Scenario, Target, WaypointPath
from towerd.tools.recording import MAGIC, RawWriter, RecordingError, RecordingHeader, read_recording

REPO = Path(__file__).resolve().parents[1]
SITE = "latitude_deg: 27.5036, longitude_deg: -99.5076, height_m: 130.0"


def nmea_config(tmp_path: Path, port: Path, name: str = "arpa0") -> Path:
    path = tmp_path / "towerd.yaml"
    path.write_text(f"""\
version: 1
tower: {{id: tx-test-001, {SITE}}}
state_dir: {tmp_path / 'state'}
sensors:
  - name: {name}
    driver: nmea_radar
    settings: {{port: {port}, baudrate: 38400, scan_gap_s: 0.1}}
    mount: {{boresight_azimuth_deg: 0.0, position_enu_m: [0.0, 0.0, 10.0]}}
    noise: {{range_sigma_m: 1.0, azimuth_sigma_deg: 1.0}}
""")
    return path


@pytest.fixture
def nmea_sim(towerd_exe, tmp_path):
    link = tmp_path / "arpa0"
    sim = Sim(towerd_exe, tmp_path, "--device", "nmea_radar", "--baud", "38400", "--scan-period", "0.2",
              "--link", str(link), "--seed", "4")
    sim.wait_for("ready")
    sim.link = link
    yield sim
    assert sim.stop() == 0, sim.log()
    assert not link.exists()  # the sim removes its links on the way out


def run(exe: str, *args: str, timeout_s: float = 30.0) -> subprocess.CompletedProcess:
    return subprocess.run([exe, *args], capture_output=True, text=True, timeout=timeout_s)


def test_sim_tap_record_replay_end_to_end(towerd_exe, tmp_path, nmea_sim):
    cfg = nmea_config(tmp_path, nmea_sim.link)
    tap = run(towerd_exe, "tap", "arpa0", "--config", str(cfg), "--count", "3")
    assert tap.returncode == 0, tap.stderr
    readings = [json.loads(line) for line in tap.stdout.splitlines()]
    assert len(readings) == 3 and all(r["type"] == "RadarPlots" and r["sensor"] == "arpa0" for r in readings)
    plot = readings[-1]["plots"][0]
    assert plot["elevation_deg"] is None and plot["azimuth_is_true"] is True and plot["target_id"] >= 1
    assert 10.0 < plot["range_m"] < 300.0 and "3 readings" in tap.stderr

    capture = tmp_path / "arpa0.raw"
    rec = run(towerd_exe, "record", "arpa0", "--duration", "2", str(capture), "--config", str(cfg),
              "--note", "bench test")
    assert rec.returncode == 0, rec.stderr
    recording = read_recording(capture)
    h = recording.header
    assert (h.sensor, h.driver, h.note, h.settings["baudrate"]) == ("arpa0", "nmea_radar", "bench test", 38400)
    assert h.mount["position_enu_m"] == [0.0, 0.0, 10.0]
    assert 1.6 < recording.duration_s < 2.1 and not recording.truncated
    offsets = [t for t, _ in recording.records]
    assert offsets == sorted(offsets)
    parser = NmeaParser()
    _, rows = parser.feed(b"".join(d for _, d in recording.records))
    assert len(rows) >= 10 and parser.stats.bad_sentences == 0  # the bytes are the sentences, untouched

    out = run(towerd_exe, "replay", str(capture), "--config", str(cfg))
    assert out.returncode == 0, out.stderr
    records = [json.loads(line) for line in out.stdout.splitlines()]
    assert records, out.stderr
    statuses = {r["status_name"] for r in records}
    assert "confirmed" in statuses and "ended" in statuses
    end_us = h.started_utc_us + (recording.duration_s + 61.0) * 1e6
    assert all(h.started_utc_us <= r["time_us"] <= end_us for r in records)  # the field session's clock
    assert all(r["lat_e7"] != 0 and r["range_m"] < 300.0 for r in records)
    again = run(towerd_exe, "replay", str(capture), "--config", str(cfg))
    assert again.stdout == out.stdout  # a replay is deterministic

    wrong = run(towerd_exe, "replay", str(capture), "--config", str(nmea_config(tmp_path, nmea_sim.link, "other")))
    assert wrong.returncode == 78 and "pass --sensor NAME" in wrong.stderr


def test_tap_refuses_a_port_held_by_the_running_daemon(towerd_exe, tmp_path, nmea_sim):
    cfg = nmea_config(tmp_path, nmea_sim.link)
    daemon = Child([towerd_exe, "run", "--config", str(cfg)], tmp_path / "daemon.log")
    try:
        deadline = time.monotonic() + 20.0
        while "up on" not in daemon.log() and time.monotonic() < deadline and daemon.proc.poll() is None:
            time.sleep(0.05)
        assert "up on" in daemon.log(), daemon.log()
        tap = run(towerd_exe, "tap", "arpa0", "--config", str(cfg), "--count", "1")
        assert tap.returncode == 75, tap.stderr
        assert "the port is busy" in tap.stderr and f"held by towerd (pid {daemon.proc.pid}): the daemon has it" in tap.stderr
        assert "nothing was sent to the device" in tap.stderr and "systemctl stop towerd" in tap.stderr
        record = run(towerd_exe, "record", "arpa0", "--duration", "1", str(tmp_path / "x.raw"), "--config", str(cfg))
        assert record.returncode == 75 and not (tmp_path / "x.raw").exists()
        assert daemon.proc.poll() is None  # the daemon kept running, undisturbed
    finally:
        assert daemon.stop() == 0, daemon.log()


def test_sim_ti_with_cli_is_configured_by_tap(towerd_exe, tmp_path):
    data, cli = tmp_path / "radar0-data", tmp_path / "radar0-cli"
    sim = Sim(towerd_exe, tmp_path, "--device", "ti_mmwave", "--link", str(data), "--cli-link", str(cli))
    try:
        sim.wait_for("ready")
        sim.send("status")
        assert "sensor stopped" in sim.wait_for("frames sent")
        cfg = tmp_path / "ti.yaml"
        cfg.write_text(f"""\
version: 1
tower: {{id: tx-test-001, {SITE}}}
state_dir: {tmp_path / 'state'}
sensors:
  - name: radar0
    driver: ti_mmwave
    settings:
      port: {data}
      cli_port: {cli}
      chirp_config: {REPO / 'config' / 'ti_mmwave' / 'iwr6843_demo.cfg'}
    mount: {{boresight_azimuth_deg: 0.0, position_enu_m: [0.0, 0.0, 10.0]}}
""")
        tap = run(towerd_exe, "tap", "radar0", "--config", str(cfg), "--count", "2")
        assert tap.returncode == 0, tap.stderr
        frames = [json.loads(line) for line in tap.stdout.splitlines()]
        assert [f["type"] for f in frames] == ["RadarPlots", "RadarPlots"]
        assert all(f["plots"] and f["plots"][0]["snr_db"] is not None for f in frames)
        sim.send("status")
        assert "sensor started" in sim.wait_for("frames sent", count=2)
    finally:
        assert sim.stop() == 0, sim.log()


def test_sim_commands_unplug_replug_and_faults(towerd_exe, tmp_path, nmea_sim):
    assert os.readlink(nmea_sim.link).startswith("/dev/pts/")
    for command in ("garbage 50", "checksum", "truncate", "stall 0.2", "bogus"):
        nmea_sim.send(command)
    log = nmea_sim.wait_for("error: unknown command 'bogus'")
    assert log.splitlines().count("ok") == 4
    nmea_sim.send("unplug")
    nmea_sim.wait_for("unplugged")
    assert not os.path.lexists(nmea_sim.link)
    nmea_sim.send("status")
    nmea_sim.wait_for("\nunplugged\n")
    nmea_sim.send("replug")
    nmea_sim.wait_for(f"link: {nmea_sim.link} -> ", count=2)
    assert os.path.exists(nmea_sim.link) and os.readlink(nmea_sim.link).startswith("/dev/pts/")
    nmea_sim.send("status")
    assert "scans sent" in nmea_sim.wait_for("scans sent")


# ----------------------------------------------------------------------------- capture format


def test_capture_roundtrip_truncation_and_refusals(tmp_path):
    header = RecordingHeader(sensor="s", driver="nmea_radar", settings={"port": "/dev/x"}, started_utc_us=10**15,
                             started_mono=100.0)
    path = tmp_path / "c.raw"
    writer = RawWriter(path, header)
    writer.write(b"abc", 100.5)
    writer.write(b"", 100.6)  # nothing to keep
    writer.write(b"\x00\xff" * 10, 100.25)  # a clock going backwards never makes offsets decrease
    writer.close()
    writer.write(b"late", 101.0)  # after close: ignored
    rec = read_recording(path)
    assert rec.records == [(0.5, b"abc"), (0.5, b"\x00\xff" * 10)] and not rec.truncated
    raw = path.read_bytes()
    assert raw.startswith(MAGIC) and raw.index(b"\n", len(MAGIC)) > 0
    path.write_bytes(raw[:-5])  # cut inside the last record
    cut = read_recording(path)
    assert cut.truncated and cut.records == [(0.5, b"abc")]
    path.write_bytes(b"NOT A CAPTURE\n")
    with pytest.raises(RecordingError, match="not a towerd raw capture"):
        read_recording(path)
    path.write_bytes(MAGIC + b"{}\n")
    with pytest.raises(RecordingError, match="bad header"):
        read_recording(path)


def test_replay_of_a_synthetic_capture_tracks_the_target_on_the_recorded_clock(towerd_exe, tmp_path):
    """A capture built in-process (emulator bytes at known times, as a 1 s radar), made
    by a sensor the configuration does not have, replays as a configured one (--sensor)
    into one track whose reported positions follow the truth."""
    target = Target("t", "vehicle", 10.0, WaypointPath(((0.0, 100.0, 400.0, 10.0), (100.0, 100.0, 900.0, 10.0))))
    em = NmeaRadarEmulator(Scenario("one", targets=(target,)), rng=np.random.default_rng(1), units="K",
                           position_enu_m=(0.0, 0.0, 10.0))
    header = RecordingHeader(sensor="field-radar", driver="nmea_radar", settings={},
                             started_utc_us=1_700_000_000_000_000, started_mono=5000.0)
    path = tmp_path / "synthetic.raw"
    writer = RawWriter(path, header)
    for k in range(12):
        writer.write(em.scan_bytes(float(k)), 5000.0 + k + 0.05)
    writer.close()
    cfg = nmea_config(tmp_path, tmp_path / "unused")
    out = run(towerd_exe, "replay", str(path), "--config", str(cfg), "--readings", "--sensor", "arpa0")
    assert out.returncode == 0, out.stderr
    lines = [json.loads(line) for line in out.stdout.splitlines()]
    readings = [x for x in lines if x.get("type") == "RadarPlots"]
    records = [x for x in lines if "track_id" in x]
    assert len(readings) == 12 and {r["track_id"] for r in records} == {records[0]["track_id"]}
    confirmed = [r for r in records if r["status_name"] == "confirmed"]
    assert confirmed and records[-1]["status_name"] == "ended"
    for r in confirmed:
        t = (r["time_us"] - header.started_utc_us) / 1e6  # recorded time of the record
        assert 0.0 <= t <= 12.0
        north_true = 400.0 + 5.0 * (t - 0.05)
        north = r["range_m"] * np.cos(np.radians(r["azimuth_deg"])) * np.cos(np.radians(r["elevation_deg"]))
        assert abs(north - north_true) < 10.0, (t, north, north_true)


def test_replay_of_an_rf_explorer_capture_as_a_sensor_of_another_driver(tmp_path, capsys):
    """A capture recorded by an RF Explorer replays as a configured sensor of another driver
    (--sensor arpa0, an nmea_radar): the driver then takes the recorded settings, written by
    `towerd record` as JSON, so its scan plan must come back as Band objects (it came back
    as dicts and the replay died) and label each sweep with the recorded band's name."""
    from towerd.cli import main as towerd_main
    from towerd.drivers.rfexplorer.driver import Band, RfExplorerSettings
    from towerd.sim.rfexplorer import RfExplorerEmulator
    from towerd.tools.live import _settings_dict

    settings = RfExplorerSettings(port="/dev/rfe0", bands=(Band("wifi24", start_mhz=2400.0, end_mhz=2483.5),
                                                          Band("ism5800", centre_mhz=5800.0, span_mhz=150.0)))
    em = RfExplorerEmulator(rng=np.random.default_rng(3))  # boots on 2400-2483.5 MHz, the first band
    header = RecordingHeader(sensor="field-rfe", driver="rfexplorer", settings=_settings_dict(settings),
                             started_utc_us=1_700_000_000_000_000, started_mono=200.0)
    assert isinstance(header.settings["bands"][0], dict)  # as recorded: JSON, no Band objects
    path = tmp_path / "rfe.raw"
    writer = RawWriter(path, header)
    writer.write(em.model_line() + em.config_line(), 200.0)
    for k in range(5):
        writer.write(em.sweep_bytes(0.1 * k), 200.1 + 0.1 * k)
    writer.close()
    cfg = nmea_config(tmp_path, tmp_path / "unused")
    capsys.readouterr()
    status = towerd_main(["replay", str(path), "--config", str(cfg), "--readings", "--sensor", "arpa0"])
    out = capsys.readouterr()
    assert status == 0, out.err
    spectra = [json.loads(line) for line in out.out.splitlines() if '"Spectrum"' in line]
    assert len(spectra) == 5 and {s["band"] for s in spectra} == {"wifi24"}, out.err
    assert spectra[0]["start_freq_mhz"] == 2400.0
    assert '"band":"wifi24"' in out.err and '"plan":["wifi24","ism5800"]' in out.err  # the driver's status


def test_sim_refuses_options_its_device_does_not_take(towerd_exe):
    """The emulator of the registry entry judges the options (exit 2, one sentence)."""
    tll = run(towerd_exe, "sim", "--device", "nmea_radar", "--tll", "--duration", "0.1")
    assert tll.returncode == 2 and tll.stderr == "towerd sim: --tll needs --site LAT LON H (the scenario origin's " \
                                                 "WGS84 position)\n" and tll.stdout == ""
    cli = run(towerd_exe, "sim", "--device", "rfexplorer", "--cli", "--duration", "0.1")
    assert cli.returncode == 2 and "--cli and --cli-link are for devices with a CLI port (ti_mmwave)" in cli.stderr
    rate = run(towerd_exe, "sim", "--device", "ti_mmwave", "--rate", "0", "--duration", "0.1")
    assert rate.returncode == 2 and "frame_rate_hz must be > 0" in rate.stderr
