"""What is said about each track besides its kinematics: the RF link found by fusion, and
the labels a report carries (category, confidence, threat, sources, RF emitter).

Both are parallel arrays aligned with the rows of one TrackUpdate's ``tracks``, so they
travel with the tracker's output without a per-track object.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

from towerd.icd import SOURCE_RADAR, SOURCE_RF, Category, Threat

log = logging.getLogger(__name__)


@dataclass(frozen=True, eq=False)
class RfLink:
    """RF fusion's answer for K radar tracks: ``linked`` (K,) bool — an RF emitter that
    looks like a drone link is associated with the track; its ``freq_mhz``, ``bw_mhz``
    (occupied bandwidth) and ``power_dbm`` (K,) f8, NaN where not linked."""

    linked: np.ndarray
    freq_mhz: np.ndarray
    bw_mhz: np.ndarray
    power_dbm: np.ndarray

    def __post_init__(self) -> None:
        k = len(self.linked)
        for name in ("freq_mhz", "bw_mhz", "power_dbm"):
            if getattr(self, name).shape != (k,):
                raise ValueError(f"RfLink.{name} has shape {getattr(self, name).shape} for {k} tracks")

    def select(self, rows: np.ndarray) -> RfLink:
        """The links of ``rows`` (indices or mask)."""
        return RfLink(self.linked[rows], self.freq_mhz[rows], self.bw_mhz[rows], self.power_dbm[rows])

    @property
    def is_shared_none(self) -> bool:
        """This is :meth:`none`'s shared answer (no track linked), known without looking
        at the arrays (False says nothing: another RfLink may link none either)."""
        return _NONE.get(len(self.linked)) is self

    @classmethod
    def none(cls, k: int) -> RfLink:
        """No RF link for any of K tracks (read-only arrays, made once per K: RF fusion
        answers this on most calls)."""
        got = _NONE.get(k)
        if got is None:
            nan = np.full(k, np.nan)
            nan.flags.writeable = False
            linked = np.zeros(k, dtype=bool)
            linked.flags.writeable = False
            got = cls(linked, nan, nan, nan)
            if len(_NONE) >= 64:  # bounded: K varies with the scene
                _NONE.clear()
            _NONE[k] = got
        return got


_NONE: dict[int, RfLink] = {}


@dataclass(frozen=True, eq=False)
class TrackLabels:
    """Per track (K,): category and confidence (0–100) from the classifier, threat from
    the threat assessor, ``reportable`` (False for static clutter, which is never sent),
    and the RF link. ``sources`` is derived: radar, plus RF when linked."""

    category: np.ndarray
    confidence: np.ndarray
    threat: np.ndarray
    reportable: np.ndarray
    rf: RfLink

    def __post_init__(self) -> None:
        k = len(self.category)
        for name in ("confidence", "threat", "reportable"):
            if getattr(self, name).shape != (k,):
                raise ValueError(f"TrackLabels.{name} has shape {getattr(self, name).shape} for {k} tracks")
        if len(self.rf.linked) != k:
            raise ValueError(f"TrackLabels.rf has {len(self.rf.linked)} rows for {k} tracks")

    def select(self, rows: np.ndarray) -> TrackLabels:
        """The labels of ``rows`` (indices or mask)."""
        return TrackLabels(self.category[rows], self.confidence[rows], self.threat[rows], self.reportable[rows],
                           self.rf.select(rows))

    @classmethod
    def unknown(cls, k: int) -> TrackLabels:
        """K tracks with nothing known: unknown category, no threat, all reportable."""
        return cls(
            category=np.full(k, Category.UNKNOWN, dtype=np.uint8),
            confidence=np.zeros(k, dtype=np.uint8),
            threat=np.full(k, Threat.NONE, dtype=np.uint8),
            reportable=np.ones(k, dtype=bool),
            rf=RfLink.none(k),
        )

    @property
    def sources(self) -> np.ndarray:
        """(K,) u1 ICD sources bits: radar always, RF when an emitter is linked."""
        return (SOURCE_RADAR | np.where(self.rf.linked, SOURCE_RF, 0)).astype(np.uint8)
