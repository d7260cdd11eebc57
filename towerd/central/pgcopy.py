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
_FLOAT_WORDS = [TRACK_RECORD_DTYPE.fields[n][1] // 4 for n in _FLOAT_FIELDS]
_PATTERN_BITS = 1 << np.arange(len(_FLOAT_FIELDS), dtype=np.int64)
"""A row's NULL floats as one number: bit i set when float column i is NULL."""
assert all(TRACK_RECORD_DTYPE.fields[n][1] % 4 == 0 for n in _FLOAT_FIELDS)


class _Layout:
    """One row layout (staging or direct, one tower id length): ``dtype`` (the field
    count, then (length, big-endian value) per column; packed), ``template`` (a row with
    the count and lengths filled in, as bytes), ``head`` (the dtype of the head columns'
    span, from the first length to the last head value), and the byte gather that places
    an ICD record's fields: ``image[:, dst] = record_bytes[:, src]`` writes every field
    big-endian (its bytes reversed) into the low bytes of its column (a widened unsigned
    field's high bytes are the template's zeros)."""

    def __init__(self, direct: bool, tower_id_len: int) -> None:
        names = _DIRECT_HEAD if direct else _STAGE_HEAD
        cols = [(n, f"S{tower_id_len}" if n == "tower_id" else _HEAD[n]) for n in names]
        cols += [(n, _FIELD_TYPES[n][1]) for n in TRACK_FIELDS]
        fields = [("nfields", ">i2")]
        for name, fmt in cols:
            fields += [(f"{name}__len", ">i4"), (name, fmt)]
        dt = self.dtype = np.dtype(fields)
        row = np.zeros(1, dtype=dt)
        row["nfields"] = len(cols)
        for name, _ in cols:
            row[f"{name}__len"] = dt.fields[name][0].itemsize
        self.template = row.view(np.uint8).reshape(dt.itemsize)
        self.head_start = dt.fields[f"{names[0]}__len"][1]
        self.head_end = dt.fields[TRACK_FIELDS[0] + "__len"][1]
        self.head = np.dtype({"names": [f for f in dt.names if dt.fields[f][1] >= self.head_start
                                        and dt.fields[f][1] < self.head_end],
                              "formats": [dt.fields[f][0] for f in dt.names if self.head_start <= dt.fields[f][1]
                                          < self.head_end],
                              "offsets": [dt.fields[f][1] - self.head_start for f in dt.names
                                          if self.head_start <= dt.fields[f][1] < self.head_end],
                              "itemsize": self.head_end - self.head_start})
        self.head_template = row.view(np.uint8)[self.head_start:self.head_end].copy().view(self.head)
        src, dst = [], []
        for name in TRACK_FIELDS:
            size, at = TRACK_RECORD_DTYPE.fields[name][0].itemsize, TRACK_RECORD_DTYPE.fields[name][1]
            end = dt.fields[name][1] + dt.fields[name][0].itemsize
            src += range(at + size - 1, at - 1, -1)  # most significant byte first
            dst += range(end - size, end)
        self.src, self.dst = np.array(src), np.array(dst)
        self.floats_at = dt.fields[f"{_FLOAT_FIELDS[0]}__len"][1]
        assert TRACK_FIELDS[-len(_FLOAT_FIELDS):] == _FLOAT_FIELDS and dt.itemsize - self.floats_at == 8 * len(
            _FLOAT_FIELDS), "the float columns must end the row"
        self._kept: dict[int, np.ndarray] = {}

    def kept(self, pattern: int) -> np.ndarray:
        """The byte offsets of a row kept when the float columns of ``pattern`` (bit i:
        float column i) are NULL: everything but those columns' 4 value bytes."""
        cols = self._kept.get(pattern)
        if cols is None:
            drop = [self.floats_at + 8 * i + 4 + b for i in range(len(_FLOAT_FIELDS)) if pattern >> i & 1
                    for b in range(4)]
            cols = self._kept[pattern] = np.setdiff1d(np.arange(self.dtype.itemsize), drop)
        return cols


_LAYOUTS: dict[tuple[bool, int], _Layout] = {}


def _layout(direct: bool, tower_id_len: int) -> _Layout:
    layout = _LAYOUTS.get((direct, tower_id_len))
    if layout is None:
        layout = _LAYOUTS[(direct, tower_id_len)] = _Layout(direct, tower_id_len)
    return layout


def _image(group: Sequence[tuple[int, Pending]], layout: _Layout, received_us: int, per_message: str,
           values: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
    """(COPY rows as a uint8 array of shape (records, row bytes), the ICD records as
    uint8 (records, 80)) of one tower id length's messages; ``per_message`` names the
    head column that gets ``values`` (one per message)."""
    counts = [item.records.size for _, item in group]  # type: ignore[union-attr]
    raw = np.frombuffer(b"".join([item.records.tobytes() for _, item in group]),  # type: ignore[union-attr]
                        dtype=np.uint8).reshape(-1, RECORD_SIZE)
    heads = np.repeat(layout.head_template, len(group))
    heads[per_message] = values
    heads["tower_id"] = [item.tower_id.encode("ascii") for _, item in group]
    heads["stream_id"] = [_signed(item.stream_id) for _, item in group]
    heads["received_us"] = received_us
    heads["replay"] = [item.replay for _, item in group]
    image = np.empty((raw.shape[0], layout.dtype.itemsize), dtype=np.uint8)
    image[:, :layout.head_start] = layout.template[:layout.head_start]
    image[:, layout.head_start:layout.head_end] = np.repeat(
        heads.view(np.uint8).reshape(len(group), -1), counts, axis=0)
    image[:, layout.head_end:] = layout.template[layout.head_end:]
    image[:, layout.dst] = raw[:, layout.src]
    return image, raw


def _by_length(items: Sequence[tuple[int, Pending]]) -> dict[int, list[int]]:
    """Indexes into ``items`` grouped by tower id length (one vectorised build each)."""
    lengths = {len(item.tower_id) for _, item in items}
    if len(lengths) == 1:  # the usual case: every tower id of one length
        return {lengths.pop(): list(range(len(items)))}
    groups: dict[int, list[int]] = {}
    for i, (_, item) in enumerate(items):
        groups.setdefault(len(item.tower_id), []).append(i)
    return groups


def stage_image(items: Sequence[tuple[int, Pending]], received_us: int) -> bytes:
    """Binary COPY rows (no signature or trailer) for ``towerd_stage`` of the TRACKS
    messages ``(k, message)``."""
    chunks = []
    for length, index in _by_length(items).items():
        group = [items[i] for i in index] if len(index) < len(items) else items
        image, _ = _image(group, _layout(False, length), received_us, "k", [k for k, _ in group])
        chunks.append(image.tobytes())
    return b"".join(chunks)


def direct_image(items: Sequence[tuple[int, Pending]], rx: Sequence[int], received_us: int) -> bytes:
    """Binary COPY rows (no signature or trailer) for ``tracks`` of the TRACKS messages
    ``(k, message)``, message i numbered ``rx[i]``; NaN floats are NULL."""
    chunks = []
    for length, index in _by_length(items).items():
        whole = len(index) == len(items)
        group = items if whole else [items[i] for i in index]
        layout = _layout(True, length)
        image, raw = _image(group, layout, received_us, "rx_msg", rx if whole else [rx[i] for i in index])
        nan = np.isnan(raw.view("<f4")[:, _FLOAT_WORDS])
        if not nan.any():
            chunks.append(image.tobytes())
            continue
        # The float columns are the row's last: (length, value) pairs of 8 bytes each.
        # A NULL keeps its length, set to -1, and loses its value: per pattern of NULLs
        # (a few per batch: the fields a kind of track leaves unknown) one gather of the
        # bytes kept, rather than a boolean mask over the whole image.
        lengths = image[:, layout.floats_at:].view(">i4")[:, ::2]
        lengths[...] = np.where(nan, -1, 4)  # length -1: NULL
        pattern = nan @ _PATTERN_BITS
        if (pattern == pattern[0]).all():
            chunks.append(image[:, layout.kept(int(pattern[0]))].tobytes())
            continue
        for value in np.unique(pattern).tolist():
            rows = np.flatnonzero(pattern == value)
            chunks.append(image[rows[:, None], layout.kept(value)].tobytes())
    return b"".join(chunks)
