"""Noise floor of one band, per frequency cell, following slow changes.

Each sweep gives a robust local noise level per cell: a low quantile (``quantile``) of
the linear power in a window of ``window_mhz`` around the cell, over the cells not
excluded (detected or occupied by emitters), scaled to a mean by the Gamma(K) noise
model (the q-quantile of Gamma(K, μ/K) is μ · P⁻¹(K, q) / K). A quantile rather than a
mean keeps emitters narrower than (1 − q) of the window out of the floor even before
they are detected, and a window wider than the widest link (40 MHz) does the same for
video plateaus present at start-up. Windows are truncated at the band edges (no padding).

Per cell, the floor is an exponential average of that level over time:

    floor ← floor + w · (level − floor),   w = max(1 − exp(−Δt / τ), 1 / (n + 1))

with τ = ``time_constant_s`` and Δt the time since the band's previous sweep; the
1 / (n + 1) term makes the first n sweeps a plain running mean, so the floor is usable
after the first sweep. A step change of the true floor is followed as 1 − exp(−t / τ).
A cell whose window holds too few usable cells (inside an emitter much wider than the
window) gets the level interpolated from the nearest usable windows on either side.
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


@dataclass(frozen=True)
class NoiseFloorSettings:
    """Per-band noise floor estimate (see :mod:`towerd.rf.floor`)."""

    time_constant_s: float = spec(
        30.0, doc="time constant of the floor's exponential average over sweeps", unit="s", lo=0.1, hi=86400.0
    )
    window_mhz: float = spec(
        60.0, doc="width of the frequency window of the robust level (wider than the widest link)",
        unit="MHz", lo=0.01, hi=10000.0,
    )
    quantile: float = spec(0.25, doc="quantile of the window taken as the level (0.5: median)", lo=0.05, hi=0.5)
    min_valid_fraction: float = spec(
        0.25, doc="a window needs this fraction of usable (not excluded) cells to give a level", lo=0.05, hi=1.0
    )


class NoiseFloor:
    """Floor of one band segment of ``n`` cells spaced ``step_mhz``, for K = ``looks``.

    ``floor_mw`` (n,) linear power, mW per resolution bandwidth; NaN before the first
    update.
    """

    def __init__(self, settings: NoiseFloorSettings, n: int, step_mhz: float, looks: int = 1) -> None:
        self.settings = settings
        self.n = int(n)
        w = int(round(settings.window_mhz / abs(step_mhz))) if step_mhz else self.n
        w = max(3, min(w, 2 * self.n - 1))
        self.window = w | 1  # odd: centred on its cell
        self.stride = max(1, self.window // 8)
        # mean / q-quantile of Gamma(K, 1/K)
        self.scale = looks / float(special.gammaincinv(looks, settings.quantile))
        self.floor_mw = np.full(self.n, np.nan)
        self.updates = 0
        self.t_last: float | None = None

    @property
    def ready(self) -> bool:
        """True once a level has been learnt for every cell."""
        return self.updates > 0 and bool(np.all(np.isfinite(self.floor_mw)))

    def level(self, power_mw: np.ndarray, excluded: np.ndarray | None = None) -> np.ndarray:
        """This sweep's robust noise level per cell (n,); all NaN when no window has
        enough usable cells.

        Computed at every ``stride``-th cell (and the last) and interpolated linearly in
        between: the window is ``stride`` · 8 cells wide, so the level changes little
        from one cell to the next.
        """
        p = np.asarray(power_mw, dtype=float)
        if p.shape != (self.n,):
            raise ValueError(f"expected {self.n} cells, got shape {p.shape}")
        vals = p.copy()
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
        q = win[rows, lo] + (x - lo) * (win[rows, hi] - win[rows, lo])
        level = q * self.scale
        if centres.shape[0] == 1:
            out[:] = level[0]
        else:
            out[:] = np.interp(np.arange(self.n), centres, level)
        return out

    def update(self, power_mw: np.ndarray, excluded: np.ndarray | None, t_mono: float) -> None:
        """Fold one sweep into the floor; ``excluded`` (n,) bool: cells holding emitters."""
        level = self.level(power_mw, excluded)
        ok = np.isfinite(level)
        if not np.any(ok):
            return
        if self.t_last is None:
            w = 1.0
        else:
            dt = max(0.0, float(t_mono) - self.t_last)
            w = max(-math.expm1(-dt / self.settings.time_constant_s), 1.0 / (self.updates + 1))
        fresh = ok & ~np.isfinite(self.floor_mw)
        self.floor_mw[fresh] = level[fresh]
        upd = ok & ~fresh
        self.floor_mw[upd] += w * (level[upd] - self.floor_mw[upd])
        self.updates += 1
        self.t_last = float(t_mono)
