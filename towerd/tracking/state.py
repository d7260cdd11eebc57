"""The tracker's state: every live track as rows of parallel arrays.

A track's kinematic state is the 6-vector

    x = [east_m, north_m, up_m, vel_east_mps, vel_north_mps, vel_up_mps]

in the tower's local ENU frame, with its 6x6 covariance. Keeping all tracks in one table
of arrays (rather than one object per track) is what lets predict, gate and update run as
single batched NumPy expressions.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, fields

import numpy as np

from towerd.icd import Status

log = logging.getLogger(__name__)

STATE_DIM = 6
POS = slice(0, 3)
"""Position components of the state vector (east, north, up; metres)."""
VEL = slice(3, 6)
"""Velocity components of the state vector (east, north, up; m/s)."""


@dataclass(eq=False)
class TrackTable:
    """K tracks as parallel arrays (row k is one track).

    track_id (K,) u4: never reused; status (K,) u1: :class:`towerd.icd.Status` values;
    hits (K,) u4: measurement updates so far (the initiating detection counts);
    misses (K,) u4: consecutive updates without a measurement;
    hit_history (K,) u8: bit i set when the update i scans ago had a measurement (bit 0 is
    the latest);
    state (K, 6): see the module docstring; cov (K, 6, 6): its covariance (m², m²/s, m²/s²);
    t_mono (K,): monotonic seconds the state refers to;
    t_last_update (K,): when a measurement last updated the track; t_created (K,).

    Interacting multiple model (IMM) filters also keep, per track, M model-conditioned
    estimates: mode_prob (K, M) (rows sum to 1), mode_state (K, M, 6), mode_cov
    (K, M, 6, 6); ``state``/``cov`` are then their moment-matched combination. A
    single-model Kalman filter has M = 0 (the default: empty arrays).

    doppler_score (K,): the track's radial-speed consistency, a fading mean of normalised
    squared radial-speed errors (:mod:`towerd.tracking.doppler`); NaN until a point with
    a radial speed has followed its first (the default: all NaN); doppler_hits (K,) u4:
    how many errors it holds (default 0).

    score (K,): the track's log-likelihood ratio, target over clutter
    (:mod:`towerd.tracking.score`; default 0, and it stays 0 without a scorer).
    """

    track_id: np.ndarray
    status: np.ndarray
    hits: np.ndarray
    misses: np.ndarray
    hit_history: np.ndarray
    state: np.ndarray
    cov: np.ndarray
    t_mono: np.ndarray
    t_last_update: np.ndarray
    t_created: np.ndarray
    mode_prob: np.ndarray | None = None
    mode_state: np.ndarray | None = None
    mode_cov: np.ndarray | None = None
    doppler_score: np.ndarray | None = None
    doppler_hits: np.ndarray | None = None
    score: np.ndarray | None = None

    def __post_init__(self) -> None:
        self.track_id = np.asarray(self.track_id, dtype=np.uint32)
        self.status = np.asarray(self.status, dtype=np.uint8)
        self.hits = np.asarray(self.hits, dtype=np.uint32)
        self.misses = np.asarray(self.misses, dtype=np.uint32)
        self.hit_history = np.asarray(self.hit_history, dtype=np.uint64)
        self.state = np.asarray(self.state, dtype=float)
        self.cov = np.asarray(self.cov, dtype=float)
        self.t_mono = np.asarray(self.t_mono, dtype=float)
        self.t_last_update = np.asarray(self.t_last_update, dtype=float)
        self.t_created = np.asarray(self.t_created, dtype=float)
        k = self.track_id.shape[0]
        self.doppler_score = (
            np.full(k, np.nan) if self.doppler_score is None else np.asarray(self.doppler_score, dtype=float)
        )
        self.doppler_hits = (
            np.zeros(k, dtype=np.uint32) if self.doppler_hits is None else np.asarray(self.doppler_hits, dtype=np.uint32)
        )
        self.score = np.zeros(k) if self.score is None else np.asarray(self.score, dtype=float)
        self.mode_prob = np.zeros((k, 0)) if self.mode_prob is None else np.asarray(self.mode_prob, dtype=float)
        m = self.mode_prob.shape[1] if self.mode_prob.ndim == 2 else -1
        self.mode_state = (
            np.zeros((k, m, STATE_DIM)) if self.mode_state is None else np.asarray(self.mode_state, dtype=float)
        )
        self.mode_cov = (
            np.zeros((k, m, STATE_DIM, STATE_DIM)) if self.mode_cov is None else np.asarray(self.mode_cov, dtype=float)
        )
        if self.mode_state.shape != (k, m, STATE_DIM) or self.mode_cov.shape != (k, m, STATE_DIM, STATE_DIM):
            raise ValueError(
                f"TrackTable modes: prob {self.mode_prob.shape}, state {self.mode_state.shape}, "
                f"cov {self.mode_cov.shape} for {k} tracks"
            )
        d = self.__dict__
        for name in _FIELDS:
            if d[name].shape[:1] != (k,):
                raise ValueError(f"TrackTable.{name} has shape {d[name].shape}, expected ({k}, ...)")
        if self.state.shape != (k, STATE_DIM) or self.cov.shape != (k, STATE_DIM, STATE_DIM):
            raise ValueError(f"TrackTable state {self.state.shape} / cov {self.cov.shape} for {k} tracks")

    @classmethod
    def empty(cls, n_modes: int = 0) -> TrackTable:
        """A table with no tracks (and ``n_modes`` IMM modes per track)."""
        z = np.zeros(0)
        return cls(
            z, z, z, z, z, np.zeros((0, STATE_DIM)), np.zeros((0, STATE_DIM, STATE_DIM)), z, z, z,
            mode_prob=np.zeros((0, n_modes)),
            mode_state=np.zeros((0, n_modes, STATE_DIM)),
            mode_cov=np.zeros((0, n_modes, STATE_DIM, STATE_DIM)),
        )

    @property
    def n_modes(self) -> int:
        """M: model-conditioned estimates per track (0 for a single-model filter)."""
        return int(self.mode_prob.shape[1])

    def __len__(self) -> int:
        return self.track_id.shape[0]

    @classmethod
    def _of(cls, arrays: dict[str, np.ndarray]) -> TrackTable:
        """A table of arrays taken from valid tables (rows selected, copied or joined:
        dtypes and shapes already hold), without the checks of construction: select,
        copy and concatenate run several times per tracker call."""
        table = object.__new__(cls)
        table.__dict__.update(arrays)
        return table

    def select(self, rows: np.ndarray) -> TrackTable:
        """A new table of the given rows (boolean mask or integer indices); arrays copied."""
        d = self.__dict__
        return TrackTable._of({name: d[name][rows] for name in _FIELDS})

    def remove(self, rows: np.ndarray) -> TrackTable:
        """A new table without the rows selected by the boolean mask ``rows``."""
        return self.select(~np.asarray(rows, dtype=bool))

    def copy(self) -> TrackTable:
        """A deep copy with writable arrays."""
        d = self.__dict__
        return TrackTable._of({name: d[name].copy() for name in _FIELDS})

    def freeze(self) -> TrackTable:
        """Make every array read-only (in place) and return self: a table handed out in a
        :class:`~towerd.tracking.tracker.TrackUpdate` must not change under its reader."""
        d = self.__dict__
        for name in _FIELDS:
            d[name].flags.writeable = False
        return self

    @staticmethod
    def concatenate(tables: list[TrackTable]) -> TrackTable:
        """Rows of all ``tables``, in order (the non-empty ones must have the same M)."""
        if not tables:
            return TrackTable.empty()
        tables = [t for t in tables if len(t)] or tables[:1]  # an empty table has no say in M
        if len({t.n_modes for t in tables}) > 1:
            raise ValueError(f"cannot concatenate tables of {sorted({t.n_modes for t in tables})} IMM modes")
        if len(tables) == 1:
            return tables[0].copy()
        return TrackTable._of({name: np.concatenate([t.__dict__[name] for t in tables]) for name in _FIELDS})

    def rows_with_status(self, *statuses: Status) -> np.ndarray:
        """Boolean mask (K,) of the tracks whose status is one of ``statuses``."""
        mask = np.zeros(len(self), dtype=bool)
        for s in statuses:
            mask |= self.status == int(s)  # a plain int: NumPy probes an enum member's attributes first
        return mask


_FIELDS = tuple(f.name for f in fields(TrackTable))


def match_ids(known: np.ndarray, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Find ``ids`` (K,) in the sorted array ``known`` (N,): (found (K,) bool, position
    (K,) intp in ``known``, valid where found). Components that keep state per track
    across tracker calls (classifier, clutter filter, reporter) key it by track id this
    way, since rows move as tracks come and go."""
    ids = np.asarray(ids)
    if len(known) == 0:
        return np.zeros(len(ids), dtype=bool), np.zeros(len(ids), dtype=np.intp)
    pos = np.minimum(np.searchsorted(known, ids), len(known) - 1)
    return known[pos] == ids, pos.astype(np.intp)
