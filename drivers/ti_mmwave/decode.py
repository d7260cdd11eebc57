"""TI mmWave data-UART frames: the points and frame objects of frames the parser accepted.

:class:`~towerd.drivers.ti_mmwave.protocol.TiFrameParser` validates the frames of one
``feed`` first and hands their records here, so that they are decoded together: all
their points go into one TI_POINT_DTYPE array (each frame's ``points`` is a view of its
rows), the SDK 3.x frames with side info, the common case, with one copy of their TLV 1
elements and one pass over their TLV 7 elements. Pure: no I/O, no state.

A record is a tuple (version, platform, frame_number, cpu_cycles, subframe, num_tlvs,
num_obj, total_packet_len, header_len, tlv types, point count, q_format, TLV 1 elements,
TLV 7 elements or None), the payloads as bytes copied out of the receive buffer; the
indices a driver reads are named below.
"""

from __future__ import annotations

from typing import Callable

import numpy as np

from towerd.drivers.ti_mmwave.frame import DETECTED_OBJ_DTYPE, TI_POINT_DTYPE, TiFrame

_F4, _I2, _TEN = np.dtype("<f4"), np.dtype("<i2"), np.float32(10.0)
_V16, _V8 = np.dtype("V16"), np.dtype("V8")
_ROW = np.dtype({"names": ["cartesian", "side"], "formats": [_V16, _V8], "offsets": [0, 16], "itemsize": 24})
"""A TI_POINT_DTYPE row as two blocks of bytes: x, y, z, velocity (TLV 1's element as it is)
and snr, noise (float32), so that filling the rows copies whole elements."""
assert TI_POINT_DTYPE == np.dtype([(n, "<f4") for n in TI_POINT_DTYPE.names]) and len(TI_POINT_DTYPE.names) == 6

R_VERSION, R_PLATFORM, R_FRAME_NUMBER, R_COUNT = 0, 1, 2, 10
"""Where a record holds the header's version and platform, the frame number, and how many
points the frame has (its rows in the points array, in record order)."""


def decode_points(records: list[tuple], simple: bool,
                  sdk2: Callable[[np.ndarray, tuple], np.ndarray]) -> tuple[np.ndarray, list[np.ndarray | None]]:
    """The one array holding the points of all ``records`` (in order), and each frame's raw
    objects (SDK 2.x; None for SDK 3.x).

    ``simple``: every record is SDK 3.x with side info for its points; they are then
    decoded together. Else frame by frame into the same array, an SDK 2.x frame by
    ``sdk2(its rows, record)``, which returns its raw objects."""
    total_points = sum([r[10] for r in records])
    block = np.empty(total_points, dtype=TI_POINT_DTYPE)
    objects: list[np.ndarray | None]
    if simple:
        objects = [None] * len(records)
        if total_points:
            # TI_POINT_DTYPE is six float32s: TLV 1's four, copied as they came, then TLV 7's
            # two / 10 (int16 -> float32, then / float32 10: as numpy divides int16 by it).
            rows = np.ndarray((total_points,), _ROW, block)
            rows["cartesian"] = np.frombuffer(b"".join([r[12] for r in records]), _V16)
            side = np.frombuffer(b"".join([r[13] for r in records if r[10]]), _I2).astype(_F4)
            rows["side"] = np.ndarray((total_points,), _V8, np.divide(side, _TEN, out=side))
    else:
        objects, a = [], 0
        for r in records:
            rows = block[a : a + r[10]]
            objects.append(sdk2(rows, r) if r[0] >> 24 == 2 else sdk3_points(rows, r))
            a += r[10]
    return block, objects


def make_frames(records: list[tuple], block: np.ndarray, objects: list[np.ndarray | None]) -> list[TiFrame]:
    """The frames of ``records``, their points views of ``block`` (see :func:`decode_points`)."""
    frames, a, new = [], 0, object.__new__
    for r, objs in zip(records, objects):
        count = r[10]
        frame = new(TiFrame)  # the frozen dataclass's __init__ costs as much as the decoding
        frame.__dict__.update({
            "version": r[0], "platform": r[1], "frame_number": r[2], "time_cpu_cycles": r[3], "subframe": r[4],
            "num_tlvs": r[5], "num_detected_obj": r[6], "total_packet_len": r[7], "points": block[a : a + count],
            "tlv_types": r[9], "header_len": r[8], "objects": objs, "xyz_q_format": r[11]})
        frames.append(frame)
        a += count
    return frames


def sdk3_points(points: np.ndarray, record: tuple) -> None:
    """Decode one SDK 3.x frame's points into ``points`` (its rows): TLV 1's four floats,
    then TLV 7 / 10, or NaN when the frame had no TLV 7."""
    count, elements, side = record[10], record[12], record[13]
    if count:
        table = points.view(_F4).reshape(count, 6)
        table[:, :4] = np.frombuffer(elements, _F4).reshape(count, 4)
        if side is not None:
            np.divide(np.frombuffer(side, _I2).reshape(count, 2), _TEN, out=table[:, 4:])
        else:
            table[:, 4:] = np.nan


def sdk2_points(points: np.ndarray, record: tuple, doppler_resolution_mps: float | None) -> np.ndarray:
    """Decode one SDK 2.x frame's points into ``points`` (its rows) and return its raw
    objects: x, y, z = int16 / 2**q_format, Doppler = index * resolution (NaN without
    one), SNR and noise NaN."""
    count, q_format, elements = record[10], record[11], record[12]
    if not count:
        return np.empty(0, DETECTED_OBJ_DTYPE)
    objects = np.frombuffer(elements, dtype=DETECTED_OBJ_DTYPE)
    scale = np.float32(1.0 / (1 << q_format))
    points["x_m"] = objects["x"].astype(np.float32) * scale
    points["y_m"] = objects["y"].astype(np.float32) * scale
    points["z_m"] = objects["z"].astype(np.float32) * scale
    if doppler_resolution_mps is None:
        points["doppler_mps"] = np.nan
    else:
        points["doppler_mps"] = objects["doppler_idx"].astype(np.float64) * doppler_resolution_mps
    points["snr_db"] = np.nan
    points["noise_db"] = np.nan
    return objects
