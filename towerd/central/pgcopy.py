"""The binary ``COPY`` images of TRACKS records for the PostgreSQL store, built with NumPy
straight from the ICD records (no per-row Python).

Two images:

- :func:`stage_image`: rows of the per-session staging table ``towerd_stage`` (``k``, the
  message's index in its batch, then the head columns and the ICD fields; NaN floats kept,
  the move statement turns them into NULL). For records that may already be held.
- :func:`direct_image`: rows of ``tracks`` itself (its columns in ``TRACK_COLUMNS``
  order, ``rx_msg`` given per message, NaN floats written as NULL), for records the
  central knows to be new (:mod:`towerd.central.pgwrite`): one ``COPY`` into the table,
  no staging table, no ``INSERT ... ON CONFLICT``.

Binary COPY row layout (PostgreSQL "COPY", binary format): a 16-bit field count, then per
column a 32-bit length and the value in network byte order; a NULL is the length -1 with
no value. Each layout is a packed NumPy structured dtype of that, per tower id length (the
``text`` column's bytes). NULLs make rows of varying length: the image is built with a
4-byte value for every float and the bytes of the NaN ones are then dropped with one
boolean mask over the whole image (their length set to -1).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from towerd.central.pgschema import _FIELD_TYPES, _FLOAT_FIELDS, TRACK_FIELDS, _signed
from towerd.central.storetypes import Pending
from towerd.icd import RECORD_SIZE, TRACK_RECORD_DTYPE

COPY_SIGNATURE = b"PGCOPY\n\xff\r\n\x00" + b"\x00\x00\x00\x00" + b"\x00\x00\x00\x00"
COPY_TRAILER = b"\xff\xff"

_HEAD = {"k": ">i4", "stream_id": ">i8", "received_us": ">i8", "replay": "u1", "rx_msg": ">i8"}
_STAGE_HEAD = ("k", "tower_id", "stream_id", "received_us", "replay")
_DIRECT_HEAD = ("tower_id", "stream_id", "received_us", "replay", "rx_msg")
_LAYOUTS: dict[tuple[bool, int], tuple[np.dtype, np.ndarray]] = {}
_FLOAT_WORDS = [TRACK_RECORD_DTYPE.fields[n][1] // 4 for n in _FLOAT_FIELDS]
assert all(TRACK_RECORD_DTYPE.fields[n][1] % 4 == 0 for n in _FLOAT_FIELDS)


def _layout(direct: bool, tower_id_len: int) -> tuple[np.dtype, np.ndarray]:
    """The row dtype (field count, then (length, big-endian value) per column; packed)
    and a row with the count and lengths filled in."""
    layout = _LAYOUTS.get((direct, tower_id_len))
    if layout is None:
        head = _DIRECT_HEAD if direct else _STAGE_HEAD
        cols = [(n, f"S{tower_id_len}" if n == "tower_id" else _HEAD[n]) for n in head]
        cols += [(n, _FIELD_TYPES[n][1]) for n in TRACK_FIELDS]
        fields = [("nfields", ">i2")]
        for name, fmt in cols:
            fields += [(f"{name}__len", ">i4"), (name, fmt)]
        dt = np.dtype(fields)
        template = np.zeros(1, dtype=dt)
        template["nfields"] = len(cols)
        for name, _ in cols:
            template[f"{name}__len"] = dt.fields[name][0].itemsize
        layout = _LAYOUTS[(direct, tower_id_len)] = (dt, template)
    return layout


def _rows(group: Sequence[tuple[int, Pending]], dt: np.dtype, template: np.ndarray, received_us: int,
          per_message: str, values: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
    """(COPY rows, the ICD records) of one tower id length's messages; ``per_message``
    names the column that gets ``values`` (one per message)."""
    counts = [item.records.size for _, item in group]  # type: ignore[union-attr]
    # Joining the bytes: np.concatenate of this offset-laid dtype costs ~0.1 ms per array.
    recs = np.frombuffer(b"".join(item.records.tobytes() for _, item in group),  # type: ignore[union-attr]
                         dtype=TRACK_RECORD_DTYPE)
    length = dt.fields["tower_id"][0].itemsize
    rows = np.empty(recs.size, dtype=dt)
    rows[...] = template
    rows[per_message] = np.repeat(np.asarray(values, dtype=np.int64), counts)
    rows["tower_id"] = np.repeat(np.array([item.tower_id.encode("ascii") for _, item in group],
                                          dtype=f"S{length}"), counts)
    rows["stream_id"] = np.repeat(np.array([_signed(item.stream_id) for _, item in group], dtype=np.int64), counts)
    rows["received_us"] = received_us
    rows["replay"] = np.repeat(np.array([item.replay for _, item in group], dtype=np.uint8), counts)
    for name in TRACK_FIELDS:
        rows[name] = recs[name]
    return rows, recs


def _by_length(items: Sequence[tuple[int, Pending]]) -> dict[int, list[int]]:
    """Indexes into ``items`` grouped by tower id length (one vectorised build each)."""
    groups: dict[int, list[int]] = {}
    for i, (_, item) in enumerate(items):
        groups.setdefault(len(item.tower_id), []).append(i)
    return groups


def stage_image(items: Sequence[tuple[int, Pending]], received_us: int) -> bytes:
    """Binary COPY rows (no signature or trailer) for ``towerd_stage`` of the TRACKS
    messages ``(k, message)``."""
    chunks = []
    for length, index in _by_length(items).items():
        group = [items[i] for i in index]
        dt, template = _layout(False, length)
        rows, _ = _rows(group, dt, template, received_us, "k", [k for k, _ in group])
        chunks.append(rows.tobytes())
    return b"".join(chunks)


def direct_image(items: Sequence[tuple[int, Pending]], rx: Sequence[int], received_us: int) -> bytes:
    """Binary COPY rows (no signature or trailer) for ``tracks`` of the TRACKS messages
    ``(k, message)``, message i numbered ``rx[i]``; NaN floats are NULL."""
    chunks = []
    for length, index in _by_length(items).items():
        group = [items[i] for i in index]
        dt, template = _layout(True, length)
        rows, recs = _rows(group, dt, template, received_us, "rx_msg", [rx[i] for i in index])
        nan = np.isnan(recs.view("<f4").reshape(recs.size, RECORD_SIZE // 4)[:, _FLOAT_WORDS])
        if not nan.any():
            chunks.append(rows.tobytes())
            continue
        image = rows.view(np.uint8).reshape(rows.size, dt.itemsize)
        lengths = np.array([dt.fields[f"{n}__len"][1] for n in _FLOAT_FIELDS])
        values = np.array([dt.fields[n][1] for n in _FLOAT_FIELDS])
        four = np.arange(4)
        nan4 = np.repeat(nan, 4, axis=1)
        image[:, (lengths[:, None] + four).ravel()] |= np.where(nan4, 0xFF, 0).astype(np.uint8)  # length -1
        keep = np.ones(image.shape, dtype=bool)
        keep[:, (values[:, None] + four).ravel()] = ~nan4
        chunks.append(image[keep].tobytes())
    return b"".join(chunks)
