"""Per-transmitter state merged from Remote ID readings.

A broadcast carries part of the picture (F3411 Basic ID: the serial number; Location:
where the drone is; System: where the pilot stands), so readings are merged per
transmitter (its MAC address, or its UAS ID when the receiver gives no MAC) into one
:class:`~towerd.drivers.measurements.RemoteIdReading` holding the latest known value of
every field. Fields that travel together are taken together: the drone's position with
its altitudes, velocity, accuracies and timestamp (one Location message), the pilot's
position with its altitude and location type (one System message); every other field is
taken when the reading knows it ("" / NaN / 0 mean unknown). A transmitter not heard for
``timeout_s`` is forgotten.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from dataclasses import dataclass

from towerd.drivers.measurements import RemoteIdReading, RidSource

log = logging.getLogger(__name__)

LOCATION_FIELDS = (
    "lat_deg", "lon_deg", "alt_geo_m", "alt_baro_m", "height_m", "height_above_takeoff", "speed_mps",
    "course_deg", "vertical_speed_mps", "h_accuracy_m", "v_accuracy_m", "speed_accuracy_mps", "broadcast_time_s",
)
"""Taken together from a reading that carries a drone position."""
OPERATOR_FIELDS = ("operator_lat_deg", "operator_lon_deg", "operator_alt_m", "operator_location_type")
"""Taken together from a reading that carries a pilot position."""
_GROUPED = frozenset(LOCATION_FIELDS + OPERATOR_FIELDS + ("sensor", "t_mono", "transmitter"))
_OTHER_FIELDS = tuple(f.name for f in dataclasses.fields(RemoteIdReading) if f.name not in _GROUPED)


_FLOAT_FIELDS = tuple(f.name for f in dataclasses.fields(RemoteIdReading) if f.type in ("float", float)
                      and f.name != "t_mono")
_NON_NEGATIVE = ("h_accuracy_m", "v_accuracy_m", "speed_accuracy_mps", "speed_mps")
ALTITUDE_RANGE_M = (-1000.0, 31767.0)
"""F3411's altitude and height range; beyond it a value is taken as unknown."""


def sanitize(reading: RemoteIdReading) -> RemoteIdReading:
    """The reading with what cannot be true made unknown (NaN): infinite numbers, a
    latitude/longitude pair outside ±90/±180 (both), negative accuracies and speeds,
    altitudes outside F3411's range. The driver already refuses such lines; fusion does not
    lean on that."""
    changes: dict[str, float] = {}
    for name in _FLOAT_FIELDS:
        if math.isinf(getattr(reading, name)):
            changes[name] = math.nan
    pairs = (("lat_deg", "lon_deg"), ("operator_lat_deg", "operator_lon_deg"), ("home_lat_deg", "home_lon_deg"))
    for lat, lon in pairs:
        a, b = getattr(reading, lat), getattr(reading, lon)
        if not (math.isnan(a) and math.isnan(b)) and not (abs(a) <= 90.0 and abs(b) <= 180.0):
            changes[lat] = changes[lon] = math.nan  # half a position, or an impossible one
    for name in _NON_NEGATIVE:
        if getattr(reading, name) < 0.0:
            changes[name] = math.nan
    for name in ("alt_geo_m", "alt_baro_m", "height_m", "operator_alt_m"):
        value = getattr(reading, name)
        if not math.isnan(value) and not ALTITUDE_RANGE_M[0] <= value <= ALTITUDE_RANGE_M[1]:
            changes[name] = math.nan
    return dataclasses.replace(reading, **changes) if changes else reading


def _known(value: object) -> bool:
    if isinstance(value, float):
        return not math.isnan(value)
    if isinstance(value, str):
        return value != ""
    if isinstance(value, bool):
        return True
    if isinstance(value, int):  # enumerations: 0 is F3411's none / undeclared
        return value != 0
    return value is not None


def key_of(reading: RemoteIdReading) -> str:
    """The transmitter a reading belongs to: its MAC address, else its UAS ID, else ""."""
    if reading.transmitter:
        return reading.transmitter.lower()
    return f"id:{reading.uas_id}" if reading.uas_id else ""


@dataclass
class Transmitter:
    """One broadcaster as heard so far. ``merged``: every field's latest known value;
    ``t_heard``/``t_first``: monotonic seconds of its latest/first reading;
    ``t_position``: of the latest reading with a drone position (NaN: none yet);
    ``positions``: how many readings carried one."""

    key: str
    merged: RemoteIdReading
    t_first: float
    t_heard: float
    t_position: float = math.nan
    positions: int = 0

    @property
    def has_position(self) -> bool:
        return not math.isnan(self.t_position)


class TransmitterTable:
    """Merges readings per transmitter and forgets silent ones."""

    def __init__(self, timeout_s: float) -> None:
        self.timeout_s = float(timeout_s)
        self.by_key: dict[str, Transmitter] = {}
        self.unkeyed = 0
        """Readings dropped because they named no transmitter (no MAC, no UAS ID)."""

    def merge(self, reading: RemoteIdReading) -> Transmitter | None:
        """Merge one reading, first :func:`sanitize` d; the transmitter it updated (None: no
        key, counted)."""
        reading = sanitize(reading)
        key = key_of(reading)
        if not key:
            self.unkeyed += 1
            if self.unkeyed in (1, 10, 100) or self.unkeyed % 1000 == 0:
                log.warning("%d Remote ID readings without MAC or UAS ID dropped so far", self.unkeyed)
            return None
        tx = self.by_key.get(key)
        has_position = _known(reading.lat_deg) and _known(reading.lon_deg)
        if tx is None:
            tx = Transmitter(key, reading, reading.t_mono, reading.t_mono)
            self.by_key[key] = tx
            log.info("Remote ID transmitter %s heard (%s)", key, reading.uas_id or "no UAS ID yet")
        else:
            changes = {name: getattr(reading, name) for name in _OTHER_FIELDS if _known(getattr(reading, name))}
            if has_position:
                changes.update({name: getattr(reading, name) for name in LOCATION_FIELDS})
            if _known(reading.operator_lat_deg) and _known(reading.operator_lon_deg):
                changes.update({name: getattr(reading, name) for name in OPERATOR_FIELDS})
            if reading.source == RidSource.UNKNOWN:
                changes.pop("source", None)
            tx.merged = dataclasses.replace(tx.merged, sensor=reading.sensor, t_mono=reading.t_mono, **changes)
            tx.t_heard = max(tx.t_heard, reading.t_mono)
        if has_position:
            tx.t_position = reading.t_mono
            tx.positions += 1
        return tx

    def expire(self, t_mono: float) -> list[Transmitter]:
        """Forget the transmitters not heard for ``timeout_s``; return them."""
        gone = [tx for tx in self.by_key.values() if t_mono - tx.t_heard >= self.timeout_s]
        for tx in gone:
            del self.by_key[tx.key]
            log.info("Remote ID transmitter %s not heard for %.0f s, forgotten", tx.key, t_mono - tx.t_heard)
        return gone

    def __len__(self) -> int:
        return len(self.by_key)
