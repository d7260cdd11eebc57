"""Noise floor of one band, per frequency cell, following slow changes.

**Steady state.** Each sweep gives every cell a local level: the mean linear power of the
cells within ``smooth_cells`` around it that are not excluded (the detected ones and
their neighbours: they hold emitters), each first clipped at the level a noise cell
exceeds with probability 1e-6 (so one undetected spike cannot drag the floor). Windows
are cut short at the band edges (no padding). A cell whose window is less than half
usable (inside or at the edge of an emitter) takes the level interpolated between the
nearest cells on either side that have one: otherwise the few cells of a wide emitter
that the detector missed would be all its window holds, the floor would rise under the
emitter, the detector would miss more of it, and so on. Per cell the
floor is an exponential average of that level over the band's sweeps:

    floor ← floor + w · (level − floor),   w = max(1 − exp(−Δt / τ), 1 / (n + 1))

with τ = ``time_constant_s``, Δt the time since the band's previous sweep and n the
sweeps since the floor was (re)learnt (the learnt level counting as 8): the first sweeps
are a plain running mean, then a step change of the true floor is followed as
1 − exp(−t / τ). Averaging over time gives
the precision (K looks, S sweeps: relative error about 1 / sqrt(K · S · smooth_cells)),
a short window keeps the floor's shape over frequency (an analyser's floor is not flat,
and with averaged bins, K = 8 say, a noise cell exceeds its mean by 2 dB only with
probability 1e-3: the known-level tests need the shape to a fraction of a dB).

**Learning** (first sweep of a band, and after a level change). There is no history to
tell emitters from noise, and a 40 MHz video downlink may be on already. The level is
a low quantile (``quantile``) of the cells in a wide window (``learn_window_mhz``, over
twice the widest link) around each cell, scaled to a mean by the Gamma(K) model (the
q-quantile of Gamma(K, μ/K) is μ · P⁻¹(K, q) / K). The caller repeats this leaving out
the cells found occupied above each estimate (a quantile of a mixture is still pulled
up: with a fraction c covered it is the q / (1 − c) quantile of the noise).

**Level changes.** Detected cells never teach the floor, so a sudden change of the whole
band's level must be noticed: :meth:`NoiseFloor.shift_db` compares the median of the
cells not held by emitters with the floor; beyond ``relearn_db`` (or with under a tenth
of the band left) the caller relearns.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view
from scipy import special

from towerd.schema import spec

log = logging.getLogger(__name__)

SHIFT_QUANTILE = 0.5
"""Quantile of a band's floor-normalised noise watched for level changes (the median:
its estimate from ~100 single-look cells is good to about 0.6 dB)."""
CLIP_PFA = 1e-6
"""A noise cell exceeds the floor's clip level with this probability."""
LEARNT_WEIGHT = 8
"""A learnt level counts as this many sweeps in the running mean that follows (it pools
a whole window of cells; one sweep's level only ``smooth_cells``)."""


@dataclass(frozen=True)
class NoiseFloorSettings:
    """Per-band noise floor estimate (see :mod:`towerd.rf.floor`)."""

    time_constant_s: float = spec(
        30.0, doc="time constant of the floor's exponential average over sweeps", unit="s", lo=0.1, hi=86400.0
    )
    smooth_cells: int = spec(
        9, doc="cells averaged (centred) into each cell's level per sweep; the floor's shape resolution",
        lo=1, hi=1001,
    )
    hold_sweeps: int = spec(
        8, doc="a detected cell stays out of the floor (and of CFAR references) for this many sweeps",
        lo=1, hi=1000,
    )
    skirt_fraction: float = spec(
        0.1, doc="cells this fraction of an emitter's width beyond each of its edges are kept out of the "
        "floor too (its skirts)", lo=0.0, hi=2.0,
    )
    learn_window_mhz: float = spec(
        100.0, doc="window of the robust level the floor is learnt from (over twice the widest link)",
        unit="MHz", lo=0.01, hi=10000.0,
    )
    quantile: float = spec(
        0.25, doc="quantile of that window's usable cells taken as the level (0.5: median)", lo=0.02, hi=0.5
    )
    min_valid_fraction: float = spec(
        0.1, doc="a learning window needs this fraction of usable cells to give a level", lo=0.02, hi=1.0
    )
    relearn_db: float = spec(
        3.0,
        doc="when the band's noise (cells not held by emitters) sits this far above or below the floor, "
        "the band's level has changed: the floor is relearnt from that sweep",
        unit="dB", lo=0.5, hi=40.0,
    )


class NoiseFloor:
    """Floor of one band segment of ``n`` cells spaced ``step_mhz``, for K = ``looks``.

    ``floor_mw`` (n,) linear power, mW per resolution bandwidth; NaN before it is learnt.
    """

    def __init__(self, settings: NoiseFloorSettings, n: int, step_mhz: float, looks: int = 1) -> None:
        self.settings = settings
        self.n = int(n)
        w = int(round(settings.learn_window_mhz / abs(step_mhz))) if step_mhz else self.n
        w = max(3, min(w, 2 * self.n - 1))
        self.window = w | 1  # odd: centred on its cell
        self.stride = max(1, self.window // 8)
        # mean / q-quantile of Gamma(K, 1/K); its SHIFT_QUANTILE-quantile; the clip level
        self.scale = looks / float(special.gammaincinv(looks, settings.quantile))
        self.q_shift = float(special.gammaincinv(looks, SHIFT_QUANTILE)) / looks
        self.clip = float(special.gammainccinv(looks, CLIP_PFA)) / looks
        self.floor_mw = np.full(self.n, np.nan)
        self.updates = 0
        self.t_last: float | None = None
        # sweep_level's windows (the same every sweep): cells [a, b) around each cell
        h_lo, h_hi = (settings.smooth_cells - 1) // 2, settings.smooth_cells // 2
        self._i = np.arange(self.n)
        self._a = np.maximum(self._i - h_lo, 0)
        self._b = np.minimum(self._i + h_hi + 1, self.n)
        self._half = self._b - self._a  # 2 x usable cells must reach the window's length
        self._cs = np.zeros(self.n + 1)  # cumulative sums, [0] = 0
        self._cc = np.zeros(self.n + 1, dtype=np.intp)
        self._ready_floor: np.ndarray | None = None  # the floor_mw object last found all finite
        self._window_cache: dict[bytes, tuple | None] = {}

    @property
    def ready(self) -> bool:
        """True once a level has been learnt for every cell."""
        if self.updates <= 0:
            return False
        if self._ready_floor is self.floor_mw:  # checked already (update keeps it finite)
            return True
        if np.isfinite(self.floor_mw).all():
            self._ready_floor = self.floor_mw
            return True
        return False

    # -- steady state ---------------------------------------------------------------------

    def sweep_level(self, power_mw: np.ndarray, excluded: np.ndarray | None = None) -> np.ndarray:
        """This sweep's local level per cell (n,), see the module docstring; all NaN when
        every cell is excluded. Needs a learnt floor (for the clip)."""
        p = self._check(power_mw)
        a, b = self._a, self._b
        cs = self._cs
        vals = np.minimum(p, self.clip * self.floor_mw)
        excluded = None if excluded is None else np.asarray(excluded, dtype=bool)
        if excluded is None or not excluded.any():
            np.cumsum(vals, out=cs[1:])
            return (cs.take(b) - cs.take(a)) / self._half  # every window fully usable
        w = self._windows(excluded)
        vals[excluded] = 0.0
        np.cumsum(vals, out=cs[1:])
        out = np.full(self.n, np.nan)
        if w is None:  # no window half usable
            return out
        a_ok, b_ok, count_ok, ok, bad = w
        level = (cs.take(b_ok) - cs.take(a_ok)) / count_ok
        out[ok] = level
        if bad is not None:
            out[bad] = np.interp(bad, ok, level)
        return out

    def _windows(self, excluded: np.ndarray) -> tuple | None:
        """For sweep_level with these ``excluded`` cells (cached per pattern: a band's
        exclusions repeat): the bounds and usable counts of the windows at least half
        usable, which those are, and the others (None if none); None if no window is."""
        key = excluded.tobytes()
        if key in self._window_cache:
            return self._window_cache[key]
        if len(self._window_cache) >= 256:
            self._window_cache.clear()
        cc = self._cc
        np.cumsum(~excluded, out=cc[1:])
        count = cc[self._b] - cc[self._a]
        ok = 2 * count >= self._half  # at least half the window usable
        w = None
        if np.any(ok):  # (ok and the others as cell indices: they index and they are interp's abscissae)
            w = (self._a[ok], self._b[ok], count[ok], np.flatnonzero(ok), None if np.all(ok) else np.flatnonzero(~ok))
        self._window_cache[key] = w
        return w

    def update(self, power_mw: np.ndarray, excluded: np.ndarray | None, t_mono: float) -> None:
        """Fold one sweep into the floor; ``excluded`` (n,) bool: cells holding emitters.
        Learns the floor first (no exclusions) when it is not learnt yet."""
        if not self.ready:
            self.learn(power_mw, t_mono)
            return
        level = self.sweep_level(power_mw, excluded)
        if not math.isfinite(float(level.sum())) and not np.isfinite(level).any():  # (the sum: one call, usually)
            return
        dt = 0.0 if self.t_last is None else max(0.0, float(t_mono) - self.t_last)
        w = max(-math.expm1(-dt / self.settings.time_constant_s), 1.0 / (self.updates + 1))
        # A new array (the caller may keep the floor it detected with); finite as the last.
        self.floor_mw = self._ready_floor = self.floor_mw + w * (level - self.floor_mw)
        self.updates += 1
        self.t_last = float(t_mono)

    # -- learning -------------------------------------------------------------------------

    def learn_level(self, power_mw: np.ndarray, excluded: np.ndarray | None = None) -> np.ndarray:
        """Robust level per cell (n,) from one sweep: the scaled ``quantile`` of the usable
        cells in a ``learn_window_mhz`` window; all NaN when no window has enough usable
        cells.

        Computed at every ``stride``-th cell (and the last) and interpolated linearly in
        between (the window is about 8 strides wide, so the level changes little from one
        cell to the next); cells between usable windows get the level interpolated.
        """
        vals = self._check(power_mw).copy()
        if excluded is not None:
            vals[np.asarray(excluded, dtype=bool)] = np.nan
        h = self.window // 2
        padded = np.concatenate((np.full(h, np.nan), vals, np.full(h, np.nan)))
        centres = np.unique(np.append(np.arange(0, self.n, self.stride), self.n - 1))
        win = np.sort(sliding_window_view(padded, self.window)[centres], axis=1)  # NaN sort last
        count = np.count_nonzero(np.isfinite(win), axis=1)
        need = max(3, math.ceil(self.settings.min_valid_fraction * min(self.window, self.n)))
        ok = count >= need
        out = np.full(self.n, np.nan)
        if not np.any(ok):
            return out
        win, count, centres = win[ok], count[ok], centres[ok]
        x = self.settings.quantile * (count - 1)  # linear interpolation between order statistics
        lo = np.floor(x).astype(np.intp)
        hi = np.minimum(lo + 1, count - 1)
        rows = np.arange(win.shape[0])
        level = (win[rows, lo] + (x - lo) * (win[rows, hi] - win[rows, lo])) * self.scale
        out[:] = level[0] if centres.shape[0] == 1 else np.interp(np.arange(self.n), centres, level)
        return out

    def learn(self, power_mw: np.ndarray, t_mono: float, excluded: np.ndarray | None = None) -> bool:
        """Forget the floor and learn it from this sweep (``excluded`` cells left out).
        False (and the floor unchanged) when too few cells are usable."""
        level = self.learn_level(power_mw, excluded)
        if not np.all(np.isfinite(level)):
            return False
        self.floor_mw = level
        self.updates = LEARNT_WEIGHT
        self.t_last = float(t_mono)
        return True

    def shift_db(self, power_mw: np.ndarray, excluded: np.ndarray | None = None, *,
                 z: np.ndarray | None = None) -> float:
        """How far the band's noise sits from the floor, dB: the median of power / floor
        over the cells not ``excluded`` (those held by emitters) against the median of
        noise; +inf when under a tenth of the band is left (everything rose above the
        floor). Near 0 dB while the floor is right; a change of the whole
        band's level (gain, broadband interference) moves it. NaN before the floor is
        learnt or for a band of fewer than 32 cells (too few for a steady quantile).
        ``z``: power / floor when the caller has it already."""
        if not self.ready or self.n < 32:
            return math.nan
        if z is None:
            z = self._check(power_mw) / self.floor_mw
        if excluded is not None:
            z = z[~np.asarray(excluded, dtype=bool)]
        if z.shape[0] < 0.1 * self.n:
            return math.inf
        return 10.0 * math.log10(_median(z) / self.q_shift)

    def _check(self, power_mw: np.ndarray) -> np.ndarray:
        p = np.asarray(power_mw, dtype=float)
        if p.shape != (self.n,):
            raise ValueError(f"expected {self.n} cells, got shape {p.shape}")
        return p


def _median(z: np.ndarray) -> float:
    """``np.quantile(z, 0.5)`` (its default linear method, the same float) for finite
    ``z`` (m,), m > 0, by one partition instead of quantile's general machinery."""
    m = z.shape[0]
    h = (m - 1) // 2
    if m % 2:
        return float(np.partition(z, h)[h])
    part = np.partition(z, (h, h + 1))
    a, b = float(part[h]), float(part[h + 1])
    return b - (b - a) * 0.5  # numpy's lerp at weight 0.5
