"""Track records as the outbox stores them: one batch stamped with its seqs into wire
bytes, and inserted by a few multi-row statements.

Why not NumPy field assignments and ``executemany``: on the store path of every message
(the daemon's and the load generator's towers) they cost about three times (stamping) and
a fifth to a quarter more (inserting) CPU than this, measured on batches of 1-64 records.
"""

from __future__ import annotations

import array
import sqlite3
import sys

import numpy as np

from towerd.icd import RECORD_SIZE, TRACK_RECORD_DTYPE

KIND_TRACK = "T"
_LITTLE_ENDIAN = sys.byteorder == "little"
_WORDS = RECORD_SIZE // 8
_INSERT_ROWS = 16
_INSERT_BIG = 64
_INSERT_TRACKS = {n: "INSERT INTO records (seq, kind, time_us, payload) VALUES "
                  + ", ".join([f"(?, '{KIND_TRACK}', ?, ?)"] * n) for n in (*range(1, _INSERT_ROWS + 1), _INSERT_BIG)}
"""The statements adding n track records: n <= 16, or 64 (17 distinct statements, all
in the connection's statement cache); a larger batch takes several."""


def stamped(records: np.ndarray, first: int) -> tuple[bytes, list[int]]:
    """The records' wire bytes (1-D TRACK_RECORD_DTYPE) with ``seq`` set to ``first,
    first + 1, ...``, and their ``time_us`` values. Written through a memoryview on
    little-endian hosts (the wire's byte order)."""
    n = records.size
    if not _LITTLE_ENDIAN:
        rec = np.array(records, dtype=TRACK_RECORD_DTYPE, copy=True)
        rec["seq"] = np.arange(first, first + n, dtype=np.uint64)
        return rec.tobytes(), rec["time_us"].tolist()
    buf = bytearray(records.tobytes())
    words = memoryview(buf).cast("Q")
    words[::_WORDS] = array.array("Q", range(first, first + n))  # seq: word 0 of each record
    times = words.cast("B").cast("q")[1::_WORDS].tolist()  # time_us: word 1
    words.release()
    return bytes(buf), times


def insert_tracks(conn: sqlite3.Connection, first: int, buf: bytes, times: list[int]) -> None:
    """Insert the records ``buf`` (from :func:`stamped`) as rows ``first ..``."""
    raw = memoryview(buf)  # rows are views of one buffer: no copy per row
    n = len(times)
    i = 0
    while i < n:
        k = n - i if n - i <= _INSERT_ROWS else _INSERT_BIG if n - i >= _INSERT_BIG else _INSERT_ROWS
        conn.execute(_INSERT_TRACKS[k], [v for j in range(i, i + k) for v in (
            first + j, times[j], raw[j * RECORD_SIZE:(j + 1) * RECORD_SIZE])])
        i += k
