"""Multi-target tracking metrics against truth: GOSPA (and OSPA).

Used by the tests and the benchmarks to score a tracker's output against a scenario's
truth; nothing at run time depends on it.

GOSPA with α = 2 (Rahmathullah, García-Fernández & Svensson, "Generalized optimal
sub-pattern assignment metric", FUSION 2017): for estimates X = {x_i} and truths
Y = {y_j}, cut-off c > 0 and order p >= 1,

    GOSPA = ( min over partial assignments γ [ Σ_{(i,j) ∈ γ} d(x_i, y_j)^p
                                              + (c^p / 2) (|X| − |γ| + |Y| − |γ|) ] )^(1/p)

where only pairs with d < c are worth assigning (an assigned pair at d >= c costs at
least as much as leaving both unassigned). It is computed exactly with
``linear_sum_assignment`` on min(d^p, c^p): pairs at the cap are then read as
unassigned, and the sum is the same either way, since min(d^p, c^p) = c^p is what a
missed truth plus a false estimate cost together.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
from scipy.optimize import linear_sum_assignment
from scipy.spatial.distance import cdist

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Gospa:
    """One GOSPA evaluation: ``distance`` and its decomposition (each term is a part of
    distance^p): ``localisation`` = Σ d^p over assigned pairs, ``missed`` / ``false``
    the numbers of unassigned truths / estimates (counts, not costs), ``assignment``
    (n, 2) the (estimate index, truth index) pairs with d < c."""

    distance: float
    localisation: float
    missed: int
    false: int
    assignment: np.ndarray


def _points(a: np.ndarray) -> np.ndarray:
    """Points as a 2-D (n, d) float array (an empty input stays empty)."""
    a = np.asarray(a, dtype=float)
    if a.ndim == 2:
        return a
    return a.reshape(len(a), -1) if a.size else np.zeros((len(a), 0))


def gospa(estimates: np.ndarray, truths: np.ndarray, *, c: float, p: float = 2.0) -> Gospa:
    """GOSPA (α = 2) between estimates (n, d) and truths (m, d), Euclidean distance.

    c: cut-off distance (same unit as the points); p: order >= 1. See the module
    docstring."""
    if not c > 0 or not p >= 1:
        raise ValueError(f"need c > 0 and p >= 1, got c={c!r}, p={p!r}")
    x, y = _points(estimates), _points(truths)
    n, m = len(x), len(y)
    cp = c**p
    if n == 0 or m == 0:
        total = 0.5 * cp * (n + m)
        return Gospa(total ** (1.0 / p), 0.0, m, n, np.zeros((0, 2), dtype=np.intp))
    d = cdist(x, y)
    rows, cols = linear_sum_assignment(np.minimum(d**p, cp))
    keep = d[rows, cols] < c
    rows, cols = rows[keep], cols[keep]
    loc = float(np.sum(d[rows, cols] ** p))
    k = len(rows)
    total = loc + 0.5 * cp * ((n - k) + (m - k))
    return Gospa(total ** (1.0 / p), loc, m - k, n - k, np.column_stack([rows, cols]).astype(np.intp))


def ospa(estimates: np.ndarray, truths: np.ndarray, *, c: float, p: float = 2.0) -> float:
    """OSPA (Schuhmacher, Vo & Vo 2008) between estimates (n, d) and truths (m, d):
    ( (1/max(n, m)) (min over assignments of the smaller set Σ min(d, c)^p + c^p |n − m|) )^(1/p);
    0 when both are empty."""
    x, y = _points(estimates), _points(truths)
    n, m = len(x), len(y)
    if n == 0 and m == 0:
        return 0.0
    if n == 0 or m == 0:
        return float(c)
    cost = np.minimum(cdist(x, y), c) ** p
    rows, cols = linear_sum_assignment(cost)
    total = cost[rows, cols].sum() + c**p * abs(n - m)
    return float((total / max(n, m)) ** (1.0 / p))
