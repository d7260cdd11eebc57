"""Hopping sets of one band: narrow emitters collected over a window, tested for a
channel set (revisits beyond noise, or one offset on a reference grid), and the 802.11
channels whose burst pieces must not count as hops.

Used by :class:`towerd.rf.tracker.BandTracker` (the rules are in that module's
docstring, steps 3): :meth:`HopSetDetector.bursting` marks the sweep's emitters inside a
bursting 802.11 channel (and drops the hops already collected there);
:meth:`HopSetDetector.observe` adds the sweep's candidate hops and describes the hopping
set when one is present.
"""

from __future__ import annotations

import collections
import logging
import math
from typing import TYPE_CHECKING, TypedDict

import numpy as np
from scipy import special

from towerd.rf.classify import ClassifierSettings

if TYPE_CHECKING:
    from towerd.rf.tracker import RfTrackingSettings

log = logging.getLogger(__name__)


class HopSet(TypedDict):
    """A hopping set seen in the window: its channel span (low..high MHz, centres),
    revisited channels, grid step (spacing MHz), median hop width and power, and the
    circular mean of its hops' centres on the reference grid (offset MHz, resultant, hops)."""

    grid_offset: float
    grid_resultant: float
    grid_hops: int
    channels: int
    low: float
    high: float
    spacing: float
    hop_bw: float
    power_dbm: float


HOP_COLUMNS = ("t_mono", "centre_mhz", "bandwidth_mhz", "mean_dbm", "power_centre_mhz", "grid_centre_mhz")
"""Columns of a HopSetDetector's hop buffer."""
_T, _F, _BW, _DBM, _FC, _GC = range(len(HOP_COLUMNS))


class HopSetDetector:
    """The hop and burst buffers of one band (see the module docstring); ``band``: its
    index, for logs."""

    def __init__(self, band: int, settings: RfTrackingSettings, classifier: ClassifierSettings) -> None:
        self.band = int(band)
        self.settings = settings
        self.classifier = classifier
        # One row per hop in the window, columns HOP_COLUMNS: time, centre, width, power,
        # power centroid (its centre to within a cell), the same for hops of two cells or
        # more (NaN for single cells).
        self._hops = np.zeros((0, len(HOP_COLUMNS)))
        self._t_oldest = math.inf  # the earliest time in the hop buffer (inf when empty)
        self._memo: dict | None = None  # what depends on the hop buffer alone; None when it changed
        self._sweep_t: collections.deque[float] = collections.deque()  # this band's sweep times in the hop window
        self._burst = np.zeros((0, 3))  # (t, low MHz, high MHz) of burst pieces wider than a hop, in the window
        self._grid = np.asarray(settings.burst_channels_mhz, dtype=float)

    def bursting(self, em: np.ndarray, t: float, step_mhz: float) -> np.ndarray:
        """(E,) bool: emitters inside an 802.11 channel that is bursting.

        A swept analyser looks at each cell for a small part of a sweep of tens of ms,
        so a 20 MHz 802.11 burst of 0.1-3 ms shows as a piece of the channel as wide as
        the cells swept while it lasted: one cell, a few, now and then the whole
        channel. The narrow pieces land on cells all over the channel and revisit them,
        which the hopping-set test alone takes for a hop grid (on the analyser's cell
        grid). A channel of ``burst_channels_mhz`` is bursting while at least
        ``burst_min_pieces`` pieces wider than a hop (and no wider than the channel) lay
        inside it within ``hop_window_s``; the narrow pieces already collected inside it
        are then dropped from the hop buffer. A hopping link's hops keep their own width,
        but when the hopper jumps to a channel a few cells ahead of the sweep, two hops of
        one sweep are joined over the noise between them (the occupancy test that bridges
        a plateau's dips) into a piece as wide as a burst: ELRS 2.4 at 15 dB gives 3-4 in
        15 s spread over the band, where a busy 802.11 channel gives them within its 20 MHz
        (the vendor's real Wi-Fi recording: 6-15 in 15 s, most of them such joined pairs
        too). With one piece enough, each kept 20-30 MHz of the band (the 802.11 channels
        overlap) from the hopping-set test for hop_window_s.
        """
        s = self.settings
        if em.shape[0] == 0:  # no piece to add: the window moves on
            if self._burst.shape[0]:
                self._burst = self._burst[self._burst[:, 0] > t - s.hop_window_s]
            return np.zeros(0, dtype=bool)
        cell = abs(float(step_mhz))
        width = em["high_mhz"] - em["low_mhz"]
        wide = (em["bandwidth_mhz"] > s.hop_max_bandwidth_mhz) & (width <= s.burst_channel_width_mhz + 2 * cell)
        pieces = np.column_stack([np.full(int(np.count_nonzero(wide)), t), em["low_mhz"][wide], em["high_mhz"][wide]])
        self._burst = np.concatenate([self._burst[self._burst[:, 0] > t - s.hop_window_s], pieces])
        out = np.zeros(em.shape[0], dtype=bool)
        if self._burst.shape[0] == 0 or self._grid.size == 0 or em.shape[0] == 0:
            return out
        half = s.burst_channel_width_mhz / 2 + cell  # one cell of slack: piece edges are cell edges
        lo, hi = self._grid - half, self._grid + half
        holds = (self._burst[:, 1][:, None] >= lo[None, :]) & (self._burst[:, 2][:, None] <= hi[None, :])
        active = np.count_nonzero(holds, axis=0) >= s.burst_min_pieces
        if not np.any(active):
            return out
        # The narrow pieces collected inside it before the channel was known to be
        # bursting were its bursts too.
        fc = self._hops[:, _FC]
        gone = np.any((fc[:, None] >= lo[active][None, :]) & (fc[:, None] <= hi[active][None, :]), axis=1)
        if np.any(gone):
            self._set_hops(self._hops[~gone])
        f = em["centre_mhz"]
        return np.any((f[:, None] >= lo[active][None, :]) & (f[:, None] <= hi[active][None, :]), axis=1)

    # -- hopping sets -------------------------------------------------------------------

    def observe(self, hops: np.ndarray, t: float, *, cells: int, step_mhz: float, pfa: float) -> HopSet | None:
        """Add this sweep's candidate hops, drop old ones, and describe the hopping set if
        one is present (else None)."""
        s = self.settings
        since = t - s.hop_window_s
        sweep_t = self._sweep_t
        if sweep_t and t < sweep_t[-1]:  # out of order (not from one clock): keep what is in the window
            self._sweep_t = sweep_t = collections.deque(u for u in sweep_t if u > since)
        while sweep_t and not sweep_t[0] > since:  # in order, the old ones are first
            sweep_t.popleft()
        sweep_t.append(t)
        if hops.shape[0] == 0 and self._hops.shape[0] == 0:  # nothing collected, nothing to add
            return None
        # (the oldest hop's time tells, without a pass over the buffer, whether any leaves)
        kept = self._hops if self._t_oldest > since else self._hops[self._hops[:, _T] > since]
        if not hops.shape[0]:  # no new hop: only the old ones leave the window
            if kept is not self._hops:
                self._set_hops(kept)
        else:
            fine = hops["power_centre_mhz"]
            fine = np.where((fine >= hops["low_mhz"]) & (fine <= hops["high_mhz"]), fine, hops["centre_mhz"])
            # Only a hop that lit two cells or more, or one and a neighbour hop_side_db over
            # the floor, places itself by their ratio; the centroid of a lone cell is the
            # cell's centre (the analyser's grid, not the hopper's).
            placed = np.where((hops["cells"] >= 2) | (hops["side_db"] >= s.hop_side_db), fine, np.nan)
            new = np.column_stack([np.full(hops.shape[0], t), hops["centre_mhz"], hops["bandwidth_mhz"],
                                   hops["mean_dbm"], fine, placed])
            self._set_hops(np.concatenate([kept, new])[-s.hop_buffer_max:])
        if self._hops.shape[0] < 2 * s.hop_min_channels:
            return None
        memo = self._memo
        if memo is None:  # the hops changed: group them into channels again
            order = np.argsort(self._hops[:, _FC], kind="stable")
            f = self._hops[:, _FC][order]  # hops' power centroids: a channel's hops agree better than on cell edges
            label = np.concatenate(([0], np.cumsum(np.diff(f) > s.hop_channel_tolerance_mhz)))
            counts = np.bincount(label)
            centres = np.bincount(label, weights=f) / counts
            revisited = counts >= 2
            memo = self._memo = {"order": order, "label": label, "centres": centres, "revisited": revisited,
                                 "n_rev": int(np.count_nonzero(revisited)), "revisited_centres": centres[revisited]}
        # The revisit test depends on the sweeps in the window too; the rest on the hops alone.
        passed = self._revisits_pass(memo["n_rev"], memo["revisited_centres"], cells=cells, step_mhz=step_mhz,
                                     pfa=pfa)
        if passed not in memo:
            memo[passed] = self._describe(memo, passed)
        return memo[passed]

    def _set_hops(self, hops: np.ndarray) -> None:
        """Replace the hop buffer (its groups are worked out again when next asked for)."""
        self._hops = hops
        self._t_oldest = float(hops[:, _T].min()) if hops.shape[0] else math.inf
        self._memo = None

    def _describe(self, memo: dict, revisits_passed: bool) -> HopSet | None:
        """The hopping set in the hop buffer, grouped into channels in ``memo``, if one is
        present: by revisits (``revisits_passed``) or else by the grid test."""
        s = self.settings
        order, label, centres = memo["order"], memo["label"], memo["centres"]
        revisited, n_rev = memo["revisited"], memo["n_rev"]
        if not revisits_passed:
            # Too few revisits (a sparse hopper over many channels): a set all the same
            # when its hops' centres lie on one grid, which noise and cell-grid pieces do not.
            if not self._on_a_grid(label, order, centres):
                return None
            revisited = np.ones_like(revisited)
            n_rev = int(revisited.size)
        ch = centres[revisited]
        in_set = revisited[label]
        # Channel grid: gaps between neighbouring channels seen (revisited or not) within
        # the set's span; the grid step is the typical smallest gap.
        seen = centres[(centres >= ch[0]) & (centres <= ch[-1])]
        gaps = np.diff(seen)
        small = gaps[gaps <= 1.5 * np.percentile(gaps, 10)]
        offset, resultant, n_grid = self._grid_phase(ch[0] - s.hop_channel_tolerance_mhz,
                                                     ch[-1] + s.hop_channel_tolerance_mhz)
        return {
            "grid_offset": offset,
            "grid_resultant": resultant,
            "grid_hops": n_grid,
            "channels": n_rev,
            "low": float(ch[0]),
            "high": float(ch[-1]),
            "spacing": float(np.median(small)),
            "hop_bw": float(np.median(self._hops[:, _BW][order][in_set])),
            "power_dbm": float(np.median(self._hops[:, _DBM][order][in_set])),
        }

    def _revisits_pass(self, n_rev: int, ch: np.ndarray, *, cells: int, step_mhz: float, pfa: float) -> bool:
        """The revisit test: at least hop_min_channels revisited channels over
        hop_min_span_mhz, more than noise false alarms alone would give."""
        s = self.settings
        if n_rev < s.hop_min_channels or float(ch[-1] - ch[0]) < s.hop_min_span_mhz:
            return False
        c = max(1.0, 2.0 * s.hop_channel_tolerance_mhz / max(abs(step_mhz), 1e-9) + 1.0)
        lam = pfa * len(self._sweep_t) * c
        p_rev = float(special.pdtrc(1, lam))  # P(N > 1), N ~ Poisson(lam)
        expected = cells / c * p_rev
        need = float(poisson_isf(s.hop_false_alarm, expected)) + 1.0 if expected > 0 else 0.0
        if n_rev < need:
            log.debug("band %d: %d revisited channels, noise alone could give %.0f", self.band, n_rev, need)
            return False
        return True

    def _on_a_grid(self, label: np.ndarray, order: np.ndarray, centres: np.ndarray) -> bool:
        """The grid test, for hoppers too sparse to revisit their channels within the
        window: at least hop_min_channels channels over hop_min_span_mhz whose centres
        (the mean power centroid of each channel's hops of two cells or more) keep one offset on the
        reference grid's pitch (``reference_grid_mhz``), so strongly that channels
        spread over every offset (noise) pass with probability below hop_false_alarm
        (Rayleigh, over channels so that a few busy fixed channels weigh as few:
        P(n R² ≥ x) ≈ exp(−x) for n uniform phases)."""
        s = self.settings
        n = centres.size
        if n < s.hop_min_channels or float(centres[-1] - centres[0]) < s.hop_min_span_mhz:
            return False
        origin, pitch = self.classifier.reference_grid_mhz
        gc = self._hops[:, _GC][order]
        placed = np.isfinite(gc)
        counts = np.bincount(label[placed], minlength=n)
        fine = np.bincount(label[placed], weights=gc[placed], minlength=n)[counts > 0] / counts[counts > 0]
        if fine.size < s.hop_min_channels:
            return False
        resultant = float(np.abs(np.mean(np.exp(2j * np.pi * (fine - origin) / pitch))))
        return fine.size * resultant**2 >= math.log(1.0 / s.hop_false_alarm)

    def _grid_phase(self, low: float, high: float) -> tuple[float, float, int]:
        """(offset MHz, resultant 0..1, hops) of the hops' centres (power centroids of
        the hops of two cells or more) in
        ``low``..``high`` on the classifier's reference grid (``reference_grid_mhz``:
        origin, pitch): the circular mean of (centre − origin) / pitch. Hops of a set on
        that grid give an offset near 0, hops on a grid shifted by d give d; noise
        and hops spread over all offsets give a resultant near 0."""
        origin, pitch = self.classifier.reference_grid_mhz
        gc = self._hops[:, _GC]
        fc = gc[(gc >= low) & (gc <= high)]
        if fc.size == 0:
            return float("nan"), float("nan"), 0
        z = np.mean(np.exp(2j * np.pi * (fc - origin) / pitch))
        return float(np.angle(z) / (2.0 * np.pi) * pitch), float(np.abs(z)), int(fc.size)


def poisson_isf(q: float, mu: float) -> int:
    """Smallest k with P(N > k) <= q for N ~ Poisson(mu) (as scipy.stats.poisson.isf,
    without importing scipy.stats: tens of MiB on a tower computer)."""
    k = int(mu)
    while k > 0 and special.pdtrc(k - 1, mu) <= q:
        k -= 1
    while special.pdtrc(k, mu) > q:
        k += 1
    return k
