"""TI mmWave out-of-box demo, SDK 3.x: the data-UART frame format and its parser.

Pure and incremental: no ``serial`` import, no I/O. :meth:`TiFrameParser.feed` takes
the caller's receive buffer and returns how many bytes to delete from its front plus the
frames those bytes completed (the mlat-client convention), so the parser never copies
or owns the stream and never grows.

Wire format (little-endian), as the SDK 3.x demo sends it on the data UART
(IWR6843, IWR6843AOP, AWR1843 at 921600 baud):

    magic    8 bytes  02 01 04 03 06 05 08 07   (u16 words 0x0102 0x0304 0x0506 0x0708)
    header   8 x u32  version, totalPacketLen, platform, frameNumber, timeCpuCycles,
                      numDetectedObj, numTLVs, subFrameNumber        -> 40 bytes with magic
    numTLVs  x        u32 type, u32 length (payload bytes only), payload
    padding  so that totalPacketLen is a multiple of 32 (fewer than 32 bytes)

    TLV 1  DPIF_PointCloudCartesian per point: f32 x, y, z (m, sensor frame: x right,
           y boresight, z up), f32 velocity (m/s, positive moving away)  -> 16 bytes
    TLV 7  DPIF_PointCloudSideInfo per point: int16 snr, int16 noise (0.1 dB)  -> 4 bytes
    TLV 2 range profile, 3 noise profile, 4 azimuth static heat map, 5 range-Doppler
    heat map, 6 stats, 8 azimuth/elevation heat map, 9 temperature stats: skipped.

Sources (TI mmWave SDK 3.x, read in public copies of the SDK files):
- ``demo/xwr68xx/mmw/mmw_output.h``: ``MmwDemo_output_message_header`` (magicWord[4] as
  u16, then the eight u32 above), ``MmwDemo_output_message_tl`` (type, length),
  the TLV type enum 1..9 and ``MMWDEMO_OUTPUT_MSG_SEGMENT_LEN`` = 32;
- ``datapath/dpif/dpif_pointcloud.h``: ``DPIF_PointCloudCartesian`` (four floats) and
  ``DPIF_PointCloudSideInfo`` (``int16_t snr``, ``int16_t noise``, both in 0.1 dB);
- ``demo/xwr68xx/mmw/mss/mmw_mss.c``, ``MmwDemo_transmitProcessedOutput``:
  ``header.version = BUILD | BUGFIX << 8 | MINOR << 16 | MAJOR << 24`` (SDK 3.5.0.4 sends
  0x03050004), ``tl.length`` is the payload size only, ``totalPacketLen`` is the packet
  length rounded up to a multiple of 32 and the padding is sent from an uninitialised
  32-byte array (so it is never checked here).

Where the project notes and the vendor disagree, this module follows the vendor:
- The notes say TLV types 1 and 7 are absent from frames with no detections. In SDK 3.x
  the condition is ``detectedObjects == 1 || detectedObjects == 2 && numObjOut > 0``
  (C precedence), so with the default ``guiMonitor`` setting (detectedObjects 1) an
  empty frame carries TLV 1 with length 0, and only TLV 7 is omitted. Both forms parse.
- TI's own Python example (``parser_mmw_demo.py``) reads snr/noise with ``getUint16``;
  the C struct says ``int16_t``, so they are decoded SIGNED here.

Support: SDK 3.x only (``version >> 24 == 3``). SDK 1.x/2.x used a Q-format point
layout and the IWR1443 a 36-byte header; frames with another major version are dropped
and counted (``ParserStats.unsupported_version``). ``subFrameNumber`` above 3 is
rejected as TI's parser does (at most four sub-frames).

There is no checksum, so integrity is structural: magic, totalPacketLen (>= 64 — the 40
byte header rounded up to 32 — multiple of 32, at most ``max_frame_bytes``), every TLV
inside the packet, TLV 1 = 16 * numDetectedObj bytes, TLV 7 = 4 * numDetectedObj bytes,
at most one of each, and fewer than 32 bytes of padding after the last TLV (the vendor
rounds up, never more). On any inconsistency the candidate is counted as a bad frame
and a resync, the parser skips one byte past the false magic and searches again.
"""

from __future__ import annotations

import logging
import struct
from dataclasses import dataclass

import numpy as np

log = logging.getLogger(__name__)

MAGIC = b"\x02\x01\x04\x03\x06\x05\x08\x07"
"""Sync word that starts every frame (u16 0x0102, 0x0304, 0x0506, 0x0708 little-endian)."""

HEADER_DTYPE = np.dtype(
    [
        ("magic", "S8"),
        ("version", "<u4"),  # MAJOR << 24 | MINOR << 16 | BUGFIX << 8 | BUILD
        ("total_packet_len", "<u4"),  # bytes, whole frame incl. magic, header, TLVs, padding
        ("platform", "<u4"),  # e.g. 0xA6843 (xWR68xx), 0xA1843 (xWR18xx)
        ("frame_number", "<u4"),
        ("time_cpu_cycles", "<u4"),  # CPU cycle counter when the frame was built
        ("num_detected_obj", "<u4"),
        ("num_tlvs", "<u4"),
        ("subframe_number", "<u4"),  # 0 unless an advanced (multi sub-frame) config
    ]
)
"""Frame header as on the wire, 40 bytes including the magic."""

TL_DTYPE = np.dtype([("type", "<u4"), ("length", "<u4")])
"""TLV header: type and payload length in bytes (the 8-byte TLV header not included)."""

POINT_DTYPE = np.dtype([("x", "<f4"), ("y", "<f4"), ("z", "<f4"), ("velocity", "<f4")])
"""TLV 1 element (DPIF_PointCloudCartesian): metres in the sensor frame, m/s Doppler."""

SIDE_INFO_DTYPE = np.dtype([("snr", "<i2"), ("noise", "<i2")])
"""TLV 7 element (DPIF_PointCloudSideInfo): SIGNED int16, units of 0.1 dB."""

TI_POINT_DTYPE = np.dtype(
    [
        ("x_m", "<f4"),  # right of boresight
        ("y_m", "<f4"),  # along boresight
        ("z_m", "<f4"),  # up
        ("doppler_mps", "<f4"),  # radial velocity, positive moving away
        ("snr_db", "<f4"),  # NaN when the frame had no TLV 7
        ("noise_db", "<f4"),  # NaN when the frame had no TLV 7
    ]
)
"""Decoded point, one row per detection of a frame."""

HEADER_LEN = HEADER_DTYPE.itemsize
TL_LEN = TL_DTYPE.itemsize
SEGMENT_LEN = 32
"""totalPacketLen is a multiple of this (MMWDEMO_OUTPUT_MSG_SEGMENT_LEN)."""
MIN_PACKET_LEN = 64
"""The header alone, rounded up to SEGMENT_LEN."""
SUPPORTED_MAJOR = 3
MAX_SUBFRAMES = 4

TLV_DETECTED_POINTS = 1
TLV_RANGE_PROFILE = 2
TLV_NOISE_PROFILE = 3
TLV_AZIMUTH_STATIC_HEAT_MAP = 4
TLV_RANGE_DOPPLER_HEAT_MAP = 5
TLV_STATS = 6
TLV_DETECTED_POINTS_SIDE_INFO = 7
TLV_AZIMUTH_ELEVATION_STATIC_HEAT_MAP = 8
TLV_TEMPERATURE_STATS = 9
KNOWN_SKIPPED_TLVS = frozenset({2, 3, 4, 5, 6, 8, 9})
"""Known TLV types that carry no points: skipped by length, not counted as unknown."""

_HEADER = struct.Struct("<8I")
_TL = struct.Struct("<2I")
assert _HEADER.size + len(MAGIC) == HEADER_LEN == 40
assert POINT_DTYPE.itemsize == 16 and SIDE_INFO_DTYPE.itemsize == 4


@dataclass(frozen=True, eq=False)
class TiFrame:
    """One decoded frame (eq=False: it holds an array)."""

    version: int
    platform: int
    frame_number: int
    time_cpu_cycles: int
    subframe: int
    num_tlvs: int
    num_detected_obj: int
    total_packet_len: int  # bytes this frame occupied on the wire
    points: np.ndarray  # shape (n,), TI_POINT_DTYPE; n = numDetectedObj when TLV 1 present, else 0
    tlv_types: tuple[int, ...]  # TLV types in the order they appeared


@dataclass
class ParserStats:
    """Running counts; only final decisions change them (never a wait for more bytes)."""

    frames: int = 0
    bad_frames: int = 0  # candidate frames (a magic) rejected as inconsistent
    resyncs: int = 0  # times frame alignment was lost (bytes skipped or a candidate rejected)
    dropped_bytes: int = 0  # bytes consumed without being part of an accepted frame
    unknown_tlvs: int = 0  # TLVs of unknown type inside accepted frames (skipped)
    unsupported_version: int = 0  # bad frames whose major version is not 3
    last_error: str = ""  # why the most recent candidate was rejected


_NEED_MORE = object()


class _Reject(Exception):
    """Internal: the candidate at the current magic is not a valid frame."""


class TiFrameParser:
    """Incremental, bounded parser of the SDK 3.x data-UART stream.

    After any :meth:`feed` the caller holds at most ``max_frame_bytes - 1`` unconsumed
    bytes: an incomplete candidate frame (at most ``max_frame_bytes``, less one byte) or
    the last 7 bytes of a stretch without a magic (they may begin one).
    """

    def __init__(self, max_frame_bytes: int = 65536) -> None:
        if max_frame_bytes < MIN_PACKET_LEN:
            raise ValueError(f"max_frame_bytes must be at least {MIN_PACKET_LEN}")
        self.max_frame_bytes = max_frame_bytes
        self.stats = ParserStats()
        self._hunting = False
        self._warned_old_sdk = False

    def feed(self, buf: bytes | bytearray | memoryview) -> tuple[int, list[TiFrame]]:
        """Decode what ``buf`` completes; return (bytes to delete from its front, frames).

        Never raises on any content; the caller must delete exactly ``consumed`` bytes
        and call again with the rest plus new data.
        """
        data = buf if isinstance(buf, (bytes, bytearray)) else bytes(buf)
        n = len(data)
        pos = 0
        frames: list[TiFrame] = []
        while True:
            start = data.find(MAGIC, pos)
            if start < 0:
                drop = max(0, n - pos - (len(MAGIC) - 1))
                self._drop(drop)
                return pos + drop, frames
            self._drop(start - pos)
            pos = start
            try:
                result = self._try_frame(data, pos, n)
            except _Reject as exc:
                self._reject(str(exc))
                self._drop(1)
                pos += 1
                continue
            if result is _NEED_MORE:
                return pos, frames
            frame, length = result
            frames.append(frame)
            self.stats.frames += 1
            self._hunting = False
            pos += length

    def _drop(self, count: int) -> None:
        if count <= 0:
            return
        self.stats.dropped_bytes += count
        if not self._hunting:
            self._hunting = True
            self.stats.resyncs += 1

    def _reject(self, reason: str) -> None:
        self.stats.bad_frames += 1
        self.stats.resyncs += 1
        self.stats.last_error = reason
        self._hunting = True
        log.debug("TI frame rejected: %s", reason)

    def _try_frame(self, data: bytes | bytearray, p: int, n: int):
        """Validate the candidate at ``p``: a (frame, length) pair, _NEED_MORE, or _Reject.

        Every check uses only bytes inside the claimed packet, so the outcome does not
        depend on how the stream was split into reads; checks run as soon as their bytes
        are present, so a false magic is rejected without waiting for its whole length.
        """
        if n - p < HEADER_LEN:
            return _NEED_MORE
        (version, total, platform, frame_number, cpu_cycles, num_obj, num_tlvs, subframe) = _HEADER.unpack_from(
            data, p + len(MAGIC)
        )
        major = version >> 24
        if major != SUPPORTED_MAJOR:
            self.stats.unsupported_version += 1
            if major in (1, 2) and not self._warned_old_sdk:
                # A real older firmware, not line noise: tell the operator once.
                self._warned_old_sdk = True
                log.warning(
                    "TI radar sends SDK %d.%d frames (version 0x%08x); only SDK 3.x is decoded: "
                    "flash the SDK 3.x out-of-box demo",
                    major, (version >> 16) & 0xFF, version,
                )
            raise _Reject(
                f"unsupported version 0x{version:08x} (major {major}); only SDK 3.x (major 3) frames are decoded"
            )
        if total < MIN_PACKET_LEN or total % SEGMENT_LEN or total > self.max_frame_bytes:
            raise _Reject(
                f"totalPacketLen {total} is not a multiple of {SEGMENT_LEN} in "
                f"[{MIN_PACKET_LEN}, {self.max_frame_bytes}]"
            )
        if HEADER_LEN + TL_LEN * num_tlvs > total:
            raise _Reject(f"{num_tlvs} TLVs cannot fit in a {total}-byte packet")
        if subframe >= MAX_SUBFRAMES:
            raise _Reject(f"subFrameNumber {subframe} is not below {MAX_SUBFRAMES}")
        end = p + total
        avail = min(n, end)
        off = p + HEADER_LEN
        types: list[int] = []
        points_at = side_at = -1
        for index in range(num_tlvs):
            if off + TL_LEN > end:
                raise _Reject(f"TLV {index + 1} of {num_tlvs} starts past the {total}-byte packet")
            if off + TL_LEN > avail:
                return _NEED_MORE
            tlv_type, length = _TL.unpack_from(data, off)
            payload_end = off + TL_LEN + length
            if payload_end > end:
                raise _Reject(f"TLV type {tlv_type} of {length} bytes runs past the {total}-byte packet")
            if tlv_type == TLV_DETECTED_POINTS:
                if points_at >= 0:
                    raise _Reject("two TLV 1 (detected points) in one frame")
                if length != POINT_DTYPE.itemsize * num_obj:
                    raise _Reject(f"TLV 1 is {length} bytes for {num_obj} points, expected {16 * num_obj}")
                points_at = off + TL_LEN
            elif tlv_type == TLV_DETECTED_POINTS_SIDE_INFO:
                if side_at >= 0:
                    raise _Reject("two TLV 7 (side info) in one frame")
                if length != SIDE_INFO_DTYPE.itemsize * num_obj:
                    raise _Reject(f"TLV 7 is {length} bytes for {num_obj} points, expected {4 * num_obj}")
                side_at = off + TL_LEN
            types.append(tlv_type)
            off = payload_end
        padding = end - off
        if padding >= SEGMENT_LEN:
            raise _Reject(f"{padding} bytes after the last TLV; the device pads fewer than {SEGMENT_LEN}")
        if n < end:
            return _NEED_MORE

        count = num_obj if points_at >= 0 else 0
        points = np.empty(count, dtype=TI_POINT_DTYPE)
        if count:
            raw = np.frombuffer(bytes(data[points_at : points_at + POINT_DTYPE.itemsize * count]), dtype=POINT_DTYPE)
            points["x_m"] = raw["x"]
            points["y_m"] = raw["y"]
            points["z_m"] = raw["z"]
            points["doppler_mps"] = raw["velocity"]
            if side_at >= 0:
                side = np.frombuffer(
                    bytes(data[side_at : side_at + SIDE_INFO_DTYPE.itemsize * count]), dtype=SIDE_INFO_DTYPE
                )
                points["snr_db"] = side["snr"].astype(np.float32) / np.float32(10.0)
                points["noise_db"] = side["noise"].astype(np.float32) / np.float32(10.0)
            else:
                points["snr_db"] = np.nan
                points["noise_db"] = np.nan
        self.stats.unknown_tlvs += sum(
            1 for t in types if t not in KNOWN_SKIPPED_TLVS and t not in (TLV_DETECTED_POINTS, TLV_DETECTED_POINTS_SIDE_INFO)
        )
        frame = TiFrame(
            version=version,
            platform=platform,
            frame_number=frame_number,
            time_cpu_cycles=cpu_cycles,
            subframe=subframe,
            num_tlvs=num_tlvs,
            num_detected_obj=num_obj,
            total_packet_len=total,
            points=points,
            tlv_types=tuple(types),
        )
        return frame, total
