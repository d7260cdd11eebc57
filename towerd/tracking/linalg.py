"""Batched linear algebra of the tracker's small matrices (3x3 innovation covariances,
6x6 state covariances), as a few whole-array NumPy expressions.

A frame holds a few dozen tracks, each with three IMM modes: ~100 matrices of 3x3 or
6x6. ``np.linalg.solve`` and ``slogdet`` run one LAPACK call per matrix behind a thick
Python wrapper, and ``np.einsum`` walks them element by element: at this size the calls,
not the arithmetic, are the cost. Here a 3x3 inverse and its determinant come from its
cofactors, a handful of whole-array operations (S = H P Hᵀ + R is symmetric positive
definite since R is, so never singular), and products are stacked ``@``.
"""

from __future__ import annotations

import numpy as np

# Cofactor C_ij = s[i+1, j+1] s[i+2, j+2] − s[i+1, j+2] s[i+2, j+1] (indices mod 3); the
# inverse is adj(S) / det S with adj(S)_ij = C_ji. Flat indices into S.reshape(-1, 9):
_ROW = np.repeat(np.arange(3), 3)
_COL = np.tile(np.arange(3), 3)
_A = ((_COL + 1) % 3) * 3 + (_ROW + 1) % 3
_B = ((_COL + 2) % 3) * 3 + (_ROW + 2) % 3
_C = ((_COL + 1) % 3) * 3 + (_ROW + 2) % 3
_D = ((_COL + 2) % 3) * 3 + (_ROW + 1) % 3
_AC = np.concatenate([_A, _C])
_BD = np.concatenate([_B, _D])
for _a in (_A, _B, _C, _D, _AC, _BD):
    _a.flags.writeable = False


# A symmetric 6x6 matrix as its 21 upper-triangle entries (a <= b, row by row), "vech":
# VECH_A, VECH_B the (row, column) of each; VECH_OF_FULL (36,) the flat indices of a full
# matrix's upper triangle; FULL_OF_VECH (36,) the vech entry of each flat (row, column).
VECH_A, VECH_B = np.triu_indices(6)
VECH_OF_FULL = VECH_A * 6 + VECH_B
_tri = np.zeros((6, 6), dtype=np.intp)
_tri[VECH_A, VECH_B] = _tri[VECH_B, VECH_A] = np.arange(len(VECH_A))
FULL_OF_VECH = _tri.reshape(-1)
_CONG_A = VECH_A[None, :] * 6 + np.arange(6)[:, None]
"""(6, 21): the flat index of F[a_t, c] at [c, t] (:func:`congruence_vech`)."""
_CONG_B = VECH_B[None, :] * 6 + np.arange(6)[:, None]
"""(6, 21): the flat index of F[b_t, d] at [d, t]."""
for _a in (VECH_A, VECH_B, VECH_OF_FULL, FULL_OF_VECH, _CONG_A, _CONG_B):
    _a.flags.writeable = False
del _tri


def congruence_vech(F: np.ndarray) -> np.ndarray:
    """F (M, 6, 6) -> G (M, 36, 21) such that (flat P) @ G_j is the vech of F_j P F_jᵀ:
    G_j[(c, d), t] = F_j[a_t, c] F_j[b_t, d] for the upper-triangle entry t = (a_t, b_t).
    One product per model then gives every track's F P Fᵀ, each entry one sum of 36 terms,
    and expanded with FULL_OF_VECH the result is exactly symmetric. Made once per dt (in
    the daemon, once a frame): two gathers of F's flat entries laid out as (c, t) and
    (d, t), and one broadcast product that is G in its final layout."""
    flat = F.reshape(len(F), 36)
    g = np.take(flat, _CONG_A, axis=1)[:, :, None, :] * np.take(flat, _CONG_B, axis=1)[:, None, :, :]  # (M, 6, 6, 21)
    return g.reshape(len(F), 36, len(VECH_A))


def inv3(S: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """S (..., 3, 3) -> (S⁻¹ (..., 3, 3), det S (...)) by cofactors: S⁻¹ = adj(S) / det S."""
    s = S.reshape(-1, 9)
    prod = s[:, _AC] * s[:, _BD]  # the cofactors' two products side by side, (M, 18)
    adj = prod[:, :9] - prod[:, 9:]  # adj(S), flat (M, 9)
    det = np.add.reduce(s[:, :3] * adj[:, ::3], axis=1)  # row 0 of S by column 0 of adj, summed in order
    return (adj / det[:, None]).reshape(S.shape), det.reshape(S.shape[:-2])


def mv(A: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Batched matrix-vector product A v: A (..., n, k), v (..., k) broadcast -> (..., n)."""
    return (A @ v[..., None])[..., 0]


def quad(A: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Batched quadratic form vᵀ A v: A (..., n, n), v (..., n) -> (...)."""
    return np.add.reduce(mv(A, v) * v, axis=-1)


def sym(P: np.ndarray) -> np.ndarray:
    """½ (P + Pᵀ) over the last two axes: rounding kept symmetric."""
    out = P + P.swapaxes(-1, -2)
    out *= 0.5
    return out


def norm_rows(d: np.ndarray) -> np.ndarray:
    """|d| over the last axis: what ``np.linalg.norm(d, axis=-1)`` computes for real d
    (the same sum in the same order), without its Python dispatch."""
    return np.sqrt(np.add.reduce(d * d, axis=-1))
