"""The binary COPY image of records the central knows to be new (towerd.central.pgcopy),
read back with an independent parser of PostgreSQL's binary COPY rows: every column of
every record, NaN floats as NULL, whatever mix of unknown floats the batch holds."""

from __future__ import annotations

import struct

import numpy as np

from towerd.central.pgcopy import direct_image
from towerd.central.pgschema import _FIELD_TYPES, _signed
from towerd.central.storetypes import Pending
from towerd.icd import empty_track_records

_FORMAT = {">i2": ">h", ">i4": ">i", ">i8": ">q", ">f4": ">f"}


def _rows(image: bytes) -> list[tuple]:
    """The rows of a binary COPY body (no header or trailer); NULL is None."""
    out, at = [], 0
    while at < len(image):
        (n,) = struct.unpack_from(">h", image, at)
        at += 2
        row = []
        for _ in range(n):
            (size,) = struct.unpack_from(">i", image, at)
            at += 4
            if size < 0:
                row.append(None)
                continue
            row.append(image[at:at + size])
            at += size
        out.append(tuple(row))
    return out


def _expected(item: Pending, rx: int, received_us: int) -> set[tuple]:
    rows = set()
    for rec in item.records:
        row = [item.tower_id.encode(), struct.pack(">q", _signed(item.stream_id)), struct.pack(">q", received_us),
               bytes([item.replay]), struct.pack(">q", rx)]
        for name, (_, fmt) in _FIELD_TYPES.items():
            value = rec[name]
            if fmt == ">f4" and np.isnan(value):
                row.append(None)
            else:
                row.append(struct.pack(_FORMAT[fmt], float(value) if fmt == ">f4" else int(value)))
        rows.add(tuple(row))
    return rows


def _message(tower: str, stream_id: int, n: int, unknown: list[tuple[str, ...]]) -> Pending:
    rec = empty_track_records(n)
    rec["seq"] = np.arange(1, n + 1)
    rec["time_us"] = 1_700_000_000_000_000 + np.arange(n)
    rec["lat_e7"], rec["lon_e7"] = 294_000_000, -985_000_000
    for name, (_, fmt) in _FIELD_TYPES.items():
        if fmt == ">f4":
            rec[name] = np.arange(n) * 1.5 + 0.25
    for k, names in enumerate(unknown):
        for name in names:
            rec[name][k % n] = np.nan
    return Pending(tower, stream_id, False, records=rec)


def test_direct_image_rows_carry_every_column_and_nulls_for_unknown_floats():
    received_us = 1_700_000_000_500_000
    items = [
        (0, _message("tw-0001", 2**64 - 1, 4, [])),  # no unknown float
        (1, _message("tw-0002", 7, 4, [("rf_freq_mhz", "rf_bw_mhz", "rf_power_dbm")] * 4)),  # one pattern
        (2, _message("tw-0003", 8, 3, [("alt_m",), (), ("alt_m", "vel_up_mps", "rf_power_dbm")])),  # several
        (3, _message("tower-long-id", 9, 2, [("range_m",)])),  # another tower id length
    ]
    rx = [101, 102, 103, 104]
    image = direct_image(items, rx, received_us)
    got = _rows(image)
    want = set()
    for (_, item), number in zip(items, rx):
        want |= _expected(item, number, received_us)
    assert len(got) == 13 and set(got) == want


def test_direct_image_of_one_null_pattern_is_every_row_in_order():
    items = [(0, _message("tw-0001", 5, 3, [("rf_bw_mhz",)] * 3))]
    got = _rows(direct_image(items, [1], 10))
    assert [row[5] for row in got] == [struct.pack(">q", s) for s in (1, 2, 3)]  # seq, in order
    assert set(got) == _expected(items[0][1], 1, 10)
