"""Merge the several detections one target produces in a frame into one.

A multirotor's arms, rotors and body can each give a plot; a radar with its own point
cloud (TI mmWave) gives many. Tracking wants one measurement per target per frame, so
detections closer than a distance are merged (transitively: single linkage) before
association.

Which detections belong together is decided statistically, not by a fixed distance:
far from the radar the angular noise spreads one target's points over metres, near it
two drones a few metres apart are clearly separate.
"""

from __future__ import annotations

import functools
import logging
import math
from dataclasses import dataclass

import numpy as np

from towerd.assignment import components
from towerd.detection.plots import Detections, all_true
from towerd.gates import chi2_quantile

log = logging.getLogger(__name__)

CHUNK_ELEMENTS = 1 << 18
"""Pair distances the brute-force neighbour search holds at once (rows of a block times
all columns): a frame of a few hundred points is one block, a huge cloud is cut into
blocks of rows so memory stays bounded. Time grows as N²: about 0.1 s at 3,000 points
and 1.3 s at 10,000 (measured on this project's 2-core test machine under load). A
cloud whose three axes' differences fit in it (N up to 295) is one (3, N, N) block,
whose differences the Mahalanobis test then reuses."""


def near_pairs(pos: np.ndarray, reach_m2: np.ndarray) -> np.ndarray:
    """(M, 2) index pairs i < j of the points ``pos`` (N, 3) with |pᵢ − pⱼ|² <= reachᵢ +
    reachⱼ (``reach_m2`` (N,)), sorted by i then j: brute force over blocks of rows (see
    :data:`CHUNK_ELEMENTS`), squared distances summed per axis."""
    n = pos.shape[0]
    if 3 * n * n <= CHUNK_ELEMENTS:  # a frame: one block, every axis in one step
        i, j, _ = _near_block(pos, reach_m2)
        return np.stack((i, j), axis=1)
    x, y, z = pos[:, 0], pos[:, 1], pos[:, 2]
    cols = np.arange(n)
    rows = max(1, CHUNK_ELEMENTS // max(n, 1))
    found = []
    for s in range(0, n, rows):
        e = min(n, s + rows)
        d2 = (x[s:e, None] - x) ** 2
        d2 += (y[s:e, None] - y) ** 2
        d2 += (z[s:e, None] - z) ** 2
        near = d2 <= reach_m2[s:e, None] + reach_m2
        near &= cols > cols[s:e, None]  # j > i only
        found.append(np.argwhere(near))
        if s:
            found[-1][:, 0] += s
    return found[0] if len(found) == 1 else np.concatenate(found)


def _near_block(pos: np.ndarray, reach_m2: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(i, j) of :func:`near_pairs` for a cloud small enough for one (3, N, N) block, and
    ``diff`` (3, M): ``diff[:, m]`` is pᵢ − pⱼ of pair m (taken from the block)."""
    n = pos.shape[0]
    p = np.ascontiguousarray(pos.T)  # (3, N): each axis a contiguous row
    diff = p[:, :, None] - p[:, None, :]
    sq = diff * diff
    d2 = sq[0] + sq[1]
    d2 += sq[2]
    near = d2 <= reach_m2[:, None] + reach_m2
    near &= _upper(n)
    k = np.flatnonzero(near)  # a 1-D nonzero and a divmod cost less than a 2-D nonzero
    i, j = np.divmod(k, n)
    return i, j, diff.reshape(3, -1).take(k, 1)


@functools.lru_cache(maxsize=32)
def _upper(n: int) -> np.ndarray:
    """(n, n) bool, True above the diagonal (j > i), read-only."""
    upper = np.triu(np.ones((n, n), dtype=bool), 1)
    upper.flags.writeable = False
    return upper


_UPPER = np.array([0, 1, 2, 4, 5, 8])
"""Elements 00, 01, 02, 11, 12, 22 of a flattened 3 x 3: a symmetric matrix's upper triangle."""
_ADJ_LEFT = np.array([3, 2, 1, 0, 1, 0, 4, 1, 2, 2, 0, 1])
_ADJ_RIGHT = np.array([5, 4, 4, 5, 2, 3, 4, 5, 3, 2, 4, 1])
"""adj(S)'s upper triangle from S's (rows of :data:`_UPPER`): entry k is
s[L[k]] s[R[k]] − s[L[k + 6]] s[R[k + 6]] (e.g. adj₀₀ = S₁₁ S₂₂ − S₁₂²)."""
_ROW_A, _ROW_B = np.array([0, 0, 0, 1, 1, 2]), np.array([0, 1, 2, 1, 2, 2])
"""d's rows whose products d_a d_b pair with the entries of :data:`_UPPER`."""
_OFF_DIAGONAL_TWICE = np.array([1.0, 2.0, 2.0, 1.0, 2.0, 1.0])
"""dᵀ A d of a symmetric A from its upper triangle: off-diagonal entries count twice."""
_GATE_MARGIN = 1e-10
"""Relative margin of the adjugate gate test (see :meth:`PointClusterer._within_gate`)."""
for _index in (_UPPER, _ADJ_LEFT, _ADJ_RIGHT, _ROW_A, _ROW_B, _OFF_DIAGONAL_TWICE):
    _index.flags.writeable = False
del _index


@dataclass(frozen=True)
class PointClusterer:
    """Single-linkage clustering of the detections of one frame that are consistent
    with coming from one target.

    Detections i and j (positions pᵢ, pⱼ, covariances Cᵢ, Cⱼ) are linked when

        d² = (pᵢ − pⱼ)ᵀ (Cᵢ + Cⱼ + 2 e² I)⁻¹ (pᵢ − pⱼ) <= χ²₃⁻¹(gate_probability)

    where e = ``extent_m`` is the one-sigma spread, per axis, of a target's scatterers
    about its centre (so the difference of two scatterers has variance 2e²). Candidate
    pairs are those no farther apart than a linked pair can be, |pᵢ − pⱼ|² <= γ (tr Cᵢ +
    tr Cⱼ + 2e²) (since d² >= |pᵢ − pⱼ|² / λmax(S) and a covariance's largest eigenvalue is
    at most its trace), found by :func:`near_pairs` (brute force: a frame holds tens of
    points); clusters are the connected components of the linked graph. Each
    cluster becomes one detection:

    - position: weighted centroid c = Σ wᵢ pᵢ with weights ∝ linear SNR 10^(snr/10),
      normalised to Σ wᵢ = 1 (power-weighted centroid: the strongest scatterers dominate,
      as in a radar's own plot extractor); equal weights when any member's SNR is NaN;
    - covariance: Σ wᵢ² Cᵢ + Σ wᵢ (pᵢ − c)(pᵢ − c)ᵀ. The first term is the error of the
      weighted mean of independent measurements (for equal weights: mean covariance / n);
      the second is the spread of the points about the centroid, added in full (not / n)
      because the scatterers of one target are not independent looks at one point: which
      of them are seen changes from frame to frame and moves the centroid by about that
      spread. A single-point cluster is returned unchanged;
    - SNR: the maximum (NaN if all NaN); radial velocity: the mean of the known ones
      (NaN if none); Doppler spread: the (population) standard deviation of the known
      radial velocities, NaN with fewer than two; radial-speed variance: the mean of the
      known members' variances divided by their count plus the Doppler spread squared
      (added in full, as the position spread is: which scatterers are seen, body or
      blades, moves the mean by about that much), NaN when no member has one; height
      measured: only when every member's was.

    ``enabled=False`` returns detections as they are.
    """

    extent_m: float = 1.0
    gate_probability: float = 0.99
    enabled: bool = True

    @functools.cached_property
    def gate(self) -> float:
        """γ: the squared Mahalanobis distance below which two detections link."""
        return float(chi2_quantile(self.gate_probability, 3))

    @functools.cached_property
    def _extent_cov(self) -> np.ndarray:
        """2 e² I: the covariance of the difference of two scatterers of one target."""
        return 2.0 * self.extent_m**2 * np.eye(3)

    def linked_pairs(self, det: Detections) -> np.ndarray:
        """(M, 2) index pairs of detections consistent with one target, sorted."""
        i, j = self._linked(det)
        return np.stack((i, j), axis=1)

    def _linked(self, det: Detections) -> tuple[np.ndarray, np.ndarray]:
        """(i, j) of :meth:`linked_pairs`."""
        pos, cov = det.pos_enu_m, det.cov_enu_m2
        trace = cov.reshape(-1, 9)[:, ::4].sum(axis=1)
        reach = (self.gate * (1.0 + 1e-9)) * (trace + self.extent_m**2)
        if 3 * pos.shape[0] ** 2 <= CHUNK_ELEMENTS:
            i, j, diff = _near_block(pos, reach)
            d = diff.T
        else:
            pairs = near_pairs(pos, reach)
            i, j = pairs[:, 0], pairs[:, 1]
            d = pos.take(i, 0) - pos.take(j, 0)
        if i.shape[0] == 0:
            return i, j
        keep = self._within_gate(cov, i, j, d)
        return i[keep], j[keep]

    def _within_gate(self, cov: np.ndarray, i: np.ndarray, j: np.ndarray, d: np.ndarray) -> np.ndarray:
        """(M,) bool: d² <= γ for the candidate pairs (i, j), ``d`` (M, 3) their pᵢ − pⱼ,
        exactly as the reference decides, d² = einsum(d, linalg.solve(S, d)).

        The reference is one LAPACK solve per pair (a frame's 70-90 pairs: a fifth of the
        clusterer's instructions). Instead d² is judged from the adjugate of the symmetric
        S = [[a, b, c], [b, d, e], [c, e, f]], q = dᵀ adj(S) d and det S = (a, b, c)·adj(S)₀:
        d² <= γ ⟺ q <= γ det S (det S > 0), a dozen vector operations over all pairs.
        Near the boundary the two computations could round to different sides; both err by
        at most a few ulps times tr(S)³ / det S (the conditioning of S and of the
        cofactor sums), so every pair is decided here only when |q − γ det S| and det S
        both exceed :data:`_GATE_MARGIN` γ tr(S)³, thousands of times that error;
        otherwise (in practice never: the nominal scene's closest pair is 2,000 times the
        margin away) the whole frame takes the reference, for the same floats."""
        c6 = cov.reshape(-1, 9).T[_UPPER]  # (6, N): a, b, c, d, e, f of each detection
        s = c6.take(i, 1)
        s += c6.take(j, 1)
        s += self._extent_upper  # S's upper triangle, (Cᵢ + Cⱼ) + 2e² I as the reference adds it
        prod = s.take(_ADJ_LEFT, 0) * s.take(_ADJ_RIGHT, 0)
        adj = prod[:6] - prod[6:]  # adj(S)'s upper triangle, rows as s's
        det = (s[:3] * adj[:3]).sum(axis=0)
        dt = d.T
        adj *= dt.take(_ROW_A, 0) * dt.take(_ROW_B, 0)
        q = _OFF_DIAGONAL_TWICE @ adj
        gdet = self.gate * det
        trace = s[0] + s[3]
        trace += s[5]
        if (np.minimum(np.abs(q - gdet), det) > (_GATE_MARGIN * self.gate) * trace**3).all():
            return q <= gdet
        S = cov.take(i, 0) + cov.take(j, 0) + self._extent_cov
        return np.einsum("mi,mi->m", d, np.linalg.solve(S, d[..., None])[..., 0]) <= self.gate

    @functools.cached_property
    def _extent_upper(self) -> np.ndarray:
        """(6, 1) the upper triangle of 2 e² I, rows as :data:`_UPPER`'s."""
        return self._extent_cov.reshape(9)[_UPPER, None].copy()

    def cluster(self, det: Detections) -> Detections:
        """Merge the detections of one target; see the class docstring."""
        n = len(det)
        if not self.enabled or n < 2:
            return det
        i, j = self._linked(det)
        if i.shape[0] == 0:
            return det
        n_clusters, labels = components(i, j, n)
        log.debug("%s: %d detections -> %d clusters", det.sensor, n, n_clusters)
        snr, rv, rv_var_in = det.snr_db, det.radial_vel_mps, det.radial_vel_var_mps2
        if math.isfinite(float(snr.sum() + rv.sum() + rv_var_in.sum())) and det.height_measured.all():
            return _merge_known(det, n_clusters, labels)
        return _merge(det, n_clusters, labels)


def _merge(det: Detections, n_clusters: int, labels: np.ndarray) -> Detections:
    """The clusters ``labels`` (N,) in 0..n_clusters−1 of ``det`` as one detection each
    (see :class:`PointClusterer`), for any frame: unknown SNR, radial speed, its variance
    or height allowed."""
    snr, rv, rv_var_in = det.snr_db, det.radial_vel_mps, det.radial_vel_var_mps2
    snr_known, rv_known = np.isfinite(snr), np.isfinite(rv)
    var_known = rv_known & np.isfinite(rv_var_in)
    rv0 = np.where(rv_known, rv, 0.0)
    # Per-cluster counts and sums in one pass, row by row as bincount adds them.
    sums = np.zeros((n_clusters, 7))
    np.add.at(sums, labels, np.column_stack((~snr_known, rv_known, rv0, rv0**2, var_known,
                                             np.where(var_known, rv_var_in, 0.0), ~det.height_measured)))
    snr_unknown, rv_count, rv_sum, rv_sq, var_count, var_sum, height_unknown = sums.T

    # Weights: linear SNR relative to the cluster's strongest member (no overflow),
    # or equal when any member's SNR is unknown.
    max_snr = np.full(n_clusters, -np.inf)
    np.maximum.at(max_snr, labels, np.where(snr_known, snr, -np.inf))
    with np.errstate(invalid="ignore", divide="ignore"):
        w = np.where((snr_unknown > 0)[labels], 1.0, 10.0 ** ((snr - max_snr[labels]) / 10.0))
        w = w / np.bincount(labels, weights=w, minlength=n_clusters)[labels]

        centroid = np.zeros((n_clusters, 3))
        np.add.at(centroid, labels, w[:, None] * det.pos_enu_m)
        d = det.pos_enu_m - centroid[labels]
        cov = np.zeros((n_clusters, 3, 3))
        spread = d[:, :, None] * d[:, None, :]
        np.add.at(cov, labels, (w**2)[:, None, None] * det.cov_enu_m2 + w[:, None, None] * spread)

        out_snr = np.where(max_snr > -np.inf, max_snr, np.nan)
        out_rv = np.where(rv_count > 0, rv_sum / rv_count, np.nan)
        rv_var = np.maximum(rv_sq / rv_count - out_rv**2, 0.0)
        out_spread = np.where(rv_count >= 2, np.sqrt(rv_var), np.nan)
        out_var = np.where(var_count > 0, var_sum / var_count**2 + rv_var, np.nan)

    return Detections(
        sensor=det.sensor,
        t_mono=det.t_mono,
        pos_enu_m=centroid,
        cov_enu_m2=cov,
        snr_db=out_snr,
        radial_vel_mps=out_rv,
        doppler_spread_mps=out_spread,
        radial_vel_var_mps2=out_var,
        sensor_pos_enu_m=det.sensor_pos_enu_m,
        unambiguous_speed_mps=det.unambiguous_speed_mps,
        height_measured=height_unknown == 0,
    )


def _merge_known(det: Detections, n_clusters: int, labels: np.ndarray) -> Detections:
    """:func:`_merge` for a frame whose every row has an SNR, a radial speed with its
    variance and a measured height (a TI frame): the same arithmetic, value for value,
    without the masks that only the unknowns need (every count is then the cluster's
    size; sums are bincount's, row by row from 0 as np.add.at adds them)."""
    snr, rv, pos = det.snr_db, det.radial_vel_mps, det.pos_enu_m
    size = np.bincount(labels, minlength=n_clusters).astype(float)  # float: no casting in the divisions
    rv_sum = np.bincount(labels, rv, n_clusters)
    rv_sq = np.bincount(labels, rv**2, n_clusters)
    var_sum = np.bincount(labels, det.radial_vel_var_mps2, n_clusters)
    max_snr = np.full(n_clusters, -np.inf)
    np.maximum.at(max_snr, labels, snr)
    w = 10.0 ** ((snr - max_snr.take(labels)) / 10.0)
    w /= np.bincount(labels, w, n_clusters).take(labels)
    bins = np.add.outer(labels * 9, _ARANGE)  # one set of bins for both sums below
    centroid = _sum_rows(bins, w[:, None] * pos, n_clusters)
    d = pos - centroid.take(labels, 0)
    cov = _sum_rows(bins, (w * w)[:, None, None] * det.cov_enu_m2 + w[:, None, None] * (d[:, :, None] * d[:, None, :]),
                    n_clusters)
    out_rv = rv_sum / size
    rv_var = np.maximum(rv_sq / size - out_rv**2, 0.0)
    spread = np.where(size >= 2, np.sqrt(rv_var), np.nan)
    return Detections.of(det.sensor, det.t_mono, centroid, cov, max_snr, out_rv, spread,
                         var_sum / size**2 + rv_var, det.sensor_pos_enu_m, det.unambiguous_speed_mps,
                         all_true(n_clusters))


def _sum_rows(bins: np.ndarray, values: np.ndarray, n_clusters: int) -> np.ndarray:
    """(n_clusters, ...) sums of the rows of ``values`` (N, 3) or (N, 3, 3) by cluster:
    one bincount over the elements, ``bins`` (N, 9) being 9 × the row's cluster + the
    element's place (a 3-vector takes the first three), each (cluster, element) bin
    adding its rows in order from 0 as ``np.add.at`` does (the same floats; ufunc.at
    walks rows of rows element by element)."""
    m = values.size // values.shape[0]
    sums = np.bincount((bins if m == 9 else bins[:, :m]).ravel(), values.ravel(), 9 * n_clusters)
    if m == 9:
        return sums.reshape(n_clusters, 3, 3)
    return np.ascontiguousarray(sums.reshape(n_clusters, 9)[:, :m])


_ARANGE = np.arange(9)  # the element places of a flattened 3 x 3, for _sum_rows' bins
_ARANGE.flags.writeable = False
