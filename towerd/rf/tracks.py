"""RF track rows: their dtype, id counter and hit-history bit arithmetic.

One row per RF track (:data:`RF_TRACK_DTYPE`), written by the band trackers
(:mod:`towerd.rf.tracker`) and read by classification, fusion and reports. ``hit_history``
keeps one bit per sweep of the track's band (bit 0 the latest).
"""

from __future__ import annotations

import numpy as np

HISTORY_BITS = 64

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


def _template_row() -> np.ndarray:
    """One RF_TRACK_DTYPE row with NaN in every optional float field, as raw bytes."""
    t = np.zeros(1, dtype=RF_TRACK_DTYPE)
    for name in ("centre_excess_db", "fill_ratio", "hole_excess", "channel_spacing_mhz", "snr_db", "grid_offset_mhz",
                 "grid_resultant"):
        t[name] = np.nan
    t["channels"] = 1
    row = t.view(_ROW_BYTES)
    row.flags.writeable = False
    return row


_ROW_BYTES = np.dtype((np.void, RF_TRACK_DTYPE.itemsize))
"""An RF track row as bytes. Copies and selections of rows go through this view: NumPy
copies a structured dtype field by field, about 50 µs a call for RF_TRACK_DTYPE's 33
fields even for no rows, where the bytes take a few µs."""
_TEMPLATE = _template_row()


def empty_rf_tracks(n: int = 0) -> np.ndarray:
    """RF_TRACK_DTYPE rows with NaN in every optional float field."""
    return _TEMPLATE.repeat(n).view(RF_TRACK_DTYPE)


def copy_rows(rows: np.ndarray) -> np.ndarray:
    """``rows.copy()`` for RF track rows, as bytes (see :data:`_ROW_BYTES`)."""
    return rows.view(_ROW_BYTES).copy().view(RF_TRACK_DTYPE)


def select_rows(rows: np.ndarray, index: np.ndarray) -> np.ndarray:
    """``rows[index]`` (a new array) for RF track rows, as bytes (see :data:`_ROW_BYTES`)."""
    return rows.view(_ROW_BYTES)[index].view(RF_TRACK_DTYPE)


NO_ROWS = empty_rf_tracks()
"""No RF track rows (read-only, shared)."""
NO_ROWS.flags.writeable = False


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


_HAS_BITWISE_COUNT = hasattr(np, "bitwise_count")  # NumPy >= 2.0


def popcount(x: np.ndarray) -> np.ndarray:
    """Set bits per element of a u8 array."""
    x = np.asarray(x, dtype=np.uint64)
    if _HAS_BITWISE_COUNT:
        return np.bitwise_count(x).astype(np.int64)
    return np.unpackbits(x.reshape(-1, 1).view(np.uint8), axis=1).sum(axis=1).reshape(x.shape).astype(np.int64)


_WINDOW_MASKS = np.array([(1 << n) - 1 for n in range(HISTORY_BITS)] + [(1 << HISTORY_BITS) - 1], dtype=np.uint64)
_WINDOW_MASKS.flags.writeable = False


def duty(sweeps: np.ndarray, hit_history: np.ndarray) -> np.ndarray:
    """Hits over the last min(64, sweeps) sweeps / that many sweeps (at least 1), per row."""
    n_hist = np.minimum(sweeps, HISTORY_BITS)
    return popcount(hit_history & _WINDOW_MASKS[n_hist]) / np.maximum(n_hist, 1)


def window_mask(n: np.ndarray | int) -> np.ndarray:
    """u8 mask of the lowest ``n`` bits (n in 0..64)."""
    n = np.asarray(n, dtype=np.int64)
    full = n >= HISTORY_BITS
    m = (np.uint64(1) << np.minimum(n, HISTORY_BITS - 1).astype(np.uint64)) - np.uint64(1)
    return np.where(full, np.uint64(0xFFFFFFFFFFFFFFFF), m).astype(np.uint64)

