"""Seeded experiment: a TI frame cut at a random byte, followed by an intact frame.

A UART that drops bytes (a USB hiccup, an overrun) cuts a frame short and the next frame
follows at once. Each trial feeds intact frame 1, frame 2 cut at a uniform random byte,
intact frame 3, intact frame 4 into a fresh parser and notes whether the cut frame came
out (and with its own points or not) and whether its neighbours were lost. Frames are
built here from TI's SDK 3.x layout (TLV 1, optionally TLV 7, 0x0F padding). Shared by
tests/test_ti_truncation.py (bounds) and the benchmarks; takes the parser class so the
same trials can run against another version of the parser.
"""

from __future__ import annotations

import inspect
import struct
from dataclasses import dataclass

import numpy as np

SYNC = bytes([2, 1, 4, 3, 6, 5, 8, 7])
V3 = 0x03050004


def sdk3_frame(frame_number: int, rows: np.ndarray, side: bool, pad: int = 0x0F) -> bytes:
    """An SDK 3.x frame with TLV 1 (and TLV 7 when ``side``), built from the layout."""
    n = len(rows)
    tlvs = [struct.pack("<II", 1, 16 * n) + rows.astype("<f4").tobytes()]
    if side:
        tlvs.append(struct.pack("<II", 7, 4 * n) + np.arange(2 * n, dtype="<i2").tobytes())
    body = b"".join(tlvs)
    total = -(-(40 + len(body)) // 32) * 32
    header = SYNC + struct.pack("<8I", V3, total, 0xA6843, frame_number, 0, n, len(tlvs), 0)
    return header + body + bytes([pad]) * (total - 40 - len(body))


@dataclass
class TruncationResult:
    trials: int
    cut_emitted: int  # the cut frame came out as a frame
    cut_emitted_wrong_points: int  # ... with points that are not its own
    next_lost: int  # the intact frame after the cut one did not come out
    neighbours_lost: int  # the intact frames before/after the pair did not come out


def run(parser_cls, trials: int = 10_000, seed: int = 20261203, side: bool = True) -> TruncationResult:
    """``trials`` streams: intact frame, frame A cut at a uniform random byte (1 .. len-1),
    intact frame B, intact frame; each fed whole into a fresh parser."""
    rng = np.random.default_rng(seed)
    quiet = "quiet" in inspect.signature(parser_cls.feed).parameters  # older parsers had no quiet line
    emitted = wrong = next_lost = neighbours = 0
    for trial in range(trials):
        n_a, n_b = (int(v) for v in rng.integers(1, 12, 2))
        rows_a = rng.uniform(-50, 50, (n_a, 4)).astype(np.float32)
        rows_b = rng.uniform(-50, 50, (n_b, 4)).astype(np.float32)
        a = sdk3_frame(2, rows_a, side)
        b = sdk3_frame(3, rows_b, side)
        cut = int(rng.integers(1, len(a)))
        stream = sdk3_frame(1, rows_b[:1], side) + a[:cut] + b + sdk3_frame(4, rows_a[:1], side)
        parser = parser_cls()
        buf = bytearray(stream)
        consumed, frames = parser.feed(buf, quiet=True) if quiet else parser.feed(buf)
        got = {f.frame_number: f for f in frames}
        if 2 in got:
            emitted += 1
            pts = got[2].points
            mine = np.stack([pts["x_m"], pts["y_m"], pts["z_m"], pts["doppler_mps"]], axis=1) if len(pts) else None
            if mine is None or mine.shape != rows_a.shape or not np.array_equal(mine, rows_a):
                wrong += 1
        if 3 not in got:
            next_lost += 1
        if 1 not in got or 4 not in got:
            neighbours += 1
    return TruncationResult(trials, emitted, wrong, next_lost, neighbours)
