"""Remote ID receiver emulator: the scenario's broadcasting drones as a receiver prints them.

Builds, from the scenario's drones with a ``remote_id:`` section
(:class:`~towerd.sim.rid_spec.RemoteIdSpec`), the lines an ESP32-class receiver prints on
its USB serial port, and writes them to a :class:`~towerd.sim.pty.PtyPair` no faster than
the line carries them (115200 baud, 8N1: 11,520 bytes/s, in chunks of about 20 ms).

Lines are made here from the published formats, independently of
``towerd.drivers.remoteid`` (tests cross-check the two), per the drone's ``form``:

- ``json``: the colonelpanichacks drone-mesh-mapper / Sky Spy firmware line
  (``node-mode-dualcore/src/main_remote.cpp`` ``buildJson``: ``%.6f`` degrees, whole
  metres, CR LF); the firmware keeps one record per MAC, so every line carries all it
  has heard (pilot position 0.000000 until a System message came);
- ``f3411-hex``: F3411 messages encoded byte by byte (opendroneid-core-c's layouts) as
  ``<mac> <rssi> <transport> <hex>`` lines (the format of
  :mod:`towerd.drivers.remoteid.protocol`). ``ble``: Bluetooth 4 legacy advertising, one
  message per advertisement behind the 0x0D application code and a counter: each
  broadcast is a Location message and, in turn, one of Basic ID, System, Operator ID, Self
  ID. ``bt5``, ``beacon``, ``nan``: each broadcast one Message Pack of them all;
- ``dji``: DJI DroneID as RUB-SysSec DroneSecurity prints a decoded frame, one object a
  line (serial number, position, altitude and height in metres, velocity in cm/s, the
  pilot's app position, home point). DroneID has no MAC or RSSI.

Model, per drone, at scenario time t: a broadcast every 1/rate_hz s (each drone with its
own phase) while the drone is present and not ``silent``; heard when its received power,
``rssi_at_1m_dbm - 20 log10(range)`` plus Gaussian noise (``rssi_sigma_db``), is at least
the receiver's ``sensitivity_dbm`` (``missed`` counts the others). The broadcast position
is the true one plus GNSS noise (``gnss_sigma_m``, horizontal), moved ``spoof_offset_m``
along ``spoof_bearing_deg`` for a spoofer; the range (hence RSSI) is always the true one.
Geodetic altitude = the ENU position's WGS84 height about ``site``; height above take-off
= its ENU up; timestamp = tenths of seconds after the UTC hour of ``clock``.

Fault injection (:class:`~towerd.sim.faults.LineFaults`, each applies to what is sent
next): random bytes, a line cut short with no line end (the next one glued to it), a
stall (broadcasts due meanwhile are lost). Unplugging is closing the pty.
"""

from __future__ import annotations

import json
import logging
import math
import struct
import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from towerd import geo
from towerd.clock import Clock, SystemClock
from towerd.sim.faults import LineFaults
from towerd.sim.rid_spec import RemoteIdSpec
from towerd.sim.writer import EmulatorThread

if TYPE_CHECKING:
    from towerd.sim.pty import PtyPair
    from towerd.sim.scenario import Scenario

log = logging.getLogger(__name__)

TICK_S = 0.05
"""The writer looks for due broadcasts this often."""
ACCURACY = {"h": 11, "v": 4, "baro": 0, "speed": 3}
"""Accuracy classes broadcast (F3411 enums: 3 m, 10 m, unknown, 1 m/s)."""
_TRANSPORT_WORD = {"ble": "ble", "bt5": "bt5", "beacon": "beacon", "nan": "nan"}


# ----------------------------------------------------------------------------- F3411 encoding


def _alt(value: float | None) -> int:
    """Altitude/height, metres -> uint16 (0.5 m steps from -1000 m; 0 = unknown)."""
    if value is None or not math.isfinite(value):
        return 0
    return int(min(65535, max(0, round((value + 1000.0) * 2))))


def _latlon(value: float | None) -> int:
    return 0 if value is None or not math.isfinite(value) else int(round(value * 1e7))


def _text(value: str, size: int) -> bytes:
    return value.encode("ascii")[:size].ljust(size, b"\0")


def encode_basic_id(spec: RemoteIdSpec) -> bytes:
    return bytes([0x02, (spec.id_type << 4) | spec.ua_type]) + _text(spec.uas_id, 20) + bytes(3)


def encode_location(*, status: int, lat: float, lon: float, alt_geo: float, height: float, speed: float,
                    course: float, vertical: float, timestamp_s: float) -> bytes:
    """Location/Vector, version 2, height above take-off, F3411 scalings (see the driver's f3411)."""
    direction = int(round(course)) % 360 if math.isfinite(course) else 181 + 180  # 361: unknown
    ew = 1 if direction >= 180 else 0
    direction_byte = (direction - 180 * ew) & 0xFF
    if not math.isfinite(speed):
        mult, speed_byte = 1, 255
    elif speed <= 255 * 0.25:
        mult, speed_byte = 0, int(round(speed / 0.25))
    else:
        mult, speed_byte = 1, min(254, int(round((speed - 63.75) / 0.75)))
    vs = int(max(-124, min(124, round(vertical / 0.5)))) if math.isfinite(vertical) else 126
    flags = (status << 4) | (0 << 2) | (ew << 1) | mult
    tenths = int(round(timestamp_s * 10)) % 36000 if math.isfinite(timestamp_s) else 0xFFFF
    return struct.pack("<BBBBbiiHHHBBHBB", 0x12, flags, direction_byte, speed_byte, vs, _latlon(lat), _latlon(lon),
                       0, _alt(alt_geo), _alt(height), (ACCURACY["v"] << 4) | ACCURACY["h"],
                       (ACCURACY["baro"] << 4) | ACCURACY["speed"], tenths, 1, 0)


def encode_system(lat: float | None, lon: float | None, alt: float | None, utc_s: float) -> bytes:
    """System, version 2: operator location type 1 (live GNSS), US classification (0)."""
    since_2019 = max(0, int(utc_s) - 1546300800)
    return struct.pack("<BBiiHBHHBHIB", 0x42, 0x01, _latlon(lat), _latlon(lon), 1, 0, 0, 0, 0, _alt(alt),
                       since_2019 & 0xFFFFFFFF, 0)


def encode_self_id(text: str) -> bytes:
    return bytes([0x32, 0]) + _text(text, 23)


def encode_operator_id(text: str) -> bytes:
    return bytes([0x52, 0]) + _text(text, 20) + bytes(3)


def encode_pack(messages: list[bytes]) -> bytes:
    return bytes([0xF2, 25, len(messages)]) + b"".join(messages)


# ----------------------------------------------------------------------------- the emulator


@dataclass
class _Drone:
    name: str
    spec: RemoteIdSpec
    mac: str
    phase_s: float
    sent: int = 0  # broadcasts made (the index of the next one)
    counter: int = 0  # BLE message counter


class RemoteIdEmulator(LineFaults, EmulatorThread):
    """Scenario -> Remote ID receiver lines, on demand or paced onto a pty at line rate."""

    def __init__(
        self,
        scenario: "Scenario",
        *,
        rng: np.random.Generator,
        site: geo.Site,
        position_enu_m: tuple[float, float, float] = (0.0, 0.0, 10.0),
        baudrate: int = 115200,
        sensitivity_dbm: float = -100.0,
        rssi_sigma_db: float = 2.0,
        gnss_sigma_m: float = 1.0,
        node_id: str = "A1B2",
        specs: dict[str, RemoteIdSpec] | None = None,
        clock: Clock | None = None,
    ) -> None:
        """``specs``: Remote ID of drones by name, over their scenario ``remote_id`` sections."""
        if not (baudrate > 0 and rssi_sigma_db >= 0 and gnss_sigma_m >= 0):
            raise ValueError("baudrate must be > 0, rssi_sigma_db and gnss_sigma_m >= 0")
        self.scenario = scenario
        self.rng = rng
        self.site = site
        self.position_enu_m = np.asarray(position_enu_m, dtype=float).reshape(3)
        self.baudrate = int(baudrate)
        self.sensitivity_dbm = float(sensitivity_dbm)
        self.rssi_sigma_db = float(rssi_sigma_db)
        self.gnss_sigma_m = float(gnss_sigma_m)
        self.node_id = node_id
        self.clock: Clock = clock or SystemClock()
        self.drones: list[_Drone] = []
        for target in scenario.targets:
            spec = (specs or {}).get(target.name, target.remote_id)
            if spec is not None:
                phase = (int.from_bytes(spec.mac_for(target.name).encode()[-4:], "big") % 997) / 997.0 / spec.rate_hz
                self.drones.append(_Drone(target.name, spec, spec.mac_for(target.name), phase))
        self._targets = {t.name: t for t in scenario.targets}
        self.t0_mono: float | None = None
        self.broadcasts = 0  # lines made for heard broadcasts
        self.missed = 0  # broadcasts too weak for the receiver
        self.bytes_sent = 0
        self.bytes_dropped = 0
        self.error: BaseException | None = None
        self._lock = threading.Lock()
        self._init_faults()
        self._init_thread()

    @property
    def bytes_per_s(self) -> float:
        return self.baudrate / 10.0

    # ------------------------------------------------------------------ lines

    def due_lines(self, t_s: float, t_mono: float | None = None) -> list[bytes]:
        """Lines of every broadcast due up to elapsed time ``t_s`` (each drone's schedule
        advances); UTC from ``clock`` at ``t_mono`` (now if None)."""
        utc_us = self.clock.utc_us(t_mono)
        out: list[bytes] = []
        with self._lock:
            for drone in self.drones:
                period = 1.0 / drone.spec.rate_hz
                while drone.phase_s + drone.sent * period <= t_s:
                    t_b = drone.phase_s + drone.sent * period
                    drone.sent += 1
                    out += self._broadcast(drone, t_b, utc_us - int((t_s - t_b) * 1e6))
        return out

    def _broadcast(self, drone: _Drone, t_s: float, utc_us: int) -> list[bytes]:
        spec = drone.spec
        if spec.silent:
            return []
        present, pos, vel = self._targets[drone.name].state(self.scenario.scenario_time(t_s))
        if not present:
            return []
        distance = float(np.linalg.norm(pos - self.position_enu_m))
        rssi = spec.rssi_at_1m_dbm - 20.0 * math.log10(max(distance, 1.0)) + self.rng.normal(0.0, self.rssi_sigma_db)
        if rssi < self.sensitivity_dbm:
            self.missed += 1
            return []
        said = pos.copy()
        said[:2] += self.rng.normal(0.0, self.gnss_sigma_m, 2)
        if spec.spoof_offset_m > 0:
            bearing = math.radians(spec.spoof_bearing_deg)
            said[:2] += spec.spoof_offset_m * np.array([math.sin(bearing), math.cos(bearing)])
        lat, lon, h = (float(v[0]) for v in geo.enu_to_geodetic(self.site, said[None, :]))
        op = None
        if spec.operator_enu_m is not None:
            op = tuple(float(v[0]) for v in geo.enu_to_geodetic(self.site, np.array([spec.operator_enu_m])))
        speed = float(np.hypot(vel[0], vel[1]))
        course = math.degrees(math.atan2(vel[0], vel[1])) % 360.0
        self.broadcasts += 1
        if spec.form == "json":
            return [self._json_line(drone, rssi, lat, lon, h, op)]
        if spec.form == "dji":
            return [self._dji_line(drone, lat, lon, h, float(said[2]), vel, op)]
        location = encode_location(status=2, lat=lat, lon=lon, alt_geo=h, height=float(said[2]), speed=speed,
                                   course=course, vertical=float(vel[2]), timestamp_s=(utc_us / 1e6) % 3600.0)
        statics = [encode_basic_id(spec)]
        if op is not None:
            statics.append(encode_system(op[0], op[1], op[2], utc_us / 1e6))
        if spec.operator_id:
            statics.append(encode_operator_id(spec.operator_id))
        if spec.self_id:
            statics.append(encode_self_id(spec.self_id))
        prefix = f"{drone.mac} {int(round(rssi))} {_TRANSPORT_WORD[spec.transport]} "
        if spec.transport == "ble":
            lines = []
            for message in (location, statics[(drone.sent - 1) % len(statics)]):
                drone.counter = (drone.counter + 1) & 0xFF
                lines.append(f"{prefix}0D{drone.counter:02X}{message.hex().upper()}\r\n".encode("ascii"))
            return lines
        return [f"{prefix}{encode_pack([statics[0], location, *statics[1:]]).hex().upper()}\r\n".encode("ascii")]

    def _json_line(self, drone: _Drone, rssi: float, lat: float, lon: float, h: float,
                   op: tuple[float, ...] | None) -> bytes:
        pilot = op if op is not None else (0.0, 0.0)
        return (f'{{"mac":"{drone.mac}","rssi":{int(round(rssi))},"drone_lat":{lat:.6f},"drone_long":{lon:.6f},'
                f'"drone_altitude":{int(h)},"pilot_lat":{pilot[0]:.6f},"pilot_long":{pilot[1]:.6f},'
                f'"basic_id":"{drone.spec.uas_id}","node_id":"{self.node_id}"}}\r\n').encode("ascii")

    def _dji_line(self, drone: _Drone, lat: float, lon: float, h: float, height: float, vel: np.ndarray,
                  op: tuple[float, ...] | None) -> bytes:
        app = op if op is not None else (0.0, 0.0)
        obj = {"pkt_len": 88, "unk": 16, "version": 2, "sequence_number": drone.sent & 0xFFFF, "state_info": 8179,
               "serial_number": drone.spec.uas_id, "longitude": lon, "latitude": lat, "altitude": round(h, 2),
               "height": round(height, 2), "v_north": int(round(vel[1] * 100)), "v_east": int(round(vel[0] * 100)),
               "v_up": int(round(vel[2] * 100)), "d_1_angle": 0, "gps_time": 0, "app_lat": app[0],
               "app_lon": app[1], "longitude_home": app[1], "latitude_home": app[0], "device_type": "Mini 2",
               "uuid_len": 0, "uuid": ""}
        return (json.dumps(obj) + "\n").encode("ascii")

    def line_bytes(self, t_s: float, t_mono: float | None = None) -> bytes:
        """What is due up to ``t_s`` as wire bytes, faults included."""
        lines = self.due_lines(t_s, t_mono)
        with self._lock:
            return self._with_faults(lines)

    # ------------------------------------------------------------------ thread

    def start(self, pty: "PtyPair") -> None:
        """Start sending: broadcasts at their scenario times from now, at line rate."""
        self._begin()
        self.t0_mono = self.clock.monotonic()
        self._launch(self._run, (pty,), "remoteid-emulator")

    def _run(self, pty: "PtyPair") -> None:
        def next_bytes(k: int, now: float, skipped: int, stalled: bool) -> bytes:
            return self.line_bytes(now - self.t0_mono, now)  # what is due by now (skipped ticks included)

        self._paced_run(pty, TICK_S, next_bytes, "Remote ID")

    @classmethod
    def from_sim_args(cls, scenario: "Scenario", args: Any, rng: np.random.Generator) -> "RemoteIdEmulator":
        """The emulator ``towerd sim --device remoteid`` runs: the receiver at ``--position``,
        the scenario origin at ``--site`` (required: broadcasts are WGS84); ValueError
        when the options do not fit."""
        if not args.site:
            raise ValueError("--device remoteid needs --site LAT LON H (the scenario origin's WGS84 position)")
        return cls(scenario, rng=rng, site=geo.Site(*args.site), position_enu_m=tuple(args.position))

    def sim_status(self) -> str:
        """Counters for ``towerd sim``'s ``status`` command."""
        return (f"broadcasts sent {self.broadcasts}, missed (too weak) {self.missed}, drones {len(self.drones)}, "
                f"bytes {self.bytes_sent}")

    def __enter__(self) -> "RemoteIdEmulator":
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()
