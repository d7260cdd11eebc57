"""The tracker's state: every live track as rows of parallel arrays.

A track's kinematic state is the 6-vector

    x = [east_m, north_m, up_m, vel_east_mps, vel_north_mps, vel_up_mps]

in the tower's local ENU frame, with its 6x6 covariance. Keeping all tracks in one table
of arrays (rather than one object per track) is what lets predict, gate and update run as
single batched NumPy expressions.
"""

from __future__ import annotations

import logging
import numpy as np

from towerd.icd import Status

log = logging.getLogger(__name__)

STATE_DIM = 6
POS = slice(0, 3)
"""Position components of the state vector (east, north, up; metres)."""
VEL = slice(3, 6)
"""Velocity components of the state vector (east, north, up; m/s)."""


_SCALAR_FIELDS: dict[str, type] = {
    "track_id": np.uint32, "status": np.uint8, "hits": np.uint32, "misses": np.uint32, "hit_history": np.uint64,
    "t_mono": np.float64, "t_last_update": np.float64, "t_created": np.float64,
    "doppler_score": np.float64, "doppler_hits": np.uint32, "score": np.float64,
}
_FIELDS = ("track_id", "status", "hits", "misses", "hit_history", "state", "cov", "t_mono", "t_last_update",
           "t_created", "mode_prob", "mode_state", "mode_cov", "doppler_score", "doppler_hits", "score")
"""The columns, in the constructor's order."""
_NOT_MODES = [name for name in _FIELDS if not name.startswith("mode_")]
_LAYOUT = _NOT_MODES + ["mode_prob", "mode_state", "mode_cov"]
"""Field order in a row: the mode columns last, so every other column sits at the same
byte offset whatever M is (:meth:`TrackTable.with_modes` copies those bytes as one block)."""
_ROW_DTYPES: dict[int, np.dtype] = {}


def row_dtype(n_modes: int) -> np.dtype:
    """The structured dtype of one track (one row of :attr:`TrackTable.rows`) with
    ``n_modes`` IMM modes: every column of :class:`TrackTable` as a field, the vector
    and matrix ones as subarrays (state (6,), cov (6, 6), mode_prob (M,), mode_state
    (M, 6), mode_cov (M, 6, 6)); made once per M. Rows are moved (selected, copied,
    joined) as plain bytes (:func:`_as_bytes`): NumPy copies a structured dtype with
    subarrays field by field, element by element, several times slower."""
    got = _ROW_DTYPES.get(n_modes)
    if got is None:
        m = n_modes
        shapes = {"state": (STATE_DIM,), "cov": (STATE_DIM, STATE_DIM), "mode_prob": (m,),
                  "mode_state": (m, STATE_DIM), "mode_cov": (m, STATE_DIM, STATE_DIM)}
        got = _ROW_DTYPES[n_modes] = np.dtype(
            [(name, np.float64, shapes[name]) if name in shapes else (name, _SCALAR_FIELDS[name]) for name in _LAYOUT],
            align=True)
    return got


class TrackTable:
    """K tracks, one row each, in one structured array (:attr:`rows`, dtype
    :func:`row_dtype`): selecting, copying or joining tracks is one NumPy operation, and
    each column below is a view of its field (assigning a column writes into the rows).

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
    single-model Kalman filter has M = 0 (the default: empty arrays). M is part of the
    row's dtype: :meth:`with_modes` gives the table another M.

    doppler_score (K,): the track's radial-speed consistency, a fading mean of normalised
    squared radial-speed errors (:mod:`towerd.tracking.doppler`); NaN until a point with
    a radial speed has followed its first (the default: all NaN); doppler_hits (K,) u4:
    how many errors it holds (default 0).

    score (K,): the track's log-likelihood ratio, target over clutter
    (:mod:`towerd.tracking.score`; default 0, and it stays 0 without a scorer).
    """

    __slots__ = ("rows", "_raw", "_views")

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
    mode_prob: np.ndarray
    mode_state: np.ndarray
    mode_cov: np.ndarray
    doppler_score: np.ndarray
    doppler_hits: np.ndarray
    score: np.ndarray

    def __init__(
        self, track_id: object, status: object, hits: object, misses: object, hit_history: object,
        state: object, cov: object, t_mono: object, t_last_update: object, t_created: object,
        mode_prob: object | None = None, mode_state: object | None = None, mode_cov: object | None = None,
        doppler_score: object | None = None, doppler_hits: object | None = None, score: object | None = None,
    ) -> None:
        cols = {"track_id": track_id, "status": status, "hits": hits, "misses": misses,
                "hit_history": hit_history, "t_mono": t_mono, "t_last_update": t_last_update,
                "t_created": t_created, "doppler_score": doppler_score, "doppler_hits": doppler_hits,
                "score": score}
        arrays = {name: np.asarray(v) for name, v in cols.items() if v is not None}
        k = arrays["track_id"].shape[0] if arrays["track_id"].ndim else -1
        arrays.setdefault("doppler_score", np.full(k, np.nan))
        arrays["state"], arrays["cov"] = np.asarray(state, dtype=float), np.asarray(cov, dtype=float)
        mode_prob = np.zeros((k, 0)) if mode_prob is None else np.asarray(mode_prob, dtype=float)
        m = mode_prob.shape[1] if mode_prob.ndim == 2 else -1
        mode_state = np.zeros((k, m, STATE_DIM)) if mode_state is None else np.asarray(mode_state, dtype=float)
        mode_cov = (np.zeros((k, m, STATE_DIM, STATE_DIM)) if mode_cov is None
                    else np.asarray(mode_cov, dtype=float))
        if mode_state.shape != (k, m, STATE_DIM) or mode_cov.shape != (k, m, STATE_DIM, STATE_DIM):
            raise ValueError(
                f"TrackTable modes: prob {mode_prob.shape}, state {mode_state.shape}, "
                f"cov {mode_cov.shape} for {k} tracks"
            )
        arrays.update(mode_prob=mode_prob, mode_state=mode_state, mode_cov=mode_cov)
        for name, a in arrays.items():
            if a.shape[:1] != (k,):
                raise ValueError(f"TrackTable.{name} has shape {a.shape}, expected ({k}, ...)")
        if arrays["state"].shape != (k, STATE_DIM) or arrays["cov"].shape != (k, STATE_DIM, STATE_DIM):
            raise ValueError(f"TrackTable state {arrays['state'].shape} / cov {arrays['cov'].shape} for {k} tracks")
        rows = np.zeros(k, dtype=row_dtype(m))
        for name, a in arrays.items():
            rows[name] = a
        self.rows, self._raw, self._views = rows, _as_bytes(rows), {}

    @classmethod
    def of_rows(cls, rows: np.ndarray) -> TrackTable:
        """The table of a structured array of dtype :func:`row_dtype` (taken, not copied,
        when contiguous)."""
        raw = _as_bytes(rows)
        return cls._of_raw(raw, rows.dtype)

    @classmethod
    def of_bytes(cls, raw: np.ndarray, dtype: np.dtype) -> TrackTable:
        """The table whose rows are ``raw`` (K, itemsize) uint8, C-contiguous, of
        ``dtype`` (:func:`row_dtype`); taken, not copied."""
        if raw.ndim != 2 or raw.shape[1] != dtype.itemsize or raw.dtype != np.uint8 or not raw.flags.c_contiguous:
            raise ValueError(f"TrackTable.of_bytes: want C-contiguous (K, {dtype.itemsize}) uint8, got "
                             f"{raw.shape} {raw.dtype}")
        return cls._of_raw(raw, dtype)

    @classmethod
    def _of_raw(cls, raw: np.ndarray, dtype: np.dtype) -> TrackTable:
        """The table whose rows are the bytes ``raw`` (K, itemsize) uint8 (taken, not copied)."""
        table = object.__new__(cls)
        table.rows, table._raw, table._views = _of_bytes(raw, dtype), raw, {}
        return table

    @classmethod
    def empty(cls, n_modes: int = 0) -> TrackTable:
        """A table with no tracks (and ``n_modes`` IMM modes per track)."""
        return cls.of_rows(np.zeros(0, dtype=row_dtype(n_modes)))

    @property
    def n_modes(self) -> int:
        """M: model-conditioned estimates per track (0 for a single-model filter)."""
        return int(self.rows.dtype["mode_prob"].shape[0])

    def __len__(self) -> int:
        return self.rows.shape[0]

    def __reduce__(self) -> tuple[object, tuple[np.ndarray]]:
        """Pickle and deepcopy by the rows alone (the byte view and column views are rebuilt on them)."""
        return TrackTable.of_rows, (self.rows,)

    def __repr__(self) -> str:
        return f"TrackTable({len(self)} tracks, {self.n_modes} modes, ids {self.track_id.tolist()})"

    def with_modes(self, mode_prob: np.ndarray, mode_state: np.ndarray, mode_cov: np.ndarray) -> TrackTable:
        """A copy of this table whose M mode columns are the ones given (M may differ):
        mode_prob (K or 1, M), mode_state (K or 1, M or 1, 6), mode_cov (K or 1, M or 1,
        6, 6), broadcast over the rows."""
        dtype = row_dtype(mode_prob.shape[1])
        out = np.zeros((len(self), dtype.itemsize), dtype=np.uint8)
        head = dtype.fields["mode_prob"][1]  # the bytes before the mode columns: the same in both layouts
        out[:, :head] = self._raw[:, :head]
        table = TrackTable._of_raw(out, dtype)
        rows = table.rows
        rows["mode_prob"], rows["mode_state"], rows["mode_cov"] = mode_prob, mode_state, mode_cov
        return table

    def select(self, rows: np.ndarray) -> TrackTable:
        """A new table of the given rows (boolean mask or integer indices); arrays copied."""
        return TrackTable._of_raw(self._raw[rows], self.rows.dtype)

    def remove(self, rows: np.ndarray) -> TrackTable:
        """A new table without the rows selected by the boolean mask ``rows``."""
        return self.select(~np.asarray(rows, dtype=bool))

    def copy(self) -> TrackTable:
        """A deep copy with writable arrays."""
        return TrackTable._of_raw(self._raw.copy(), self.rows.dtype)

    def freeze(self) -> TrackTable:
        """Make every array read-only (in place) and return self: a table handed out in a
        :class:`~towerd.tracking.tracker.TrackUpdate` must not change under its reader."""
        self.rows.flags.writeable = self._raw.flags.writeable = False
        for view in self._views.values():
            view.flags.writeable = False
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
        return TrackTable._of_raw(np.concatenate([t._raw for t in tables]), tables[0].rows.dtype)

    def kept_and_joined(self, keep: np.ndarray | None, new: TrackTable | None) -> TrackTable:
        """A new table of the rows the boolean mask ``keep`` (K,) selects (every row when
        None) followed by ``new``'s (none when None; the same M), in one byte copy; this
        table itself when there is nothing to drop or add (the tracker's per-frame
        delete-then-initiate, which would otherwise copy the table twice)."""
        if new is None or len(new) == 0:
            return self if keep is None else TrackTable._of_raw(self._raw[keep], self.rows.dtype)
        if new.rows.dtype != self.rows.dtype:
            raise ValueError(f"cannot join tables of {self.n_modes} and {new.n_modes} IMM modes")
        kept = self._raw if keep is None else self._raw[keep]
        return TrackTable._of_raw(np.concatenate((kept, new._raw)), self.rows.dtype)

    def rows_with_status(self, *statuses: Status) -> np.ndarray:
        """Boolean mask (K,) of the tracks whose status is one of ``statuses`` (a new
        array the caller may change). A frozen table computes each mask once: the
        tracker's output is asked for the established rows by several readers a frame."""
        frozen = not self._raw.flags.writeable
        if frozen:
            got = self._views.get(statuses)
            if got is not None:
                return got.copy()
        status = self.status
        mask = status == int(statuses[0])  # a plain int: NumPy probes an enum member's attributes first
        for s in statuses[1:]:
            mask |= status == int(s)
        if frozen:
            self._views[statuses] = mask.copy()
        return mask


def _as_bytes(rows: np.ndarray) -> np.ndarray:
    """Rows (K,) of a structured dtype as a (K, itemsize) uint8 view (a copy if they are
    not contiguous)."""
    rows = np.ascontiguousarray(rows)
    return rows.view(np.uint8).reshape(len(rows), rows.dtype.itemsize)


def _of_bytes(raw: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """(K, itemsize) uint8 C-contiguous bytes as rows (K,) of ``dtype`` (a view, read-only
    when ``raw`` is). ``np.frombuffer`` rather than ``raw.view(dtype)``: a view to a
    structured dtype runs NumPy's Python-level field-safety check (~3 µs, several tables
    a frame), needless for bytes that have no object fields."""
    return np.frombuffer(raw, dtype)


def _column(name: str) -> property:
    """The column ``name`` of a :class:`TrackTable`: a view of its field (made once per
    table); assigning writes the values into the rows."""

    def get(self: TrackTable) -> np.ndarray:
        view = self._views.get(name)
        if view is None:
            view = self._views[name] = self.rows[name]
        return view

    def put(self: TrackTable, value: object) -> None:
        self.rows[name] = value

    return property(get, put, doc=f"the ``{name}`` column (see the class docstring)")


for _name in _FIELDS:
    setattr(TrackTable, _name, _column(_name))
del _name


def match_ids(known: np.ndarray, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Find ``ids`` (K,) in the sorted array ``known`` (N,): (found (K,) bool, position
    (K,) intp in ``known``, valid where found). Components that keep state per track
    across tracker calls (classifier, clutter filter, reporter) key it by track id this
    way, since rows move as tracks come and go."""
    ids = np.asarray(ids)
    if len(known) == 0:
        return np.zeros(len(ids), dtype=bool), np.zeros(len(ids), dtype=np.intp)
    pos = np.minimum(np.searchsorted(known, ids), len(known) - 1)
    return known[pos] == ids, pos.astype(np.intp, copy=False)
