"""Remote ID receiver output: JSON lines of ESP32 firmwares and F3411 messages as hex lines.

Pure and incremental: no ``serial`` import, no I/O. :meth:`RidParser.feed` takes the
caller's receive buffer and returns how many bytes to delete from its front plus one
field dict per broadcast line (the keyword arguments of
:class:`~towerd.drivers.measurements.RemoteIdReading` other than ``sensor`` and
``t_mono``; fields a line did not carry are absent). Merging broadcasts per transmitter is
the consumer's job: each line is one reading with only what it carried.

Framing: one line per broadcast, ended by LF (a CR before it is dropped), at most
``max_line_bytes`` bytes; a longer line is dropped up to its line end and counted
(``too_long``). Each line is, by its first character:

``{`` one JSON object (UTF-8). The dialects accepted, by their keys (unknown keys are
   ignored; a known key with a wrong type or an impossible value refuses the whole line,
   ``out_of_range``; an object with none of the drone keys below — a heartbeat, a banner
   such as ``{"title": ...}`` — is counted as ``no_drone`` and gives nothing):

   - colonelpanichacks drone-mesh-mapper / Sky Spy (github.com/colonelpanichacks/
     drone-mesh-mapper, ``node-mode-dualcore/src/main_remote.cpp`` ``buildJson``, commit
     efe96b6f; the same line in SKY-SPY-Aware's README): ``mac``, ``rssi``, ``drone_lat``,
     ``drone_long``, ``drone_altitude`` (geodetic, whole metres), ``pilot_lat``,
     ``pilot_long``, ``basic_id``, ``node_id`` (ignored). Its firmware zero-fills what it
     has not heard, so a position of exactly (0, 0) is unknown (NaN), as in F3411.
     Extended forms of it add ``height_agl``, ``speed``, ``heading``, ``operator_id``,
     ``id_type``/``ua_type``, ``home_lat``/``home_long``, ``self_id``/``description``,
     ``source``/``transport`` (``BLE``, ``BT5``, ``WiFi`` (beacon), ``NAN``...), which are
     read when present.
   - Steve Jack's ESP32 id_scanner (github.com/sxjack/uav_electronic_ids,
     ``id_scanner/id_scanner.ino`` ``print_json``, commit 1cbd1fa0): ``mac``, ``id`` (the
     *operator* ID: the firmware prints ``op_id`` there), ``uav latitude``, ``uav
     longitude``, ``alitude msl`` (sic), ``height agl``, ``base latitude``, ``base
     longitude``, ``speed``, ``heading``; ``index``/``runtime`` ignored.
   - WarDragon / DragonSync ESP32 firmware (github.com/Root-Down-Digital/DragonSync-iOS,
     ``Util/ESP32_RID_AP_FW/main.cpp`` ``create_json_response``, commit 5597923d, printed
     with CR LF by ``update_latest_data``): one object per frame with nested objects
     ``"Basic ID"`` (``id``, ``ua_type``, ``MAC``, ``RSSI``; its ``id_type`` is a fixed
     text whatever was broadcast, so it is not read), ``"Location/Vector Message"``
     (``latitude``, ``longitude``, ``speed``, ``vert_speed``, ``geodetic_altitude``,
     ``height_agl``, ``status``, ``direction``, ``alt_pressure``, ``height_type``, and the
     F3411 accuracy classes ``horiz_acc``, ``vert_acc``, ``speed_acc`` as numbers,
     ``timestamp`` whole seconds after the hour), ``"Self-ID Message"`` (``description``;
     its ``text`` is made up by the firmware and ignored), ``"System Message"``
     (``operator_lat``, ``operator_lon``, ``operator_alt_geo``). The firmware zero-fills
     a frame's missing messages and prints the reference decoder's values, so 0 / -1000 /
     255 / 361 / 63 mean unknown as in F3411.
   - DJI DroneID as decoded by RUB-SysSec DroneSecurity (github.com/RUB-SysSec/
     DroneSecurity, ``src/droneid_packet.py``, commit 363d41d1; one object per line here):
     ``serial_number``, ``latitude``, ``longitude``, ``altitude`` and ``height`` (already
     metres), ``v_north``/``v_east``/``v_up`` (cm/s, the DroneID wire unit, printed
     raw), ``app_lat``/``app_lon`` (the pilot's phone), ``latitude_home``/
     ``longitude_home``, ``device_type``; source DJI DroneID. An object is read as this
     dialect when it has ``serial_number`` and ``app_lat``.

hex F3411 messages, one broadcast per line, as the hex-string input of tuupola's librid
   CLI (github.com/tuupola/librid, ``examples/cli/README.md``: "25 bytes: Remote ID
   message; 27 bytes: Application Code + Counter + Remote ID message"), extended to a
   Message Pack (3 + 25 n bytes, optionally after the same 2-byte BLE prefix 0x0D +
   counter). No public receiver firmware was found that prints one message per line in
   hex (Steve Jack's id_scanner dumps whole frames as a multi-line table), so this is
   the minimal format towerd defines: up to three optional prefix tokens, separated by
   spaces or commas, before the hex, each recognised by its form:

       [aa:bb:cc:dd:ee:ff] [RSSI dBm, e.g. -67] [source: ble|bt4|bt5|beacon|nan] HEX

   e.g. ``60:60:1f:aa:bb:cc -71 ble 0D0C12202d3e...``. Decoding: :mod:`.f3411`.

anything else: firmware chatter (boot banners, ``[REMOTE] ...``): counted as ``text``,
   its bytes as dropped, never an error.

Never raises on input. Counters (:class:`RidStats`): ``frames`` lines accepted (JSON
objects, hex broadcasts), ``readings`` produced, and per refusal reason ``not_json``
(starts with ``{`` or ``[`` but is not JSON, or not UTF-8), ``not_object`` (JSON but not
an object), ``out_of_range``, ``too_long``, ``bad_hex`` (odd digits, bad prefix token,
wrong length), ``bad_message`` / ``bad_text`` (F3411 content refused); ``bad_lines`` is
their sum; ``dropped_bytes`` the bytes of refused lines and text.
"""

from __future__ import annotations

import binascii
import json
import math
import re
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from towerd.drivers.measurements import RidSource
from towerd.drivers.remoteid import f3411

MAX_LINE_BYTES = 1024
"""Default longest line, LF included (the firmwares' JSON lines are under 300 bytes; a
9-message pack in hex with a prefix is about 500)."""

_MAC = re.compile(r"[0-9a-fA-F]{2}([:-])[0-9a-fA-F]{2}(\1[0-9a-fA-F]{2}){4}")
_HEX = re.compile(rb"(0[xX])?[0-9a-fA-F]+")
_HEX_LINE = re.compile(
    rb"(?:(?P<mac>[0-9A-Fa-f]{2}([:-])[0-9A-Fa-f]{2}(?:\2[0-9A-Fa-f]{2}){4})[ \t,]+)?"
    rb"(?:(?P<rssi>[-+]?\d{1,3}(?:\.\d+)?)(?:dBm)?[ \t,]+)?"
    rb"(?:(?P<source>[A-Za-z][A-Za-z0-9_]*)[ \t,]+)?"
    rb"(?:0[xX])?(?P<hex>[0-9A-Fa-f]{50,})")
"""A hex line: optional MAC, RSSI and source word, then at least one message of hex."""
_SOURCES = {
    "ble": RidSource.BLUETOOTH_LEGACY, "bt": RidSource.BLUETOOTH_LEGACY, "bt4": RidSource.BLUETOOTH_LEGACY,
    "ble4": RidSource.BLUETOOTH_LEGACY, "bluetooth": RidSource.BLUETOOTH_LEGACY,
    "bt5": RidSource.BLUETOOTH_LONG_RANGE, "ble5": RidSource.BLUETOOTH_LONG_RANGE,
    "ble_lr": RidSource.BLUETOOTH_LONG_RANGE, "coded": RidSource.BLUETOOTH_LONG_RANGE,
    "wifi": RidSource.WIFI_BEACON, "beacon": RidSource.WIFI_BEACON, "wifi_beacon": RidSource.WIFI_BEACON,
    "nan": RidSource.WIFI_NAN, "wifi_nan": RidSource.WIFI_NAN,
    "dji": RidSource.DJI_DRONEID, "droneid": RidSource.DJI_DRONEID,
}
"""Source words (lower case) of hex prefixes and JSON ``source``/``transport`` values."""

_DRONE_KEYS = frozenset((
    "drone_lat", "drone_long", "basic_id", "pilot_lat", "pilot_long", "uav latitude", "uav longitude", "id",
    "base latitude", "serial_number", "uas_id", "operator_id", "self_id", "Basic ID", "Location/Vector Message",
))
"""An object with none of these is not a broadcast (heartbeat, banner, status)."""
_NO_CONTENT = frozenset(("transmitter", "rssi_dbm", "source"))
"""Fields that alone say nothing about a drone."""


@dataclass
class RidStats:
    """Running counts of one parser (see the module docstring)."""

    frames: int = 0
    readings: int = 0
    json_lines: int = 0
    hex_lines: int = 0
    text: int = 0
    no_drone: int = 0
    not_json: int = 0
    not_object: int = 0
    out_of_range: int = 0
    too_long: int = 0
    bad_hex: int = 0
    bad_message: int = 0
    bad_text: int = 0
    dropped_bytes: int = 0
    resyncs: int = 0  # lines cut because too long (alignment lost until the next LF)
    f3411: f3411.F3411Stats = field(default_factory=f3411.F3411Stats)
    last_error: str = ""

    @property
    def bad_lines(self) -> int:
        """Lines refused for any reason (text lines are not refusals)."""
        return (self.not_json + self.not_object + self.out_of_range + self.too_long + self.bad_hex
                + self.bad_message + self.bad_text)

    def as_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["bad_lines"] = self.bad_lines
        return out


class LineRefused(ValueError):
    """A line refused; ``reason`` names its counter."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason


# ----------------------------------------------------------------------------- JSON dialects


def _number(obj: dict, key: str, lo: float, hi: float) -> float | None:
    """obj[key] as a float in [lo, hi]; None when absent or null; LineRefused otherwise."""
    value = obj.get(key)
    if value is None:
        return None
    try:
        number = float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else math.nan
    except OverflowError:  # an integer beyond any float
        number = math.nan
    if not lo <= number <= hi:  # NaN and infinities fail too
        raise LineRefused("out_of_range", f"{key}: {str(value)[:40]!r} is not a number in [{lo}, {hi}]")
    return number


def _string(obj: dict, key: str, limit: int = 64) -> str | None:
    value = obj.get(key)
    if value is None:
        return None
    if not isinstance(value, str) or len(value) > limit or not value.isprintable():
        raise LineRefused("out_of_range", f"{key}: {value!r} is not printable text of at most {limit} characters")
    return value.strip()


def _enum(obj: dict, key: str) -> int | None:
    value = _number(obj, key, 0, 15)
    if value is None:
        return None
    if value != int(value):
        raise LineRefused("out_of_range", f"{key}: {value!r} is not an integer 0-15")
    return int(value)


def _mac(text: str | None) -> str | None:
    if text is None:
        return None
    if _MAC.fullmatch(text):
        return text.replace("-", ":").lower()
    if re.fullmatch(r"[0-9a-fA-F]{12}", text):
        return ":".join(text[i:i + 2] for i in range(0, 12, 2)).lower()
    raise LineRefused("out_of_range", f"mac: {text!r} is not a MAC address")


def _position(out: dict, lat: float | None, lon: float | None, lat_key: str, lon_key: str) -> bool:
    """Store a (lat, lon) pair; (0, 0) or a missing half is unknown. True when stored."""
    if lat is None or lon is None or (lat == 0.0 and lon == 0.0):
        return False
    out[lat_key], out[lon_key] = lat, lon
    return True


def _source(obj: dict) -> RidSource | None:
    for key in ("source", "transport", "type"):
        value = obj.get(key)
        if isinstance(value, str):
            word = value.strip().lower().replace(" ", "_").replace("-", "_")
            if word in _SOURCES:
                return _SOURCES[word]
    return None


def _dji(obj: dict) -> dict[str, Any]:
    """DJI DroneID as RUB-SysSec DroneSecurity prints it."""
    out: dict[str, Any] = {"source": RidSource.DJI_DRONEID, "id_type": 1, "ua_type": 2}
    serial = _string(obj, "serial_number", 32)
    if serial:
        out["uas_id"] = serial
    _position(out, _number(obj, "latitude", -90, 90), _number(obj, "longitude", -180, 180), "lat_deg", "lon_deg")
    if "lat_deg" in out:
        for key, name in (("altitude", "alt_baro_m"), ("height", "height_m")):
            value = _number(obj, key, -1000, 32000)
            if value is not None:
                out[name] = value
    # DroneID's altitude is barometric (relative to take-off pressure): DJI's own term.
    v = [_number(obj, k, -32768, 32767) for k in ("v_north", "v_east", "v_up")]
    if v[0] is not None and v[1] is not None:
        north, east = v[0] / 100.0, v[1] / 100.0
        out["speed_mps"] = math.hypot(north, east)
        out["course_deg"] = math.degrees(math.atan2(east, north)) % 360.0
    if v[2] is not None:
        out["vertical_speed_mps"] = v[2] / 100.0
    _position(out, _number(obj, "app_lat", -90, 90), _number(obj, "app_lon", -180, 180), "operator_lat_deg",
              "operator_lon_deg")
    _position(out, _number(obj, "latitude_home", -90, 90), _number(obj, "longitude_home", -180, 180),
              "home_lat_deg", "home_lon_deg")
    return out


def _esp32(obj: dict) -> dict[str, Any]:
    """mesh-mapper / Sky Spy and Steve Jack's id_scanner (see the module docstring)."""
    out: dict[str, Any] = {}
    uas_id = _string(obj, "basic_id", 32) or _string(obj, "uas_id", 32)
    if uas_id and uas_id.upper() != "NONE":
        out["uas_id"] = uas_id
    operator = _string(obj, "operator_id", 32) or _string(obj, "id", 32)
    if operator and operator.upper() != "NONE":
        out["operator_id"] = operator
    self_id = _string(obj, "self_id", 32) or _string(obj, "description", 32)
    if self_id:
        out["self_id"] = self_id
    for key, name in (("id_type", "id_type"), ("ua_type", "ua_type"), ("status", "status")):
        value = _enum(obj, key) if not isinstance(obj.get(key), str) else None
        if value is not None:
            out[name] = value
    lat = _number(obj, "drone_lat", -90, 90)
    lon = _number(obj, "drone_long", -180, 180)
    if lat is None and lon is None:
        lat, lon = _number(obj, "uav latitude", -90, 90), _number(obj, "uav longitude", -180, 180)
    if _position(out, lat, lon, "lat_deg", "lon_deg"):
        for keys, name, lo, hi in ((("drone_altitude", "alitude msl", "altitude_msl"), "alt_geo_m", -1000, 31767.5),
                                   (("height_agl", "height agl"), "height_m", -1000, 31767.5),
                                   (("speed",), "speed_mps", 0, 255),
                                   (("heading", "direction"), "course_deg", 0, 360)):
            for key in keys:
                value = _number(obj, key, lo, hi)
                if value is not None:
                    out[name] = value % 360.0 if name == "course_deg" else value
                    break
        if "height_m" in out:
            out["height_above_takeoff"] = False  # "AGL": above ground
    op_lat = _number(obj, "pilot_lat", -90, 90)
    op_lon = _number(obj, "pilot_long", -180, 180)
    if op_lat is None and op_lon is None:
        op_lat, op_lon = _number(obj, "base latitude", -90, 90), _number(obj, "base longitude", -180, 180)
    _position(out, op_lat, op_lon, "operator_lat_deg", "operator_lon_deg")
    _position(out, _number(obj, "home_lat", -90, 90), _number(obj, "home_long", -180, 180), "home_lat_deg",
              "home_lon_deg")
    return out


def _section(obj: dict, key: str) -> dict:
    value = obj.get(key, {})
    if not isinstance(value, dict):
        raise LineRefused("out_of_range", f"{key}: {type(value).__name__}, not an object")
    return value


_NESTED_LOCATION = (
    # key, field, accepted range (else the line is refused), values from the bound up are "unknown"
    ("geodetic_altitude", "alt_geo_m", -1000, 31767.5, math.inf),
    ("alt_pressure", "alt_baro_m", -1000, 31767.5, math.inf),
    ("height_agl", "height_m", -1000, 31767.5, math.inf),
    ("speed", "speed_mps", 0, 255, 255),  # 255: unknown
    ("direction", "course_deg", 0, 361, 360),  # 361: unknown
    ("vert_speed", "vertical_speed_mps", -63, 63, 63),  # 63: unknown
    ("timestamp", "broadcast_time_s", 0, 65535, 3601),  # 65535: unknown
)
"""Location/Vector keys of the WarDragon firmware (whole units, as the reference decoder gave them)."""


def _nested(obj: dict) -> dict[str, Any]:
    """WarDragon / DragonSync ESP32 firmware: one nested object per F3411 message."""
    out: dict[str, Any] = {}
    basic = _section(obj, "Basic ID")
    uas_id = _string(basic, "id", 32)
    if uas_id and uas_id.upper() != "NONE":
        out["uas_id"] = uas_id
    ua_type = _enum(basic, "ua_type")
    if ua_type:
        out["ua_type"] = ua_type
    mac = _mac(_string(basic, "MAC", 32))
    if mac and mac != "00:00:00:00:00:00":
        out["transmitter"] = mac
    rssi = _number(basic, "RSSI", -150, 20)
    if rssi:
        out["rssi_dbm"] = rssi
    loc = _section(obj, "Location/Vector Message")
    if _position(out, _number(loc, "latitude", -90, 90), _number(loc, "longitude", -180, 180), "lat_deg",
                 "lon_deg"):
        for key, name, lo, hi, known_below in _NESTED_LOCATION:
            value = _number(loc, key, lo, hi)
            if value is not None and value < known_below and value != -1000:  # -1000 m: unknown altitude
                out[name] = value
        for key, name, table in (("horiz_acc", "h_accuracy_m", f3411.H_ACCURACY_M),
                                 ("vert_acc", "v_accuracy_m", f3411.V_ACCURACY_M),
                                 ("speed_acc", "speed_accuracy_mps", f3411.SPEED_ACCURACY_MPS)):
            value = _enum(loc, key)
            if value is not None and math.isfinite(table[value]):
                out[name] = float(table[value])
        status = _enum(loc, "status")
        if status is not None:
            out["status"] = status
        height_type = _enum(loc, "height_type")
        if height_type is not None:
            out["height_above_takeoff"] = height_type == 0
    description = _string(_section(obj, "Self-ID Message"), "description", 32)
    if description:
        out["self_id"] = description
    system = _section(obj, "System Message")
    if _position(out, _number(system, "operator_lat", -90, 90), _number(system, "operator_lon", -180, 180),
                 "operator_lat_deg", "operator_lon_deg"):
        alt = _number(system, "operator_alt_geo", -1000, 31767.5)
        if alt is not None and alt != -1000:
            out["operator_alt_m"] = alt
    return out


def decode_json_object(obj: dict) -> dict[str, Any] | None:
    """One JSON object -> reading fields, or None when it is not a broadcast."""
    if not _DRONE_KEYS.intersection(obj):
        return None
    if "Basic ID" in obj or "Location/Vector Message" in obj:
        out = _nested(obj)
    elif "serial_number" in obj and "app_lat" in obj:
        out = _dji(obj)
    else:
        out = _esp32(obj)
    mac = _mac(_string(obj, "mac", 32))
    if mac and mac != "00:00:00:00:00:00":
        out["transmitter"] = mac
    rssi = _number(obj, "rssi", -150, 20)
    if rssi is not None and rssi != 0:
        out["rssi_dbm"] = rssi
    source = _source(obj)
    if source is not None:
        out["source"] = source
    if not out.keys() - _NO_CONTENT:  # a keep-alive with nothing heard (id_scanner's "NONE" line)
        return None
    out.setdefault("transmitter", "")
    return out


# ----------------------------------------------------------------------------- hex lines


def decode_hex_line(line: bytes) -> tuple[dict[str, Any], bytes] | None:
    """``[mac] [rssi] [source] HEX`` -> (prefix fields, the message or pack bytes); None
    when the line is not a hex line at all (text); LineRefused when it is a refused one."""
    m = _HEX_LINE.fullmatch(line)
    if m is None:
        if _looks_hex(line):
            raise LineRefused("bad_hex", "prefix before the hex is not [MAC] [RSSI] [source]")
        return None
    digits = m["hex"]
    if len(digits) % 2:
        raise LineRefused("bad_hex", f"odd number of hex digits ({len(digits)})")
    data = binascii.unhexlify(digits)
    mac = m["mac"]
    out: dict[str, Any] = {"transmitter": mac.decode("ascii").replace("-", ":").lower() if mac else ""}
    if m["rssi"] is not None:
        rssi = float(m["rssi"])
        if not -150 <= rssi <= 20:
            raise LineRefused("out_of_range", f"RSSI {rssi} dBm")
        out["rssi_dbm"] = rssi
    if m["source"] is not None:
        source = _SOURCES.get(m["source"].decode("ascii").lower())
        if source is None:
            raise LineRefused("bad_hex", f"prefix token {m['source']!r} is not a MAC, an RSSI or a source")
        out["source"] = source
    if data[0] == 0x0D and (len(data) == 2 + f3411.MESSAGE_SIZE or data[2] >> 4 == f3411.PACK):
        data = data[2:]  # BLE service data: application code 0x0D, message counter
    if len(data) != f3411.MESSAGE_SIZE and data[0] >> 4 != f3411.PACK:
        raise LineRefused("bad_hex", f"{len(data)} bytes: neither a 25-byte message nor a message pack")
    return out, data


def _looks_hex(line: bytes) -> bool:
    tokens = line.replace(b",", b" ").split()
    return bool(tokens) and len(tokens[-1]) >= 2 * f3411.MESSAGE_SIZE and _HEX.fullmatch(tokens[-1]) is not None


# ----------------------------------------------------------------------------- the parser


class RidParser:
    """Incremental line parser: bytes -> reading field dicts (see the module docstring)."""

    def __init__(self, max_line_bytes: int = MAX_LINE_BYTES) -> None:
        if max_line_bytes < 64:
            raise ValueError("max_line_bytes must be >= 64")
        self.max_line_bytes = max_line_bytes
        self.stats = RidStats()
        self._skipping = False  # inside an over-long line: drop up to its LF

    def feed(self, buf: bytes | bytearray) -> tuple[int, list[dict[str, Any]]]:
        """Decode the complete lines at the front of ``buf``: (bytes consumed, readings).

        Bytes after the last LF stay (consumed excludes them) unless they already exceed
        the line limit, which drops them and the rest of their line."""
        out: list[dict[str, Any]] = []
        stats = self.stats
        end = len(buf)
        pos = 0
        view = bytes(buf)
        hex_lines: list[tuple[dict[str, Any], bytes, int, int]] = []  # (prefix, data, size, slot)
        while pos < end:
            nl = view.find(b"\n", pos)
            if self._skipping:
                stop = end if nl < 0 else nl + 1
                stats.dropped_bytes += stop - pos
                pos = stop
                if nl >= 0:
                    self._skipping = False
                continue
            if nl < 0:
                if end - pos >= self.max_line_bytes:
                    self._refuse(LineRefused("too_long", f"line over {self.max_line_bytes} bytes"), end - pos)
                    stats.resyncs += 1
                    self._skipping = True
                    pos = end
                break
            size = nl + 1 - pos
            line = view[pos:nl].rstrip(b"\r").strip()
            pos = nl + 1
            if size > self.max_line_bytes:
                self._refuse(LineRefused("too_long", f"line of {size} bytes over {self.max_line_bytes}"), size)
                stats.resyncs += 1
                continue
            if not line:
                continue
            self._line(line, size, out, hex_lines)
        self._flush_hex(hex_lines, out)
        readings = [fields for fields in out if fields is not None]
        stats.readings += len(readings)
        return pos, readings

    def _line(self, line: bytes, size: int, out: list, hex_lines: list) -> None:
        stats = self.stats
        first = line[:1]
        try:
            if first in (b"{", b"["):
                try:
                    obj = json.loads(line.decode("utf-8"))
                except (UnicodeDecodeError, ValueError, RecursionError) as exc:
                    raise LineRefused("not_json", f"not JSON: {exc}") from None
                if not isinstance(obj, dict):
                    raise LineRefused("not_object", f"JSON {type(obj).__name__}, not an object")
                fields = decode_json_object(obj)
                stats.frames += 1
                stats.json_lines += 1
                if fields is None:
                    stats.no_drone += 1
                else:
                    out.append(fields)
                return
            decoded = decode_hex_line(line)
            if decoded is not None:
                hex_lines.append((*decoded, size, len(out)))
                out.append(None)  # the slot its reading takes, in line order
                return
        except LineRefused as exc:
            self._refuse(exc, size)
            return
        stats.text += 1
        stats.dropped_bytes += size

    def _flush_hex(self, hex_lines: list[tuple[dict[str, Any], bytes, int, int]], out: list) -> None:
        """Decode the hex broadcasts of one feed together: every message of every line (single
        messages and packs alike) goes into one (n, 25) array, decoded in one structured-array
        pass per message type (:func:`f3411.decode_rows`), then regrouped per line. One
        refused message refuses its line (a pack is one broadcast)."""
        stats = self.stats
        blocks: list[bytes] = []
        spans: list[tuple[int, int, int]] = []  # (line index, first row, end row)
        rows_so_far = 0
        for i, (_, data, size, _) in enumerate(hex_lines):
            try:
                block = f3411.block_messages(data)
            except f3411.MessageError as exc:
                self._refuse(LineRefused("bad_hex" if exc.reason == "bad_length" else exc.reason, str(exc)), size)
                continue
            blocks.append(block)
            count = len(block) // f3411.MESSAGE_SIZE
            spans.append((i, rows_so_far, rows_so_far + count))
            rows_so_far += count
        if not blocks:
            return
        raw = np.frombuffer(b"".join(blocks), dtype=np.uint8).reshape(-1, f3411.MESSAGE_SIZE)
        rows = f3411.decode_rows(raw, stats.f3411)
        for i, first, stop in spans:
            prefix, _, size, slot = hex_lines[i]
            if stop - first == 1:  # one message: no merging
                kind, fields, error = rows[first]
                if error is None:
                    stats.frames += 1
                    stats.hex_lines += 1
                    if fields is not None:  # an authentication page carries nothing a reading holds
                        out[slot] = {**fields, **prefix}
                    continue
            else:
                part = rows[first:stop]
                error = next((e for _, _, e in part if e is not None), None)
                if error is None:
                    stats.frames += 1
                    stats.hex_lines += 1
                    messages = [(kind, fields) for kind, fields, _ in part if fields is not None]
                    if messages:
                        out[slot] = {**f3411.merge(messages), **prefix}
                    continue
            self._refuse(LineRefused(error.reason, str(error)), size)

    def _refuse(self, exc: LineRefused, size: int) -> None:
        stats = self.stats
        setattr(stats, exc.reason, getattr(stats, exc.reason) + 1)
        stats.dropped_bytes += size
        stats.last_error = str(exc)
