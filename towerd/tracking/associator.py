"""Data association: which detection (if any) updates which predicted track."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from functools import cached_property

import numpy as np
from towerd.assignment import assign_sparse, components
from towerd.errors import ConfigError
from towerd.gates import chi2_quantile
from towerd.tracking.doppler import DopplerGate, RadialSpeeds, position_update
from towerd.tracking.linalg import inv3, quad
from towerd.tracking.state import POS, STATE_DIM

log = logging.getLogger(__name__)

MEAS_DOF = 3


@dataclass(frozen=True)
class GnnAssociator:
    """Chi-square gated global nearest neighbour (GNN) on position.

    For track k (predicted x_k, P_k) and detection n (z_n, R_n), with H = [I₃ 0]:

        y = z_n − H x_k,   S = H P_k Hᵀ + R_n,   d²_kn = yᵀ S⁻¹ y

    A pair is in the gate when d² <= γ = χ²₃⁻¹(gate_probability) (16.27 at 0.999). The
    assignment minimises the total d² over all tracks at once with
    ``linear_sum_assignment`` on the augmented (K, K + N) matrix

        [ D_gated | diag(γ) ]      (+inf for pairs outside the gate and off the diagonal)

    Every track can always take its own "miss" column at cost γ, so the problem is always
    feasible, and a miss competes on cost with a poor hit: two tracks sharing one detection
    resolve to the globally cheapest combination, not to whichever is nearest first.
    Detections left over cost nothing (they may start new tracks).

    Established tracks (``established``, normally the confirmed and coasting ones) miss at
    cost 2γ instead. Since every gated d² <= γ, an established track then always keeps a
    gated detection rather than cede it to a tentative track: without this a fresh
    tentative track, whose wide velocity covariance makes every d² small, steals the
    target's detection from the target's own track whenever clutter starts one nearby,
    and a duplicate track is confirmed. Among tracks of the same kind it is plain GNN.

    Gating candidates: below ``pregate_min_pairs`` pairs, those of the K·N with
    |y|² <= γ tr(S) (since d² >= |y|² / λmax(S) >= |y|² / tr(S), no gated pair is cut, and
    only the near pairs' S are solved); above it a sweep over the detections sorted by east
    (:func:`radius_pairs`) yields only the pairs within a Euclidean radius that cannot cut a
    gated pair:
    |y|² <= d² · λmax(S) <= γ (λmax(H P_k Hᵀ) + max_n λmax(R_n)).

    Solving per component: the gated pairs form a bipartite graph (tracks and detections
    as nodes); the assignment problem splits exactly into its connected components
    (:func:`components`), since no pair links two of them.
    Components with one track or one detection (nearly all of them when targets are
    apart) are solved in one vectorised step: the optimum is the pair of least
    d² − miss_cost(track), which is <= 0 because every gated d² <= γ <= miss cost. Only
    components with several tracks and several detections go to
    :func:`towerd.assignment.linear_sum_assignment`
    one by one, each on its own small augmented matrix. Work then grows with the number of
    gated pairs, near-linearly in plots, instead of with K · N.

    Radial speed (``doppler``, a :class:`~towerd.tracking.doppler.DopplerGate`, and the
    frame's ``radial`` speeds given to :meth:`associate`): a pair inside the position
    gate whose detection carries a radial speed must also pass the radial-speed gate,
    ε <= γ_r, with ε from the track's predicted radial velocity û · v and its variance
    J P Jᵀ + σ_r² + σ_m² (equations in :mod:`towerd.tracking.doppler`); for tracks flagged
    ``initiating`` (one point so far, no velocity of their own) ε is taken with the
    velocity the pair implies (the state updated by the pair's position). Detections
    without a radial speed are gated on position only. The cost stays d²: radial speed
    only removes pairs, so ties are resolved on position as before.
    """

    gate_probability: float = 0.999
    pregate_min_pairs: int = 4096
    doppler: DopplerGate | None = None

    def __post_init__(self) -> None:
        if not 0.0 < self.gate_probability < 1.0:
            raise ConfigError(f"gate_probability must be in (0, 1), got {self.gate_probability!r}")

    @cached_property
    def gate(self) -> float:
        """γ: squared Mahalanobis distance threshold (3 degrees of freedom)."""
        return float(chi2_quantile(self.gate_probability, MEAS_DOF))

    def candidate_pairs(
        self, x_pred: np.ndarray, P_pred: np.ndarray, z: np.ndarray, R: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """Pairs (track_idx, det_idx) that might be in the gate (a superset of it)."""
        k, n = len(x_pred), len(z)
        if k * n < self.pregate_min_pairs:
            # d² >= |y|² / λmax(S) >= |y|² / tr(S): a pair with |y|² > γ tr(S) is outside
            # the gate, found without solving S (tr(S) = tr(H P_k Hᵀ) + tr(R_n)).
            ti, di, _ = self._near_pairs(x_pred, P_pred, z, R)
            return ti, di
        lam_track = np.linalg.eigvalsh(P_pred[:, POS, POS])[:, -1]
        lam_det = np.linalg.eigvalsh(R)[:, -1].max()
        radius = np.sqrt(self.gate * (lam_track + lam_det)) * (1.0 + 1e-9)
        return radius_pairs(x_pred[:, POS], radius, z)

    def mahalanobis2(
        self, x_pred: np.ndarray, P_pred: np.ndarray, z: np.ndarray, R: np.ndarray, ti: np.ndarray, di: np.ndarray
    ) -> np.ndarray:
        """Squared Mahalanobis distance d² (M,) of the pairs (ti, di); see the class docstring."""
        return self._distances(x_pred, P_pred, z, R, ti, di)[0]

    @staticmethod
    def _distances(
        x_pred: np.ndarray, P_pred: np.ndarray, z: np.ndarray, R: np.ndarray, ti: np.ndarray, di: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """(d² (M,), |S| (M,) m⁶) of the pairs (ti, di)."""
        y = z[di] - x_pred[ti, POS]  # (M, 3)
        S_inv, det_S = inv3(P_pred[:, POS, POS][ti] + R[di])  # S (M, 3, 3)
        return quad(S_inv, y), det_S

    def gate_pairs(
        self,
        x_pred: np.ndarray,
        P_pred: np.ndarray,
        z: np.ndarray,
        R: np.ndarray,
        *,
        radial: RadialSpeeds | None = None,
        initiating: np.ndarray | None = None,
    ) -> GatedPairs:
        """The pairs inside the position gate, with their radial-speed test (see the class
        docstring); arguments as :meth:`associate`. The pre-gate's innovations and the
        gate's S⁻¹ are kept for the pairs that pass (a one-point track's position update
        uses that same S)."""
        k, n = len(x_pred), len(z)
        if k * n == 0:
            ti = di = _NONE
            y = np.zeros((0, 3))
        elif k * n < self.pregate_min_pairs:
            ti, di, y = self._near_pairs(x_pred, P_pred, z, R)
        else:
            ti, di = self.candidate_pairs(x_pred, P_pred, z, R)
            y = z[di] - x_pred[ti, POS]
        S_inv, det_S = inv3(P_pred[:, POS, POS][ti] + R[di])  # S (M, 3, 3)
        d2 = quad(S_inv, y)
        inside = d2 <= self.gate
        if not inside.all():
            keep = inside.nonzero()[0]
            ti, di, d2, det_S, S_inv, y = ti[keep], di[keep], d2[keep], det_S[keep], S_inv[keep], y[keep]
        if not (len(ti) and self.doppler is not None and radial is not None):
            e_r = np.full(len(ti), np.nan)
            return GatedPairs(ti, di, d2, det_S, e_r, e_r, np.ones(len(ti), dtype=bool))
        x, P = x_pred[ti], P_pred[ti]
        allowance: float | np.ndarray = self.doppler.manoeuvre_sigma_mps**2
        if initiating is not None:
            first = np.asarray(initiating, dtype=bool)[ti]
            if first.any():  # residuals with the implied velocity: the pair's position update
                x[first], P[first] = position_update(x[first], P[first], S_inv=S_inv[first], y=y[first])
                allowance = np.where(first, 0.0, allowance)
        e_r, s2_r = self.doppler.residual(x, P, radial, di)
        return GatedPairs(ti, di, d2, det_S, e_r, s2_r, self.doppler.passes(e_r**2 / (s2_r + allowance)))

    def _near_pairs(
        self, x_pred: np.ndarray, P_pred: np.ndarray, z: np.ndarray, R: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """:meth:`candidate_pairs` by the trace pre-gate, with the pairs' innovations
        y = z_n − H x_k (M, 3) (the same bits as computed pair by pair)."""
        y = z[None, :, :] - x_pred[:, None, POS]  # (K, N, 3)
        diag = P_pred.reshape(-1, STATE_DIM * STATE_DIM)[:, :15:7]  # P_ee, P_nn, P_uu (K, 3)
        tr_s = np.add.reduce(diag, axis=1)[:, None] + np.add.reduce(R.reshape(-1, 9)[:, ::4], axis=1)[None, :]
        near = np.einsum("knd,knd->kn", y, y) <= (self.gate * (1.0 + 1e-6)) * tr_s
        ti, di = near.nonzero()
        return ti, di, y[ti, di]

    def assign(
        self, gated: GatedPairs, n_tracks: int, established: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """GNN over the gated pairs that pass the radial-speed gate: (track_idx (A,),
        det_idx (A,), pair (A,): each one's index in ``gated``), sorted by track index."""
        pair = np.flatnonzero(gated.doppler_ok)
        if len(pair) == 0:
            return _NONE, _NONE, _NONE
        ti, di = gated.track_idx[pair], gated.det_idx[pair]
        miss = np.empty(n_tracks)  # empty + fill: np.full's Python layer costs more here
        miss.fill(self.gate)
        if established is not None:
            miss[np.asarray(established, dtype=bool)] = 2.0 * self.gate
        chosen = solve_gated_pairs(ti, di, gated.d2[pair], miss)
        return ti[chosen], di[chosen], pair[chosen]

    def associate(
        self,
        x_pred: np.ndarray,
        P_pred: np.ndarray,
        z: np.ndarray,
        R: np.ndarray,
        *,
        established: np.ndarray | None = None,
        radial: RadialSpeeds | None = None,
        initiating: np.ndarray | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """x_pred (K, 6), P_pred (K, 6, 6), z (N, 3) m, R (N, 3, 3) m², established (K,)
        bool or None (none established), radial: the detections' radial speeds or None,
        initiating (K,) bool or None (tracks with one point so far) -> (track_idx (M,),
        det_idx (M,)): the assigned pairs, sorted by track index."""
        gated = self.gate_pairs(x_pred, P_pred, z, R, radial=radial, initiating=initiating)
        ti, di, _ = self.assign(gated, len(x_pred), established)
        return ti, di


@dataclass(frozen=True, eq=False)
class GatedPairs:
    """One frame's (track, detection) pairs inside the position gate, with what gating
    them computed, for the tracker to reuse (the score, the new-track test):

    track_idx, det_idx (M,) intp; d2 (M,): squared Mahalanobis distance; det_S (M,) m⁶:
    the determinant of the innovation covariance S; e_r (M,) m/s, s2_r (M,) (m/s)²: the
    radial-speed residual and its variance without the manoeuvre allowance, taken with
    the prediction or, for tracks with one point so far, with the state the pair implies
    (NaN: no radial speed, or no Doppler gate); doppler_ok (M,) bool: passes the
    radial-speed gate.
    """

    track_idx: np.ndarray
    det_idx: np.ndarray
    d2: np.ndarray
    det_S: np.ndarray
    e_r: np.ndarray
    s2_r: np.ndarray
    doppler_ok: np.ndarray


_NONE = np.zeros(0, dtype=np.intp)
_NONE.flags.writeable = False


def radius_pairs(centres: np.ndarray, radius: np.ndarray, z: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Pairs (i, n) with |z_n − centres_i| <= radius_i: centres (K, 3) m, radius (K,) m,
    z (N, 3) m -> (i (P,), n (P,)) intp, sorted by i then n. A sweep along east: the
    points sorted by east coordinate, each centre takes the run of points within its
    radius in east (two searchsorted over all centres at once), and only those are
    measured in 3-D. Work grows with K + N + the points in each centre's slab, not
    with K · N, in a dozen whole-array steps (no tree to build)."""
    k = len(centres)
    if k == 0 or len(z) == 0:
        return _NONE, _NONE
    order = np.argsort(z[:, 0], kind="stable")
    east = z[order, 0]
    first = np.searchsorted(east, centres[:, 0] - radius, side="left")
    count = np.searchsorted(east, centres[:, 0] + radius, side="right") - first
    total = int(count.sum())
    if total == 0:
        return _NONE, _NONE
    ti = np.repeat(np.arange(k), count)
    di = order[np.repeat(first - (np.cumsum(count) - count), count) + np.arange(total)]
    d = z[di] - centres[ti]
    near = np.einsum("ij,ij->i", d, d) <= radius[ti] ** 2
    ti, di = ti[near], di[near]
    sort = np.lexsort((di, ti))
    return ti[sort], di[sort]


def solve_gated(ti: np.ndarray, di: np.ndarray, d2: np.ndarray, miss: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Optimal assignment of the gated pairs (ti, di) with costs d2 (M,), where track k
    may instead miss at cost ``miss[k]`` and a detection may stay unused at no cost,
    solved per connected component (see :class:`GnnAssociator`). Requires
    d2 <= miss[ti]. Returns (track_idx, det_idx), sorted by track index."""
    chosen = solve_gated_pairs(ti, di, d2, miss)
    return ti[chosen], di[chosen]


def solve_gated_pairs(ti: np.ndarray, di: np.ndarray, d2: np.ndarray, miss: np.ndarray) -> np.ndarray:
    """:func:`solve_gated` as the indices (A,) intp of the chosen pairs in (ti, di),
    in order of track index (:func:`towerd.assignment.assign_sparse`)."""
    return assign_sparse(ti, di, d2, miss)


__all__ = ["GatedPairs", "GnnAssociator", "components", "solve_gated", "solve_gated_pairs"]

NearestNeighbourAssociator = GnnAssociator
"""The name the first design used; the algorithm is global nearest neighbour."""
