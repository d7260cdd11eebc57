"""RF tracks with radar tracks: association by timing, RF-only reports.

An RF Explorer gives no bearing, so an RF emitter can only be tied to a radar track by
*when* both exist. Two rules, both conservative (a wrong association puts one drone's
link on another object's report; a missed one only leaves an RF-only track):

1. **Timing** (``rule`` 1). Lifetimes: a radar track from ``t_created`` to
   ``t_last_update``, an RF track from ``first_seen_mono`` to ``last_seen_mono``. Their
   Jaccard index J = overlap / union is near 1 when the two appeared (and, if ended,
   disappeared) together - a drone taking off, coming into range or landing. An RF
   drone link f is associated with the radar track r of highest J when J ≥
   ``min_jaccard``, the overlap is at least ``min_overlap_s``, and every other eligible
   radar track has J below J(r) − ``ambiguity_margin`` (otherwise: none - two tracks
   born together cannot be told apart by timing).
2. **Sole candidate** (``rule`` 2, with ``sole_candidate``). When radar categories are
   given, exactly one eligible radar track is ``uas``, exactly one eligible RF track is a
   drone link, that link is not already associated, and they have overlapped for
   ``min_overlap_s``: they are associated. (One drone seen by both sensors; with two
   links or two uas tracks, nothing.)

Eligible: radar tracks CONFIRMED, COASTING or ENDED (so a final record can carry the
link) whose category, when given, is uas or unknown; RF tracks CONFIRMED or COASTING
classed as drone links. An RF track goes to at most one radar track; a radar track may
explain several (video and control link of one drone); its record carries the strongest
(``power_dbm``). Associated RF tracks are not reported on their own.

RF-only records (:func:`rf_track_records`): ``sources`` RF, category uas for a drone
link with the classifier's confidence, every position and velocity field unknown (ICD
v1: "A track seen by RF alone (no bearing) has unknown position fields").
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Callable

import numpy as np

from towerd.clock import Clock
from towerd.icd import SOURCE_RF, Category, Status, Threat, empty_track_records
from towerd.rf.classify import is_drone_link
from towerd.rf.tracks import TrackIds
from towerd.rows import join_rows
from towerd.schema import spec
from towerd.tracking.labels import RfLink
from towerd.tracking.state import TrackTable

log = logging.getLogger(__name__)

HITS_MAX = 65535
RULE_NONE = 0
RULE_TIMING = 1
RULE_SOLE_CANDIDATE = 2
_NOT_UAS = np.array(
    [Category.BIRD, Category.GROUND_VEHICLE, Category.MANNED_AIRCRAFT, Category.PERSON], dtype=np.uint8
)


@dataclass(frozen=True)
class FusionSettings:
    """Radar/RF association by timing (see :mod:`towerd.rf.fusion`)."""

    min_overlap_s: float = spec(10.0, doc="both tracks alive together at least this long", unit="s", lo=0.0, hi=3600.0)
    min_jaccard: float = spec(0.8, doc="overlap / union of the two lifetimes, at least", lo=0.0, hi=1.0)
    ambiguity_margin: float = spec(
        0.1, doc="the best radar track's Jaccard must beat every other's by this much", lo=0.0, hi=1.0
    )
    sole_candidate: bool = spec(True, doc="one uas radar track and one drone link are associated (needs categories)")


@dataclass(frozen=True)
class RfReportSettings:
    """Which RF-only tracks are reported, and how often."""

    interval_s: float = spec(1.0, doc="report period of an RF-only track", unit="s", lo=0.05, hi=3600.0)
    include_tentative: bool = spec(False, doc="report tentative RF tracks too")
    non_drone: bool = spec(False, doc="report emitters not classed as drone links (Wi-Fi, carriers, unknown)")


@dataclass(frozen=True, eq=False)
class FusionResult:
    """Radar/RF association for one moment.

    Per radar track given (R rows, same order): radar_track_id (R,) u4; rf_track_id (R,)
    u4, 0 when none; rf_freq_mhz, rf_bw_mhz, rf_power_dbm (R,) f8, NaN when none (the
    strongest associated link); rf_kind (R,) u1 LinkKind; rf_confidence (R,) u1; rule (R,)
    u1: RULE_NONE / RULE_TIMING / RULE_SOLE_CANDIDATE.
    associated_rf_ids (A,) u4: every RF track associated with some radar track (sorted);
    rf_only: the given RF tracks not associated (RF_TRACK_DTYPE).
    """

    radar_track_id: np.ndarray
    rf_track_id: np.ndarray
    rf_freq_mhz: np.ndarray
    rf_bw_mhz: np.ndarray
    rf_power_dbm: np.ndarray
    rf_kind: np.ndarray
    rf_confidence: np.ndarray
    rule: np.ndarray
    associated_rf_ids: np.ndarray
    rf_only: np.ndarray


def lifetime_jaccard(
    start_a: np.ndarray, end_a: np.ndarray, start_b: np.ndarray, end_b: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """(Jaccard (A, B), overlap seconds (A, B)) of intervals [start_a, end_a] (A,) and
    [start_b, end_b] (B,)."""
    sa, ea = np.asarray(start_a, float)[:, None], np.asarray(end_a, float)[:, None]
    sb, eb = np.asarray(start_b, float)[None, :], np.asarray(end_b, float)[None, :]
    overlap = np.maximum(0.0, np.minimum(ea, eb) - np.maximum(sa, sb))
    union = np.maximum(ea, eb) - np.minimum(sa, sb)
    with np.errstate(invalid="ignore", divide="ignore"):
        j = np.where(union > 0, overlap / union, 0.0)
    return j, overlap


def _unassociated(radar: TrackTable, rf_tracks: np.ndarray) -> FusionResult:
    """The result when no RF track is associated with any radar track."""
    nr = len(radar)
    nan = np.full(nr, np.nan)
    zero = np.zeros(nr, dtype=np.uint8)
    return FusionResult(
        radar_track_id=radar.track_id.astype(np.uint32), rf_track_id=np.zeros(nr, dtype=np.uint32),
        rf_freq_mhz=nan, rf_bw_mhz=nan.copy(), rf_power_dbm=nan.copy(), rf_kind=zero, rf_confidence=zero.copy(),
        rule=zero.copy(), associated_rf_ids=np.zeros(0, dtype=np.uint32), rf_only=rf_tracks,
    )


def _drone_links(rf_tracks: np.ndarray) -> np.ndarray | None:
    """(F,) bool: the RF tracks that can be associated (CONFIRMED or COASTING drone
    links); None when there is none (the usual case: then nothing is associated)."""
    if rf_tracks.shape[0] == 0:
        return None
    status = rf_tracks["status"]
    f_ok = ((status == int(Status.CONFIRMED)) | (status == int(Status.COASTING))) & is_drone_link(rf_tracks["kind"])
    return f_ok if f_ok.any() else None


def associate(
    radar: TrackTable,
    rf_tracks: np.ndarray,
    settings: FusionSettings,
    *,
    radar_category: np.ndarray | Callable[[], np.ndarray] | None = None,
) -> FusionResult:
    """Associate ``rf_tracks`` (RF_TRACK_DTYPE, e.g. ``RfProcessor.tracks``) with the
    radar tracks ``radar`` by the rules of the module docstring. ``radar_category`` (R,)
    u1 ICD categories of the radar tracks, or a callable giving them (called only when
    some RF track is a drone link, the only case they are needed), or None when not
    known (then rule 2 is off and no radar track is excluded by category)."""
    s = settings
    nr, nf = len(radar), rf_tracks.shape[0]
    f_ok = _drone_links(rf_tracks)
    if f_ok is None:  # no drone link: nothing to associate (the categories are not needed)
        return _unassociated(radar, rf_tracks)
    if callable(radar_category):
        radar_category = radar_category()
    rf_of = np.full(nr, -1, dtype=np.intp)  # primary RF row per radar track
    rule = np.zeros(nr, dtype=np.uint8)
    assoc_radar = np.full(nf, -1, dtype=np.intp)  # radar row per RF row
    assoc_rule = np.zeros(nf, dtype=np.uint8)

    r_ok = radar.rows_with_status(Status.CONFIRMED, Status.COASTING, Status.ENDED)
    if radar_category is not None:
        cat = np.asarray(radar_category, dtype=np.uint8)
        if cat.shape != (nr,):
            raise ValueError(f"radar_category has shape {cat.shape}, expected ({nr},)")
        r_ok &= ~np.isin(cat, _NOT_UAS)
    r_idx, f_idx = np.flatnonzero(r_ok), np.flatnonzero(f_ok)

    if r_idx.size and f_idx.size:
        j, overlap = lifetime_jaccard(
            radar.t_created[r_idx], radar.t_last_update[r_idx],
            rf_tracks["first_seen_mono"][f_idx], rf_tracks["last_seen_mono"][f_idx],
        )
        best = np.argmax(j, axis=0)  # per RF track
        cols = np.arange(f_idx.size)
        j_best = j[best, cols]
        j_second = np.partition(j, -2, axis=0)[-2] if r_idx.size > 1 else np.zeros(f_idx.size)
        ok = (j_best >= s.min_jaccard) & (overlap[best, cols] >= s.min_overlap_s) & (
            j_second < j_best - s.ambiguity_margin
        )
        assoc_radar[f_idx[ok]] = r_idx[best[ok]]
        assoc_rule[f_idx[ok]] = RULE_TIMING

    if s.sole_candidate and radar_category is not None:
        uas = np.flatnonzero(r_ok & (np.asarray(radar_category) == int(Category.UAS)))
        if uas.size == 1 and f_idx.size == 1 and assoc_radar[f_idx[0]] < 0:
            r, f = int(uas[0]), int(f_idx[0])
            _, overlap = lifetime_jaccard(
                radar.t_created[[r]], radar.t_last_update[[r]],
                rf_tracks["first_seen_mono"][[f]], rf_tracks["last_seen_mono"][[f]],
            )
            if overlap[0, 0] >= s.min_overlap_s:
                assoc_radar[f] = r
                assoc_rule[f] = RULE_SOLE_CANDIDATE

    # Primary (strongest) link per radar track: sort the links by (radar row, power) and
    # take the last of each radar row.
    linked = np.flatnonzero(assoc_radar >= 0)
    if linked.size:
        order = linked[np.lexsort((rf_tracks["power_dbm"][linked], assoc_radar[linked]))]
        rows = assoc_radar[order]
        last = np.append(rows[1:] != rows[:-1], True)
        rf_of[rows[last]] = order[last]
        rule[rows[last]] = assoc_rule[order[last]]

    has = rf_of >= 0
    sel = rf_tracks[np.where(has, rf_of, 0)] if nf else np.zeros(nr, dtype=rf_tracks.dtype)
    result = FusionResult(
        radar_track_id=radar.track_id.astype(np.uint32),
        rf_track_id=np.where(has, sel["rf_track_id"], 0).astype(np.uint32),
        rf_freq_mhz=np.where(has, sel["centre_mhz"], np.nan),
        rf_bw_mhz=np.where(has, sel["bandwidth_mhz"], np.nan),
        rf_power_dbm=np.where(has, sel["power_dbm"], np.nan),
        rf_kind=np.where(has, sel["kind"], 0).astype(np.uint8),
        rf_confidence=np.where(has, sel["confidence"], 0).astype(np.uint8),
        rule=rule,
        associated_rf_ids=np.sort(rf_tracks["rf_track_id"][linked]).astype(np.uint32),
        rf_only=rf_tracks[assoc_radar < 0],
    )
    if linked.size:
        pairs = [
            (int(radar.track_id[assoc_radar[i]]), int(rf_tracks["rf_track_id"][i]), int(assoc_rule[i])) for i in linked
        ]
        log.debug("RF/radar associations (radar id, RF id, rule): %s", pairs)
    return result


class RadarLinkFusion:
    """The RF side as the radar pipeline asks for it (``towerd.pipeline.RfFusion``): which
    of the live radar tracks carry a drone link, as a :class:`towerd.tracking.labels.RfLink`.

    ``rf_tracks``: a callable returning the current RF tracks (``lambda: rf.tracks`` for an
    :class:`~towerd.rf.processor.RfProcessor`). The pipeline classifies after it
    associates, so the categories the sole-candidate rule needs are the previous call's:
    hand them over with :meth:`set_categories` after labelling (until then, and for
    tracks it has not been told about, rule 2 is off / the track counts as unknown).
    :attr:`last` keeps the latest :class:`FusionResult`, whose ``associated_rf_ids`` tell
    the RF-only reporter which links travel with radar tracks.
    """

    def __init__(self, rf_tracks: Callable[[], np.ndarray], settings: FusionSettings = FusionSettings()) -> None:
        self._rf_tracks = rf_tracks
        self.settings = settings
        self._cat_ids = np.zeros(0, dtype=np.uint32)  # sorted radar track ids
        self._cats = np.zeros(0, dtype=np.uint8)
        self._told = False
        self._last: FusionResult | tuple[TrackTable, np.ndarray] | None = None

    @property
    def last(self) -> FusionResult | None:
        """The latest :class:`FusionResult` (None before the first call); made on access
        when that call found no drone link to associate."""
        if isinstance(self._last, tuple):
            self._last = _unassociated(*self._last)
        return self._last

    @property
    def associated_rf_ids(self) -> np.ndarray:
        """RF track ids associated with a radar track at the latest call (sorted u4)."""
        return self._last.associated_rf_ids if isinstance(self._last, FusionResult) else _NO_IDS

    def set_categories(self, track_ids: np.ndarray, categories: np.ndarray | Callable[[], np.ndarray]) -> None:
        """The radar tracks' ICD categories (both (K,)), for the next association.
        ``categories`` may be a callable giving them: it is called at most once, at the
        start of the next :meth:`associate` that needs categories (some RF track is a
        drone link) and before anything else, so its caller must give then the
        categories as they are now (:class:`towerd.labeller.Labeller` does)."""
        self._cat_ids = np.asarray(track_ids, dtype=np.uint32)
        self._cats = categories
        self._told = True

    def _categories_for(self, tracks: TrackTable) -> np.ndarray:
        """The categories told last, looked up for ``tracks`` (UNKNOWN when not told)."""
        if callable(self._cats):
            self._cats = np.asarray(self._cats(), dtype=np.uint8)
        ids, told = self._cat_ids, np.asarray(self._cats, dtype=np.uint8)
        order = np.argsort(ids, kind="stable")
        ids, told = ids[order], told[order]
        cats = np.full(len(tracks), Category.UNKNOWN, dtype=np.uint8)
        if ids.size:
            pos = np.minimum(np.searchsorted(ids, tracks.track_id), ids.size - 1)
            known = ids[pos] == tracks.track_id
            cats[known] = told[pos[known]]
        return cats

    def associate(self, tracks: TrackTable, t_mono: float) -> RfLink:
        """The RF link of each radar track of ``tracks`` (rules of this module)."""
        rf_tracks = self._rf_tracks()
        if _drone_links(rf_tracks) is None:  # most calls: no link to place, the same answer for any K tracks
            self._last = (tracks, rf_tracks)
            return RfLink.none(len(tracks))
        cats = (lambda: self._categories_for(tracks)) if self._told else None
        self._last = res = associate(tracks, rf_tracks, self.settings, radar_category=cats)
        return RfLink(
            linked=res.rf_track_id != 0,
            freq_mhz=res.rf_freq_mhz,
            bw_mhz=res.rf_bw_mhz,
            power_dbm=res.rf_power_dbm,
        )


def annotate_radar_records(records: np.ndarray, fusion: FusionResult) -> np.ndarray:
    """Set ``sources`` bit 1 (RF) and the rf_* fields on the TRACK_RECORD_DTYPE
    ``records`` (in place, and returned) whose track_id has an associated RF link in
    ``fusion``. Records of other tracks are left as they are."""
    if records.shape[0] == 0 or fusion.radar_track_id.shape[0] == 0:
        return records
    linked = fusion.rf_track_id != 0
    ids = fusion.radar_track_id[linked]
    if ids.size == 0:
        return records
    order = np.argsort(ids)
    ids = ids[order]
    pos = np.minimum(np.searchsorted(ids, records["track_id"]), ids.size - 1)
    hit = ids[pos] == records["track_id"]
    src = np.flatnonzero(linked)[order][pos[hit]]
    records["sources"][hit] |= SOURCE_RF
    records["rf_freq_mhz"][hit] = fusion.rf_freq_mhz[src]
    records["rf_bw_mhz"][hit] = fusion.rf_bw_mhz[src]
    records["rf_power_dbm"][hit] = fusion.rf_power_dbm[src]
    return records


def rf_track_records(tracks: np.ndarray, clock: Clock) -> np.ndarray:
    """ICD records (TRACK_RECORD_DTYPE, seq 0) for RF tracks as they are (no policy):
    sources RF, category/confidence from the classifier, threat none, position fields
    unknown, rf_* from the track. time_us: the track's ``t_mono`` in UTC."""
    n = tracks.shape[0]
    rec = empty_track_records(n)
    if n == 0:
        return rec
    t_unique, t_inv = np.unique(tracks["t_mono"], return_inverse=True)
    rec["time_us"] = np.array([clock.utc_us(float(t)) for t in t_unique], dtype=np.int64)[t_inv]
    rec["track_id"] = tracks["rf_track_id"]
    rec["status"] = tracks["status"]
    drone = is_drone_link(tracks["kind"])
    rec["category"] = np.where(drone, int(Category.UAS), int(Category.UNKNOWN))
    rec["confidence"] = np.where(drone, tracks["confidence"], 0)
    rec["threat"] = Threat.NONE
    rec["sources"] = SOURCE_RF
    rec["reserved"] = 0
    rec["hits"] = np.minimum(tracks["hits"], HITS_MAX)
    rec["rf_freq_mhz"] = tracks["centre_mhz"]
    rec["rf_bw_mhz"] = tracks["bandwidth_mhz"]
    rec["rf_power_dbm"] = tracks["power_dbm"]
    return rec


class RfTrackReporter:
    """Builds the RF-only TRACKS records due after each RF (or fusion) update.

    Policy: an RF-only track (not associated with a radar track) is first reported when
    CONFIRMED or COASTING (TENTATIVE too with ``include_tentative``) and classed as a drone
    link (any class with ``non_drone``); once reported it is reported while live, when
    its status or category changes and every ``interval_s``. It gets one final ENDED
    record when it ends, or when a radar track takes it over (its link then travels in
    the radar track's records). ENDED is the last record of a report id, so a link that
    becomes RF-only again later (the radar lost the drone, the link goes on) is reported
    under a fresh id from ``ids`` (the processor's :class:`~towerd.rf.tracks.TrackIds`,
    so it is never reused); without ``ids`` it is not reported again. State is pruned to
    the live tracks on every call.
    """

    def __init__(self, settings: RfReportSettings = RfReportSettings(), ids: TrackIds | None = None) -> None:
        self.settings = settings
        self.ids = ids
        self._alias: dict[int, int] = {}  # RF track id -> the id it is reported under, when not its own
        self._last: dict[int, tuple[float, int, int]] = {}  # report id -> (t, status, category) last reported
        self._retired: set[int] = set()  # RF track ids whose report id got its ENDED record

    def build(
        self, tracks: np.ndarray, ended: np.ndarray, associated_rf_ids: np.ndarray, clock: Clock
    ) -> np.ndarray:
        """Records due now. ``tracks``: live RF tracks; ``ended``: RF tracks ended since the
        last call; ``associated_rf_ids``: ids taken over by radar tracks
        (``FusionResult.associated_rf_ids``, or empty)."""
        s = self.settings
        n = tracks.shape[0]
        if n == 0 and len(ended) == 0:  # nothing live, nothing ended: no record, no state
            self._retired.clear()
            self._alias.clear()
            self._last.clear()
            return _NO_RECORDS
        # The policy in plain Python over the few RF tracks: cheaper than NumPy calls on tiny arrays.
        ids = tracks["rf_track_id"].tolist()
        status = tracks["status"].tolist()
        t_mono = tracks["t_mono"].tolist()
        drone = is_drone_link(tracks["kind"]).tolist()
        associated = set(np.asarray(associated_rf_ids).tolist())
        live_ok_status = _LIVE_WITH_TENTATIVE if s.include_tentative else _LIVE
        limit = s.interval_s - 1e-6
        uas, unknown = int(Category.UAS), int(Category.UNKNOWN)

        due: list[int] = []
        final: list[int] = []
        report_id = [0] * n
        for i, tid in enumerate(ids):
            live_ok = status[i] in live_ok_status
            first_ok = live_ok and (s.non_drone or drone[i])
            is_associated = tid in associated
            if tid in self._retired and not is_associated and self.ids is not None and first_ok:
                self._alias[tid] = int(self.ids.take(1)[0])  # RF-only again: a new report id
                self._retired.discard(tid)
            rid = report_id[i] = self._alias.get(tid, tid)
            if tid in self._retired:
                continue
            last = self._last.get(rid)
            if is_associated:
                if last is not None:  # taken over: its report id ends here
                    final.append(i)
                    self._retired.add(tid)
                    del self._last[rid]
                continue
            category = uas if drone[i] else unknown
            if last is None:
                is_due = first_ok
            else:
                t_last, st_last, cat_last = last
                is_due = live_ok and (status[i] != st_last or category != cat_last or t_mono[i] - t_last >= limit)
            if is_due:
                due.append(i)
                self._last[rid] = (t_mono[i], status[i], category)

        ended_ids = ended["rf_track_id"].tolist()
        ended_rid = [self._alias.get(t, t) for t in ended_ids]
        ended_rep = [j for j, (r, t) in enumerate(zip(ended_rid, ended_ids)) if r in self._last and t not in self._retired]

        live = set(ids)
        self._retired &= live
        if self._alias:
            self._alias = {k: v for k, v in self._alias.items() if k in live}
        live_rids = {self._alias.get(k, k) for k in live}
        if not live_rids.issuperset(self._last):
            self._last = {k: v for k, v in self._last.items() if k in live_rids}

        if not due and not final and not ended_rep:  # most calls
            return _NO_RECORDS
        parts = []
        if due:
            parts.append((tracks[due], [report_id[i] for i in due]))
        if final:
            finals = tracks[final].copy()
            finals["status"] = Status.ENDED
            parts.append((finals, [report_id[i] for i in final]))
        if ended_rep:
            parts.append((ended[ended_rep], [ended_rid[j] for j in ended_rep]))
        return join_rows([_with_ids(rf_track_records(t, clock), rid) for t, rid in parts])


_NO_RECORDS = empty_track_records(0)  # the empty answer, shared (it has no row to write into)
_LIVE = frozenset((int(Status.CONFIRMED), int(Status.COASTING)))
_LIVE_WITH_TENTATIVE = _LIVE | {int(Status.TENTATIVE)}
_NO_IDS = np.zeros(0, dtype=np.uint32)
_NO_IDS.flags.writeable = False


def _with_ids(records: np.ndarray, report_ids: list[int]) -> np.ndarray:
    records["track_id"] = report_ids
    return records
