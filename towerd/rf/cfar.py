"""CFAR detection across frequency, thresholds set from a false-alarm probability.

Model (square-law detector): in noise alone each frequency cell holds the mean of K
independent looks (periodograms) of exponential power, so a cell is Gamma(K, μ/K) with
mean μ (K = 1: exponential, a single look; K > 1: what spectrum analysers report when
they average). The cell under test (CUT) is declared occupied when it exceeds
``alpha`` times a statistic of N reference cells around it:

- cell averaging (CA), T = α · mean(ref):
  ``Pfa = I_{N/(N+α)}(N K, K)`` (regularised incomplete beta); for K = 1 this is
  ``(1 + α/N)^(−N)``, so ``α = N (Pfa^(−1/N) − 1)``.
- ordered statistic (OS), T = α · y_(k), the k-th smallest of the N references (1-based):
  K = 1: ``Pfa = ∏_{i=0}^{k−1} (N − i) / (N − i + α)``;
  K > 1: ``Pfa = ∫₀¹ Beta(u; k, N−k+1) · Q(K, α · P⁻¹(K, u)) du`` (u = F(y_(k)), P⁻¹ the
  inverse regularised lower incomplete gamma, Q the upper one), integrated numerically
  (composite Gauss-Legendre).
- known level (no references, the noise mean taken as known, here: the tracked noise
  floor): ``Pfa = Q(K, K α)``, so ``α = Q⁻¹(K, Pfa) / K``.

α is solved for by bisection wherever there is no closed form. Neither uses
scipy.integrate or scipy.optimize: the daemon computes these at start, and those modules
(with the scipy.linalg they import) would cost the tower computer tens of MiB. The detector works in
linear power (whitened by the noise floor, so noise has mean ≈ 1; CFAR itself only needs
the reference cells to share the CUT's noise level).

Reference cells are chosen explicitly, never padded: N/2 on each side beyond
``guard_cells`` guard cells; at a band edge the side that runs out is made up from the
other side, so every CUT still gets N references and the same α (zero padding would bias
the noise estimate low and flood the edges with false alarms). Cells marked *excluded*
(occupied by a known emitter) are skipped when references are gathered, and the window
reaches past them: a CUT inside a 40 MHz video plateau is compared with the noise beyond
the plateau's edges rather than with the plateau itself, which would mask it. When fewer
than ``min_reference_fraction`` · N references exist (a tiny band, or one almost all
occupied), the CUT is compared with the noise floor instead (known-level threshold).
"""

from __future__ import annotations

import functools
import logging
import math
from dataclasses import dataclass
from typing import Literal

import numpy as np
from scipy import special

from towerd.schema import spec

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class CfarSettings:
    """CFAR detector across frequency (see the module docstring for the formulas)."""

    kind: Literal["ca", "os"] = spec(
        "os", doc="ca: cell averaging; os: ordered statistic (robust to emitters in the reference window)"
    )
    pfa: float = spec(1e-3, doc="false-alarm probability per frequency cell and sweep", lo=1e-12, hi=1e-2)
    reference_cells: int = spec(16, doc="N: reference cells per cell under test, half on each side", lo=2, hi=128)
    guard_cells: int = spec(2, doc="cells skipped on each side of the cell under test", lo=0, hi=32)
    os_rank: float = spec(
        0.75, doc="OS-CFAR: k = round(os_rank * N), the k-th smallest reference sets the level", lo=0.05, hi=1.0
    )
    looks: int = spec(
        1,
        doc="K: independent looks the device averages into each bin (1: single sweep; "
        "calibrate with towerd.rf.cfar.estimate_looks on noise-only sweeps; the shipped config sets 2, "
        "what an RF Explorer gives: see docs/benchmarks.md, RF section)",
        lo=1,
        hi=4096,
    )
    min_reference_fraction: float = spec(
        0.5, doc="below this fraction of N usable references, the noise floor is the reference", lo=0.1, hi=1.0
    )
    occupancy_pfa: float = spec(
        1e-6,
        doc="false-alarm probability of the occupancy test (smoothed power over the noise floor) "
        "that keeps emitters out of the reference cells",
        lo=1e-15,
        hi=1e-3,
    )
    occupancy_cells: int = spec(7, doc="cells averaged by the occupancy test", lo=1, hi=64)
    def __post_init__(self) -> None:
        if self.reference_cells % 2:
            raise ValueError(f"reference_cells must be even (N/2 each side), got {self.reference_cells}")

    @property
    def os_k(self) -> int:
        """k of OS-CFAR for the full window of N references."""
        return os_k(self.os_rank, self.reference_cells)


def os_k(rank: float, n: int) -> int:
    """k (1-based) of the ordered statistic for ``n`` references at fraction ``rank``."""
    return int(min(n, max(1, round(rank * n))))


# --------------------------------------------------------------------------------------
# Theory: Pfa(α) and α(Pfa)
# --------------------------------------------------------------------------------------


def ca_pfa(alpha: float, n: int, looks: int = 1) -> float:
    """CA-CFAR false-alarm probability, N = ``n`` references, K = ``looks``."""
    if looks == 1:
        return float((1.0 + alpha / n) ** (-n))
    return float(special.betainc(n * looks, looks, n / (n + alpha)))


def os_pfa(alpha: float, n: int, k: int, looks: int = 1) -> float:
    """OS-CFAR false-alarm probability, k-th smallest of ``n`` references, K = ``looks``."""
    if not 1 <= k <= n:
        raise ValueError(f"OS-CFAR needs 1 <= k <= N, got k={k}, N={n}")
    if looks == 1:
        i = np.arange(k)
        return float(np.prod((n - i) / (n - i + alpha)))
    weights, x = _os_quadrature(n, k, looks)
    return float(np.dot(weights, special.gammaincc(looks, alpha * x)))


QUADRATURE_NODES = 20
"""Gauss-Legendre nodes per panel of :func:`_os_quadrature`."""


@functools.lru_cache(maxsize=64)
def _os_quadrature(n: int, k: int, looks: int) -> tuple[np.ndarray, np.ndarray]:
    """Nodes of the OS-CFAR Pfa integral over u in (0, 1): (weight × Beta(u; k, n − k + 1)
    density, P⁻¹(K, u)) at each node. Composite Gauss-Legendre on panels graded
    geometrically towards both ends (the integrand has fractional powers there: P⁻¹ grows
    like u^(1/K) near 0 and like −ln(1 − u) near 1) and split at the density's mode: within
    1e-9 (relative) of adaptive quadrature (scipy.integrate.quad, checked by a test),
    without importing scipy.integrate (it pulls in scipy.linalg and scipy.optimize)."""
    a, b = k, n - k + 1  # the k-th smallest of n uniforms is Beta(k, n - k + 1)
    mode = (k - 1) / (n - 1) if n > 1 else 0.5
    grade = np.geomspace(1e-13, 0.5, 36)
    edges = np.unique(np.concatenate(([0.0, mode, 1.0], grade, 1.0 - grade)))
    t, w = np.polynomial.legendre.leggauss(QUADRATURE_NODES)
    half = np.diff(edges)[:, None] / 2.0
    u = (edges[:-1, None] + half + half * t).ravel()
    weight = (half * w).ravel()
    inside = (u > 0.0) & (u < 1.0)
    u, weight = u[inside], weight[inside]
    density = np.exp((a - 1) * np.log(u) + (b - 1) * np.log1p(-u) - special.betaln(a, b))
    return weight * density, special.gammaincinv(looks, u)


def _solve_alpha(pfa_of_alpha, pfa: float) -> float:
    """α > 0 with pfa_of_alpha(α) = pfa (pfa_of_alpha decreasing in α), by bisection to
    1e-12 (absolute and relative; scipy.optimize is not imported for it)."""
    target = math.log(pfa)

    def f(a: float) -> float:
        p = pfa_of_alpha(a)
        return (math.log(p) if p > 0 else -1e300) - target

    lo, hi = 1e-9, 1.0
    while f(hi) > 0:
        lo, hi = hi, hi * 4.0
        if hi > 1e15:
            raise ValueError(f"no CFAR multiplier reaches Pfa={pfa}")
    while hi - lo > 1e-12 + 1e-12 * hi:
        mid = 0.5 * (lo + hi)
        if f(mid) > 0:
            lo = mid
        else:
            hi = mid
    return 0.5 * (lo + hi)


@functools.lru_cache(maxsize=512)
def ca_alpha(pfa: float, n: int, looks: int = 1) -> float:
    """α of CA-CFAR for false-alarm probability ``pfa`` with ``n`` references, K looks."""
    _check_pfa(pfa)
    if looks == 1:
        return float(n * (pfa ** (-1.0 / n) - 1.0))
    return _solve_alpha(lambda a: ca_pfa(a, n, looks), pfa)


@functools.lru_cache(maxsize=512)
def os_alpha(pfa: float, n: int, k: int, looks: int = 1) -> float:
    """α of OS-CFAR (k-th smallest of ``n``) for false-alarm probability ``pfa``, K looks."""
    _check_pfa(pfa)
    return _solve_alpha(lambda a: os_pfa(a, n, k, looks), pfa)


@functools.lru_cache(maxsize=512)
def known_level_alpha(pfa: float, looks: int = 1) -> float:
    """α of the known-level test ``x > α · μ``: ``Q⁻¹(K, Pfa) / K``."""
    _check_pfa(pfa)
    return float(special.gammainccinv(looks, pfa) / looks)


def ca_pd_swerling1(alpha: float, n: int, snr: float | np.ndarray) -> np.ndarray:
    """Detection probability of single-look CA-CFAR for a Swerling-1 (exponentially
    fluctuating) target of mean ``snr`` (linear): ``(1 + α / (N (1 + SNR)))^(−N)``."""
    return (1.0 + alpha / (n * (1.0 + np.asarray(snr, dtype=float)))) ** (-n)


def os_pd_swerling1(alpha: float, n: int, k: int, snr: float | np.ndarray) -> np.ndarray:
    """Single-look OS-CFAR detection probability for a Swerling-1 target: the Pfa product
    with α / (1 + SNR) in place of α."""
    a = alpha / (1.0 + np.asarray(snr, dtype=float))
    i = np.arange(k).reshape((-1,) + (1,) * a.ndim)
    return np.prod((n - i) / (n - i + a), axis=0)


def _check_pfa(pfa: float) -> None:
    if not 0.0 < pfa < 1.0:
        raise ValueError(f"false-alarm probability must be in (0, 1), got {pfa}")


def estimate_looks(power_mw: np.ndarray) -> float:
    """Effective K of a device from noise-only sweeps, ``power_mw`` shape (sweeps, cells),
    linear power (mW). Each cell is divided by its mean over the sweeps (removing the
    floor's shape); for Gamma(K) noise the normalised variance is 1/K. Cells whose
    normalised value exceeds 20 (an emitter burst) are dropped first."""
    p = np.asarray(power_mw, dtype=float)
    if p.ndim != 2 or p.shape[0] < 2:
        raise ValueError("estimate_looks needs an array of at least two sweeps, shape (sweeps, cells)")
    z = p / np.mean(p, axis=0, keepdims=True)
    z = z[np.isfinite(z) & (z < 20.0)]
    var = float(np.var(z))
    return 1.0 / var if var > 0 else float("inf")


# --------------------------------------------------------------------------------------
# The detector
# --------------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class CfarOutput:
    """One CFAR pass over n cells.

    detected (n,) bool; threshold (n,) the level each cell was compared with, in the units
    of the input; n_ref (n,) references used (0 where the noise floor was the reference;
    read-only, shared by the sweeps with one pattern of exclusions).
    """

    detected: np.ndarray
    threshold: np.ndarray
    n_ref: np.ndarray


WINDOW_CACHE = 256
"""Reference-window layouts a Cfar keeps (one per pattern of excluded cells seen; a
band's exclusions repeat from sweep to sweep)."""


@dataclass(eq=False)
class _Window:
    """Reference windows of every CUT for one pattern of usable cells (n CUTs, N = reference_cells).

    use_floor (n,) bool: too few references, the noise floor is the level; alpha (n,) the
    multiplier for each CUT's reference count; n_ref (n,) that count (0 where use_floor).
    CA: cumulative-sum bounds (le_start..le, rs..rs_end) and divisor. OS: ref_idx (n, N)
    indices into z with inf appended (n: no reference), kth the distinct k - 1, k_idx (n,) each
    CUT's k - 1 and rows (n,) its row; when one k serves every CUT that has references, kth
    and k_idx are that k - 1 (an int) and rows None (the CUTs on the floor ignore their level).
    """

    m_use: int
    use_floor: np.ndarray
    any_floor: bool
    alpha: np.ndarray
    n_ref: np.ndarray
    le: np.ndarray | None = None
    le_start: np.ndarray | None = None
    rs: np.ndarray | None = None
    rs_end: np.ndarray | None = None
    n_ref_div: np.ndarray | None = None
    ref_idx: np.ndarray | None = None
    kth: np.ndarray | int | None = None
    k_idx: np.ndarray | int | None = None
    rows: np.ndarray | None = None


class Cfar:
    """CA- or OS-CFAR across frequency with guard cells, explicit edges and exclusions.

    Multipliers are computed once per reference count (1..N), so a CUT at an edge or next
    to excluded cells with fewer references keeps the configured Pfa.
    """

    def __init__(self, settings: CfarSettings) -> None:
        self.settings = s = settings
        n = s.reference_cells
        self.min_ref = max(1, math.ceil(s.min_reference_fraction * n))
        # alpha_table[m]: multiplier for m references (index 0 unused: floor fallback).
        table = np.full(n + 1, np.nan)
        k_table = np.zeros(n + 1, dtype=np.intp)
        for m in range(self.min_ref, n + 1):
            if s.kind == "ca":
                table[m] = ca_alpha(s.pfa, m, s.looks)
            else:
                k_table[m] = os_k(s.os_rank, m)
                table[m] = os_alpha(s.pfa, m, int(k_table[m]), s.looks)
        self.alpha_table = table
        self.k_table = k_table
        self.alpha_known = known_level_alpha(s.pfa, s.looks)
        self._occupancy_alpha: dict[float, np.ndarray] = {}
        self._occupancy_windows: dict[int, tuple[np.ndarray, np.ndarray, np.ndarray]] = {}
        self._occupancy_levels: dict[tuple[int, float], np.ndarray] = {}
        self._windows: dict[bytes, _Window] = {}
        self._cumsum_buffers: dict[int, np.ndarray] = {}
        self._padded: dict[int, np.ndarray] = {}  # (n + 1,) z with inf at n, for the OS references
        log.debug(
            "CFAR %s N=%d G=%d K=%d Pfa=%g: alpha=%.4f (%.2f dB)%s",
            s.kind, n, s.guard_cells, s.looks, s.pfa, table[n], 10 * math.log10(table[n]),
            f", k={k_table[n]}" if s.kind == "os" else "",
        )

    @property
    def alpha(self) -> float:
        """Multiplier with the full N references."""
        return float(self.alpha_table[self.settings.reference_cells])

    def occupancy_alpha(self, pfa: float) -> np.ndarray:
        """Known-level multipliers of the occupancy test at ``pfa``, indexed by the number
        of cells averaged (the mean of m cells of K looks is Gamma(m K))."""
        table = self._occupancy_alpha.get(pfa)
        if table is None:
            s = self.settings
            table = np.full(s.occupancy_cells + 1, np.nan)
            for m in range(1, s.occupancy_cells + 1):
                table[m] = known_level_alpha(pfa, m * s.looks)
            self._occupancy_alpha[pfa] = table
        return table

    def occupied(self, z: np.ndarray, pfa: float | None = None) -> np.ndarray:
        """Cells whose power, averaged over ``occupancy_cells`` cells centred on each (fewer
        at the edges, with their own threshold), is above the known-level threshold for
        ``pfa`` (default ``occupancy_pfa``): ``z`` is whitened (noise mean 1). (n,) bool."""
        z = np.asarray(z, dtype=float)
        return self.window_mean(z) > self.occupancy_level(z.shape[0], pfa)

    def window_mean(self, z: np.ndarray) -> np.ndarray:
        """(n,) mean of ``z`` (n,) float over each cell's occupancy window (the part of
        :meth:`occupied` that does not depend on the Pfa: several tests of one sweep share it)."""
        n = z.shape[0]
        a, b, count = self._occupancy_window(n)
        c = self._cumsum_buffer(n)
        np.cumsum(z, out=c[1:])
        return (c.take(b) - c.take(a)) / count

    def _cumsum_buffer(self, n: int) -> np.ndarray:
        """(n + 1,) scratch for cumulative sums, [0] = 0 (the rest is overwritten by each use)."""
        c = self._cumsum_buffers.get(n)
        if c is None:
            c = self._cumsum_buffers[n] = np.zeros(n + 1)
        return c

    def occupancy_level(self, n: int, pfa: float | None = None) -> np.ndarray:
        """(n,) the known-level threshold of each cell's occupancy window at ``pfa``
        (default ``occupancy_pfa``), for :meth:`window_mean`."""
        pfa = self.settings.occupancy_pfa if pfa is None else pfa
        level = self._occupancy_levels.get((n, pfa))
        if level is None:
            level = self._occupancy_levels[(n, pfa)] = self.occupancy_alpha(pfa)[self._occupancy_window(n)[2]]
        return level

    def _occupancy_window(self, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Bounds [a, b) and length of each of ``n`` cells' occupancy windows (cut at the edges)."""
        window = self._occupancy_windows.get(n)
        if window is None:
            w = self.settings.occupancy_cells
            h_lo, h_hi = (w - 1) // 2, w // 2
            i = np.arange(n)
            a = np.maximum(i - h_lo, 0)
            b = np.minimum(i + h_hi + 1, n)
            window = self._occupancy_windows[n] = (a, b, b - a)
        return window

    def detect(self, z: np.ndarray, excluded: np.ndarray | None = None) -> CfarOutput:
        """Run CFAR over ``z`` (n,) linear power, whitened by the noise floor (the floor is
        the reference where too few cells remain). ``excluded`` (n,) bool: cells not to be
        used as references (they are still tested)."""
        z = np.asarray(z, dtype=float)
        n = z.shape[0]
        keep = np.ones(n, dtype=bool) if excluded is None else ~np.asarray(excluded, dtype=bool)
        w = self._window(keep)
        if self.settings.kind == "ca":
            csum = np.zeros(w.m_use + 1)
            np.cumsum(z[keep], out=csum[1:])
            total = (csum[w.le] - csum[w.le_start]) + (csum[w.rs_end] - csum[w.rs])
            level = total / w.n_ref_div
        elif w.m_use == 0 or w.k_idx is None:
            level = np.full(n, np.nan)
        else:
            padded = self._padded.get(n)
            if padded is None:
                padded = self._padded[n] = np.full(n + 1, np.inf)
            padded[:n] = z
            vals = padded.take(w.ref_idx)  # (n, N) references, inf where fewer than N
            vals.partition(w.kth, axis=1)
            # the k-th smallest of each: one column when every CUT has the same k
            level = vals[:, w.kth] if w.rows is None else vals[w.rows, w.k_idx]
        threshold = np.where(w.use_floor, self.alpha_known, w.alpha * level) if w.any_floor else w.alpha * level
        out = object.__new__(CfarOutput)  # the frozen dataclass's fields, without its __init__
        out.__dict__.update(detected=z > threshold, threshold=threshold, n_ref=w.n_ref)
        return out

    def _window(self, keep: np.ndarray) -> _Window:
        """The reference windows for this pattern of usable cells (cached: a band's
        exclusions repeat from sweep to sweep, and the windows depend on nothing else)."""
        key = keep.tobytes()
        w = self._windows.get(key)
        if w is None:
            if len(self._windows) >= WINDOW_CACHE:
                self._windows.clear()
            w = self._windows[key] = self._build_window(keep)
        return w

    def _build_window(self, keep: np.ndarray) -> _Window:
        s = self.settings
        kept = np.flatnonzero(keep)
        m_use = kept.shape[0]  # the usable reference cells, in frequency order
        n = keep.shape[0]
        g, n_half = s.guard_cells, s.reference_cells // 2
        keep_i = keep.astype(np.intp)
        pos = np.cumsum(keep_i) - keep_i  # usable cells below each CUT
        # Window in the compressed (usable-only) index space: left part ends `g` before
        # the CUT's position, right part starts `g` after it (after the CUT itself when
        # the CUT is usable).
        left_end = pos - g
        right_start = pos + keep_i + g
        avail_l = np.maximum(left_end, 0)
        avail_r = np.maximum(m_use - right_start, 0)
        n_l = np.minimum(n_half, avail_l)
        n_r = np.minimum(s.reference_cells - n_l, avail_r)
        n_l = np.minimum(s.reference_cells - n_r, avail_l)  # edge: take more from the left
        n_ref = n_l + n_r
        use_floor = n_ref < self.min_ref
        alpha = self.alpha_table[np.where(use_floor, s.reference_cells, n_ref)]
        w = _Window(m_use=m_use, use_floor=use_floor, any_floor=bool(use_floor.any()), alpha=alpha,
                    n_ref=np.where(use_floor, 0, n_ref))
        w.n_ref.flags.writeable = False  # every sweep's CfarOutput shares it
        if s.kind == "ca":
            w.le = np.clip(left_end, 0, m_use)
            w.rs = np.clip(right_start, 0, m_use)
            w.le_start = w.le - n_l
            w.rs_end = w.rs + n_r
            w.n_ref_div = np.maximum(n_ref, 1)
            return w
        # OS: the k-th smallest reference of each CUT (k for its own reference count)
        j = np.arange(s.reference_cells)[None, :]
        idx = np.where(j < n_l[:, None], (left_end - n_l)[:, None] + j, right_start[:, None] + (j - n_l[:, None]))
        valid = j < n_ref[:, None]
        if m_use:
            # indices into z with one inf appended (at n) where a CUT has fewer than N
            w.ref_idx = np.where(valid, kept[np.clip(idx, 0, m_use - 1)], n)
        k = self.k_table[n_ref]  # 0 where n_ref < min_ref (floor used there)
        kth = np.unique(k[k > 0]) - 1
        if kth.size == 1:  # the usual case (no CUT short of references): a column, no fancy index
            w.kth = w.k_idx = int(kth[0])
        elif kth.size:
            w.kth = kth
            w.k_idx = np.maximum(k - 1, 0)
            w.rows = np.arange(n)
        return w
