"""Sharing rules: which records one central may receive, and how precise their positions.

A tower may serve its own agency and a partner (ICD "Transport": a connection may share
only some records; the partner then sees gaps in ``seq``, and a gap alone is not a loss).
Each central's ``share:`` block is a :class:`SharingRule`; :class:`RecordFilter` applies
it to the rows the uplink reads from the outbox:

- TRACKS records pass when their ``category``, ``status`` and ``threat`` are all listed
  and, when ``zones`` is not empty, their position lies in at least one of the named
  zones. Zones are polygons defined elsewhere in the configuration; this module only
  receives a ``zone_of(lat_deg, lon_deg) -> set of zone names`` callable from the daemon.
  A record without a position (RF only: lat/lon unknown) is in no zone, so a rule with
  zones never shares it.
- EVENTS objects pass when ``events`` is true (``outbox.dropped`` included: without it a
  partner cannot tell a drop from a filtered record).
- ``coarsen_m`` > 0: the positions sent to this central are snapped to the centre of a
  grid cell about ``coarsen_m`` metres on a side (north-south cells of ``coarsen_m``
  metres of latitude, east-west cells of ``coarsen_m`` metres of longitude at the cell's
  latitude, on a sphere of the WGS84 mean radius); ``range_m``, ``azimuth_deg`` and
  ``elevation_deg`` are set to unknown (NaN) because with the tower's position they give
  the exact position back; ``pos_sigma_m`` grows by the grid's own error
  (``sqrt(sigma^2 + grid^2 / 6)``, a uniform error over a square cell in two axes).
  ``alt_m`` and the velocities are kept. The record in the outbox is not changed; only
  the copy sent to this central.

Records a rule excludes are marked done for that central in the outbox (it will never
want them), so they do not hold the outbox for it.

Identity (ICD v1.1 IDENTITY records, the ``identity:`` block, :class:`IdentitySharing`):
``enabled: false`` sends this central no identity at all; ``uas_id``,
``operator_position`` and ``operator_id`` false withhold those fields (the serial
number, the pilot's position, the operator's registration) from every identity record
it receives, which then says so in its ``withheld`` bits. ``coarsen_m`` coarsens the
operator position like a track position. When the rule filters tracks (categories,
statuses, threats, zones), an identity is sent only for a track this central has been
sent a TRACKS record of (since the uplink started), so a partner never learns who flies a
track it may not see; the others are withheld from it (see towerd.uplink.identity).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Collection
from dataclasses import dataclass
from typing import Literal

import numpy as np

from towerd.icd import (
    IDENTITY_RECORD_DTYPE,
    LAT_LON_UNKNOWN,
    TRACK_RECORD_DTYPE,
    Category,
    empty_track_records,
    IdentityWithheld,
    Status,
    Threat,
)
from towerd.schema import spec

CategoryName = Literal["unknown", "uas", "bird", "ground_vehicle", "manned_aircraft", "person"]
StatusName = Literal["tentative", "confirmed", "coasting", "ended"]
ThreatName = Literal["none", "low", "medium", "high"]

CATEGORY_NAMES: tuple[str, ...] = tuple(c.name.lower() for c in Category)
STATUS_NAMES: tuple[str, ...] = tuple(s.name.lower() for s in Status)
THREAT_NAMES: tuple[str, ...] = tuple(t.name.lower() for t in Threat)

ZoneOf = Callable[[float, float], Collection[str]]
"""``zone_of(lat_deg, lon_deg)``: the names of the zones containing a WGS84 position."""

EARTH_MEAN_RADIUS_M = 6_371_008.8


@dataclass(frozen=True)
class IdentitySharing:
    """Which identity fields one central may receive (``share.identity``); the default
    shares every field."""

    enabled: bool = spec(True, doc="send IDENTITY records (ICD v1.1) at all; false: this central gets none")
    uas_id: bool = spec(True, doc="share the UAS ID (the drone's serial number or registration) and its type")
    operator_position: bool = spec(True, doc="share the pilot's (operator's) position")
    operator_id: bool = spec(True, doc="share the operator ID (the pilot's registration number)")
    recheck_after_s: float = spec(86400.0, doc="a central found not to take identities (ICD v1: it answered "
                                  "IDENTITY with ERROR) is remembered so across restarts and asked again after "
                                  "this long, and at once when its server key changes", unit="s", lo=60.0,
                                  hi=365 * 86400.0)

    @property
    def withheld(self) -> int:
        """The IDENTITY ``withheld`` bits this rule sets."""
        bits = 0
        if not self.uas_id:
            bits |= IdentityWithheld.UAS_ID
        if not self.operator_position:
            bits |= IdentityWithheld.OPERATOR_POSITION
        if not self.operator_id:
            bits |= IdentityWithheld.OPERATOR_ID
        return int(bits)


@dataclass(frozen=True)
class SharingRule:
    """What one central may receive (the ``share:`` block of a central). The default
    shares everything, exactly."""

    categories: tuple[CategoryName, ...] = spec(
        CATEGORY_NAMES, doc="track categories shared: unknown, uas, bird, ground_vehicle, manned_aircraft, person")
    statuses: tuple[StatusName, ...] = spec(
        STATUS_NAMES, doc="track statuses shared: tentative, confirmed, coasting, ended")
    threats: tuple[ThreatName, ...] = spec(THREAT_NAMES, doc="threat levels shared: none, low, medium, high")
    zones: tuple[str, ...] = spec(
        (), doc="names of zones; empty: anywhere. Otherwise only tracks positioned inside one of them are shared "
        "(tracks without a position are not)")
    events: bool = spec(True, doc="share EVENTS objects (sensor up/down, outbox.dropped, daemon start/stop)")
    coarsen_m: float = spec(0.0, doc="0: exact positions. Otherwise positions snapped to a grid of this size, "
                            "range/azimuth/elevation withheld", unit="m", lo=0.0, hi=100_000.0)
    identity: IdentitySharing = spec(IdentitySharing(), doc="what this central may receive of the tracks' "
                                     "identities (Remote ID: serial number, pilot position, operator ID)")

    def __post_init__(self) -> None:
        for field, allowed in (("categories", CATEGORY_NAMES), ("statuses", STATUS_NAMES),
                               ("threats", THREAT_NAMES)):
            bad = [v for v in getattr(self, field) if v not in allowed]
            if bad:
                raise ValueError(f"{field}: {', '.join(map(repr, bad))} not among {', '.join(allowed)}")
        if any(not isinstance(z, str) or not z for z in self.zones):
            raise ValueError("zones: zone names must be non-empty strings")
        if not (self.coarsen_m >= 0.0 and math.isfinite(self.coarsen_m)):
            raise ValueError(f"coarsen_m must be >= 0, got {self.coarsen_m}")

    @property
    def shares_everything(self) -> bool:
        """True when every record passes unchanged."""
        return (set(self.categories) >= set(CATEGORY_NAMES) and set(self.statuses) >= set(STATUS_NAMES)
                and set(self.threats) >= set(THREAT_NAMES) and not self.zones and self.events
                and self.coarsen_m == 0.0 and self.identity == IdentitySharing())


def _codes(names: tuple[str, ...], enum_cls: type) -> np.ndarray:
    return np.array(sorted(enum_cls[n.upper()].value for n in names), dtype=np.uint8)


class RecordFilter:
    """A compiled :class:`SharingRule`. ``zone_of`` is required when the rule names zones."""

    def __init__(self, rule: SharingRule, zone_of: ZoneOf | None = None) -> None:
        if rule.zones and zone_of is None:
            raise ValueError(f"the sharing rule names zones ({', '.join(rule.zones)}) but no zone_of function "
                             "was given to look positions up")
        self.rule = rule
        self._zone_of = zone_of
        self._zones = frozenset(rule.zones)
        self._categories = _codes(rule.categories, Category)
        self._statuses = _codes(rule.statuses, Status)
        self._threats = _codes(rule.threats, Threat)
        self.passes_everything = rule.shares_everything
        self.filters_tracks = not (set(rule.categories) >= set(CATEGORY_NAMES) and set(rule.statuses) >= set(
            STATUS_NAMES) and set(rule.threats) >= set(THREAT_NAMES) and not rule.zones)
        """Some TRACKS records may be excluded: identities then follow the tracks shared."""

    def track_mask(self, records: np.ndarray) -> np.ndarray:
        """Which records (TRACK_RECORD_DTYPE, shape (n,)) this central may receive:
        bool array, shape (n,)."""
        mask = (np.isin(records["category"], self._categories)
                & np.isin(records["status"], self._statuses)
                & np.isin(records["threat"], self._threats))
        if self._zones and mask.any():
            known = (records["lat_e7"] != LAT_LON_UNKNOWN) & (records["lon_e7"] != LAT_LON_UNKNOWN)
            mask &= known
            for i in np.flatnonzero(mask):
                lat = float(records["lat_e7"][i]) / 1e7
                lon = float(records["lon_e7"][i]) / 1e7
                mask[i] = bool(self._zones.intersection(self._zone_of(lat, lon)))  # type: ignore[misc]
        return mask

    def event_passes(self, event: dict) -> bool:
        return self.rule.events

    def transform(self, records: np.ndarray) -> np.ndarray:
        """The records as this central receives them (a copy, coarsened if the rule says
        so; the records themselves when nothing changes)."""
        grid = self.rule.coarsen_m
        if grid <= 0.0 or records.size == 0:
            return records
        return coarsen(records, grid)


def share_identities(records: np.ndarray, rule: SharingRule) -> np.ndarray:
    """The IDENTITY records (IDENTITY_RECORD_DTYPE, shape (n,)) as a central under
    ``rule`` receives them: withheld fields emptied (text all NUL, id_type 0, operator
    position unknown) and flagged in ``withheld``, the operator position snapped to the
    ``coarsen_m`` grid. A copy when anything changes; the records themselves otherwise.
    Whether identity is sent at all (``rule.identity.enabled``) is the caller's test."""
    if records.dtype != IDENTITY_RECORD_DTYPE:
        raise ValueError("records must be IDENTITY_RECORD_DTYPE")
    withheld = rule.identity.withheld
    if not withheld and rule.coarsen_m <= 0.0:
        return records
    out = records.copy()
    if withheld & IdentityWithheld.UAS_ID:
        out["uas_id"] = b""
        out["id_type"] = 0
    if withheld & IdentityWithheld.OPERATOR_ID:
        out["operator_id"] = b""
    if withheld & IdentityWithheld.OPERATOR_POSITION:
        out["operator_lat_e7"] = LAT_LON_UNKNOWN
        out["operator_lon_e7"] = LAT_LON_UNKNOWN
        out["operator_alt_m"] = np.nan
    elif rule.coarsen_m > 0.0 and out.size:
        pos = empty_track_records(out.size)
        pos["lat_e7"], pos["lon_e7"] = out["operator_lat_e7"], out["operator_lon_e7"]
        pos = coarsen(pos, rule.coarsen_m)
        out["operator_lat_e7"], out["operator_lon_e7"] = pos["lat_e7"], pos["lon_e7"]
    out["withheld"] |= np.uint8(withheld)
    return out


def coarsen(records: np.ndarray, grid_m: float) -> np.ndarray:
    """A copy of ``records`` (TRACK_RECORD_DTYPE, shape (n,)) with positions snapped to
    the centre of a ``grid_m`` cell, range/azimuth/elevation unknown, and pos_sigma_m
    widened (see the module docstring)."""
    if records.dtype != TRACK_RECORD_DTYPE:
        raise ValueError("records must be TRACK_RECORD_DTYPE")
    out = records.copy()
    known = (out["lat_e7"] != LAT_LON_UNKNOWN) & (out["lon_e7"] != LAT_LON_UNKNOWN)
    if known.any():
        lat = out["lat_e7"][known].astype(np.float64) / 1e7
        lon = out["lon_e7"][known].astype(np.float64) / 1e7
        step_lat = math.degrees(grid_m / EARTH_MEAN_RADIUS_M)
        lat_c = np.clip((np.floor(lat / step_lat) + 0.5) * step_lat, -90.0, 90.0)
        cos_lat = np.maximum(np.cos(np.radians(lat_c)), 1e-9)
        step_lon = np.minimum(np.degrees(grid_m / (EARTH_MEAN_RADIUS_M * cos_lat)), 360.0)
        lon_c = (np.floor((lon + 180.0) / step_lon) + 0.5) * step_lon - 180.0
        lon_c = np.clip(lon_c, -180.0, 180.0)
        out["lat_e7"][known] = np.round(lat_c * 1e7).astype(np.int32)
        out["lon_e7"][known] = np.round(lon_c * 1e7).astype(np.int32)
    for name in ("range_m", "azimuth_deg", "elevation_deg"):
        out[name] = np.nan
    sigma = out["pos_sigma_m"].astype(np.float64)
    sigma = np.where(np.isnan(sigma), 0.0, sigma)
    out["pos_sigma_m"] = np.where(known, np.sqrt(sigma**2 + grid_m**2 / 6.0), np.nan).astype(np.float32)
    return out
