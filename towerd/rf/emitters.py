"""Contiguous detected cells merged into emitters.

An emitter is a run of detected cells (runs separated by at most ``merge_gap_cells``
undetected cells are one emitter: a flat OFDM plateau in single-look noise dips below
threshold now and then). Its occupied bandwidth is the extent of the run,
``(last − first + 1) · step``; its centre the middle of that extent (for a flat plateau
this is exact to a cell, where a power centroid would wander with the noise).

``power_centre_mhz`` is that power centroid all the same (power over the floor, over the
extent and one cell either side, so that a neighbour below threshold still counts): for
a narrow emitter that lights one to three cells (a hop) the ratio between neighbouring
cells places its centre within a cell, which over many hops shows the hop grid (see
:mod:`towerd.rf.tracker`).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
from scipy import special

from towerd.schema import spec

log = logging.getLogger(__name__)

EMITTER_DTYPE = np.dtype(
    [
        ("centre_mhz", "<f8"),  # middle of the occupied extent
        ("bandwidth_mhz", "<f8"),  # occupied bandwidth: cells in the extent times the step
        ("low_mhz", "<f8"),  # lower edge of the extent (first cell's frequency - step/2)
        ("high_mhz", "<f8"),  # upper edge (last cell's frequency + step/2)
        ("peak_dbm", "<f8"),  # highest cell, dBm per resolution bandwidth
        ("peak_mhz", "<f8"),  # frequency of that cell
        ("mean_dbm", "<f8"),  # mean linear power over the extent, in dBm per resolution bandwidth
        ("snr_db", "<f8"),  # mean power over the mean noise floor across the extent, dB
        ("centre_excess_db", "<f8"),  # mean of the middle third over the outer thirds, dB; NaN under 3 cells
        ("fill_ratio", "<f8"),  # cells the CFAR itself detected over those a steady emitter would give; NaN unknown
        ("cells", "<i4"),  # cells in the extent
        ("first_cell", "<i4"),  # index of the first cell in the band segment
        ("power_centre_mhz", "<f8"),  # centroid of the power over the floor, the extent and one cell each side
        ("side_db", "<f8"),  # the stronger of the two cells just outside the extent, power over the floor, dB
        ("hole_excess", "<f8"),  # fraction of inner cells near the floor less a steady emitter's; NaN under 5 cells
    ]
)
"""One row per emitter found in one sweep of one band."""

_EMITTER_BYTES = np.dtype((np.void, EMITTER_DTYPE.itemsize))
NO_EMITTERS = np.zeros(0, dtype=EMITTER_DTYPE)
"""No emitters (read-only, shared: a quiet sweep's answer)."""
NO_EMITTERS.flags.writeable = False


def select_emitters(em: np.ndarray, index: np.ndarray) -> np.ndarray:
    """``em[index]`` (a new array) for EMITTER_DTYPE rows, as bytes: NumPy copies a
    structured dtype field by field, tens of µs a call whatever the rows."""
    return em.view(_EMITTER_BYTES)[index].view(EMITTER_DTYPE)


@dataclass(frozen=True)
class EmitterSettings:
    """How detected cells become emitters."""

    merge_gap_cells: int = spec(
        1, doc="runs of detected cells this close (undetected cells between) are one emitter", lo=0, hi=16
    )
    min_cells: int = spec(1, doc="emitters narrower than this many cells are dropped", lo=1, hi=64)
    bridge_pfa: float = spec(
        1e-3,
        doc="false-alarm probability of the occupancy test whose runs bridge the dips of a wide "
        "emitter (a run needs two CFAR detections to bridge anything)",
        lo=1e-12, hi=1e-1,
    )
    hole_db: float = spec(
        3.0, doc="an emitter's inner cell this little over the noise floor is a hole (802.11 off the air while "
        "the analyser swept it); noise alone stays under 3 dB in about 91 % of cells at 2 looks",
        unit="dB", lo=0.0, hi=20.0,
    )


def bridge_occupied(detected: np.ndarray, occupied: np.ndarray) -> np.ndarray:
    """``detected`` with the gaps filled that lie between two detected cells of one run
    of ``occupied`` cells (both (n,) bool).

    A wide emitter in single-look noise has cells that dip below the CFAR threshold
    (at 15 dB SNR about one in four): the occupancy test, which averages a few cells
    against the noise floor, sees the emitter as one run, and the cells between its
    first and last detected cell belong to it. Cells outside the detected extent are not
    added, so a strong narrow carrier is not widened by the occupancy test's smoothing.
    """
    det = np.asarray(detected, dtype=bool)
    occ = np.asarray(occupied, dtype=bool)
    n = det.shape[0]
    if n == 0 or not (det & occ).any():
        return det.copy()
    run_start = occ & ~np.concatenate(([False], occ[:-1]))
    run = np.cumsum(run_start) - 1  # index of the occupied run of each occupied cell
    n_runs = int(np.count_nonzero(run_start))
    idx = np.arange(n)
    inside = occ & det
    first = np.full(n_runs, n)
    last = np.full(n_runs, -1)
    np.minimum.at(first, run[inside], idx[inside])
    np.maximum.at(last, run[inside], idx[inside])
    cells = idx[occ]
    r = run[occ]
    out = det.copy()
    out[cells[(cells >= first[r]) & (cells <= last[r])]] = True
    return out


def merge_cells(
    detected: np.ndarray,
    freq_mhz: np.ndarray,
    power_mw: np.ndarray,
    floor_mw: np.ndarray,
    settings: EmitterSettings = EmitterSettings(),
    *,
    cfar_detected: np.ndarray | None = None,
    threshold_mw: np.ndarray | None = None,
    looks: int = 1,
) -> np.ndarray:
    """Emitters (EMITTER_DTYPE) from the detection mask of one band segment.

    ``detected`` (n,) bool; ``freq_mhz`` (n,) evenly spaced centre frequencies;
    ``power_mw`` (n,) linear power (mW); ``floor_mw`` (n,) the noise floor (mW).
    With ``cfar_detected`` (n,) bool, the CFAR's own detections before bridging, and
    ``threshold_mw`` (n,) the levels they were compared with, ``fill_ratio`` is the
    fraction of each extent's cells the CFAR detected over the fraction a steady
    noise-like emitter of the extent's mean power would give (a cell of mean power m
    in K looks passes threshold T with probability Q(K, K T / m), the regularised upper
    incomplete gamma function): about 1 for a video plateau at any SNR, about the
    duty for bursty traffic strong enough to be seen (802.11 on a busy channel).

    ``hole_excess``: over an extent's inner cells (its first and last cell left out: a
    channel edge covers part of a cell), the fraction under ``hole_db`` over the floor
    less the fraction a steady noise-like emitter of their mean power would leave there
    (signal and noise add before the detector: a cell of mean m in K looks is under h
    with probability P(K, K h / m), the regularised lower incomplete gamma function).
    About 0 or below for a video plateau at any SNR (below: an extent ends at detected
    cells, so its dips are fewer than the model's); for 802.11 busy a fraction q of the
    time, about (1 − q) · 0.9 more (its off cells are noise), so 0.1-0.15 at 80 % busy
    and 15-20 dB, where the width and the fill of such a channel are a video link's.
    NaN for extents under 5 cells.
    """
    det = np.asarray(detected, dtype=bool)
    n = det.shape[0]
    if n == 0 or not det.any():
        return NO_EMITTERS
    freq = np.asarray(freq_mhz, dtype=float)
    p = np.asarray(power_mw, dtype=float)
    fl = np.asarray(floor_mw, dtype=float)
    step = float(freq[1] - freq[0]) if n > 1 else 0.0

    edges = np.diff(np.concatenate(([0], det.view(np.int8), [0])))
    starts = np.flatnonzero(edges == 1)
    ends = np.flatnonzero(edges == -1)  # exclusive
    # Merge runs whose gap (undetected cells between) is at most merge_gap_cells.
    new_group = np.concatenate(([True], starts[1:] - ends[:-1] > settings.merge_gap_cells))
    group_start = starts[new_group]
    group_end = ends[np.concatenate((new_group[1:], [True]))]
    cells = group_end - group_start
    keep = cells >= settings.min_cells
    group_start, group_end, cells = group_start[keep], group_end[keep], cells[keep]
    m = group_start.shape[0]
    out = np.zeros(m, dtype=EMITTER_DTYPE)
    if m == 0:
        return out

    # Prefix sums ([0] = 0) of the power, the floor, the power over the floor (clipped at
    # 0), that times the frequency and the CFAR's own detections: one cumsum for the five
    # (row by row, the same floats as five), the extents' sums from two look-ups.
    csum = np.zeros((5, n + 1))
    csum[0, 1:] = p
    csum[1, 1:] = fl
    np.clip(p - fl, 0.0, None, out=csum[2, 1:])
    np.multiply(csum[2, 1:], freq, out=csum[3, 1:])
    if cfar_detected is not None:
        csum[4, 1:] = np.asarray(cfar_detected, dtype=bool)
    np.cumsum(csum, axis=1, out=csum)
    sum_p, sum_floor, _, _, sum_raw = csum[:, group_end] - csum[:, group_start]
    # every cell of every extent, segment by segment
    first_of_seg = np.concatenate(([0], np.cumsum(cells)[:-1]))
    seg_of_cell = np.repeat(np.arange(m), cells)
    cell_idx = np.arange(int(cells.sum())) - first_of_seg[seg_of_cell] + group_start[seg_of_cell]
    # peak per segment: sort cells by (segment, -power), take the first of each segment
    order = np.lexsort((-p[cell_idx], seg_of_cell))
    peak_cell = cell_idx[order[first_of_seg]]

    f_first = freq[group_start]
    f_last = freq[group_end - 1]
    out["centre_mhz"] = 0.5 * (f_first + f_last)
    out["bandwidth_mhz"] = cells * abs(step)
    out["low_mhz"] = np.minimum(f_first, f_last) - 0.5 * abs(step)
    out["high_mhz"] = np.maximum(f_first, f_last) + 0.5 * abs(step)
    out["peak_dbm"] = mw_to_dbm(p[peak_cell])
    out["peak_mhz"] = freq[peak_cell]
    out["mean_dbm"] = mw_to_dbm(sum_p / cells)
    lo, hi = np.maximum(group_start - 1, 0), np.minimum(group_end + 1, n)
    w, wf = csum[2:4, hi] - csum[2:4, lo]
    with np.errstate(divide="ignore", invalid="ignore"):
        out["power_centre_mhz"] = np.where(w > 0, wf / w, out["centre_mhz"])
        ratio = p / fl
        left = np.where(group_start > 0, ratio[lo], 0.0)
        right = np.where(group_end < n, ratio[np.minimum(group_end, n - 1)], 0.0)
        out["side_db"] = 10.0 * np.log10(np.maximum(np.maximum(left, right), 1e-12))
    with np.errstate(divide="ignore", invalid="ignore"):
        out["snr_db"] = 10.0 * np.log10(sum_p / sum_floor)
    out["centre_excess_db"] = _centre_excess_db(csum[0], group_start, cells)
    out["fill_ratio"] = np.nan
    if cfar_detected is not None and threshold_mw is not None:
        fill = sum_raw / cells
        # expected: each cell's chance of passing its threshold at the extent's mean power
        mean_p = (sum_p / cells)[seg_of_cell]
        k = float(max(int(looks), 1))
        pd = special.gammaincc(k, k * np.asarray(threshold_mw, dtype=float)[cell_idx] / mean_p)
        expected = np.bincount(seg_of_cell, weights=pd, minlength=m) / cells
        with np.errstate(divide="ignore", invalid="ignore"):
            out["fill_ratio"] = np.where(expected > 0, fill / expected, np.nan)
    out["hole_excess"] = _hole_excess(p, fl, group_start, cells, settings.hole_db, looks)
    out["cells"] = cells
    out["first_cell"] = group_start
    return out


def _hole_excess(p: np.ndarray, fl: np.ndarray, start: np.ndarray, cells: np.ndarray, hole_db: float,
                 looks: int) -> np.ndarray:
    """Per extent: fraction of its inner cells under ``hole_db`` over the floor, less
    a steady emitter's expected fraction (see :func:`merge_cells`). NaN under 5 cells."""
    out = np.full(start.shape[0], np.nan)
    ok = cells >= 5
    if not np.any(ok):
        return out
    s, c = start[ok] + 1, cells[ok] - 2  # inner cells: [s, s + c)
    first = np.concatenate(([0], np.cumsum(c)[:-1]))
    seg = np.repeat(np.arange(c.shape[0]), c)
    idx = np.arange(int(c.sum())) - first[seg] + s[seg]
    h = 10.0 ** (hole_db / 10.0)
    hole = p[idx] < h * fl[idx]
    mean_p = (np.bincount(seg, weights=p[idx]) / c)[seg]
    k = float(max(int(looks), 1))
    expected = special.gammainc(k, k * h * fl[idx] / mean_p)
    out[ok] = np.bincount(seg, weights=hole.astype(float) - expected) / c
    return out


def _centre_excess_db(csum: np.ndarray, start: np.ndarray, cells: np.ndarray) -> np.ndarray:
    """Mean power of the middle third of each extent over that of its outer thirds, dB,
    from the prefix sums ``csum`` (n + 1,) of the power ([0] = 0).

    Flat (OFDM) plateaus give about 0 dB; a spectrum peaked at its carrier (analog FM
    video) several dB. NaN for extents under 3 cells."""
    out = np.full(start.shape[0], np.nan)
    ok = cells >= 3
    if not np.any(ok):
        return out
    s, c = start[ok], cells[ok]
    third = c // 3
    a, b = s + third, s + c - third  # middle: [a, b)
    mid = (csum[b] - csum[a]) / (b - a)
    outer = (csum[a] - csum[s] + csum[s + c] - csum[b]) / (2 * third)
    with np.errstate(divide="ignore", invalid="ignore"):
        out[ok] = 10.0 * np.log10(mid / outer)
    return out


def dbm_to_mw(dbm: np.ndarray | float) -> np.ndarray:
    """dBm -> mW."""
    return np.power(10.0, np.asarray(dbm, dtype=float) / 10.0)


def mw_to_dbm(mw: np.ndarray | float) -> np.ndarray:
    """mW -> dBm (-inf for 0)."""
    with np.errstate(divide="ignore"):
        return 10.0 * np.log10(np.asarray(mw, dtype=float))
