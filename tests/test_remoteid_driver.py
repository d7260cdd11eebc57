"""Remote ID driver over real pseudo-terminals opened with pyserial: the emulator's bytes at
line rate, garbage and faults, settings, and the registry/config entry."""

from __future__ import annotations

import math
import time

import numpy as np
import pytest

from towerd import geo
from towerd.config import parse_config
from towerd.drivers import driver_class
from towerd.drivers.measurements import RemoteIdReading, RidSource
from towerd.drivers.remoteid.driver import RemoteIdDriver, RemoteIdSettings
from towerd.errors import ConfigError
from towerd.sim.remoteid import RemoteIdEmulator
from towerd.sim.rid_spec import RemoteIdSpec
from towerd.sim.scenario import Scenario, Target, WaypointPath

SITE = geo.Site(27.5036, -99.5076, 130.0)
LIBRID = b"12202d3e0420bd5c25401c190d0000c10834084a0339300100"


def _scenario() -> tuple[Scenario, dict[str, RemoteIdSpec]]:
    targets = tuple(Target(name, "uas", -20.0, WaypointPath(((0.0, 50.0 * i, 200.0, 30.0),
                                                              (1000.0, 50.0 * i, 4200.0, 30.0))))
                    for i, name in enumerate(("hex", "mesh", "dji", "quiet")))
    specs = {"hex": RemoteIdSpec(uas_id="1581F5FKD229400001", transport="ble", operator_enu_m=(-40.0, 10.0, 1.5),
                                 operator_id="FIN87astrdge12k8", rate_hz=5.0),
             "mesh": RemoteIdSpec(uas_id="1581F8LQC255L00227P5", form="json", operator_enu_m=(0.0, 0.0, 1.0),
                                  rate_hz=5.0),
             "dji": RemoteIdSpec(uas_id="3NZCH7K0010ABC", form="dji", rate_hz=5.0),
             "quiet": RemoteIdSpec(silent=True)}
    return Scenario("rid", targets=targets), specs


def _read_until(driver: RemoteIdDriver, done, timeout_s: float = 8.0) -> list[RemoteIdReading]:
    out: list[RemoteIdReading] = []
    deadline = time.monotonic() + timeout_s
    while not done(out) and time.monotonic() < deadline:
        out += driver.read()
    return out


def test_emulated_receiver_over_a_pty_gives_every_broadcasting_drone(pty_pair):
    scenario, specs = _scenario()
    em = RemoteIdEmulator(scenario, rng=np.random.default_rng(4), site=SITE, specs=specs)
    with RemoteIdDriver("rid", RemoteIdSettings(port=pty_pair.path)) as d:
        em.start(pty_pair)
        try:
            readings = _read_until(d, lambda out: len({r.uas_id for r in out if r.uas_id}) == 3 and len(out) >= 30)
        finally:
            em.stop()
    assert em.error is None and d.counters.bad_frames == 0 and d.counters.dropped_bytes == 0
    assert {r.uas_id for r in readings if r.uas_id} == {"1581F5FKD229400001", "1581F8LQC255L00227P5",
                                                         "3NZCH7K0010ABC"}
    assert all(isinstance(r, RemoteIdReading) and r.sensor == "rid" for r in readings)
    t = [r.t_mono for r in readings]
    assert t == sorted(t)
    hex_located = [r for r in readings if r.source == RidSource.BLUETOOTH_LEGACY and not math.isnan(r.lat_deg)]
    assert hex_located and all(-96 < r.rssi_dbm < -76 and r.transmitter == specs["hex"].mac_for("hex")
                               for r in hex_located)
    assert any(r.operator_id == "FIN87astrdge12k8" for r in readings)
    assert d.counters.frames == d.parser.stats.frames >= len(readings)


def test_garbage_and_cut_lines_over_a_pty_are_counted_and_survived(pty_pair):
    scenario, specs = _scenario()
    em = RemoteIdEmulator(scenario, rng=np.random.default_rng(9), site=SITE, specs=specs)
    with RemoteIdDriver("rid", RemoteIdSettings(port=pty_pair.path, max_line_bytes=512)) as d:
        em.start(pty_pair)
        try:
            assert len(_read_until(d, lambda out: len(out) >= 5)) >= 5
            em.inject_garbage(2000)  # random bytes: mostly one over-long line or text
            em.inject_truncated(2)
            before = d.counters.dropped_bytes
            after = _read_until(d, lambda out: len(out) >= 20)
        finally:
            em.stop()
    stats = d.parser.stats
    assert len(after) >= 20 and em.error is None
    assert d.counters.dropped_bytes - before >= 1000
    assert stats.bad_lines + stats.text >= 2 and d.counters.bad_frames == stats.bad_lines


def test_hand_written_garbage_on_a_raw_pty_never_stops_the_driver(pty_pair):
    with RemoteIdDriver("rid", RemoteIdSettings(port=pty_pair.path)) as d:
        pty_pair.write(b"\x00\xff garbage\n{\"basic_id\": 5}\n" + b"7" * 3000 + b"\n[1]\n{\"basic_id\": \"OK\"}\r\n"
                       + b"aa:bb:cc:dd:ee:ff -60 ble " + LIBRID + b"\n")
        readings = _read_until(d, lambda out: len(out) >= 2)
    assert [r.uas_id for r in readings] == ["OK", ""]
    assert readings[1].transmitter == "aa:bb:cc:dd:ee:ff" and readings[1].rssi_dbm == -60.0
    assert readings[1].lat_deg == pytest.approx(62.683472)
    s = d.parser.stats
    assert (s.out_of_range, s.too_long, s.not_object, s.text) == (1, 1, 1, 1)
    assert d.counters.bad_frames == 3 and d.counters.resyncs == 1


def test_settings_and_the_registry():
    assert driver_class("remoteid") is RemoteIdDriver and RemoteIdDriver.needs_mount is False
    assert RemoteIdSettings(port="/dev/ttyACM0").baudrate == 115200
    for bad in ({"port": ""}, {"port": "x", "baudrate": 0}, {"port": "x", "max_line_bytes": 10}):
        with pytest.raises(ValueError):
            RemoteIdSettings(**bad)


def test_a_configuration_chooses_the_driver_and_refuses_unknown_keys(tmp_path):
    text = f"""\
version: 1
tower: {{id: tx-rid-001, latitude_deg: 27.5, longitude_deg: -99.5, height_m: 130.0}}
state_dir: {tmp_path}
sensors:
  - name: rid
    driver: remoteid
    settings: {{port: /dev/serial/by-id/usb-Espressif-rid, max_line_bytes: 2048}}
"""
    cfg = parse_config(text, "towerd.yaml")
    sensor = next(s for s in cfg.sensors if s.name == "rid")
    assert sensor.settings == RemoteIdSettings(port="/dev/serial/by-id/usb-Espressif-rid", max_line_bytes=2048)
    with pytest.raises(ConfigError, match="colour"):
        parse_config(text.replace("max_line_bytes: 2048", "colour: red"), "towerd.yaml")
