"""Which broadcast goes with which radar track: gated global nearest neighbour.

``linear_sum_assignment`` on the augmented (N, K + N) matrix [D_gated | diag(γ)]: a pair
outside its gate is forbidden, and each broadcast can always take its own "no track"
column at the cost of its gate γ_n, so the problem is always feasible and a miss competes
on cost with a poor hit. The solver is deterministic: equal inputs give equal pairs.
When no broadcast gates more than one track and no track more than one broadcast (drones
apart: the usual case), every gated pair is the optimum and the solver is not called.
"""

from __future__ import annotations

import numpy as np

from towerd.assignment import linear_sum_assignment


def assign(d2: np.ndarray, gate: np.ndarray, eligible: np.ndarray | None = None) -> np.ndarray:
    """(N,) track column of each broadcast, -1 for none. ``d2`` (N, K) squared
    distances, ``gate`` (N,) γ_n, ``eligible`` (K,) bool: tracks that may take one
    (default all)."""
    n, k = d2.shape
    match = np.full(n, -1, dtype=np.intp)
    if n == 0 or k == 0:
        return match
    ok = (d2 <= gate[:, None]) & np.isfinite(d2)
    if eligible is not None:
        ok &= np.asarray(eligible, dtype=bool)[None, :]
    if not ok.any():
        return match
    if ok.sum(axis=1).max() <= 1 and ok.sum(axis=0).max() <= 1:
        rows, cols = np.nonzero(ok)
        match[rows] = cols
        return match
    cost = np.full((n, k + n), np.inf)
    cost[:, :k] = np.where(ok, d2, np.inf)
    cost[np.arange(n), k + np.arange(n)] = gate
    rows, cols = linear_sum_assignment(cost)
    hit = cols < k
    match[rows[hit]] = cols[hit]
    return match
