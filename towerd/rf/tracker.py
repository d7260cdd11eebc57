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

Step 3's buffers and tests live in :mod:`towerd.rf.hopset`, the track rows and ids in
:mod:`towerd.rf.tracks` (both importable from here as before).

Track ids come from a counter shared by all band trackers of a processor and are never
reused. Duty cycle: the fraction of hits over the band's last min(64, sweeps) sweeps.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

from towerd.assignment import linear_sum_assignment
from towerd.icd import Status
from towerd.rf.classify import ClassifierSettings, LinkKind, category_of, classify
from towerd.rf.emitters import select_emitters
from towerd.rf.hopset import HopSet, HopSetDetector, poisson_isf
from towerd.rf.tracks import (HISTORY_BITS, NO_ROWS, RF_TRACK_DTYPE, TrackIds, copy_rows, duty, empty_rf_tracks,
                              popcount, select_rows, window_mask)
from towerd.rows import join_rows
from towerd.schema import spec

__all__ = [  # the track rows and hopping sets moved to their own modules; imported from here too
    "HISTORY_BITS", "RF_TRACK_DTYPE", "WIFI_GRID_MHZ", "BandStep", "BandTracker", "RfTrackingSettings", "TrackIds",
    "empty_rf_tracks", "poisson_isf", "popcount",
]

log = logging.getLogger(__name__)

WIFI_GRID_MHZ = tuple(2412.0 + 5.0 * k for k in range(13)) + tuple(5745.0 + 20.0 * k for k in range(5))
"""802.11 20 MHz channel centres: 2.4 GHz channels 1-13 and 5.8 GHz (UNII-3) 149-165."""


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



@dataclass(frozen=True, eq=False)
class BandStep:
    """What one band tracker call produced: live tracks after it and the tracks it ended
    (status ENDED, last state), both RF_TRACK_DTYPE (``ended`` read-only when empty)."""

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
        self.hopsets = HopSetDetector(band, settings, classifier)
        self._confirm_mask = window_mask(s.confirm_window)
        self._idle = BandStep(tracks=self.tracks, ended=NO_ROWS)  # an idle sweep's step (frozen: shared)
        self._kinds: tuple[np.ndarray, np.ndarray] | None = None
        """(previous, new) class of every row the latest :meth:`_finish` classified, for :meth:`_quiet`."""

    # -- one sweep ----------------------------------------------------------------------

    def step(self, emitters: np.ndarray, t_mono: float, *, cells: int, step_mhz: float, pfa: float) -> BandStep:
        """Fold one sweep's ``emitters`` (towerd.rf.emitters.EMITTER_DTYPE) of this band in at ``t_mono``.
        ``cells``, ``step_mhz``: the band segment's grid; ``pfa``: the detector's per-cell
        false-alarm probability (for the hopping-set noise guard)."""
        s = self.settings
        t = float(t_mono)
        if self.tracks.shape[0] == 0 and emitters.shape[0] == 0:
            # An idle sweep: only the hop and burst windows move (a hopping set may still
            # show in the hops collected before).
            self.hopsets.bursting(emitters, t, step_mhz)
            comb = self.hopsets.observe(emitters, t, cells=cells, step_mhz=step_mhz, pfa=pfa)
            if comb is None:
                idle = self._idle
                if idle.tracks is not self.tracks:  # the same answer while the (empty) tracks stay
                    idle = self._idle = BandStep(tracks=self.tracks, ended=NO_ROWS)
                return idle
            return self._finish(self._new_comb(comb, t), t, absorbed=np.zeros(1, dtype=bool))
        tr = copy_rows(self.tracks)
        hit = np.zeros(tr.shape[0], dtype=bool)
        if emitters.shape[0]:
            single = ~tr["comb"]
            single_rows = np.flatnonzero(single)
            ti, ei = self._associate(select_rows(tr, single_rows), emitters, step_mhz)
            ti = single_rows[ti]

            hit[ti] = True
            self._update_hits(tr, ti, select_emitters(emitters, ei), t)

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
            narrow &= ~self.hopsets.bursting(emitters, t, step_mhz)
            hops = select_emitters(emitters, narrow)
        else:  # every track missed; no hop to add
            ei = np.zeros(0, dtype=np.intp)
            self.hopsets.bursting(emitters, t, step_mhz)
            hops = emitters
        comb = self.hopsets.observe(hops, t, cells=cells, step_mhz=step_mhz, pfa=pfa)

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
        absorbed = np.zeros(tr.shape[0], dtype=bool) if comb_rows.size else None
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

        # Hit / miss bookkeeping for the existing tracks (in place: tr is this step's copy).
        history = tr["hit_history"]
        history <<= np.uint64(1)
        history |= hit
        tr["sweeps"] += np.uint32(1)
        misses = tr["misses"]
        np.minimum(misses, 0xFFFE, out=misses)  # counts on up to 0xFFFF
        misses += np.uint16(1)
        misses[hit] = 0
        tr["t_mono"] = t

        if emitters.shape[0] and left.any():
            new_rows.append(self._new_tracks(select_emitters(emitters, left), t))
        if new_rows:
            tr = join_rows([tr, *new_rows])
            if absorbed is not None:
                absorbed = np.concatenate([absorbed, np.zeros(tr.shape[0] - absorbed.shape[0], dtype=bool)])
        return self._finish(tr, t, absorbed=absorbed)

    def expire(self, t_mono: float) -> BandStep:
        """Apply the time rules alone (no sweep of this band arrived)."""
        if self.tracks.shape[0] == 0:
            return BandStep(tracks=self.tracks, ended=NO_ROWS)
        t = float(t_mono)
        if self._quiet(t):  # what the time rules below would give back: the same tracks, none ended
            return BandStep(tracks=self.tracks, ended=NO_ROWS)
        return self._finish(copy_rows(self.tracks), t, sweep=False)

    def _quiet(self, t: float) -> bool:
        """True when :meth:`_finish` of the live tracks at ``t`` without a sweep would change
        no row: no status flips, nothing is dropped or ended, and classify gives each row the
        class it has (classify reads a row's previous class only through its hysteresis
        group, continuous or Wi-Fi-like or neither: when the latest classify left every
        row in the group it found it in, the same inputs give the same class again). Duty
        depends on the sweep counts alone, which only a sweep changes. Plain Python over
        the band's few rows; a NaN time is never quiet."""
        if self._kinds is None:
            return False
        before, after = self._kinds
        group = _HYSTERESIS_GROUP.get
        if any(group(a, 0) != group(b, 0) for a, b in zip(before.tolist(), after.tolist())):
            return False
        s = self.settings
        tr = self.tracks
        for status, misses, last in zip(tr["status"].tolist(), tr["misses"].tolist(), tr["last_seen_mono"].tolist()):
            since = t - last
            if not since <= s.end_after_s:
                return False
            if status == _TENTATIVE:
                if not misses <= s.tentative_max_misses:
                    return False
            elif status == _CONFIRMED:
                if not since <= s.coast_after_s:
                    return False
            elif status != _COASTING or not since > s.coast_after_s:
                return False
        return True

    def end_all(self, t_mono: float) -> BandStep:
        """End every live track."""
        ended = copy_rows(self.tracks)
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
        if not gated.any():
            return np.zeros(0, dtype=np.intp), np.zeros(0, dtype=np.intp)
        cost = np.where(gated, df**2 + dbw**2, np.inf)
        # [cost | diag(miss)]: always feasible; a miss (cost 2, the gate's corner) competes
        # with a poor hit.
        miss = np.full((nt, nt), np.inf)
        np.fill_diagonal(miss, 2.0 + 1e-9)
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


    def _comb_fields(self, row: np.ndarray, comb: HopSet) -> None:
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

    def _update_comb(self, tr: np.ndarray, r: int, comb: HopSet, t: float) -> None:
        row = tr[r : r + 1]
        self._comb_fields(row, comb)
        row["hits"] += np.uint32(1)
        row["last_seen_mono"] = t

    def _new_comb(self, comb: HopSet, t: float) -> np.ndarray:
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
            return BandStep(tracks=tr, ended=NO_ROWS)
        s = self.settings
        tr["duty"] = duty(tr["sweeps"], tr["hit_history"])

        tentative = tr["status"] == _TENTATIVE
        if sweep:  # (the confirmed are established below)
            tentative &= popcount(tr["hit_history"] & self._confirm_mask) < s.confirm_hits
        since = t - tr["last_seen_mono"]
        established = ~tentative
        tr["status"] = np.where(tentative, _TENTATIVE, np.where(since > s.coast_after_s, _COASTING, _CONFIRMED))
        drop = tentative & ((tr["misses"] > s.tentative_max_misses) | (since > s.end_after_s))
        end = established & (since > s.end_after_s)
        gone = drop | end
        if absorbed is not None:
            gone |= absorbed

        before = tr["kind"].copy()
        kind, conf = classify(tr, self.classifier, s.hop_min_channels)
        self._kinds = (before, kind)
        tr["kind"] = kind
        tr["confidence"] = conf
        tr["category"] = category_of(kind)

        if gone.any():
            ended = select_rows(tr, gone)  # a new array (boolean index)
            ended["status"] = Status.ENDED
            self.tracks = select_rows(tr, ~gone)
        else:
            ended = NO_ROWS
            self.tracks = tr
        if end.any():
            log.debug("band %d: ended RF tracks %s", self.band, tr["rf_track_id"][end].tolist())
        return BandStep(tracks=self.tracks, ended=ended)


_TENTATIVE, _CONFIRMED, _COASTING = int(Status.TENTATIVE), int(Status.CONFIRMED), int(Status.COASTING)
_HYSTERESIS_GROUP = {int(LinkKind.CARRIER): 1, int(LinkKind.OFDM_VIDEO): 1, int(LinkKind.ANALOG_VIDEO): 1,
                     int(LinkKind.WIFI_LIKE): 2}
"""The previous classes classify tells apart (rf.classify: was_continuous, was_wifi); others 0."""
