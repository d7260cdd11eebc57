"""Track reports: tracker output -> ICD v1 TRACKS records (80 bytes each).

The reporter decides which tracks are due and fills the records; ``seq`` is left 0 for
the outbox to assign. It is the only place where track time becomes UTC.
"""

from __future__ import annotations

import logging

import numpy as np

from towerd import geo
from towerd.clock import Clock
from towerd.icd import SOURCE_RADAR, Category, Status, Threat, empty_track_records
from towerd.tracking.state import POS, VEL, TrackTable
from towerd.tracking.tracker import TrackUpdate

log = logging.getLogger(__name__)

HITS_MAX = 65535
TIME_EPS_S = 1e-6
"""Tolerance on the report interval, so float drift in frame times (0.1 · k) does not
push a report one frame late."""


class TrackReporter:
    """Builds the TRACKS records due after each tracker call.

    Policy, per track: CONFIRMED and COASTING tracks are reported (TENTATIVE ones too when
    ``include_tentative``); a track is due when it has not been reported yet (so the first
    report comes as soon as it is confirmed), when its status differs from the last one
    reported, or when its state time is ``interval_s`` or more after its last report. A
    track that ends gets one final record (status ENDED, its last state) if and only if
    it had been reported; a tentative track that was never reported gets none.

    State kept: for each reported live track, its id, last report time and status, in
    sorted arrays (lookups with searchsorted, vectorised), pruned to the live tracks on
    every call so it cannot grow without bound.
    """

    def __init__(self, site: geo.Site, *, interval_s: float = 1.0, include_tentative: bool = False) -> None:
        self.site = site
        self.interval_s = float(interval_s)
        self.include_tentative = bool(include_tentative)
        self._ids = np.zeros(0, dtype=np.uint32)  # sorted ids of reported live tracks
        self._last_t = np.zeros(0)  # track t_mono of their last report
        self._last_status = np.zeros(0, dtype=np.uint8)

    def _last_reports(self, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """For each id: (reported before?, last report time or -inf, last status or 255)."""
        pos = np.minimum(np.searchsorted(self._ids, ids), max(len(self._ids) - 1, 0))
        found = np.zeros(len(ids), dtype=bool)
        if len(self._ids):
            found = self._ids[pos] == ids
        last_t = np.full(len(ids), -np.inf)
        last_status = np.full(len(ids), 255, dtype=np.uint8)
        last_t[found] = self._last_t[pos[found]]
        last_status[found] = self._last_status[pos[found]]
        return found, last_t, last_status

    def build(self, update: TrackUpdate, clock: Clock) -> np.ndarray:
        """Records (icd.TRACK_RECORD_DTYPE) due after ``update``: live tracks first, then the
        ENDED records. ``clock`` converts track monotonic times to UTC."""
        live = update.tracks
        eligible = live.rows_with_status(Status.CONFIRMED, Status.COASTING)
        if self.include_tentative:
            eligible |= live.status == Status.TENTATIVE

        found, last_t, last_status = self._last_reports(live.track_id)
        due = eligible & (
            ~found | (last_status != live.status) | (live.t_mono - last_t >= self.interval_s - TIME_EPS_S)
        )
        due_tracks = live.select(due)
        ended_tracks = update.ended.select(self._last_reports(update.ended.track_id)[0])

        # New state: the live tracks reported so far, those reported now refreshed.
        reported = due | (found & eligible)
        last_t[due] = live.t_mono[due]
        last_status[due] = live.status[due]
        order = np.argsort(live.track_id[reported], kind="stable")
        self._ids = live.track_id[reported][order]
        self._last_t = last_t[reported][order]
        self._last_status = last_status[reported][order]

        records = self.records(TrackTable.concatenate([due_tracks, ended_tracks]), clock)
        if len(records):
            log.debug("%d track records (%d ended)", len(records), len(ended_tracks))
        return records

    def records(self, tracks: TrackTable, clock: Clock) -> np.ndarray:
        """ICD records for ``tracks`` as they are (no policy); seq 0."""
        n = len(tracks)
        rec = empty_track_records(n)
        if n == 0:
            return rec
        t_unique, t_inv = np.unique(tracks.t_mono, return_inverse=True)
        rec["time_us"] = np.array([clock.utc_us(float(t)) for t in t_unique], dtype=np.int64)[t_inv]
        rec["track_id"] = tracks.track_id
        rec["status"] = tracks.status
        rec["category"] = Category.UNKNOWN
        rec["confidence"] = 0
        rec["threat"] = Threat.NONE
        rec["sources"] = SOURCE_RADAR
        rec["reserved"] = 0
        rec["hits"] = np.minimum(tracks.hits, HITS_MAX)

        pos = tracks.state[:, POS]
        ok = np.all(np.isfinite(pos), axis=1)
        if not np.all(ok):
            log.warning("%d tracks with a non-finite position reported without one", np.count_nonzero(~ok))
        lat, lon, h = geo.enu_to_geodetic(self.site, pos[ok])
        rec["lat_e7"][ok] = np.round(lat * 1e7).astype(np.int32)
        rec["lon_e7"][ok] = np.round(lon * 1e7).astype(np.int32)
        rec["alt_m"][ok] = h
        rng, az, el = geo.cartesian_to_spherical(pos)  # x east, y north: azimuth from true north
        rec["range_m"] = rng
        # [0, 360) must hold after rounding to f32 too (359.999999999 -> 360.0f -> 0).
        rec["azimuth_deg"] = np.mod(az, 360.0).astype(np.float32) % np.float32(360.0)
        rec["elevation_deg"] = el
        vel = tracks.state[:, VEL]
        rec["vel_east_mps"] = vel[:, 0]
        rec["vel_north_mps"] = vel[:, 1]
        rec["vel_up_mps"] = vel[:, 2]
        # One-sigma horizontal: sqrt of the mean of the east and north variances.
        rec["pos_sigma_m"] = np.sqrt(0.5 * (tracks.cov[:, 0, 0] + tracks.cov[:, 1, 1]))
        return rec
