"""Static clutter: tracks of things that never move (lamp posts, masts, roof edges, parked
cars) are recognised and kept from the central, and where they stand is learnt so that
they do not start new tracks again and again.

A radar without a zero-Doppler notch sees every static reflector in its beam, and the
tracker duly confirms a track on each: a central fed with them would be flooded with
"targets" that are lamp posts. A static reflector and a hovering drone look alike at
any one instant; what tells them apart is history: a static reflector has been still
since it was first seen, whereas a drone that now hovers flew there. Hence:

1. Stationarity test, per track, on every frame a detection updated it. Evidence of
   motion is either
   - a significant displacement from the track's first detection z₀ (covariance R₀):
     d = p − z₀, d² = dᵀ (P_pos + R₀)⁻¹ d > χ²₃⁻¹(``gate_probability``) and
     |d| > ``radius_m``; or
   - a significant velocity: v² = vᵀ P_vel⁻¹ v > χ²₃⁻¹(``gate_probability``) and
     |v| > ``max_speed_mps``.
   ``moving_updates`` consecutive updates with evidence latch the track as MOVED for
   the rest of its life (a single noisy update does not).
2. A track is STATIC while it has not moved, unless it is exempt: the caller says so
   (the pipeline exempts tracks with an associated RF drone link, those whose mean
   Doppler spread reaches ``exempt_doppler_spread_mps`` — rotor blades — and those the
   classifier calls uas with at least ``exempt_uas_confidence``: a small, airborne,
   hovering object; lamp posts and masts are large reflectors and stand on the ground,
   so they do not pass). 101 disables that last exemption. Static tracks are not
   reported. So a confirmed track's first report waits until it has shown motion —
   about a second for a drone in flight — or until it is exempt: a drone first seen
   while hovering is reported once classified (a few seconds), when it moves, or when
   an RF link is associated with it.
3. Clutter map: a grid of ``map_cell_m`` cubes. Each cell accumulates the seconds static
   confirmed tracks have dwelt in it (the cell of the mean of the track's positions so
   far, which settles on the reflector; per sighting, the track's time since its
   previous one, at most MAP_MAX_GAP_S; dwell decays with time constant ``map_forget_s``, so a
   removed reflector is forgotten). A cell with at least
   ``map_learn_s`` seconds is known clutter: a detection in it or in one of its 26
   neighbours whose radial speed is at most ``map_max_doppler_mps`` (or unknown)
   starts no track (:class:`ClutterMapInitiator`). Targets already tracked keep their
   detections there (association comes before initiation), and moving ones start
   tracks as usual. The map holds at most ``map_max_cells`` cells (the weakest go).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from towerd.detection.plots import Detections
from towerd.gates import chi2_quantile
from towerd.icd import Status
from towerd.schema import spec
from towerd.tracking.carry import RowCarry
from towerd.tracking.initiator import MofNInitiator
from towerd.tracking.linalg import inv3, norm_rows, quad
from towerd.tracking.state import POS, VEL, match_ids

if TYPE_CHECKING:  # the settings are imported by towerd.config: keep this module light
    from towerd.tracking.tracker import TrackUpdate

log = logging.getLogger(__name__)

MAP_MAX_GAP_S = 1.0
"""Longest interval between two sightings of a static track that counts as dwell."""
_BITS = 21
_OFFSET = 1 << (_BITS - 1)
_PLACES = np.array([1 << (2 * _BITS), 1 << _BITS, 1], dtype=np.int64)
_NEIGHBOURS = np.array([(i, j, k) for i in (-1, 0, 1) for j in (-1, 0, 1) for k in (-1, 0, 1)], dtype=np.int64)


@dataclass(frozen=True)
class StaticClutterSettings:
    """``tracking.static_clutter``: recognising static reflectors; see the module docstring."""

    enabled: bool = spec(True, doc="withhold tracks that have not moved since first seen, and learn a clutter map")
    radius_m: float = spec(5.0, doc="displacement from the first detection that shows motion", unit="m",
                           lo=0.1, hi=1000.0)
    max_speed_mps: float = spec(1.0, doc="speed above which a significant velocity shows motion", unit="m/s",
                                lo=0.0, hi=100.0)
    gate_probability: float = spec(
        0.9999, doc="chi-square probability that displacement or velocity must exceed to count", lo=0.5, hi=0.999999
    )
    moving_updates: int = spec(3, doc="consecutive updates with evidence of motion that mark a track moved",
                               lo=1, hi=100)
    exempt_doppler_spread_mps: float = spec(
        2.0, doc="a track whose mean Doppler spread reaches this (rotor blades) is never static clutter", unit="m/s",
        lo=0.0, hi=100.0,
    )
    exempt_uas_confidence: int = spec(
        80, doc="a track classified uas with at least this confidence is never static clutter (a hovering drone: "
        "small RCS, off the ground)", unit="%", lo=0, hi=101,
    )
    map_cell_m: float = spec(5.0, doc="clutter map cell size", unit="m", lo=0.5, hi=1000.0)
    map_learn_s: float = spec(10.0, doc="static dwell that makes a cell clutter", unit="s", lo=0.1, hi=86400.0)
    map_forget_s: float = spec(600.0, doc="time constant with which dwell fades", unit="s", lo=1.0, hi=1e7)
    map_max_doppler_mps: float = spec(
        0.5, doc="a detection in a clutter cell starts no track unless its radial speed exceeds this", unit="m/s",
        lo=0.0, hi=100.0,
    )
    map_max_cells: int = spec(20000, doc="most cells the clutter map keeps", lo=1, hi=10_000_000)


class ClutterMap:
    """Grid of static dwell; see the module docstring. Cells are kept as sorted int64
    keys with their dwell (seconds) and last update time, so look-ups are vectorised
    (searchsorted) and memory is bounded by ``max_cells``."""

    def __init__(self, settings: StaticClutterSettings) -> None:
        self.settings = settings
        self._keys = np.zeros(0, dtype=np.int64)
        self._dwell = np.zeros(0)
        self._t = np.zeros(0)
        self.refused = 0
        """Detections refused track initiation so far."""

    def __len__(self) -> int:
        return len(self._keys)

    def clear(self) -> None:
        """Forget every cell."""
        self._keys = np.zeros(0, dtype=np.int64)
        self._dwell = np.zeros(0)
        self._t = np.zeros(0)

    def cell_index(self, pos_enu_m: np.ndarray) -> np.ndarray:
        """(N, 3) positions -> (N, 3) int64 cell indices."""
        return np.floor(np.asarray(pos_enu_m, dtype=float) / self.settings.map_cell_m).astype(np.int64)

    @staticmethod
    def _pack(idx: np.ndarray) -> np.ndarray:
        """(..., 3) cell indices -> (...) int64 keys (21 bits per axis, ±2^20 cells):
        u₀·2⁴² + u₁·2²¹ + u₂ (the bit fields do not overlap: the sum is their OR)."""
        return np.minimum(np.maximum(idx + _OFFSET, 0), (1 << _BITS) - 1) @ _PLACES  # np.clip, cheaper

    def dwell(self, pos_enu_m: np.ndarray, t_mono: float, *, neighbours: bool = False) -> np.ndarray:
        """(N,) decayed dwell, seconds, of the cells of ``pos_enu_m`` (N, 3) at t_mono; with
        ``neighbours`` the largest over each cell and its 26 neighbours."""
        idx = self.cell_index(pos_enu_m)
        if neighbours:
            keys = self._pack(idx[:, None, :] + _NEIGHBOURS[None, :, :])  # (N, 27)
        else:
            keys = self._pack(idx)[:, None]
        found, pos = match_ids(self._keys, keys.ravel())
        d = np.zeros(keys.size)
        decay = np.exp(-np.maximum(t_mono - self._t[pos[found]], 0.0) / self.settings.map_forget_s)
        d[found] = self._dwell[pos[found]] * decay
        return d.reshape(keys.shape).max(axis=1) if len(keys) else np.zeros(0)

    def is_clutter(self, pos_enu_m: np.ndarray, radial_vel_mps: np.ndarray, t_mono: float) -> np.ndarray:
        """(N,) True for detections in (or next to) a known clutter cell whose radial
        speed is at most ``map_max_doppler_mps`` or unknown."""
        if len(self._keys) == 0 or len(pos_enu_m) == 0:
            return np.zeros(len(pos_enu_m), dtype=bool)
        s = self.settings
        slow = ~(np.abs(radial_vel_mps) > s.map_max_doppler_mps)  # NaN counts as slow
        out = np.zeros(len(pos_enu_m), dtype=bool)
        if slow.any():  # the cells of the (few) slow detections alone: a moving one is never clutter
            out[slow] = self.dwell(np.asarray(pos_enu_m)[slow], t_mono, neighbours=True) >= s.map_learn_s
        return out

    def learn(self, pos_enu_m: np.ndarray, dwell_s: np.ndarray, t_mono: float) -> None:
        """Static tracks at ``pos_enu_m`` (N, 3) have stayed ``dwell_s`` (N,) seconds more
        (each track's time since its previous sighting): decay their cells' dwell to
        t_mono and add it, each at most MAP_MAX_GAP_S."""
        if len(pos_enu_m) == 0:
            return
        s = self.settings
        cells = self._pack(self.cell_index(pos_enu_m))
        add = np.minimum(np.maximum(np.asarray(dwell_s, dtype=float), 0.0), MAP_MAX_GAP_S)  # np.clip, cheaper
        found, pos = match_ids(self._keys, cells)
        if found.all() and len(set(pos.tolist())) == len(pos):  # the usual case: known cells, one track each
            self._dwell[pos] = self._dwell[pos] * np.exp(-np.maximum(t_mono - self._t[pos], 0.0) / s.map_forget_s) + add
            self._t[pos] = t_mono
        else:
            self._learn_cells(cells, add, t_mono)
        if len(self._keys) > s.map_max_cells:
            decayed = self._dwell * np.exp(-np.maximum(t_mono - self._t, 0.0) / s.map_forget_s)
            keep = np.sort(np.argsort(decayed, kind="stable")[len(self._keys) - s.map_max_cells:])
            self._keys, self._dwell, self._t = self._keys[keep], self._dwell[keep], self._t[keep]

    def _learn_cells(self, cells: np.ndarray, add: np.ndarray, t_mono: float) -> None:
        """:meth:`learn` of cells (N,) keys, some new or some shared: ``add`` (N,) s."""
        s = self.settings
        keys, inv = np.unique(cells, return_inverse=True)
        # bincount adds in input order from 0.0, as np.add.at does, without its per-call set-up
        add = np.bincount(inv.ravel(), add, len(keys))
        found, pos = match_ids(self._keys, keys)
        old = np.zeros(len(keys))
        old[found] = self._dwell[pos[found]] * np.exp(-np.maximum(t_mono - self._t[pos[found]], 0.0) / s.map_forget_s)
        new = old + add
        self._dwell[pos[found]] = new[found]
        self._t[pos[found]] = t_mono
        if np.any(~found):
            all_keys = np.concatenate([self._keys, keys[~found]])
            order = np.argsort(all_keys, kind="stable")
            self._keys = all_keys[order]
            self._dwell = np.concatenate([self._dwell, new[~found]])[order]
            self._t = np.concatenate([self._t, np.full(np.count_nonzero(~found), t_mono)])[order]


@dataclass
class ClutterMapInitiator(MofNInitiator):
    """:class:`~towerd.tracking.initiator.MofNInitiator` that starts no track on a
    detection the clutter map calls static clutter (see :meth:`ClutterMap.is_clutter`)."""

    clutter_map: ClutterMap | None = field(default=None, repr=False)

    def select(self, det: Detections, unassociated: np.ndarray) -> np.ndarray:
        unassociated = super().select(det, unassociated)
        if self.clutter_map is None or len(unassociated) == 0:
            return unassociated
        refuse = self.clutter_map.is_clutter(det.pos_enu_m[unassociated], det.radial_vel_mps[unassociated], det.t_mono)
        if np.any(refuse):
            self.clutter_map.refused += int(np.count_nonzero(refuse))
            log.debug("%s: %d detections in clutter cells start no track", det.sensor, np.count_nonzero(refuse))
        return unassociated[~refuse]


# Columns of the static clutter filter's state per track: the first detection's position
# and covariance (row-major), the count of consecutive updates with evidence of motion,
# the MOVED latch (1.0 or 0.0), when the track was last learnt as static (NaN: never),
# the mean of its positions while learnt as static, and how many.
_ANCHOR, _ANCHOR_COV, _RUN, _MOVED, _T_SEEN, _MEAN, _N = 0, 3, 12, 13, 14, 15, 18
_WIDTH = _N + 1
_RUN_MAX = float(np.iinfo(np.uint16).max)
_NEW_TAIL = np.zeros(_WIDTH - _RUN)
_NEW_TAIL[_T_SEEN - _RUN] = np.nan
_NEW_TAIL.flags.writeable = False
_BLANK = np.zeros((1, _WIDTH))
_BLANK.flags.writeable = False


class StaticClutterFilter:
    """Marks the tracks that have not moved since they were first seen; see the module
    docstring. State per track (one row of floats per live track, in the rows of the
    latest update's tracks, re-aligned by one gather when tracks come and go: see
    :mod:`towerd.tracking.carry`): the first detection's position and covariance, the
    count of consecutive updates with evidence of motion, and the MOVED latch."""

    def __init__(self, settings: StaticClutterSettings | None = None) -> None:
        self.settings = settings or StaticClutterSettings()
        self.clutter_map = ClutterMap(self.settings)
        self._gate = chi2_quantile(self.settings.gate_probability, 3)
        self._ids = np.zeros(0, dtype=np.uint32)
        self._state = np.zeros((0, _WIDTH))
        self._observed: TrackUpdate | None = None  # between observe() and learn()

    def reconfigure(self, settings: StaticClutterSettings) -> None:
        """New settings; the per-track state and the learnt map are kept, unless the map's
        cell size changed (then the map starts again: its cells no longer mean the same)."""
        if settings.map_cell_m != self.settings.map_cell_m:
            self.clutter_map.clear()
        self.settings = settings
        self.clutter_map.settings = settings
        self._gate = chi2_quantile(settings.gate_probability, 3)

    def update(self, update: TrackUpdate, exempt: np.ndarray | None = None) -> np.ndarray:
        """(K,) bool for the rows of ``update.tracks``: True = static clutter (withhold).
        ``exempt`` (K,) bool: tracks never to call static (None: none). :meth:`observe`
        then :meth:`learn`, for a caller that has every row's exemption at hand."""
        moved = self.observe(update)
        if moved is None:
            return np.zeros(len(update.tracks), dtype=bool)
        static = ~moved
        if exempt is not None:
            static &= ~np.asarray(exempt, dtype=bool)
        self.learn(update, static)
        return static

    def observe(self, update: TrackUpdate, carry: RowCarry | None = None) -> np.ndarray | None:
        """Fold ``update``'s measurements into the motion test; (K,) bool: the rows of
        ``update.tracks`` that have MOVED (never static), or None when disabled. Call
        :meth:`learn` after it with the rows that are static (not moved, not exempt).
        ``carry``: where the update's tracks were in the previous call's (made here when
        not given, or not from the ids this filter holds)."""
        s = self.settings
        tr = update.tracks
        if not s.enabled:
            return None
        if carry is None or not carry.fits(self._ids):
            carry = RowCarry(self._ids, tr.track_id)
        st = self._state = carry.gather(self._state, _BLANK)
        self._ids = carry.ids
        new = carry.new()
        pending = update.det_of_track >= 0
        pending &= st[:, _MOVED] == 0.0
        if new is not None:  # a new track: its first detection is its anchor
            rows = new.nonzero()[0]
            st[rows, _ANCHOR:_ANCHOR + 3] = tr.state[rows, POS]
            st[rows, _ANCHOR_COV:_RUN] = tr.cov[rows, POS, POS].reshape(len(rows), 9)
            st[rows, _RUN:] = _NEW_TAIL
            pending &= ~new
        rows = pending.nonzero()[0]
        if len(rows):
            r = st[rows]
            evidence = self._motion_evidence(tr.state[rows], tr.cov[rows], r[:, _ANCHOR:_ANCHOR + 3],
                                             r[:, _ANCHOR_COV:_RUN].reshape(len(rows), 3, 3))
            run = np.where(evidence, np.minimum(r[:, _RUN] + 1.0, _RUN_MAX), 0.0)
            st[rows, _RUN] = run
            st[rows, _MOVED] = run >= s.moving_updates
        self._observed = update
        return st[:, _MOVED] != 0.0

    def learn(self, update: TrackUpdate, static: np.ndarray, *, established: np.ndarray | None = None) -> None:
        """The confirmed or coasting tracks of ``static`` ((K,) bool, rows of the update
        :meth:`observe` just saw) that a detection updated have dwelt in their clutter
        map cell since their previous sighting. ``established``: the update's confirmed
        or coasting rows (K,) bool, when the caller has them."""
        if established is None:
            established = update.tracks.rows_with_status(Status.CONFIRMED, Status.COASTING)
        self.learn_rows(update, np.flatnonzero(static & (update.det_of_track >= 0) & established))

    def learn_rows(self, update: TrackUpdate, learn: np.ndarray) -> None:
        """:meth:`learn` of the rows ``learn`` (sorted indices into ``update.tracks``):
        the static confirmed or coasting tracks a detection updated."""
        if self._observed is not update:
            raise RuntimeError("StaticClutterFilter.learn needs the update observe() saw last")
        self._observed = None
        if len(learn):
            tr = update.tracks
            t = float(update.t_mono)
            st = self._state
            r = st[learn]
            dwell = t - r[:, _T_SEEN]
            dwell[np.isnan(dwell)] = 0.0  # a track's first sighting adds nothing
            n = r[:, _N] + 1.0
            r[:, _MEAN:_N] += (tr.state[learn, POS] - r[:, _MEAN:_N]) / n[:, None]
            r[:, _T_SEEN], r[:, _N] = t, n
            self.clutter_map.learn(r[:, _MEAN:_N], dwell, t)
            st[learn] = r

    def _motion_evidence(self, x: np.ndarray, P: np.ndarray, z0: np.ndarray, R0: np.ndarray) -> np.ndarray:
        """(N,) evidence of motion; see the module docstring. The displacement's and the
        velocity's tests are done together: two stacked (N, 3, 3) inverses by cofactors."""
        s = self.settings
        n = len(x)
        u = np.concatenate([x[:, POS] - z0, x[:, VEL]])  # (2N, 3): d, then v
        S = np.concatenate([P[:, POS, POS] + R0, P[:, VEL, VEL]])
        q = quad(inv3(S)[0], u)
        beyond = (q > self._gate) & (norm_rows(u) > np.repeat(np.array([s.radius_m, s.max_speed_mps]), n))
        return beyond[:n] | beyond[n:]
