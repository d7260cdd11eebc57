"""RF emitter tracks: sweep-to-sweep association, M-of-N persistence, hopping sets.

One :class:`BandTracker` per (sensor, band). Each sweep of its band it:

1. associates the sweep's emitters with its live single-emitter tracks by centre
   frequency and bandwidth (gates ``|Δf| ≤ max(freq_tolerance_mhz, 1.5 cells,
   freq_tolerance_fraction · wider bandwidth)`` and ``|Δbw| ≤
   max(bandwidth_tolerance_mhz, 2 cells, bandwidth_tolerance_fraction · wider
   bandwidth)``; cost
   ``(Δf/tol_f)² + (Δbw/tol_bw)²``; global nearest neighbour by
   ``linear_sum_assignment`` with a miss column per track);
2. updates hit tracks (exponential smoothing of centre, bandwidth and power with weight
   ``smoothing``; exponentially weighted standard deviations of centre and bandwidth),
   counts a miss on the others, and starts a TENTATIVE track on each emitter left over;
3. feeds narrow emitters (``hop_max_bandwidth_mhz``) that are neither a continuous
   carrier nor within ``hop_max_bandwidth_mhz`` of a wide emitter or wide track (a
   plateau's fragments) nor inside a bursting 802.11 channel (``burst_channels_mhz``: one
   where ``burst_min_pieces`` pieces wider than a hop were seen within ``hop_window_s``; a swept analyser cuts
   each 802.11 burst into a piece of its channel, mostly a cell or two wide, so the
   pieces revisit cells all over the channel like hops on the analyser's own cell grid)
   to the band's hopping-set detector: over the last ``hop_window_s`` their centres are
   grouped into channels (``hop_channel_tolerance_mhz``); a channel is *revisited* when
   hit twice or more. A hopping set is present when at least ``hop_min_channels``
   channels are revisited, spanning at least ``hop_min_span_mhz``, and more than noise
   alone would give: with the band's per-cell false-alarm probability p, S sweeps in
   the window and c cells per channel, a channel is revisited by noise with probability
   P(Poisson(p S c) ≥ 2), and the count must exceed the (1 − ``hop_false_alarm``)
   Poisson quantile of (cells / c) such channels. A hopper too sparse to revisit its
   channels (about duty hops per sweep over 80 channels) is a set all the same when at
   least ``hop_min_channels`` channels' centres keep one offset on the reference grid's
   pitch (Rayleigh test at ``hop_false_alarm``); a hop's centre is its power centroid
   (see :mod:`towerd.rf.emitters`), counted for the grid only when the hop lit two
   cells, or one and a neighbour ``hop_side_db`` over the floor. One hopping-set track per band
   (``comb``), hit on the sweeps where the set is present; once it is confirmed, narrow
   emitters inside its span start no tracks of their own, and the narrow tracks there
   that are tentative, or old enough to classify and not continuous (its hops, re-hit
   now and then), are ended. (A carrier that appears inside an active hopping set's
   span is therefore not tracked until the set ends.);
4. persistence: a TENTATIVE track is CONFIRMED when hit in ``confirm_hits`` (M) of the
   band's last ``confirm_window`` (N) sweeps, and dropped after more than
   ``tentative_max_misses`` consecutive misses. A CONFIRMED track not hit for
   ``coast_after_s`` is COASTING (CONFIRMED again on its next hit) and ENDED after
   ``end_after_s`` without a hit;
5. classifies every live track (:mod:`towerd.rf.classify`).

Track ids come from a counter shared by all band trackers of a processor and are never
reused. Duty cycle: the fraction of hits over the band's last min(64, sweeps) sweeps.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import numpy as np
from scipy import special

from towerd.icd import Status
from towerd.rf.classify import ClassifierSettings, LinkKind, category_of, classify
from towerd.rows import join_rows
from towerd.schema import spec

log = logging.getLogger(__name__)

HISTORY_BITS = 64

WIFI_GRID_MHZ = tuple(2412.0 + 5.0 * k for k in range(13)) + tuple(5745.0 + 20.0 * k for k in range(5))
"""802.11 20 MHz channel centres: 2.4 GHz channels 1-13 and 5.8 GHz (UNII-3) 149-165."""

RF_TRACK_DTYPE = np.dtype(
    [
        ("rf_track_id", "<u4"),  # never reused (shared counter of the processor)
        ("status", "u1"),  # towerd.icd.Status
        ("kind", "u1"),  # towerd.rf.classify.LinkKind
        ("category", "u1"),  # towerd.icd.Category: uas for drone links, else unknown
        ("confidence", "u1"),  # 0..100, confidence in the category (0 for non-drone kinds)
        ("comb", "?"),  # True: a hopping set (many narrow emitters), not one emitter
        ("band", "<i2"),  # index of (sensor, band) in RfProcessor.band_keys
        ("centre_mhz", "<f8"),  # smoothed centre; hopping set: middle of its channel span
        ("bandwidth_mhz", "<f8"),  # smoothed occupied bandwidth; hopping set: its span plus one hop
        ("power_dbm", "<f8"),  # smoothed mean power per resolution bandwidth over the occupied cells
        ("peak_dbm", "<f8"),  # peak cell of the last hit
        ("snr_db", "<f8"),  # last hit's mean power over the noise floor
        ("centre_excess_db", "<f8"),  # smoothed spectral peakedness (see emitters); NaN if unknown
        ("fill_ratio", "<f8"),  # smoothed CFAR fill over a steady emitter's (see emitters); NaN if unknown
        ("hole_excess", "<f8"),  # smoothed inner cells near the floor beyond a steady emitter's (see emitters); NaN if unknown
        ("width_jitter_mhz", "<f8"),  # slowly smoothed |width - smoothed width| of the hits (bursty occupancy)
        ("centre_std_mhz", "<f8"),  # exponentially weighted std of the centre (drift / hopping)
        ("bandwidth_std_mhz", "<f8"),  # same for the bandwidth
        ("centre_min_mhz", "<f8"),  # lowest centre seen (hopping set: lowest channel)
        ("centre_max_mhz", "<f8"),  # highest centre seen (hopping set: highest channel)
        ("channels", "<u2"),  # hopping set: revisited channels in the window; 1 otherwise
        ("channel_spacing_mhz", "<f8"),  # hopping set: its channel grid step (typical smallest gap); NaN otherwise
        ("grid_offset_mhz", "<f8"),  # hopping set: its hops' centres' mean offset from the reference grid; NaN otherwise
        ("grid_resultant", "<f8"),  # hopping set: length (0..1) of that circular mean; NaN otherwise
        ("grid_hops", "<u4"),  # hopping set: hops that circular mean is over
        ("hits", "<u4"),  # sweeps with a hit
        ("sweeps", "<u4"),  # sweeps of the band since the track started (including its first)
        ("misses", "<u2"),  # consecutive sweeps without a hit
        ("hit_history", "<u8"),  # bit i: hit i sweeps of the band ago (bit 0 the latest)
        ("duty", "<f8"),  # hits / sweeps over the last min(64, sweeps) sweeps
        ("first_seen_mono", "<f8"),  # monotonic s of the first hit
        ("last_seen_mono", "<f8"),  # monotonic s of the latest hit
        ("t_mono", "<f8"),  # monotonic s of the track's latest update (hit or miss)
    ]
)
"""One row per RF track."""


def empty_rf_tracks(n: int = 0) -> np.ndarray:
    """RF_TRACK_DTYPE rows with NaN in every optional float field."""
    t = np.zeros(n, dtype=RF_TRACK_DTYPE)
    for name in ("centre_excess_db", "fill_ratio", "hole_excess", "channel_spacing_mhz", "snr_db", "grid_offset_mhz",
                 "grid_resultant"):
        t[name] = np.nan
    t["channels"] = 1
    return t


@dataclass(frozen=True)
class RfTrackingSettings:
    """Emitter tracking and persistence (see :mod:`towerd.rf.tracker`)."""

    confirm_hits: int = spec(3, doc="M of M-of-N: hits to confirm a track", lo=1, hi=64)
    confirm_window: int = spec(4, doc="N of M-of-N: within this many sweeps of its band", lo=1, hi=64)
    tentative_max_misses: int = spec(2, doc="consecutive misses that drop a tentative track", lo=0, hi=64)
    coast_after_s: float = spec(3.0, doc="time without a hit that makes a track coasting", unit="s", lo=0.0, hi=3600.0)
    end_after_s: float = spec(15.0, doc="time without a hit that ends a track", unit="s", lo=0.1, hi=86400.0)
    freq_tolerance_mhz: float = spec(
        0.3, doc="association gate on centre frequency, at least (and at least 1.5 cells)",
        unit="MHz", lo=0.001, hi=100.0,
    )
    freq_tolerance_fraction: float = spec(
        0.25, doc="association gate on centre frequency, fraction of the wider bandwidth", lo=0.0, hi=2.0
    )
    bandwidth_tolerance_mhz: float = spec(
        0.5, doc="association gate on bandwidth, at least (and at least 2 cells)", unit="MHz", lo=0.001, hi=100.0
    )
    bandwidth_tolerance_fraction: float = spec(
        0.5, doc="association gate on bandwidth, fraction of the wider bandwidth", lo=0.0, hi=2.0
    )
    smoothing: float = spec(0.3, doc="weight of a new hit in the smoothed centre, bandwidth and power", lo=0.01, hi=1.0)
    shape_smoothing: float = spec(
        0.1, doc="weight of a new hit in the smoothed spectral peakedness (analog vs OFDM)", lo=0.01, hi=1.0
    )
    hop_max_bandwidth_mhz: float = spec(
        2.5, doc="emitters up to this wide may be hops of a hopping link (a 1 MHz hop, on or off for the whole "
        "pass, lights up to three 0.75 MHz cells)", unit="MHz", lo=0.01, hi=20.0
    )
    hop_window_s: float = spec(
        15.0, doc="time over which hops are collected (a swept analyser sees about duty hops per sweep: ELRS at "
        "duty 0.25 over 80 channels needs 10-15 s to show a set)", unit="s", lo=0.1, hi=600.0,
    )
    hop_channel_tolerance_mhz: float = spec(
        0.2, doc="hops this close are one channel (well below half the channel spacing: ELRS 915 is 0.6 MHz)",
        unit="MHz", lo=0.001, hi=10.0,
    )
    hop_min_channels: int = spec(6, doc="revisited channels that make a hopping set", lo=2, hi=256)
    hop_min_span_mhz: float = spec(4.0, doc="span of a hopping set's channels, at least", unit="MHz", lo=0.0, hi=1000.0)
    hop_false_alarm: float = spec(
        1e-6, doc="chance that noise false alarms alone pass the hopping-set test", lo=1e-12, hi=1e-2
    )
    hop_side_db: float = spec(
        3.0, doc="a one-cell hop whose stronger neighbour is this far over the floor places its centre by their "
        "ratio (for the hop-grid offset; noise alone passes 3 dB in about 9 % of cells at 2 looks)",
        unit="dB", lo=0.0, hi=30.0,
    )
    hop_buffer_max: int = spec(4096, doc="hops kept per band at most (oldest dropped)", lo=64, hi=1_000_000)
    burst_channels_mhz: tuple[float, ...] = spec(
        WIFI_GRID_MHZ,
        doc="802.11 channel centres (2.4 GHz channels 1-13, 5.8 GHz 149-165): where pieces of a channel's bursts "
        "wider than a hop were seen within hop_window_s, narrow pieces are its bursts cut short by the sweep, "
        "not hops",
        unit="MHz", lo=1.0, hi=30000.0,
    )
    burst_min_pieces: int = spec(
        2, doc="pieces wider than a hop inside an 802.11 channel within hop_window_s that make it bursting; the hops "
        "already collected inside it are then dropped too", lo=1, hi=1000,
    )
    burst_channel_width_mhz: float = spec(
        20.0, doc="width of one 802.11 channel on that grid (a 40 MHz channel is two of them)",
        unit="MHz", lo=1.0, hi=160.0,
    )

    def __post_init__(self) -> None:
        if not 1 <= self.confirm_hits <= self.confirm_window <= HISTORY_BITS:
            raise ValueError(
                f"need 1 <= confirm_hits <= confirm_window <= {HISTORY_BITS}, got "
                f"{self.confirm_hits} of {self.confirm_window}"
            )
        if self.coast_after_s >= self.end_after_s:
            raise ValueError(f"coast_after_s ({self.coast_after_s}) must be below end_after_s ({self.end_after_s})")


class TrackIds:
    """Monotonic id counter shared by the band trackers of one processor."""

    def __init__(self, first: int) -> None:
        if not 0 < first <= 0xFFFFFFFF:
            raise ValueError(f"first track id {first} is not a positive u32")
        self.next = int(first)

    def take(self, n: int) -> np.ndarray:
        """``n`` fresh ids."""
        if self.next + n - 1 > 0xFFFFFFFF:
            raise OverflowError("RF track ids exhausted")
        ids = np.arange(self.next, self.next + n, dtype=np.uint32)
        self.next += n
        return ids


def popcount(x: np.ndarray) -> np.ndarray:
    """Set bits per element of a u8 array."""
    x = np.asarray(x, dtype=np.uint64)
    if hasattr(np, "bitwise_count"):
        return np.bitwise_count(x).astype(np.int64)
    return np.unpackbits(x.reshape(-1, 1).view(np.uint8), axis=1).sum(axis=1).reshape(x.shape).astype(np.int64)


def _window_mask(n: np.ndarray | int) -> np.ndarray:
    """u8 mask of the lowest ``n`` bits (n in 0..64)."""
    n = np.asarray(n, dtype=np.int64)
    full = n >= HISTORY_BITS
    m = (np.uint64(1) << np.minimum(n, HISTORY_BITS - 1).astype(np.uint64)) - np.uint64(1)
    return np.where(full, np.uint64(0xFFFFFFFFFFFFFFFF), m).astype(np.uint64)


@dataclass(frozen=True, eq=False)
class BandStep:
    """What one band tracker call produced: live tracks after it and the tracks it ended
    (status ENDED, last state), both RF_TRACK_DTYPE."""

    tracks: np.ndarray
    ended: np.ndarray


class BandTracker:
    """The RF tracks of one (sensor, band): see the module docstring."""

    def __init__(
        self,
        band: int,
        settings: RfTrackingSettings,
        classifier: ClassifierSettings,
        ids: TrackIds,
    ) -> None:
        self.band = int(band)
        self.settings = settings
        self.classifier = classifier
        self.ids = ids
        self.tracks = empty_rf_tracks()
        s = settings
        self._hop_t = np.zeros(0)
        self._hop_f = np.zeros(0)
        self._hop_bw = np.zeros(0)
        self._hop_dbm = np.zeros(0)
        self._hop_fc = np.zeros(0)  # power centroids of the hops (their centres to within a cell)
        self._hop_gc = np.zeros(0)  # the same for hops of two cells or more, NaN for single cells
        self._sweep_t = np.zeros(0)  # times of this band's sweeps within the hop window
        self._burst = np.zeros((0, 3))  # (t, low MHz, high MHz) of burst pieces wider than a hop, in the window
        self._grid = np.asarray(settings.burst_channels_mhz, dtype=float)
        self._confirm_mask = _window_mask(s.confirm_window)

    # -- one sweep ----------------------------------------------------------------------

    def step(self, emitters: np.ndarray, t_mono: float, *, cells: int, step_mhz: float, pfa: float) -> BandStep:
        """Fold one sweep's ``emitters`` (towerd.rf.emitters.EMITTER_DTYPE) of this band in at ``t_mono``.
        ``cells``, ``step_mhz``: the band segment's grid; ``pfa``: the detector's per-cell
        false-alarm probability (for the hopping-set noise guard)."""
        s = self.settings
        t = float(t_mono)
        tr = self.tracks.copy()
        single = ~tr["comb"]
        single_rows = np.flatnonzero(single)
        ti, ei = self._associate(tr[single_rows], emitters, step_mhz)
        ti = single_rows[ti]

        hit = np.zeros(tr.shape[0], dtype=bool)
        hit[ti] = True
        self._update_hits(tr, ti, emitters[ei], t)

        # Hops: narrow emitters not taken by a continuous narrowband track, and not
        # beside a wide emitter (a plateau's fragment in a deep fade).
        # Enum members as ints in array expressions: NumPy probes an IntEnum member's class
        # for its array protocols first (~3 µs each on Python 3.11).
        status = tr["status"]
        continuous = (tr["kind"] == int(LinkKind.CARRIER)) & (
            (status == int(Status.CONFIRMED)) | (status == int(Status.COASTING)))
        taken_by_carrier = np.zeros(emitters.shape[0], dtype=bool)
        taken_by_carrier[ei[continuous[ti]]] = True
        narrow = (emitters["bandwidth_mhz"] <= s.hop_max_bandwidth_mhz) & ~taken_by_carrier
        wide = ~tr["comb"] & (tr["bandwidth_mhz"] > s.hop_max_bandwidth_mhz)
        margin = s.hop_max_bandwidth_mhz
        for lo, hi in zip(
            np.concatenate([tr["centre_mhz"][wide] - tr["bandwidth_mhz"][wide] / 2, emitters["low_mhz"]]),
            np.concatenate([tr["centre_mhz"][wide] + tr["bandwidth_mhz"][wide] / 2, emitters["high_mhz"]]),
        ):
            if hi - lo > s.hop_max_bandwidth_mhz:
                narrow &= ~((emitters["centre_mhz"] >= lo - margin) & (emitters["centre_mhz"] <= hi + margin))
        narrow &= ~self._in_bursting_channel(emitters, t, step_mhz)
        comb = self._hopping_set(emitters[narrow], t, cells=cells, step_mhz=step_mhz, pfa=pfa)

        comb_rows = np.flatnonzero(tr["comb"])
        new_rows = []
        if comb is not None:
            if comb_rows.size:
                hit[comb_rows[0]] = True
                self._update_comb(tr, comb_rows[0], comb, t)
            else:
                new_rows.append(self._new_comb(comb, t))

        # Leftover emitters start tentative tracks, except narrow ones inside a confirmed
        # hopping set's span (its hops).
        left = np.ones(emitters.shape[0], dtype=bool)
        left[ei] = False
        absorbed = np.zeros(tr.shape[0], dtype=bool)
        for r in comb_rows:
            if tr["status"][r] in (Status.CONFIRMED, Status.COASTING):
                lo = tr["centre_min_mhz"][r] - s.hop_channel_tolerance_mhz
                hi = tr["centre_max_mhz"][r] + s.hop_channel_tolerance_mhz
                inside = (emitters["centre_mhz"] >= lo) & (emitters["centre_mhz"] <= hi)
                left &= ~(inside & (emitters["bandwidth_mhz"] <= s.hop_max_bandwidth_mhz))
                c = self.classifier
                hop_like = (tr["status"] == int(Status.TENTATIVE)) | (
                    (tr["sweeps"] >= c.min_sweeps) & (tr["duty"] < c.continuous_duty - c.duty_hysteresis)
                )
                absorbed |= (
                    ~tr["comb"] & hop_like
                    & (tr["bandwidth_mhz"] <= s.hop_max_bandwidth_mhz)
                    & (tr["centre_mhz"] >= lo) & (tr["centre_mhz"] <= hi)
                )

        # Hit / miss bookkeeping for the existing tracks.
        tr["hit_history"] = (tr["hit_history"] << np.uint64(1)) | hit.astype(np.uint64)
        tr["sweeps"] += np.uint32(1)
        tr["misses"] = np.where(hit, 0, np.minimum(tr["misses"].astype(np.int64) + 1, 0xFFFF)).astype(np.uint16)
        tr["t_mono"] = t

        new = self._new_tracks(emitters[left], t)
        tr = join_rows([tr, *new_rows, new])
        absorbed = np.concatenate([absorbed, np.zeros(tr.shape[0] - absorbed.shape[0], dtype=bool)])
        return self._finish(tr, t, absorbed=absorbed)

    def expire(self, t_mono: float) -> BandStep:
        """Apply the time rules alone (no sweep of this band arrived)."""
        if self.tracks.shape[0] == 0:
            return BandStep(tracks=self.tracks, ended=self.tracks.copy())
        return self._finish(self.tracks.copy(), float(t_mono), sweep=False)

    def end_all(self, t_mono: float) -> BandStep:
        """End every live track."""
        ended = self.tracks.copy()
        ended["status"] = Status.ENDED
        ended["t_mono"] = np.maximum(ended["t_mono"], float(t_mono))
        self.tracks = empty_rf_tracks()
        return BandStep(tracks=self.tracks, ended=ended)

    # -- parts -------------------------------------------------------------------------

    def _associate(self, tr: np.ndarray, em: np.ndarray, step_mhz: float) -> tuple[np.ndarray, np.ndarray]:
        """(track rows, emitter rows) of the assigned pairs."""
        s = self.settings
        cell = abs(float(step_mhz))
        nt, ne = tr.shape[0], em.shape[0]
        if nt == 0 or ne == 0:
            return np.zeros(0, dtype=np.intp), np.zeros(0, dtype=np.intp)
        bw_t = tr["bandwidth_mhz"][:, None]
        bw_e = em["bandwidth_mhz"][None, :]
        wider = np.maximum(bw_t, bw_e)
        tol_f = np.maximum(max(s.freq_tolerance_mhz, 1.5 * cell), s.freq_tolerance_fraction * wider)
        tol_bw = np.maximum(max(s.bandwidth_tolerance_mhz, 2.0 * cell), s.bandwidth_tolerance_fraction * wider)
        df = np.abs(tr["centre_mhz"][:, None] - em["centre_mhz"][None, :]) / tol_f
        dbw = np.abs(bw_t - bw_e) / tol_bw
        gated = (df <= 1.0) & (dbw <= 1.0)
        if not np.any(gated):
            return np.zeros(0, dtype=np.intp), np.zeros(0, dtype=np.intp)
        cost = np.where(gated, df**2 + dbw**2, np.inf)
        # [cost | diag(miss)]: always feasible; a miss (cost 2, the gate's corner) competes
        # with a poor hit.
        miss = np.full((nt, nt), np.inf)
        np.fill_diagonal(miss, 2.0 + 1e-9)
        from scipy.optimize import linear_sum_assignment  # here: scipy.optimize costs ~0.4 s of every towerd command's start

        rows, cols = linear_sum_assignment(np.hstack([cost, miss]))
        real = cols < ne
        return rows[real].astype(np.intp), cols[real].astype(np.intp)

    def _update_hits(self, tr: np.ndarray, ti: np.ndarray, em: np.ndarray, t: float) -> None:
        if ti.size == 0:
            return
        a = self.settings.smoothing
        b = np.maximum(self.settings.shape_smoothing, 1.0 / (tr["hits"][ti] + 1.0))
        jitter = np.abs(em["bandwidth_mhz"] - tr["bandwidth_mhz"][ti])
        tr["width_jitter_mhz"][ti] += b * (jitter - tr["width_jitter_mhz"][ti])
        for name, src, std in (
            ("centre_mhz", em["centre_mhz"], "centre_std_mhz"),
            ("bandwidth_mhz", em["bandwidth_mhz"], "bandwidth_std_mhz"),
        ):
            d = src - tr[name][ti]
            tr[std][ti] = np.sqrt((1.0 - a) * (tr[std][ti] ** 2 + a * d**2))
            tr[name][ti] += a * d
        # power smoothed in linear units (a mean of dB values is biased low by fading)
        p_old = np.power(10.0, tr["power_dbm"][ti] / 10.0)
        p_new = np.power(10.0, em["mean_dbm"] / 10.0)
        tr["power_dbm"][ti] = 10.0 * np.log10(p_old + a * (p_new - p_old))
        # peakedness, fill and holes (as the jitter): a running mean over the first
        # 1/shape_smoothing hits, then exponential
        for name in ("centre_excess_db", "fill_ratio", "hole_excess"):
            ex_old = tr[name][ti]
            ex_new = em[name]
            tr[name][ti] = np.where(
                np.isfinite(ex_old) & np.isfinite(ex_new),
                ex_old + b * (ex_new - ex_old),
                np.where(np.isfinite(ex_new), ex_new, ex_old),
            )
        tr["peak_dbm"][ti] = em["peak_dbm"]
        tr["snr_db"][ti] = em["snr_db"]
        tr["centre_min_mhz"][ti] = np.minimum(tr["centre_min_mhz"][ti], em["centre_mhz"])
        tr["centre_max_mhz"][ti] = np.maximum(tr["centre_max_mhz"][ti], em["centre_mhz"])
        tr["hits"][ti] += np.uint32(1)
        tr["last_seen_mono"][ti] = t

    def _new_tracks(self, em: np.ndarray, t: float) -> np.ndarray:
        n = em.shape[0]
        new = empty_rf_tracks(n)
        if n == 0:
            return new
        new["rf_track_id"] = self.ids.take(n)
        new["status"] = Status.TENTATIVE
        new["band"] = self.band
        for name in ("centre_mhz", "centre_min_mhz", "centre_max_mhz"):
            new[name] = em["centre_mhz"]
        new["bandwidth_mhz"] = em["bandwidth_mhz"]
        new["power_dbm"] = em["mean_dbm"]
        new["peak_dbm"] = em["peak_dbm"]
        new["snr_db"] = em["snr_db"]
        new["centre_excess_db"] = em["centre_excess_db"]
        new["fill_ratio"] = em["fill_ratio"]
        new["hole_excess"] = em["hole_excess"]
        new["hits"] = 1
        new["sweeps"] = 1
        new["hit_history"] = 1
        new["first_seen_mono"] = t
        new["last_seen_mono"] = t
        new["t_mono"] = t
        return new

    # -- 802.11 bursts -------------------------------------------------------------------

    def _in_bursting_channel(self, em: np.ndarray, t: float, step_mhz: float) -> np.ndarray:
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
        fc = self._hop_fc
        gone = np.any((fc[:, None] >= lo[active][None, :]) & (fc[:, None] <= hi[active][None, :]), axis=1)
        if np.any(gone):
            keep = ~gone
            for name in ("_hop_t", "_hop_f", "_hop_bw", "_hop_dbm", "_hop_fc", "_hop_gc"):
                setattr(self, name, getattr(self, name)[keep])
        f = em["centre_mhz"]
        return np.any((f[:, None] >= lo[active][None, :]) & (f[:, None] <= hi[active][None, :]), axis=1)

    # -- hopping sets -------------------------------------------------------------------

    def _hopping_set(self, hops: np.ndarray, t: float, *, cells: int, step_mhz: float, pfa: float) -> dict | None:
        """Add this sweep's candidate hops, drop old ones, and describe the hopping set if
        one is present (else None)."""
        s = self.settings
        keep = self._hop_t > t - s.hop_window_s
        self._hop_t = np.concatenate([self._hop_t[keep], np.full(hops.shape[0], t)])[-s.hop_buffer_max:]
        self._hop_f = np.concatenate([self._hop_f[keep], hops["centre_mhz"]])[-s.hop_buffer_max:]
        self._hop_bw = np.concatenate([self._hop_bw[keep], hops["bandwidth_mhz"]])[-s.hop_buffer_max:]
        self._hop_dbm = np.concatenate([self._hop_dbm[keep], hops["mean_dbm"]])[-s.hop_buffer_max:]
        fine = hops["power_centre_mhz"]
        fine = np.where((fine >= hops["low_mhz"]) & (fine <= hops["high_mhz"]), fine, hops["centre_mhz"])
        self._hop_fc = np.concatenate([self._hop_fc[keep], fine])[-s.hop_buffer_max:]
        # Only a hop that lit two cells or more, or one and a neighbour hop_side_db over
        # the floor, places itself by their ratio; the centroid of a lone cell is the
        # cell's centre (the analyser's grid, not the hopper's).
        placed = np.where((hops["cells"] >= 2) | (hops["side_db"] >= s.hop_side_db), fine, np.nan)
        self._hop_gc = np.concatenate([self._hop_gc[keep], placed])[-s.hop_buffer_max:]
        self._sweep_t = np.append(self._sweep_t[self._sweep_t > t - s.hop_window_s], t)
        if self._hop_f.shape[0] < 2 * s.hop_min_channels:
            return None
        order = np.argsort(self._hop_fc, kind="stable")
        f = self._hop_fc[order]  # hops' power centroids: a channel's hops agree better than on cell edges
        label = np.concatenate(([0], np.cumsum(np.diff(f) > s.hop_channel_tolerance_mhz)))
        counts = np.bincount(label)
        centres = np.bincount(label, weights=f) / counts
        revisited = counts >= 2
        n_rev = int(np.count_nonzero(revisited))
        if not self._revisits_pass(n_rev, centres[revisited], cells=cells, step_mhz=step_mhz, pfa=pfa):
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
            "hop_bw": float(np.median(self._hop_bw[order][in_set])),
            "power_dbm": float(np.median(self._hop_dbm[order][in_set])),
        }

    def _revisits_pass(self, n_rev: int, ch: np.ndarray, *, cells: int, step_mhz: float, pfa: float) -> bool:
        """The revisit test: at least hop_min_channels revisited channels over
        hop_min_span_mhz, more than noise false alarms alone would give."""
        s = self.settings
        if n_rev < s.hop_min_channels or float(ch[-1] - ch[0]) < s.hop_min_span_mhz:
            return False
        c = max(1.0, 2.0 * s.hop_channel_tolerance_mhz / max(abs(step_mhz), 1e-9) + 1.0)
        lam = pfa * self._sweep_t.shape[0] * c
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
        gc = self._hop_gc[order]
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
        fc = self._hop_gc[(self._hop_gc >= low) & (self._hop_gc <= high)]
        if fc.size == 0:
            return float("nan"), float("nan"), 0
        z = np.mean(np.exp(2j * np.pi * (fc - origin) / pitch))
        return float(np.angle(z) / (2.0 * np.pi) * pitch), float(np.abs(z)), int(fc.size)

    def _comb_fields(self, row: np.ndarray, comb: dict) -> None:
        row["centre_mhz"] = 0.5 * (comb["low"] + comb["high"])
        row["bandwidth_mhz"] = comb["high"] - comb["low"] + comb["hop_bw"]
        row["power_dbm"] = comb["power_dbm"]
        row["peak_dbm"] = comb["power_dbm"]
        row["centre_min_mhz"] = comb["low"]
        row["centre_max_mhz"] = comb["high"]
        row["channels"] = min(comb["channels"], 0xFFFF)
        row["channel_spacing_mhz"] = comb["spacing"]
        row["grid_offset_mhz"] = comb["grid_offset"]
        row["grid_resultant"] = comb["grid_resultant"]
        row["grid_hops"] = comb["grid_hops"]

    def _update_comb(self, tr: np.ndarray, r: int, comb: dict, t: float) -> None:
        row = tr[r : r + 1]
        self._comb_fields(row, comb)
        row["hits"] += np.uint32(1)
        row["last_seen_mono"] = t

    def _new_comb(self, comb: dict, t: float) -> np.ndarray:
        row = empty_rf_tracks(1)
        row["rf_track_id"] = self.ids.take(1)
        row["status"] = Status.TENTATIVE
        row["comb"] = True
        row["band"] = self.band
        self._comb_fields(row, comb)
        row["hits"] = 1
        row["sweeps"] = 1
        row["hit_history"] = 1
        row["first_seen_mono"] = t
        row["last_seen_mono"] = t
        row["t_mono"] = t
        return row

    # -- status rules --------------------------------------------------------------------

    def _finish(self, tr: np.ndarray, t: float, sweep: bool = True, absorbed: np.ndarray | None = None) -> BandStep:
        """Duty, confirmation, coasting, ending (plus the ``absorbed`` rows), classes."""
        if tr.shape[0] == 0:  # nothing to confirm, end or classify
            self.tracks = tr
            return BandStep(tracks=tr, ended=tr.copy())
        s = self.settings
        n_hist = np.minimum(tr["sweeps"].astype(np.int64), HISTORY_BITS)
        tr["duty"] = popcount(tr["hit_history"] & _window_mask(n_hist)) / np.maximum(n_hist, 1)

        tentative = tr["status"] == int(Status.TENTATIVE)
        if sweep:
            confirm = tentative & (popcount(tr["hit_history"] & self._confirm_mask) >= s.confirm_hits)
            tr["status"][confirm] = Status.CONFIRMED
            tentative &= ~confirm
        since = t - tr["last_seen_mono"]
        established = ~tentative
        tr["status"][established] = np.where(since[established] > s.coast_after_s, int(Status.COASTING),
                                             int(Status.CONFIRMED))
        drop = tentative & ((tr["misses"] > s.tentative_max_misses) | (since > s.end_after_s))
        end = established & (since > s.end_after_s)
        gone = drop | end
        if absorbed is not None:
            gone |= absorbed

        kind, conf = classify(tr, self.classifier, s.hop_min_channels)
        tr["kind"] = kind
        tr["confidence"] = conf
        tr["category"] = category_of(kind)

        ended = tr[gone].copy()
        ended["status"] = Status.ENDED
        self.tracks = tr[~gone]
        if np.any(end):
            log.debug("band %d: ended RF tracks %s", self.band, tr["rf_track_id"][end].tolist())
        return BandStep(tracks=self.tracks, ended=ended)


def poisson_isf(q: float, mu: float) -> int:
    """Smallest k with P(N > k) <= q for N ~ Poisson(mu) (as scipy.stats.poisson.isf,
    without importing scipy.stats: tens of MiB on a tower computer)."""
    k = int(mu)
    while k > 0 and special.pdtrc(k - 1, mu) <= q:
        k -= 1
    while special.pdtrc(k, mu) > q:
        k += 1
    return k
