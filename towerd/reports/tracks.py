"""Track reports: tracker output -> ICD v1 TRACKS records (80 bytes each).

The reporter decides which tracks are due and fills the records; ``seq`` is left 0 for
the outbox to assign. It is the only place where track time becomes UTC.
"""

from __future__ import annotations

import logging
import math
from typing import Callable

import numpy as np

from towerd import geo
from towerd.clock import Clock
from towerd.icd import SOURCE_RADAR, TRACK_RECORD_DTYPE, Status, empty_track_records
from towerd.tracking.labels import TrackLabels
from towerd.tracking.state import POS, VEL, TrackTable
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


def _due_label_rows(status: np.ndarray, labels: TrackLabels, due: list[int]) -> np.ndarray:
    """:func:`_label_rows` of the rows ``due`` alone, from Python lists (the few due rows
    of a frame: cheaper than filling every row's fields)."""
    st, cat, conf, thr = status.tolist(), labels.category.tolist(), labels.confidence.tolist(), labels.threat.tolist()
    rf = labels.rf
    if rf.is_shared_none:  # no RF link: radar only, NaN RF fields
        rows = [(st[i], cat[i], conf[i], thr[i], SOURCE_RADAR, _NAN, _NAN, _NAN) for i in due]
    else:
        src, freq, bw, power = labels.sources.tolist(), rf.freq_mhz.tolist(), rf.bw_mhz.tolist(), rf.power_dbm.tolist()
        rows = [(st[i], cat[i], conf[i], thr[i], src[i], freq[i], bw[i], power[i]) for i in due]
    return np.array(rows, dtype=_LAST_DTYPE)


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

    State kept: for each reported live track, keyed by id, its last report time, status,
    category and threat and the labels of its last report, pruned to the live tracks on
    every call so it cannot grow without bound. The policy runs in plain Python: for the
    few dozen tracks of a tower, cheaper than the ~40 NumPy calls of a vectorised one.
    """

    def __init__(self, site: geo.Site, *, interval_s: float = 1.0, include_tentative: bool = False) -> None:
        self.site = site
        self.interval_s = float(interval_s)
        self.include_tentative = bool(include_tentative)
        self._last: dict[int, tuple[float, tuple]] = {}
        """Reported live tracks: id -> (track t_mono of its last report, that report's labels
        as a _LAST_DTYPE row tuple: status, category, confidence, threat, sources, rf...)."""

    @property
    def reported_count(self) -> int:
        """Live tracks reported so far (they are reported until they end)."""
        return len(self._last)

    def build(
        self, update: TrackUpdate, clock: Clock, labels: TrackLabels | Callable[[np.ndarray], TrackLabels] | None = None
    ) -> np.ndarray:
        """Records (icd.TRACK_RECORD_DTYPE) due after ``update``: live tracks first, then the
        ENDED records. ``clock`` converts track monotonic times to UTC; ``labels`` fill
        category, confidence, threat, sources and the RF fields: aligned with
        ``update.tracks``, or a callable giving the labels of the rows (indices into
        ``update.tracks``) it is asked for — only the tracks whose status makes them
        reportable are asked for, once per call; None: unknown, no threat, all reportable.

        Runs once per tracker call, so it is written for few NumPy calls: the policy in
        Python, the records filled from the due rows' arrays (no TrackTable copies)."""
        live = update.tracks
        st = live.status
        ok = (st == _CONFIRMED) | (st == _COASTING)
        if self.include_tentative:
            ok |= st == _TENTATIVE
        rows = ok.nonzero()[0]  # flatnonzero's ravel, without its Python wrapper
        if labels is None:
            lab = TrackLabels.unknown(len(rows))
        elif callable(labels):
            lab = labels(rows)
        else:
            lab = labels.select(rows)
        status = st[rows]

        # Due: never reported and reportable; or reported and its status, category or
        # threat changed, or interval_s passed since its last report.
        old = self._last
        new: dict[int, tuple[float, tuple]] = {}
        due: list[int] = []
        limit = self.interval_s - TIME_EPS_S
        ids = live.track_id[rows].tolist()
        t_mono = live.t_mono[rows].tolist()
        if old:  # compared as stored: the u1 values of the label rows
            status_l, category, threat = status.tolist(), lab.category.tolist(), lab.threat.tolist()
        reportable = lab.reportable.tolist()
        for i, tid in enumerate(ids):
            prev = old.get(tid)
            if prev is None:
                if reportable[i]:
                    due.append(i)
            else:
                t_last, (p_status, p_category, _, p_threat, *_) = prev
                if (status_l[i] != p_status or category[i] != p_category or threat[i] != p_threat
                        or t_mono[i] - t_last >= limit):
                    due.append(i)
                else:
                    new[tid] = prev  # once reported, reported until it ends
        label_rows = _due_label_rows(status, lab, due)
        for i, row in zip(due, label_rows.tolist()):
            new[ids[i]] = (t_mono[i], row)
        self._last = new

        ended = update.ended
        ended_idx: list[int] = []
        if len(ended) and old:
            ended_idx = [j for j, tid in enumerate(ended.track_id.tolist()) if tid in old]

        if not due and not ended_idx:
            return empty_track_records(0)
        src = rows[due]
        parts = (live.track_id[src], live.status[src], live.t_mono[src], live.hits[src], live.state[src],
                 live.cov[src])
        if ended_idx:
            ended_labels = np.array([old[tid][1] for tid in ended.track_id[ended_idx].tolist()], dtype=_LAST_DTYPE)
            label_rows = np.concatenate([label_rows, ended_labels])
            parts = tuple(np.concatenate([a, b]) for a, b in zip(parts, (
                ended.track_id[ended_idx], ended.status[ended_idx], ended.t_mono[ended_idx],
                ended.hits[ended_idx], ended.state[ended_idx], ended.cov[ended_idx])))
        records = self._records(*parts, clock, label_rows)
        if log.isEnabledFor(logging.DEBUG):
            log.debug("%d track records (%d ended)", len(records), len(ended_idx))
        return records
    def records(self, tracks: TrackTable, clock: Clock, labels: np.ndarray | None = None) -> np.ndarray:
        """ICD records for ``tracks`` as they are (no policy); seq 0. ``labels``: rows of
        _LAST_DTYPE aligned with ``tracks`` (None: unknown category, no threat, radar)."""
        n = len(tracks)
        if n == 0:
            return empty_track_records(0)
        if labels is None:
            labels = _label_rows(tracks.status, TrackLabels.unknown(n))
        return self._records(tracks.track_id, tracks.status, tracks.t_mono, tracks.hits, tracks.state, tracks.cov,
                             clock, labels)

    def _records(self, track_id: np.ndarray, status: np.ndarray, t_mono: np.ndarray, hits: np.ndarray,
                 state: np.ndarray, cov: np.ndarray, clock: Clock, labels: np.ndarray) -> np.ndarray:
        """:meth:`records` from the tracks' arrays (N,), (N, 6) state, (N, 6, 6) cov."""
        n = len(track_id)
        few = self._few_geometry(state[:, POS]) if n <= _FEW else None
        if few is not None:
            return _few_records(track_id, status, t_mono, hits, state, cov, clock, labels, few)
        rec = _UNKNOWN_RECORD.repeat(n)  # the bytes of empty_track_records(n)
        if n == 1 or (t_mono == t_mono[0]).all():  # one frame's tracks: one conversion
            rec["time_us"] = clock.utc_us(float(t_mono[0]))
        else:
            t_unique, t_inv = np.unique(t_mono, return_inverse=True)
            rec["time_us"] = np.array([clock.utc_us(float(t)) for t in t_unique], dtype=np.int64)[t_inv]
        rec["track_id"] = track_id
        rec["status"] = status
        rec["category"] = labels["category"]
        rec["confidence"] = np.minimum(labels["confidence"], 100)
        rec["threat"] = labels["threat"]
        rec["sources"] = labels["sources"]
        rec["hits"] = np.minimum(hits, HITS_MAX)
        rec["rf_freq_mhz"] = labels["rf_freq_mhz"]
        rec["rf_bw_mhz"] = labels["rf_bw_mhz"]
        rec["rf_power_dbm"] = labels["rf_power_dbm"]

        pos = state[:, POS]
        if np.isfinite(pos).all():
            lat, lon, h = geo.enu_to_geodetic(self.site, pos)
            rec["lat_e7"] = np.round(lat * 1e7).astype(np.int32)
            rec["lon_e7"] = np.round(lon * 1e7).astype(np.int32)
            rec["alt_m"] = h
        else:
            finite = np.isfinite(pos).all(axis=1)
            log.warning("%d tracks with a non-finite position reported without one", np.count_nonzero(~finite))
            lat, lon, h = geo.enu_to_geodetic(self.site, pos[finite])
            rec["lat_e7"][finite] = np.round(lat * 1e7).astype(np.int32)
            rec["lon_e7"][finite] = np.round(lon * 1e7).astype(np.int32)
            rec["alt_m"][finite] = h
        rng, az, el = geo.cartesian_to_spherical(pos)  # x east, y north: azimuth from true north
        rec["range_m"] = rng
        # [0, 360) must hold after rounding to f32 too (359.999999999 -> 360.0f -> 0).
        rec["azimuth_deg"] = np.mod(az, 360.0).astype(np.float32) % np.float32(360.0)
        rec["elevation_deg"] = el
        vel = state[:, VEL]
        rec["vel_east_mps"] = vel[:, 0]
        rec["vel_north_mps"] = vel[:, 1]
        rec["vel_up_mps"] = vel[:, 2]
        # One-sigma horizontal: sqrt of the mean of the east and north variances.
        rec["pos_sigma_m"] = np.sqrt(0.5 * (cov[:, 0, 0] + cov[:, 1, 1]))
        return rec

    def _few_geometry(self, pos: np.ndarray) -> list[tuple] | None:
        """Per track (N, 3 ENU positions): lat_e7, lon_e7, alt_m, range_m,
        azimuth_deg and elevation_deg as Python numbers (:func:`geo.enu_to_report_geometry`: the
        same bits as the arrays' path); None when a point needs that path."""
        out = []
        for east, north, up in pos.tolist():
            g = geo.enu_to_report_geometry(self.site, east, north, up) if math.isfinite(east + north + up) else None
            if g is None:
                return None
            lat, lon, h, rng, az, el = g
            out.append((round(lat * 1e7), round(lon * 1e7), h, rng, az % 360.0, el))  # round: half to even, as np.round
        return out


_FEW = 8
"""Up to this many records, their geometry is computed in plain Python (a tower's usual
report: a few tracks due per frame)."""


def _few_records(track_id: np.ndarray, status: np.ndarray, t_mono: np.ndarray, hits: np.ndarray, state: np.ndarray,
                 cov: np.ndarray, clock: Clock, labels: np.ndarray, geometry: list[tuple]) -> np.ndarray:
    """TrackReporter._records of a few tracks with their ``geometry``
    (TrackReporter._few_geometry): the same values as Python numbers, one tuple per
    record, cast to the record's types by one np.array call."""
    utc: dict[float, int] = {}
    rows = []
    for tid, st, t, h, x, (c_ee, c_nn), lab, (lat, lon, alt, rng, az, el) in zip(
            track_id.tolist(), status.tolist(), t_mono.tolist(), hits.tolist(), state.tolist(),
            cov[:, (0, 1), (0, 1)].tolist(), labels.tolist(), geometry):
        time_us = utc.get(t)
        if time_us is None:
            time_us = utc[t] = clock.utc_us(t)
        _, category, confidence, threat, sources, freq, bw, power = lab
        rows.append((0, time_us, tid, st, category, min(confidence, 100), threat, sources, 0, min(h, HITS_MAX),
                     lat, lon, alt, rng, az, el, x[3], x[4], x[5], math.sqrt(0.5 * (c_ee + c_nn)), freq, bw, power))
    rec = np.array(rows, dtype=TRACK_RECORD_DTYPE)
    rec["azimuth_deg"] %= np.float32(360.0)  # [0, 360) after rounding to f32 too, as _records
    return rec


_NAN = float("nan")
_CONFIRMED, _COASTING, _TENTATIVE = int(Status.CONFIRMED), int(Status.COASTING), int(Status.TENTATIVE)
_UNKNOWN_RECORD = empty_track_records(1)
