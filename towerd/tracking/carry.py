"""Per-track state kept across tracker calls, row for row with the tracker's table.

Components that keep something per track (the classification features, the static
clutter filter's motion test, the labeller's decisions) keep it as one row of floats per
live track, in the rows of the latest update's ``tracks``. When tracks come and go the
rows move: :class:`RowCarry` says, once per tracker call, where each of the new rows was
among the previous ones, and every component re-aligns its state with one gather
(:meth:`RowCarry.gather`). The labeller makes one and hands it to the components it
drives, so the ids are matched once per call, not once per component.
"""

from __future__ import annotations

import logging

import numpy as np

from towerd.tracking.state import match_ids

log = logging.getLogger(__name__)


class RowCarry:
    """Where each track of ``ids`` (K,) was among ``known`` (K0,), the track ids of the
    previous rows (in any order; the tracker keeps them sorted).

    ``index`` (K,) intp: the previous row of each track, K0 for a new track; None when the
    rows are the same tracks in the same order (most expiry calls, and frames in which
    no track started or ended). ``ids`` is kept as the next call's ``known`` (a copy when
    the caller's array could still change)."""

    __slots__ = ("known", "ids", "index")

    def __init__(self, known: np.ndarray, ids: np.ndarray) -> None:
        self.known = known
        self.ids = ids if not ids.flags.writeable else ids.copy()
        if known is ids or (len(known) == len(ids) and np.array_equal(known, ids)):
            self.index: np.ndarray | None = None
        elif len(known) < 2 or bool((known[1:] > known[:-1]).all()):
            found, pos = match_ids(known, ids)
            self.index = np.where(found, pos, len(known))
        else:  # unsorted: look up in sorted order, positions in ``known`` itself
            order = np.argsort(known, kind="stable")
            found, pos = match_ids(known[order], ids)
            self.index = np.where(found, order[pos], len(known))

    def fits(self, ids: np.ndarray) -> bool:
        """Whether ``ids`` (a component's previous ids) are this carry's ``known``."""
        return ids is self.known or (len(ids) == 0 and len(self.known) == 0)

    def gather(self, state: np.ndarray, new_row: np.ndarray) -> np.ndarray:
        """``state`` (K0, W), rows of ``known`` -> (K, W), rows of ``ids``: a new track's
        row is ``new_row`` (1, W). ``state`` itself when the rows are the same."""
        if self.index is None:
            return state
        return np.concatenate([state, new_row])[self.index]

    def new(self) -> np.ndarray | None:
        """(K,) bool: the tracks not among ``known``; None when there is none."""
        if self.index is None:
            return None
        new = self.index == len(self.known)
        return new if new.any() else None
