"""JSON dialects of Remote ID receiver firmwares -> RemoteIdReading fields.

Pure: a decoded JSON object in, the reading's fields out (absent when the line did not
carry them), or :class:`LineRefused` naming the counter. Used by
:mod:`towerd.drivers.remoteid.protocol`, which frames the lines. The dialects, by their
keys:

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
  metres), ``v_north``/``v_east``/``v_up`` (printed raw: the DroneID wire int16 in
  cm/s, as DroneSecurity and Kismet's ``dot11_ie_221_dji_droneid.ksy`` leave it; the
  unit from three independent codecs: Ka-zam/gr-droneid ``python/djiencoder.py``
  (commit 4fc7037b) packs ``round(v_mps * 100)``, alphafox02/antsdr_dji_droneid
  ``dji_receiver.py`` (commit 40b6a782) divides by 100 for m/s, and
  llorencroma/DJIDroneIDspoofer ``Drone.py`` (commit 0c5f967a) scales by 100 because
  "Aeroscope divides speed values by this factor"), ``app_lat``/``app_lon`` (the pilot's phone), ``latitude_home``/
  ``longitude_home``, ``device_type``; source DJI DroneID. An object is read as this
  dialect when it has ``serial_number`` and ``app_lat``.
"""

from __future__ import annotations

import math
import re
from typing import Any

from towerd.drivers.measurements import RidSource
from towerd.drivers.remoteid import f3411

_MAC = re.compile(r"[0-9a-fA-F]{2}([:-])[0-9a-fA-F]{2}(\1[0-9a-fA-F]{2}){4}")
SOURCES = {
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
            if word in SOURCES:
                return SOURCES[word]
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
    uas_id = _string(obj, "basic_id", 40) or _string(obj, "uas_id", 40)
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
    uas_id = _string(basic, "id", 40)
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


