"""ASTM F3411 / ASD-STAN prEN 4709-002 broadcast Remote ID messages: decoding, vectorised.

Pure: bytes in, field values out; no I/O. Every message is 25 bytes; its first byte holds
the message type (high nibble) and the protocol version (low nibble, 0-2 accepted):

    0x0 Basic ID      1 ID type << 4 | UA type; 2-21 UAS ID; 22-24 reserved
    0x1 Location      1 status << 4 | reserved | height type | E/W direction | speed
                        multiplier; 2 direction; 3 speed; 4 vertical speed (int8);
                        5-8 latitude, 9-12 longitude (int32, 1e-7 deg); 13-14 pressure
                        altitude, 15-16 geodetic altitude, 17-18 height (uint16);
                        19 vertical << 4 | horizontal accuracy; 20 baro << 4 | speed
                        accuracy; 21-22 timestamp (uint16); 23 timestamp accuracy
    0x2 Authentication  page 0: 1 auth type << 4 | page; 2 last page index; 3 length;
                        4-7 timestamp; 8-24 data. Pages 1-15: 1 type | page; 2-24 data
    0x3 Self ID       1 description type; 2-24 text
    0x4 System        1 classification type << 2 | operator location type; 2-5 operator
                        latitude, 6-9 longitude; 10-11 area count; 12 area radius;
                        13-14 ceiling, 15-16 floor; 17 EU category << 4 | class;
                        18-19 operator geodetic altitude; 20-23 timestamp (s since 2019)
    0x5 Operator ID   1 operator ID type; 2-21 text
    0xF Message Pack  1 single message size (25); 2 count (1-9); then count messages

All multi-byte fields little-endian. The layouts, scalings and "unknown" encodings are
those of the open reference implementation, opendroneid-core-c
(github.com/opendroneid/opendroneid-core-c, ``libopendroneid/opendroneid.h`` and
``opendroneid.c``, commit beb5639c78d8f05d9debe08a666c6a5f1cb0fa02), checked against its
``test/test_inout.c`` values and random messages it decoded (tests/test_remoteid_protocol.py):

- latitude/longitude = int32 * 1e-7 deg; both 0 = unknown (NaN); beyond ±90/±180 the
  message is refused (``out_of_range``): a position that cannot be is no position;
- altitudes and height = uint16 * 0.5 - 1000 m; the encoded 0 (-1000 m) = unknown;
- speed = 0.25 * v m/s, or with the multiplier flag 0.75 * v + 63.75 m/s (max 254.25);
  255 m/s (v = 255 with the flag) = unknown;
- vertical speed = int8 * 0.5 m/s, positive up; |v| > 62 m/s (63 = unknown) -> NaN;
- direction = byte + 180 when the E/W flag is set, degrees clockwise from true north;
  361 = unknown, anything >= 360 -> NaN;
- timestamp = uint16 tenths of a second after the full UTC hour; 0xFFFF = unknown,
  above 36000 (an hour) -> NaN;
- accuracy classes -> the class's bound in metres (m/s for speed): horizontal
  1 = 10 NM ... 12 = 1 m, vertical 1 = 150 m ... 6 = 1 m, speed 1 = 10 m/s ...
  4 = 0.3 m/s. Class 0 ("unknown") and the reserved classes give NaN, where the
  reference's ``decodeHorizontalAccuracy`` assumes the worst bound (18520 m): a consumer
  can choose its own worst case, but cannot tell an assumed one from a broadcast one.
  (The reference returns 7808 m for the 4 NM class; 4 NM is 7408 m, as its own header
  says: 7408 is used here.)
- Basic ID with ID type 1 (serial number, ANSI/CTA-2063-A) or 2 (CAA registration):
  ASCII text up to the first NUL; type 3 (UTM UUID) and 4 (specific session ID) are
  binary and rendered as lower-case hex of their 20 bytes (trailing zero bytes dropped);
  type 0 keeps its text when it has any. Text that is not printable ASCII refuses the
  message (``bad_text``).
- Authentication pages are checked as the reference does (page 0: last page index <
  16, length within the pages) and counted; they carry nothing a reading holds.

:func:`decode_rows` takes every message of a read as one (n, 25) array: Location and
System messages go through :data:`LOCATION_DTYPE` / :data:`SYSTEM_DTYPE` in one NumPy pass
per type when there are at least :data:`VECTOR_MIN_ROWS` of them, else through ``struct``
one by one (the same numbers; a handful is cheaper that way); text messages row by row.
"""

from __future__ import annotations

import math
import struct
from dataclasses import dataclass, field
from typing import Any

import numpy as np

MESSAGE_SIZE = 25
PACK_MAX_MESSAGES = 9
BASIC_ID, LOCATION, AUTH, SELF_ID, SYSTEM, OPERATOR_ID, PACK = 0x0, 0x1, 0x2, 0x3, 0x4, 0x5, 0xF
MAX_VERSION = 2

LOCATION_DTYPE = np.dtype([
    ("header", "u1"), ("flags", "u1"), ("direction", "u1"), ("speed", "u1"), ("vspeed", "i1"),
    ("lat_e7", "<i4"), ("lon_e7", "<i4"), ("alt_baro", "<u2"), ("alt_geo", "<u2"), ("height", "<u2"),
    ("acc_vh", "u1"), ("acc_bs", "u1"), ("timestamp_ds", "<u2"), ("ts_acc", "u1"), ("reserved", "u1"),
])
"""Location/Vector message as it is on the air (25 bytes, little-endian)."""
SYSTEM_DTYPE = np.dtype([
    ("header", "u1"), ("flags", "u1"), ("op_lat_e7", "<i4"), ("op_lon_e7", "<i4"), ("area_count", "<u2"),
    ("area_radius", "u1"), ("area_ceiling", "<u2"), ("area_floor", "<u2"), ("category_class", "u1"),
    ("op_alt_geo", "<u2"), ("timestamp_s", "<u4"), ("reserved", "u1"),
])
"""System message as it is on the air (25 bytes)."""
assert LOCATION_DTYPE.itemsize == SYSTEM_DTYPE.itemsize == MESSAGE_SIZE

NAN = float("nan")
H_ACCURACY_M = np.array([NAN, 18520.0, 7408.0, 3704.0, 1852.0, 926.0, 555.6, 185.2, 92.6, 30.0, 10.0, 3.0, 1.0,
                         NAN, NAN, NAN])
"""Horizontal accuracy class -> bound, metres (0 and 13-15: unknown/reserved)."""
V_ACCURACY_M = np.array([NAN, 150.0, 45.0, 25.0, 10.0, 3.0, 1.0] + [NAN] * 9)
"""Vertical (geodetic and baro) accuracy class -> bound, metres."""
SPEED_ACCURACY_MPS = np.array([NAN, 10.0, 3.0, 1.0, 0.3] + [NAN] * 11)
"""Speed accuracy class -> bound, m/s."""

_PRINTABLE = bytes(range(0x20, 0x7F))


@dataclass
class F3411Stats:
    """Running counts of decoded messages (a pack counts each of its messages)."""

    by_type: dict[int, int] = field(default_factory=dict)
    auth_pages: int = 0


class MessageError(ValueError):
    """One message (or pack) refused; ``reason`` is the counter it goes to."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason


def _altitude(raw: np.ndarray) -> np.ndarray:
    out = raw.astype(np.float64) * 0.5 - 1000.0
    out[raw == 0] = np.nan
    return out


def _latlon(lat_e7: np.ndarray, lon_e7: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(lat, lon, bad): 1e-7 degrees; (0, 0) unknown -> NaN; bad marks impossible ones."""
    lat = lat_e7.astype(np.float64) * 1e-7
    lon = lon_e7.astype(np.float64) * 1e-7
    unknown = (lat_e7 == 0) & (lon_e7 == 0)
    bad = ~unknown & ((np.abs(lat) > 90.0) | (np.abs(lon) > 180.0))
    lat[unknown] = np.nan
    lon[unknown] = np.nan
    return lat, lon, bad


def decode_locations(raw: np.ndarray) -> tuple[list[dict[str, Any]], np.ndarray]:
    """(m, 25) uint8 Location messages -> (field dicts, bad (m,) bool: impossible position)."""
    m = np.frombuffer(np.ascontiguousarray(raw).tobytes(), dtype=LOCATION_DTYPE)
    flags = m["flags"]
    direction = m["direction"].astype(np.float64) + np.where(flags & 0x02, 180.0, 0.0)
    direction[direction >= 360.0] = np.nan
    speed_raw = m["speed"].astype(np.float64)
    mult = (flags & 0x01).astype(bool)
    speed = np.where(mult, speed_raw * 0.75 + 255 * 0.25, speed_raw * 0.25)
    speed[mult & (m["speed"] == 255)] = np.nan
    vspeed = m["vspeed"].astype(np.float64) * 0.5
    vspeed[np.abs(vspeed) > 62.0] = np.nan
    lat, lon, bad = _latlon(m["lat_e7"], m["lon_e7"])
    timestamp = m["timestamp_ds"].astype(np.float64) / 10.0
    timestamp[m["timestamp_ds"] > 36000] = np.nan
    columns = {
        "status": (flags >> 4).astype(np.int64),
        "height_above_takeoff": (flags & 0x04) == 0,
        "course_deg": direction,
        "speed_mps": speed,
        "vertical_speed_mps": vspeed,
        "lat_deg": lat,
        "lon_deg": lon,
        "alt_baro_m": _altitude(m["alt_baro"]),
        "alt_geo_m": _altitude(m["alt_geo"]),
        "height_m": _altitude(m["height"]),
        "h_accuracy_m": H_ACCURACY_M[m["acc_vh"] & 0x0F],
        "v_accuracy_m": V_ACCURACY_M[m["acc_vh"] >> 4],
        "speed_accuracy_mps": SPEED_ACCURACY_MPS[m["acc_bs"] & 0x0F],
        "broadcast_time_s": timestamp,
    }
    names = list(columns)
    rows = zip(*(columns[n].tolist() for n in names))
    return [dict(zip(names, row)) for row in rows], bad


def decode_systems(raw: np.ndarray) -> tuple[list[dict[str, Any]], np.ndarray]:
    """(m, 25) uint8 System messages -> (field dicts, bad (m,) bool: impossible operator position)."""
    m = np.frombuffer(np.ascontiguousarray(raw).tobytes(), dtype=SYSTEM_DTYPE)
    lat, lon, bad = _latlon(m["op_lat_e7"], m["op_lon_e7"])
    columns = {
        "operator_location_type": (m["flags"] & 0x03).astype(np.int64),
        "operator_lat_deg": lat,
        "operator_lon_deg": lon,
        "operator_alt_m": _altitude(m["op_alt_geo"]),
    }
    names = list(columns)
    rows = zip(*(columns[n].tolist() for n in names))
    return [dict(zip(names, row)) for row in rows], bad


_LOCATION = struct.Struct("<BBBBbiiHHHBBHBB")
_SYSTEM = struct.Struct("<BBiiHBHHBHIB")
VECTOR_MIN_ROWS = 8
"""Below this many Location/System messages in one call, :func:`decode_rows` decodes them
one by one with ``struct`` (a NumPy pass costs more than it saves on a handful); the two
paths give the same numbers (tests/test_remoteid_protocol.py compares them)."""


def _alt1(raw: int) -> float:
    return math.nan if raw == 0 else raw * 0.5 - 1000.0


def _latlon1(lat_e7: int, lon_e7: int) -> tuple[float, float, bool]:
    if lat_e7 == 0 and lon_e7 == 0:
        return math.nan, math.nan, False
    lat, lon = lat_e7 * 1e-7, lon_e7 * 1e-7
    return lat, lon, abs(lat) > 90.0 or abs(lon) > 180.0


def location_fields(msg: bytes) -> tuple[dict[str, Any], bool]:
    """One Location message, scalar twin of :func:`decode_locations`: (fields, bad position)."""
    (_, flags, direction, speed_raw, vspeed_raw, lat_e7, lon_e7, baro, geo, height, acc_vh, acc_bs, ts, _,
     _) = _LOCATION.unpack(msg)
    course = direction + (180.0 if flags & 0x02 else 0.0)
    if flags & 0x01:
        speed = math.nan if speed_raw == 255 else speed_raw * 0.75 + 255 * 0.25
    else:
        speed = speed_raw * 0.25
    vertical = vspeed_raw * 0.5
    lat, lon, bad = _latlon1(lat_e7, lon_e7)
    return {
        "status": flags >> 4,
        "height_above_takeoff": not flags & 0x04,
        "course_deg": math.nan if course >= 360.0 else course,
        "speed_mps": speed,
        "vertical_speed_mps": math.nan if abs(vertical) > 62.0 else vertical,
        "lat_deg": lat,
        "lon_deg": lon,
        "alt_baro_m": _alt1(baro),
        "alt_geo_m": _alt1(geo),
        "height_m": _alt1(height),
        "h_accuracy_m": float(H_ACCURACY_M[acc_vh & 0x0F]),
        "v_accuracy_m": float(V_ACCURACY_M[acc_vh >> 4]),
        "speed_accuracy_mps": float(SPEED_ACCURACY_MPS[acc_bs & 0x0F]),
        "broadcast_time_s": math.nan if ts > 36000 else ts / 10.0,
    }, bad


def system_fields(msg: bytes) -> tuple[dict[str, Any], bool]:
    """One System message, scalar twin of :func:`decode_systems`: (fields, bad position)."""
    _, flags, lat_e7, lon_e7, _, _, _, _, _, alt, _, _ = _SYSTEM.unpack(msg)
    lat, lon, bad = _latlon1(lat_e7, lon_e7)
    return {"operator_location_type": flags & 0x03, "operator_lat_deg": lat, "operator_lon_deg": lon,
            "operator_alt_m": _alt1(alt)}, bad


def _text(raw: bytes, what: str) -> str:
    """ASCII text up to the first NUL; MessageError when not printable."""
    text = raw.split(b"\0", 1)[0]
    if text.translate(None, _PRINTABLE):
        raise MessageError("bad_text", f"{what} is not printable ASCII")
    return text.decode("ascii")


def _basic_id(msg: bytes) -> dict[str, Any]:
    id_type, ua_type = msg[1] >> 4, msg[1] & 0x0F
    raw = msg[2:22]
    if id_type in (3, 4):  # UTM UUID / specific session ID: binary
        uas_id = raw.rstrip(b"\0").hex()
    else:
        uas_id = _text(raw, "UAS ID")
    return {"id_type": id_type, "ua_type": ua_type, "uas_id": uas_id}


def _check_auth(msg: bytes) -> None:
    page = msg[1] & 0x0F
    if page == 0:
        last, length = msg[2], msg[3]
        if last >= 16 or length > 17 + 23 * last:
            raise MessageError("bad_message", f"authentication page 0 inconsistent (last page {last}, length {length})")


def block_messages(data: bytes) -> bytes:
    """One transmitted unit (a single message or a Message Pack) -> its 25-byte messages,
    back to back; MessageError when its framing is wrong."""
    if len(data) < MESSAGE_SIZE:
        raise MessageError("bad_length", f"{len(data)} bytes, a message has {MESSAGE_SIZE}")
    if data[0] >> 4 == PACK:
        if data[1] != MESSAGE_SIZE:
            raise MessageError("bad_message", f"message pack of {data[1]}-byte messages")
        count = data[2]
        if not 1 <= count <= PACK_MAX_MESSAGES:
            raise MessageError("bad_message", f"message pack of {count} messages (1-{PACK_MAX_MESSAGES})")
        if len(data) != 3 + MESSAGE_SIZE * count:
            raise MessageError("bad_length", f"message pack of {count} messages in {len(data)} bytes")
        return data[3:]
    if len(data) != MESSAGE_SIZE:
        raise MessageError("bad_length", f"{len(data)} bytes, a message has {MESSAGE_SIZE}")
    return data


Decoded = tuple[int, "dict[str, Any] | None", "MessageError | None"]
"""(message type, reading fields or None (authentication page), error or None)."""


def decode_rows(raw: np.ndarray, stats: F3411Stats) -> list[Decoded]:
    """(n, 25) uint8 single messages -> one (type, fields, error) per row, in order.

    Location and System rows are decoded together through their structured dtypes (one
    NumPy pass per type whatever n is); text messages row by row. Never raises."""
    kinds = (raw[:, 0] >> 4).astype(np.int64)
    versions = raw[:, 0] & 0x0F
    decoded: dict[int, tuple[dict[str, Any], bool]] = {}
    for kind, decoder, scalar in ((LOCATION, decode_locations, location_fields),
                                  (SYSTEM, decode_systems, system_fields)):
        where = np.flatnonzero((kinds == kind) & (versions <= MAX_VERSION))
        if len(where) >= VECTOR_MIN_ROWS:
            rows, bad = decoder(raw[where])
            decoded.update(zip(where.tolist(), zip(rows, bad.tolist())))
        else:
            decoded.update((i, scalar(raw[i].tobytes())) for i in where.tolist())
    result: list[Decoded] = []
    data = raw.tobytes()
    for i, (kind, version) in enumerate(zip(kinds.tolist(), versions.tolist())):
        try:
            if version > MAX_VERSION:
                raise MessageError("bad_message", f"protocol version {version} (0-{MAX_VERSION} known)")
            if i in decoded:
                fields, bad = decoded[i]
                if bad:
                    raise MessageError("out_of_range", "latitude/longitude beyond +-90/+-180 degrees")
                stats.by_type[kind] = stats.by_type.get(kind, 0) + 1
                result.append((kind, fields, None))
                continue
            msg = data[i * MESSAGE_SIZE:(i + 1) * MESSAGE_SIZE]
            if kind == BASIC_ID:
                fields = _basic_id(msg)
            elif kind == AUTH:
                _check_auth(msg)
                stats.auth_pages += 1
                fields = None
            elif kind == SELF_ID:
                fields = {"self_id": _text(msg[2:25], "self ID")}
            elif kind == OPERATOR_ID:
                fields = {"operator_id": _text(msg[2:22], "operator ID")}
            else:
                raise MessageError("bad_message", f"message type {kind:#x} unknown (or a pack inside a pack)")
        except MessageError as exc:
            result.append((kind, None, exc))
            continue
        stats.by_type[kind] = stats.by_type.get(kind, 0) + 1
        result.append((kind, fields, None))
    return result


def merge(messages: list[tuple[int, dict[str, Any]]]) -> dict[str, Any]:
    """Fields of one broadcast (a pack's messages) in one dict. A pack may hold two Basic
    IDs (e.g. a serial number and a CAA registration): the serial number (ID type 1) wins,
    else the first one with an ID."""
    fields: dict[str, Any] = {}
    basic = [f for kind, f in messages if kind == BASIC_ID and f["uas_id"]]
    for kind, f in messages:
        if kind != BASIC_ID:
            fields.update(f)
    if basic:
        fields.update(next((f for f in basic if f["id_type"] == 1), basic[0]))
    else:
        fields.update(next((f for kind, f in messages if kind == BASIC_ID), {}))
    return fields
