"""The labels of the radar tracks — RF link, category and confidence, static clutter,
threat — computed when a report needs them or when their inputs changed, not for every
track on every tracker call.

What must run on every tracker call is the state the labels are made from: the RF
fusion's association (it says which RF tracks travel with radar tracks, for the RF-only
reports too; cheap unless some RF track is a drone link), the features of the tracks a
detection updated (:class:`~towerd.tracking.features.FeatureTracker`) and the static
clutter filter's motion test and clutter map. What the labels themselves need is asked
for by the reporter, for the tracks whose status makes them reportable, through
:meth:`Labeller.labels`:

- the classification decision (:func:`~towerd.tracking.classify.decide`) of a track is
  kept until its inputs change: its features (a detection updated it) or its RF link,
  or the settings; a track of which nobody asks is never classified;
- static clutter: a track that has MOVED is never static; the others are static unless
  exempt (RF-linked, Doppler spread of rotors, confidently uas, or named by
  :attr:`Labeller.exempt_tracks`: Remote ID fusion's radar tracks paired with an airborne
  drone's broadcast), which needs the decision only for them. The exemption of the
  established tracks that have not moved is decided on every call, once for the
  clutter map (which learns from those a detection updated) and the reporter's labels;
- threat (:class:`~towerd.threat.ThreatAssessor`) for the tracks asked for.

The per-track state (decisions, features, the clutter filter's motion test) is kept in
the rows of the latest update's tracks; the ids are matched with the previous call's once
per call (:class:`~towerd.tracking.carry.RowCarry`) and every part re-aligns its rows by
that one gather.

The RF fusion's rule 2 needs the previous call's categories: they are handed over as a
callable, evaluated only when the fusion has a drone link to place (before anything of
the next call changes the features), so the answers are those of labelling every track
on every call (tests/test_reports_golden.py holds the same scenario's records byte for
byte).
"""

from __future__ import annotations

import logging
from typing import Callable, Protocol

import numpy as np

from towerd.icd import Category, Status
from towerd.threat import ThreatAssessor
from towerd.tracking.carry import RowCarry
from towerd.tracking.classify import CATEGORIES, Classification, ClassificationSettings, decide_matrix
from towerd.tracking.clutter import StaticClutterFilter
from towerd.tracking.features import COLUMN, FeatureTracker, feature_records
from towerd.tracking.labels import RfLink, TrackLabels
from towerd.tracking.state import TrackTable
from towerd.tracking.tracker import TrackUpdate

log = logging.getLogger(__name__)


class RfFusion(Protocol):
    """What labelling asks of RF fusion (``towerd.rf.fusion.RadarLinkFusion``): for the
    live radar tracks at ``t_mono``, which carry a drone link (and its frequency,
    bandwidth, power); and the tracks' categories for its next association (an array, or
    a callable giving it, to be called only when needed)."""

    def associate(self, tracks: TrackTable, t_mono: float) -> RfLink: ...

    def set_categories(self, track_ids: np.ndarray, categories: object) -> None: ...


class Labeller:
    """Labels of the radar tracks on demand; see the module docstring.

    Call :meth:`observe` with every :class:`~towerd.tracking.tracker.TrackUpdate`, then
    :meth:`labels` for the rows a report needs (any number of times until the next
    :meth:`observe`)."""

    def __init__(self, classification: ClassificationSettings, static_filter: StaticClutterFilter,
                 threat: ThreatAssessor, rf_fusion: RfFusion | None = None) -> None:
        self.features = FeatureTracker(classification)
        self.static_filter = static_filter
        self.threat = threat
        self.rf_fusion = rf_fusion
        self._tracks = TrackTable.empty()
        self._ids = self._tracks.track_id  # the ids of the rows of self._decision (RowCarry.ids)
        self._rf = RfLink.none(0)
        self._moved: np.ndarray | None = None  # (K,) the static filter's MOVED latch; None: filter off
        self._established = np.zeros(0, dtype=bool)  # (K,) confirmed or coasting: decided in observe()
        self._static = np.zeros(0, dtype=bool)  # (K,) established static clutter (not moved, not exempt)
        self._observed_exempt_ids: np.ndarray | None = None  # _exempt_ids() when _static was made
        # The decision per row of self._tracks (see _DECIDED...), valid where decided.
        self._decision = np.zeros((0, _WIDTH))
        self._dirty = True  # settings changed since the last observe()
        self.exempt_tracks: Callable[[], np.ndarray] | None = None
        """Track ids never static clutter whatever their motion, asked of another fusion
        (the pipeline hands Remote ID fusion's paired airborne tracks): a hovering drone
        that says where it is stays reported."""

    @property
    def settings(self) -> ClassificationSettings:
        return self.features.settings

    @property
    def track_count(self) -> int:
        """Rows of the latest update's tracks (what :meth:`labels` indexes)."""
        return len(self._tracks)

    def reconfigure(self, classification: ClassificationSettings, threat: ThreatAssessor) -> None:
        """New settings (the features, decisions' inputs and clutter state are kept); the
        next :meth:`observe` is a change whatever it brings."""
        self._dirty = True
        self._established = np.zeros(len(self._tracks), dtype=bool)  # labels() decides afresh
        if classification != self.features.settings:
            self._hand_over_categories()  # the fusion's pending categories, under the old settings
            self.features.settings = classification
            self._decision[:, _DECIDED] = 0.0
        self.threat = threat

    def observe(self, update: TrackUpdate) -> bool:
        """Fold one tracker call into the state the labels are made from. False when
        nothing a label or a report depends on changed since the previous call: the
        same live tracks (the tracker's ``expire`` changed nothing), nothing ended, and
        the same RF links; then no report can be due either (every reportable track was
        reported at that call, and its time has not moved)."""
        tr = update.tracks
        k = len(tr)
        rf = self.rf_fusion.associate(tr, update.t_mono) if self.rf_fusion is not None else RfLink.none(k)
        if tr is self._tracks and not self._dirty and len(update.ended) == 0 and _same_links(rf, self._rf):
            return False
        self._dirty = False
        carry = RowCarry(self._ids, tr.track_id)  # the ids matched once for the decisions, features and clutter
        self._carry_decisions(carry, rf)
        self._ids = carry.ids
        hit = self.features.update(update, carry)
        self._decision[hit, _DECIDED] = 0.0
        self._tracks, self._rf = tr, rf

        established = tr.rows_with_status(Status.CONFIRMED, Status.COASTING)
        self._decide(established.nonzero()[0])  # in one go what the reporter and the clutter map will ask
        self._established = established
        self._observed_exempt_ids = self._exempt_ids()
        self._moved = self.static_filter.observe(update, carry)
        if self._moved is not None:
            # Static clutter among the established tracks, decided once for the reporter's
            # labels() and the clutter map, which learns from those a detection updated.
            still = (established & ~self._moved).nonzero()[0]
            if len(still):
                still = still[~self._exempt(still, self._decision[still], self._observed_exempt_ids)]
            self._static = np.zeros(k, dtype=bool)
            self._static[still] = True
            self.static_filter.learn_rows(update, still[update.det_of_track[still] >= 0])
        if self.rf_fusion is not None:
            self.rf_fusion.set_categories(tr.track_id, self._categories_callable(tr))
        return True

    def labels(self, rows: np.ndarray) -> TrackLabels:
        """The labels of ``rows`` (indices into the latest update's tracks)."""
        rows = np.asarray(rows, dtype=np.intp)
        exempt_ids = self._exempt_ids()
        # The reporter's rows were decided, and their static clutter found, in observe().
        observed = exempt_ids is self._observed_exempt_ids and self._established[rows].all()
        if not observed:
            self._decide(rows)
        d = self._decision[rows]
        if self._moved is None:
            reportable = np.ones(len(rows), dtype=bool)
        elif observed:
            reportable = ~self._static[rows]
        else:
            reportable = self._moved[rows] | self._exempt(rows, d, exempt_ids)
        cc = d[:, _CATEGORY:_CONFIDENCE + 1].astype(np.uint8)
        if self.threat.zones:
            state = self._tracks.state[rows]
            threat = self.threat.assess(state[:, :3], state[:, 3:], cc[:, 0], cc[:, 1],
                                        hover_fraction=d[:, _HOVER], height_m=d[:, _HEIGHT]).threat
        else:  # no zone: the category's baseline, which needs no kinematics
            threat = self.threat.baseline_of(cc[:, 0])
        rf = RfLink.none(len(rows)) if self._rf.is_shared_none else self._rf.select(rows)
        return TrackLabels(cc[:, 0], cc[:, 1], threat, reportable, rf)

    def categories(self, rows: np.ndarray | None = None) -> np.ndarray:
        """uint8 ICD category of the live tracks ``rows`` (indices into the latest
        update's tracks; None: every live track, (K,)), deciding only the undecided ones
        (Remote ID fusion asks for the confirmed tracks a receiver could cover)."""
        if rows is None:
            rows = np.arange(len(self._tracks))
        self._decide(rows)
        return self._decision[rows, _CATEGORY].astype(np.uint8)

    def classification(self) -> Classification:
        """The decision for every live track (features included), for status and tests."""
        self._decide(np.arange(len(self._tracks)))
        d = self._decision
        return Classification(d[:, _CATEGORY].astype(np.uint8), d[:, _CONFIDENCE].astype(np.uint8),
                              d[:, _PROBABILITY:_FEATURES].copy(), feature_records(d[:, _FEATURES:]))

    # -- internals ------------------------------------------------------------------

    def _decide(self, rows: np.ndarray) -> None:
        """Decide the rows of ``rows`` whose inputs changed since their decision."""
        d = self._decision
        need = rows[d[rows, _DECIDED] == 0.0]
        if len(need):
            out = np.empty((len(need), _WIDTH))
            linked = 0.0 if self._rf.is_shared_none else self._rf.linked[need]
            c = decide_matrix(self.features.matrix(need, linked, out=out[:, _FEATURES:]), self.features.settings)
            out[:, _DECIDED] = 1.0
            out[:, _CATEGORY] = c.category
            out[:, _CONFIDENCE] = c.confidence
            out[:, _PROBABILITY:_FEATURES] = c.probability
            d[need] = out

    def _exempt_ids(self) -> np.ndarray:
        """:attr:`exempt_tracks`' ids now (an empty array when there is none to ask)."""
        return _NO_IDS if self.exempt_tracks is None else self.exempt_tracks()

    def _exempt(self, rows: np.ndarray, d: np.ndarray, ids: np.ndarray) -> np.ndarray:
        """(len(rows),) bool: never static clutter (see towerd.tracking.clutter); ``d``:
        the rows' decisions (decided); ``ids``: :meth:`_exempt_ids`."""
        ss = self.static_filter.settings
        exempt = (d[:, _DOPPLER_SPREAD] >= ss.exempt_doppler_spread_mps) | (
            (d[:, _CATEGORY] == _UAS) & (d[:, _CONFIDENCE] >= ss.exempt_uas_confidence))
        if not self._rf.is_shared_none:  # else no track is RF-linked
            exempt |= self._rf.linked[rows]
        if len(ids) and len(rows):  # a few paired drones: a comparison table beats np.isin's set-up
            exempt |= (self._tracks.track_id[rows][:, None] == ids[None, :]).any(axis=1)
        return exempt

    def _carry_decisions(self, carry: RowCarry, rf: RfLink) -> None:
        """Re-align the decisions with the update's tracks; a new track, or one whose RF
        link changed, is undecided."""
        self._decision = carry.gather(self._decision, _UNDECIDED)
        if not (rf.is_shared_none and self._rf.is_shared_none) and (rf.linked.any() or self._rf.linked.any()):
            # a decided row's rf_link feature is the link it was decided with
            self._decision[(self._decision[:, _RF_LINK] != 0) != rf.linked, _DECIDED] = 0.0

    def _categories_callable(self, tracks: TrackTable):
        """The categories of ``tracks`` as they are at the end of this call, computed
        only if the fusion asks (see the module docstring)."""
        def categories() -> np.ndarray:
            if self._tracks is not tracks:
                raise RuntimeError("categories asked for after the labeller moved on")
            return self.categories()
        return categories

    def _hand_over_categories(self) -> None:
        """Give the fusion its pending categories now, before the decision's settings change."""
        if self.rf_fusion is not None and len(self._tracks):
            self.rf_fusion.set_categories(self._tracks.track_id, self.categories())


# Columns of Labeller._decision: decided (1.0 or 0.0), category, confidence, the
# probability of each category, and the feature matrix row it was decided from.
_DECIDED, _CATEGORY, _CONFIDENCE, _PROBABILITY = 0, 1, 2, 3
_FEATURES = _PROBABILITY + len(CATEGORIES)
_WIDTH = _FEATURES + len(COLUMN)
_HOVER, _HEIGHT = _FEATURES + COLUMN["hover_fraction"], _FEATURES + COLUMN["height_m"]
_DOPPLER_SPREAD, _RF_LINK = _FEATURES + COLUMN["doppler_spread_mps"], _FEATURES + COLUMN["rf_link"]
_UAS = int(Category.UAS)
_UNDECIDED = np.zeros((1, _WIDTH))
_UNDECIDED.flags.writeable = False
_NO_IDS = np.zeros(0, dtype=np.uint32)
_NO_IDS.flags.writeable = False


def _same_links(a: RfLink, b: RfLink) -> bool:
    """Whether two RfLinks say the same of the same number of tracks."""
    if a is b:
        return True
    if len(a.linked) != len(b.linked):
        return False
    if not a.linked.any() and not b.linked.any():  # no link: the rest is NaN (RfLink)
        return True
    return (np.array_equal(a.linked, b.linked)
            and np.array_equal(a.freq_mhz, b.freq_mhz, equal_nan=True)
            and np.array_equal(a.bw_mhz, b.bw_mhz, equal_nan=True)
            and np.array_equal(a.power_dbm, b.power_dbm, equal_nan=True))
