"""ICD v1 wire format (../shared/icd/towerd-uplink-v1.md), shared by uplink and central.

Everything little-endian and packed. This module is pure: bytes in, values out, no
sockets. The record layout is a NumPy structured dtype with explicit offsets so that
encoding many records is one ``tobytes()``.
"""

from __future__ import annotations

import enum

import numpy as np

MAGIC = b"TW"
VERSION = 1
HEADER_SIZE = 16
RECORD_SIZE = 80
FLAG_REPLAY = 0x0001
LAT_LON_UNKNOWN = -(2**31)


class MsgType(enum.IntEnum):
    TRACKS = 0x01
    EVENTS = 0x02
    HEALTH = 0x03
    ACK = 0x81
    HEALTH_ACK = 0x82
    ERROR = 0x8F


class Status(enum.IntEnum):
    TENTATIVE = 0
    CONFIRMED = 1
    COASTING = 2
    ENDED = 3


class Category(enum.IntEnum):
    UNKNOWN = 0
    UAS = 1
    BIRD = 2
    GROUND_VEHICLE = 3
    MANNED_AIRCRAFT = 4
    PERSON = 5


class Threat(enum.IntEnum):
    NONE = 0
    LOW = 1
    MEDIUM = 2
    HIGH = 3


SOURCE_RADAR = 0x01
SOURCE_RF = 0x02
SOURCE_REMOTE_ID = 0x04

HEADER_DTYPE = np.dtype(
    {
        "names": ["magic", "version", "type", "stream_id", "count", "flags"],
        "formats": ["S2", "u1", "u1", "<u8", "<u2", "<u2"],
        "offsets": [0, 2, 3, 4, 12, 14],
        "itemsize": HEADER_SIZE,
    }
)

TRACK_RECORD_DTYPE = np.dtype(
    {
        "names": [
            "seq", "time_us", "track_id", "status", "category", "confidence", "threat",
            "sources", "reserved", "hits", "lat_e7", "lon_e7", "alt_m", "range_m",
            "azimuth_deg", "elevation_deg", "vel_east_mps", "vel_north_mps", "vel_up_mps",
            "pos_sigma_m", "rf_freq_mhz", "rf_bw_mhz", "rf_power_dbm",
        ],
        "formats": [
            "<u8", "<i8", "<u4", "u1", "u1", "u1", "u1",
            "u1", "u1", "<u2", "<i4", "<i4", "<f4", "<f4",
            "<f4", "<f4", "<f4", "<f4", "<f4",
            "<f4", "<f4", "<f4", "<f4",
        ],
        "offsets": [0, 8, 16, 20, 21, 22, 23, 24, 25, 26, 28, 32, 36, 40, 44, 48, 52, 56, 60, 64, 68, 72, 76],
        "itemsize": RECORD_SIZE,
    }
)
"""One ICD v1 TRACKS record, 80 bytes, byte-exact."""
assert TRACK_RECORD_DTYPE.itemsize == RECORD_SIZE


def empty_track_records(n: int = 0) -> np.ndarray:
    """Records with every optional field set to the ICD's 'unknown' value."""
    rec = np.zeros(n, dtype=TRACK_RECORD_DTYPE)
    rec["lat_e7"] = LAT_LON_UNKNOWN
    rec["lon_e7"] = LAT_LON_UNKNOWN
    for name in ("alt_m", "range_m", "azimuth_deg", "elevation_deg", "vel_east_mps",
                 "vel_north_mps", "vel_up_mps", "pos_sigma_m", "rf_freq_mhz", "rf_bw_mhz",
                 "rf_power_dbm"):
        rec[name] = np.nan
    return rec
