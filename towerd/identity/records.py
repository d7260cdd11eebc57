"""ID-only tracks as ICD TRACKS records, and the Remote ID marks on radar records.

An ID-only track is a drone heard but not seen: its record's position, velocity and
sigma come from the broadcast (``sources`` remote id only), like an RF-only track's come
from the RF sensor (:func:`towerd.rf.fusion.rf_track_records`), but with a position.
"""

from __future__ import annotations

import numpy as np

from towerd import geo
from towerd.clock import Clock
from towerd.icd import SOURCE_REMOTE_ID, Category, empty_track_records
from towerd.identity.broadcasts import K2

HITS_MAX = 65535
ID_ONLY_TRACK_ID_BASE = 0x4000_0000
"""First ID-only track id. Radar track ids count up from 1 and RF-only ones from
0x8000_0000 (:data:`towerd.rf.RF_TRACK_ID_BASE`): ID-only ids take the range between."""

ID_ONLY_DTYPE = np.dtype(
    [
        ("track_id", "<u4"),
        ("status", "u1"),
        ("threat", "u1"),
        ("t_mono", "<f8"),  # when the position was received
        ("hits", "<u4"),  # broadcasts with a position so far
        ("enu_m", "<f8", (3,)),  # broadcast position, local ENU (up NaN when no altitude)
        ("vel_enu_mps", "<f8", (3,)),  # NaN where the broadcast gives none
        ("h_accuracy_m", "<f8"),  # 95 % horizontal
        ("v_accuracy_m", "<f8"),  # 95 % vertical
    ]
)
"""One ID-only track as the record builder takes it."""


def id_only_records(tracks: np.ndarray, site: geo.Site, clock: Clock) -> np.ndarray:
    """ICD records (TRACK_RECORD_DTYPE, seq 0) for ``tracks`` (ID_ONLY_DTYPE): category
    uas at confidence 100 (a Remote ID broadcast comes from an unmanned aircraft),
    sources remote id, ``pos_sigma_m`` the horizontal 95 % accuracy over √χ²₂⁻¹(0.95)."""
    n = tracks.shape[0]
    rec = empty_track_records(n)
    if n == 0:
        return rec
    rec["time_us"] = [clock.utc_us(float(t)) for t in tracks["t_mono"]]
    rec["track_id"] = tracks["track_id"]
    rec["status"] = tracks["status"]
    rec["category"] = Category.UAS
    rec["confidence"] = 100
    rec["threat"] = tracks["threat"]
    rec["sources"] = SOURCE_REMOTE_ID
    rec["reserved"] = 0
    rec["hits"] = np.minimum(tracks["hits"], HITS_MAX)
    enu = tracks["enu_m"]
    has_up = np.isfinite(enu[:, 2])
    place = np.where(has_up[:, None], enu, enu * [1.0, 1.0, 0.0])
    lat, lon, h = geo.enu_to_geodetic(site, place)
    ok = np.isfinite(lat) & np.isfinite(lon)  # else the ICD's unknown, as empty_track_records set
    rec["lat_e7"][ok] = np.round(lat[ok] * 1e7).astype(np.int32)
    rec["lon_e7"][ok] = np.round(lon[ok] * 1e7).astype(np.int32)
    rec["alt_m"] = np.where(has_up & ok, h, np.nan)
    rng, az, el = geo.cartesian_to_spherical(place)
    rec["range_m"] = np.where(has_up, rng, np.hypot(enu[:, 0], enu[:, 1]))
    rec["azimuth_deg"] = np.mod(az, 360.0).astype(np.float32) % np.float32(360.0)
    rec["elevation_deg"] = np.where(has_up, el, np.nan)
    rec["vel_east_mps"] = tracks["vel_enu_mps"][:, 0]
    rec["vel_north_mps"] = tracks["vel_enu_mps"][:, 1]
    rec["vel_up_mps"] = tracks["vel_enu_mps"][:, 2]
    rec["pos_sigma_m"] = tracks["h_accuracy_m"] / K2
    return rec


def mark_radar_records(records: np.ndarray, track_ids: np.ndarray, threat_floor: np.ndarray) -> np.ndarray:
    """Set ``sources`` bit remote id on the records (TRACK_RECORD_DTYPE, in place, and
    returned) whose track_id is in ``track_ids`` (T,), and raise their threat to at least
    ``threat_floor`` (T,) u1 of that track."""
    ids = np.asarray(track_ids, dtype=np.uint32)
    if records.shape[0] == 0 or ids.size == 0:
        return records
    order = np.argsort(ids)
    ids, floor = ids[order], np.asarray(threat_floor, dtype=np.uint8)[order]
    pos = np.minimum(np.searchsorted(ids, records["track_id"]), ids.size - 1)
    hit = ids[pos] == records["track_id"]
    records["sources"][hit] |= SOURCE_REMOTE_ID
    records["threat"][hit] = np.maximum(records["threat"][hit], floor[pos[hit]])
    return records
