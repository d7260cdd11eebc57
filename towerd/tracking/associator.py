"""Data association: which detection (if any) updates which predicted track."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from functools import cached_property

import numpy as np
from scipy.optimize import linear_sum_assignment
from scipy.spatial import cKDTree
from scipy.stats import chi2

from towerd.errors import ConfigError
from towerd.tracking.state import POS

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

    Gating candidates: all K·N pairs when that is below ``pregate_min_pairs``; above it a
    KD-tree over detection positions yields only the pairs within a Euclidean radius that
    cannot cut a gated pair: |y|² <= d² · λmax(S) <= γ (λmax(H P_k Hᵀ) + max_n λmax(R_n)).
    The matrix given to the solver has only the tracks and detections in some gated pair.
    (Splitting it into gate-connected components is a later optimisation; the solver
    itself takes ~12 ms at 1000 x 1500.)
    """

    gate_probability: float = 0.999
    pregate_min_pairs: int = 4096

    def __post_init__(self) -> None:
        if not 0.0 < self.gate_probability < 1.0:
            raise ConfigError(f"gate_probability must be in (0, 1), got {self.gate_probability!r}")

    @cached_property
    def gate(self) -> float:
        """γ: squared Mahalanobis distance threshold (3 degrees of freedom)."""
        return float(chi2.ppf(self.gate_probability, MEAS_DOF))

    def candidate_pairs(
        self, x_pred: np.ndarray, P_pred: np.ndarray, z: np.ndarray, R: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """Pairs (track_idx, det_idx) that might be in the gate (a superset of it)."""
        k, n = len(x_pred), len(z)
        if k * n < self.pregate_min_pairs:
            ti, di = np.divmod(np.arange(k * n), n)
            return ti, di
        lam_track = np.linalg.eigvalsh(P_pred[:, POS, POS])[:, -1]
        lam_det = np.linalg.eigvalsh(R)[:, -1].max()
        radius = np.sqrt(self.gate * (lam_track + lam_det)) * (1.0 + 1e-9)
        hits = cKDTree(z).query_ball_point(x_pred[:, POS], r=radius, return_sorted=False)
        counts = np.fromiter((len(h) for h in hits), dtype=np.intp, count=k)
        ti = np.repeat(np.arange(k), counts)
        di = np.fromiter((d for h in hits for d in h), dtype=np.intp, count=int(counts.sum()))
        return ti, di

    def mahalanobis2(
        self, x_pred: np.ndarray, P_pred: np.ndarray, z: np.ndarray, R: np.ndarray, ti: np.ndarray, di: np.ndarray
    ) -> np.ndarray:
        """Squared Mahalanobis distance d² (M,) of the pairs (ti, di); see the class docstring."""
        y = z[di] - x_pred[ti, POS]  # (M, 3)
        S = P_pred[:, POS, POS][ti] + R[di]  # (M, 3, 3)
        return np.einsum("mi,mi->m", y, np.linalg.solve(S, y[..., None])[..., 0])

    def associate(
        self,
        x_pred: np.ndarray,
        P_pred: np.ndarray,
        z: np.ndarray,
        R: np.ndarray,
        *,
        established: np.ndarray | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """x_pred (K, 6), P_pred (K, 6, 6), z (N, 3) m, R (N, 3, 3) m², established (K,)
        bool or None (none established) -> (track_idx (M,), det_idx (M,)): the assigned
        pairs, sorted by track index."""
        none = (np.zeros(0, dtype=np.intp), np.zeros(0, dtype=np.intp))
        if len(x_pred) == 0 or len(z) == 0:
            return none
        ti, di = self.candidate_pairs(x_pred, P_pred, z, R)
        if len(ti) == 0:
            return none
        d2 = self.mahalanobis2(x_pred, P_pred, z, R, ti, di)
        gated = d2 <= self.gate
        ti, di, d2 = ti[gated], di[gated], d2[gated]
        if len(ti) == 0:
            return none

        tracks, t_row = np.unique(ti, return_inverse=True)
        dets, d_col = np.unique(di, return_inverse=True)
        kt, nd = len(tracks), len(dets)
        cost = np.full((kt, nd + kt), np.inf)
        cost[t_row, d_col] = d2
        miss = np.full(kt, self.gate)
        if established is not None:
            miss[np.asarray(established, dtype=bool)[tracks]] = 2.0 * self.gate
        cost[np.arange(kt), nd + np.arange(kt)] = miss
        rows, cols = linear_sum_assignment(cost)
        hit = cols < nd
        return tracks[rows[hit]].astype(np.intp), dets[cols[hit]].astype(np.intp)


NearestNeighbourAssociator = GnnAssociator
"""The name the first design used; the algorithm is global nearest neighbour."""
