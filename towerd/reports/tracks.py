"""Track reports: tracker output -> ICD v1 TRACKS records (80 bytes each).

The reporter decides which tracks are due and fills the records; ``seq`` is left 0 for
the outbox to assign. It is the only place where track time becomes UTC.
"""

from __future__ import annotations

import logging
from typing import Callable

import numpy as np

from towerd import geo
from towerd.clock import Clock
from towerd.icd import Status, empty_track_records
from towerd.tracking.labels import TrackLabels
from towerd.tracking.state import POS, VEL, TrackTable, match_ids
from towerd.tracking.tracker import TrackUpdate

log = logging.getLogger(__name__)

HITS_MAX = 65535
TIME_EPS_S = 1e-6
"""Tolerance on the report interval, so float drift in frame times (0.1 · k) does not
push a report one frame late."""

_LAST_DTYPE = np.dtype(
    [
        ("status", "u1"),
        ("category", "u1"),
        ("confidence", "u1"),
        ("threat", "u1"),
        ("sources", "u1"),
        ("rf_freq_mhz", "<f4"),
        ("rf_bw_mhz", "<f4"),
        ("rf_power_dbm", "<f4"),
    ]
)
"""The labels of one report, as remembered per reported track (and put in its ENDED record)."""


def _label_rows(status: np.ndarray, labels: TrackLabels) -> np.ndarray:
    """(K,) _LAST_DTYPE rows from a track status array and its labels."""
    rows = np.zeros(len(status), dtype=_LAST_DTYPE)
    rows["status"] = status
    rows["category"] = labels.category
    rows["confidence"] = labels.confidence
    rows["threat"] = labels.threat
    rows["sources"] = labels.sources
    rows["rf_freq_mhz"] = labels.rf.freq_mhz
    rows["rf_bw_mhz"] = labels.rf.bw_mhz
    rows["rf_power_dbm"] = labels.rf.power_dbm
    return rows


class TrackReporter:
    """Builds the TRACKS records due after each tracker call.

    Policy, per track: CONFIRMED and COASTING tracks are reported (TENTATIVE ones too when
    ``include_tentative``), except those the labels mark not reportable (static clutter)
    and never reported before; a track is due when it has not been reported yet (so the
    first report comes as soon as it is confirmed, or as soon as it becomes reportable),
    when its status, category or threat differs from the last one reported, or when its
    state time is ``interval_s`` or more after its last report. Once reported, a track is
    reported until it ends. A track that ends gets one final record (status ENDED, its
    last state, the labels of its last report) if and only if it had been reported; a
    track never reported (tentative, static clutter) gets none.

    State kept: for each reported live track, its id, last report time, status, category,
    threat and the labels of its last report, in sorted arrays (lookups with
    searchsorted, vectorised), pruned to the live tracks on every call so it cannot grow
    without bound.
    """

    def __init__(self, site: geo.Site, *, interval_s: float = 1.0, include_tentative: bool = False) -> None:
        self.site = site
        self.interval_s = float(interval_s)
        self.include_tentative = bool(include_tentative)
        self._ids = np.zeros(0, dtype=np.uint32)  # sorted ids of reported live tracks
        self._last_t = np.zeros(0)  # track t_mono of their last report
        self._last = np.zeros(0, dtype=_LAST_DTYPE)  # what their last report said

    def build(
        self, update: TrackUpdate, clock: Clock, labels: TrackLabels | Callable[[np.ndarray], TrackLabels] | None = None
    ) -> np.ndarray:
        """Records (icd.TRACK_RECORD_DTYPE) due after ``update``: live tracks first, then the
        ENDED records. ``clock`` converts track monotonic times to UTC; ``labels`` fill
        category, confidence, threat, sources and the RF fields: aligned with
        ``update.tracks``, or a callable giving the labels of the rows (indices into
        ``update.tracks``) it is asked for — only the tracks whose status makes them
        reportable are asked for, once per call; None: unknown, no threat, all reportable."""
        live = update.tracks
        status_ok = live.rows_with_status(Status.CONFIRMED, Status.COASTING)
        if self.include_tentative:
            status_ok |= live.status == Status.TENTATIVE
        rows = np.flatnonzero(status_ok)
        if labels is None:
            lab = TrackLabels.unknown(len(rows))
        elif callable(labels):
            lab = labels(rows)
        else:
            lab = labels.select(rows)
        ids, t_mono, status = live.track_id[rows], live.t_mono[rows], live.status[rows]
        now = _label_rows(status, lab)
        found, pos = match_ids(self._ids, ids)
        last_t = np.full(len(rows), -np.inf)
        last = np.zeros(len(rows), dtype=_LAST_DTYPE)
        last["status"] = 255
        last_t[found] = self._last_t[pos[found]]
        last[found] = self._last[pos[found]]

        eligible = lab.reportable | found
        changed = (last["status"] != status) | (last["category"] != now["category"]) | (last["threat"] != now["threat"])
        due = eligible & (~found | changed | (t_mono - last_t >= self.interval_s - TIME_EPS_S))

        ended_found, ended_pos = match_ids(self._ids, update.ended.track_id)
        ended_tracks = update.ended.select(ended_found)
        ended_labels = self._last[ended_pos[ended_found]]

        # New state: the live tracks reported so far, those reported now refreshed.
        reported = due | (found & eligible)
        last_t[due] = t_mono[due]
        last[due] = now[due]
        order = np.argsort(ids[reported], kind="stable")
        self._ids = ids[reported][order]
        self._last_t = last_t[reported][order]
        self._last = last[reported][order]

        if not due.any() and len(ended_tracks) == 0:
            return empty_track_records(0)
        label_rows = np.concatenate([now[due], ended_labels])
        due_mask = np.zeros(len(live), dtype=bool)
        due_mask[rows[due]] = True
        due_tracks = live.select(due_mask)
        if len(ended_tracks):
            due_tracks = TrackTable.concatenate([due_tracks, ended_tracks])
        records = self.records(due_tracks, clock, label_rows)
        if len(records):
            log.debug("%d track records (%d ended)", len(records), len(ended_tracks))
        return records

    def records(self, tracks: TrackTable, clock: Clock, labels: np.ndarray | None = None) -> np.ndarray:
        """ICD records for ``tracks`` as they are (no policy); seq 0. ``labels``: rows of
        _LAST_DTYPE aligned with ``tracks`` (None: unknown category, no threat, radar)."""
        n = len(tracks)
        rec = empty_track_records(n)
        if n == 0:
            return rec
        if labels is None:
            labels = _label_rows(tracks.status, TrackLabels.unknown(n))
        t_mono = tracks.t_mono
        if n == 1 or (t_mono == t_mono[0]).all():  # one frame's tracks: one conversion
            rec["time_us"] = clock.utc_us(float(t_mono[0]))
        else:
            t_unique, t_inv = np.unique(t_mono, return_inverse=True)
            rec["time_us"] = np.array([clock.utc_us(float(t)) for t in t_unique], dtype=np.int64)[t_inv]
        rec["track_id"] = tracks.track_id
        rec["status"] = tracks.status
        rec["category"] = labels["category"]
        rec["confidence"] = np.minimum(labels["confidence"], 100)
        rec["threat"] = labels["threat"]
        rec["sources"] = labels["sources"]
        rec["reserved"] = 0
        rec["hits"] = np.minimum(tracks.hits, HITS_MAX)
        rec["rf_freq_mhz"] = labels["rf_freq_mhz"]
        rec["rf_bw_mhz"] = labels["rf_bw_mhz"]
        rec["rf_power_dbm"] = labels["rf_power_dbm"]

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
