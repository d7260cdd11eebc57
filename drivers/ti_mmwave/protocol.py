"""TI mmWave out-of-box demo, SDK 3.x and 2.x: the parser of the data-UART stream.

Pure and incremental: no ``serial`` import, no I/O. :meth:`TiFrameParser.feed` takes
the caller's receive buffer and returns how many bytes to delete from its front plus the
frames those bytes completed (the mlat-client convention), so the parser never copies
or owns the stream and never grows.

The frame format (layout, sources, SDK 2.x differences, disagreements with the notes)
is described in :mod:`towerd.drivers.ti_mmwave.frame`.

There is no checksum, so integrity is structural: magic, totalPacketLen (>= 64 — the
header rounded up to 32 — multiple of 32, at most ``max_frame_bytes``), every TLV inside
the packet, TLV 1 = 16 * numDetectedObj bytes (SDK 2.x: 4 + 12 * numDetectedObj, with the
same count in its descriptor), TLV 7 = 4 * numDetectedObj bytes, TLV 6 = 24 bytes, TLV 9
= 28 bytes, TLVs 2 and 3 (u16 per range bin) of even length, each known TLV type at most once, and fewer than 32 bytes of padding after the last TLV (the
vendor rounds up, never more). A frame cut short by a UART that dropped bytes is followed
by the next frame's magic inside what its declared length calls payload: a magic word
anywhere after the candidate's own (a magic in float or Q-format payload has odds of
2**-64 per position) rejects it, and when the packet's last 1..7 bytes are the start of a
magic the parser waits for the bytes that follow and rejects it if they complete one.
Such a frame is held (:attr:`TiFrameParser.holding`) until those bytes arrive or the
caller says the line has gone quiet (``feed(buf, quiet=True)``: a cut-short frame's
successor follows in the same burst, so silence means no magic is coming). It happens to
genuine frames whose last TLV ends without padding on a byte 0x02 (22 of 102 frames of
the AWR1642 SDK 3.4 recording in tests/captures: side-info noise of 51-77 dB is 0x02xx);
the driver stamps them with the time their last byte arrived. On any inconsistency
the candidate is counted as a bad frame and a resync, and the parser searches again one
byte past the false magic, so the next intact frame is found: dropped bytes cost the cut
frame only, and never invent points.
"""

from __future__ import annotations

import logging
import struct
from dataclasses import dataclass

import numpy as np

from towerd.drivers.ti_mmwave.decode import decode_points, make_frames, sdk2_points
from towerd.drivers.ti_mmwave.frame import (  # the frame format, re-exported: importers use this module
    MAGIC,
    HEADER_DTYPE,
    TL_DTYPE,
    POINT_DTYPE,
    SIDE_INFO_DTYPE,
    OBJ_DESCR_DTYPE,
    DETECTED_OBJ_DTYPE,
    TI_POINT_DTYPE,
    HEADER_LEN,
    HEADER_LEN_XWR14XX_SDK2,
    TL_LEN,
    SEGMENT_LEN,
    MIN_PACKET_LEN,
    SUPPORTED_MAJORS,
    SDK2_HEADER_LEN,
    MAX_SUBFRAMES,
    MAX_Q_FORMAT,
    TLV_DETECTED_POINTS,
    TLV_RANGE_PROFILE,
    TLV_NOISE_PROFILE,
    TLV_AZIMUTH_STATIC_HEAT_MAP,
    TLV_RANGE_DOPPLER_HEAT_MAP,
    TLV_STATS,
    TLV_DETECTED_POINTS_SIDE_INFO,
    TLV_AZIMUTH_ELEVATION_STATIC_HEAT_MAP,
    TLV_TEMPERATURE_STATS,
    KNOWN_SKIPPED_TLVS,
    KNOWN_SKIPPED_TLVS_SDK2,
    STATS_LEN,
    TEMPERATURE_STATS_LEN,
    TiFrame,
)

__all__ = [
    "MAGIC",
    "HEADER_DTYPE",
    "TL_DTYPE",
    "POINT_DTYPE",
    "SIDE_INFO_DTYPE",
    "OBJ_DESCR_DTYPE",
    "DETECTED_OBJ_DTYPE",
    "TI_POINT_DTYPE",
    "HEADER_LEN",
    "HEADER_LEN_XWR14XX_SDK2",
    "TL_LEN",
    "SEGMENT_LEN",
    "MIN_PACKET_LEN",
    "SUPPORTED_MAJORS",
    "SDK2_HEADER_LEN",
    "MAX_SUBFRAMES",
    "MAX_Q_FORMAT",
    "TLV_DETECTED_POINTS",
    "TLV_RANGE_PROFILE",
    "TLV_NOISE_PROFILE",
    "TLV_AZIMUTH_STATIC_HEAT_MAP",
    "TLV_RANGE_DOPPLER_HEAT_MAP",
    "TLV_STATS",
    "TLV_DETECTED_POINTS_SIDE_INFO",
    "TLV_AZIMUTH_ELEVATION_STATIC_HEAT_MAP",
    "TLV_TEMPERATURE_STATS",
    "KNOWN_SKIPPED_TLVS",
    "KNOWN_SKIPPED_TLVS_SDK2",
    "STATS_LEN",
    "TEMPERATURE_STATS_LEN",
    "TiFrame",
    "ParserStats",
    "TiFrameParser",
]

log = logging.getLogger(__name__)

_KNOWN_SDK3 = KNOWN_SKIPPED_TLVS | {TLV_DETECTED_POINTS, TLV_DETECTED_POINTS_SIDE_INFO}
_KNOWN_SDK2 = KNOWN_SKIPPED_TLVS_SDK2 | {TLV_DETECTED_POINTS}
_POINTS_AND_SIDE = (TLV_DETECTED_POINTS, TLV_DETECTED_POINTS_SIDE_INFO)
_NO_POINTS = np.empty(0, dtype=TI_POINT_DTYPE)
_NO_POINTS.flags.writeable = False

_HEADER = struct.Struct("<8I")
_TL = struct.Struct("<2I")
_DESCR = struct.Struct("<2H")
assert _HEADER.size + len(MAGIC) == HEADER_LEN == 40
assert POINT_DTYPE.itemsize == 16 and SIDE_INFO_DTYPE.itemsize == 4 and DETECTED_OBJ_DTYPE.itemsize == 12


@dataclass
class ParserStats:
    """Running counts; only final decisions change them (never a wait for more bytes)."""

    frames: int = 0
    bad_frames: int = 0  # candidate frames (a magic) rejected as inconsistent
    resyncs: int = 0  # times frame alignment was lost (bytes skipped or a candidate rejected)
    dropped_bytes: int = 0  # bytes consumed without being part of an accepted frame
    unknown_tlvs: int = 0  # TLVs of unknown type inside accepted frames (skipped)
    unsupported_version: int = 0  # bad frames whose version/platform has no known layout
    truncated_frames: int = 0  # bad frames seen cut short (the next frame's magic inside them); which
    # check refuses a candidate first can depend on how the bytes arrived, so this one count, unlike the
    # others, may differ between two splits of the same stream
    last_error: str = ""  # why the most recent candidate was rejected


_NEED_MORE = object()


class _Reject(Exception):
    """Internal: the candidate at the current magic is not a valid frame."""


class TiFrameParser:
    """Incremental, bounded parser of the SDK 3.x / 2.x data-UART stream.

    After any :meth:`feed` the caller holds at most ``max_frame_bytes + 6`` unconsumed
    bytes: an incomplete candidate frame (at most ``max_frame_bytes`` less one byte, or a
    complete one whose last bytes may begin a magic, waiting for up to 7 more) or the
    last 7 bytes of a stretch without a magic (they may begin one).

    ``doppler_resolution_mps`` (m/s per Doppler bin, from the chirp profile) turns SDK 2.x
    Doppler indices into m/s; it may be set after construction (the driver sets it when
    it pushes the profile). SDK 3.x frames carry m/s and do not need it.
    """

    def __init__(self, max_frame_bytes: int = 65536, doppler_resolution_mps: float | None = None) -> None:
        if max_frame_bytes < MIN_PACKET_LEN:
            raise ValueError(f"max_frame_bytes must be at least {MIN_PACKET_LEN}")
        self.max_frame_bytes = max_frame_bytes
        self.doppler_resolution_mps = doppler_resolution_mps
        self.stats = ParserStats()
        self.holding = False
        """True when a complete frame waits for the next bytes (its last bytes could begin
        a magic): feed them, or ``feed(buf, quiet=True)`` once the line is quiet."""
        self._hunting = False
        self._quiet = False
        self._warned: set[str] = set()

    def feed(self, buf: bytes | bytearray | memoryview, quiet: bool = False) -> tuple[int, list[TiFrame]]:
        """Decode what ``buf`` completes; return (bytes to delete from its front, frames).

        ``quiet``: no byte is following right now (the line went quiet, or the input
        ended), so a held frame whose last bytes could begin a magic is accepted.
        Never raises on any content; the caller must delete exactly ``consumed`` bytes
        and call again with the rest plus new data. Frames are validated one after the
        other, then decoded together: the points of all of them go into one array, of
        which each frame's ``points`` is a view.
        """
        consumed, records, simple = self._validate(buf, quiet)
        if not records:
            return consumed, []
        block, objects = decode_points(records, simple, self._sdk2_points)
        return consumed, make_frames(records, block, objects)

    def feed_records(self, buf: bytes | bytearray | memoryview,
                     quiet: bool = False) -> tuple[int, list[tuple], np.ndarray]:
        """:meth:`feed` without the frame objects, for a driver that reads only the frames'
        numbers and points: (consumed, their records (see
        :mod:`towerd.drivers.ti_mmwave.decode`), the points of all of them as one
        TI_POINT_DTYPE array, frame after frame)."""
        consumed, records, simple = self._validate(buf, quiet)
        if not records:
            return consumed, records, _NO_POINTS
        return consumed, records, decode_points(records, simple, self._sdk2_points)[0]

    def _validate(self, buf: bytes | bytearray | memoryview, quiet: bool) -> tuple[int, list[tuple], bool]:
        """Find and check the frames ``buf`` completes: (consumed, their records, whether
        every one is SDK 3.x with side info for its points). The common frame (SDK 3.x, no
        magic inside it or across its end) is checked by :meth:`_fast` in one pass,
        anything else by :meth:`_try_frame`, which gives the same answer for the common
        frame and says why it refuses a candidate."""
        self._quiet = quiet
        self.holding = False
        data = buf if isinstance(buf, (bytes, bytearray)) else bytes(buf)
        n = len(data)
        pos = 0
        accepted: list[tuple] = []
        simple = True  # every frame SDK 3.x, with side info for its points
        stats = self.stats
        find = data.find
        nxt = -1  # where the next magic starts, when known
        while True:
            start = pos if nxt == pos else find(MAGIC, pos)
            if start < 0:
                drop = max(0, n - pos - (len(MAGIC) - 1))
                self._drop(drop)
                pos += drop
                break
            if start > pos:
                self._drop(start - pos)
            pos = start
            nxt = find(MAGIC, pos + 1)
            record = self._fast(data, pos, n, nxt) if n - pos >= HEADER_LEN else None
            if record is _NEED_MORE:
                break
            if record is None:
                try:
                    record = self._try_frame(data, pos, n)
                except _Reject as exc:
                    self._reject(str(exc))
                    self._drop(1)
                    pos += 1
                    continue
                if record is _NEED_MORE:
                    break
                simple = simple and record[0] >> 24 == 3 and (record[13] is not None or not record[10])
            accepted.append(record)
            stats.frames += 1
            self._hunting = False
            pos += record[7]
        return pos, accepted, simple

    def _sdk2_points(self, points: np.ndarray, record: tuple) -> np.ndarray:
        """Decode one SDK 2.x frame's points into ``points``; return its raw objects."""
        resolution = self.doppler_resolution_mps
        if resolution is None and record[10]:
            self._warn_once("no_resolution", "TI radar sends SDK 2.x frames, whose Doppler needs the chirp "
                            "profile's resolution: set chirp_config (with cli_port) or "
                            "doppler_resolution_mps; Doppler is unknown (NaN) until then")
        return sdk2_points(points, record, resolution)

    def _fast(self, data: bytes | bytearray, p: int, n: int, nxt: int) -> tuple | None | object:
        """The common frame at ``p`` (``nxt``: where the next magic starts, -1 if none)
        accepted in one pass: its record (see :meth:`_record`), _NEED_MORE, or None to let
        :meth:`_try_frame` decide. Only a candidate that passes every check of
        :meth:`_try_frame` on the bytes present is accepted or waited for here: SDK 3.x,
        no magic before its end and, when it is whole in ``data``, unless the next magic
        starts right at its end, no byte 0x02 in its last 7 (which could begin a magic
        whose rest is still to come), and side info when it has points."""
        version, total, platform, frame_number, cpu_cycles, num_obj, num_tlvs, subframe = \
            _HEADER.unpack_from(data, p + 8)
        end = p + total
        if (version >> 24 != 3 or 0 <= nxt < end or total < MIN_PACKET_LEN or total % SEGMENT_LEN
                or total > self.max_frame_bytes or subframe >= MAX_SUBFRAMES
                or HEADER_LEN + TL_LEN * num_tlvs > total or nxt != end and data.find(2, end - 7, end) >= 0):
            return None
        off = p + HEADER_LEN
        side_at = off + 2 * TL_LEN + 16 * num_obj
        if (num_tlvs == 2 and side_at + 4 * num_obj <= end <= n and end - side_at - 4 * num_obj < SEGMENT_LEN
                and _TL.unpack_from(data, off) == (1, 16 * num_obj)
                and _TL.unpack_from(data, side_at - TL_LEN) == (7, 4 * num_obj)):
            # The usual frame, whole: TLV 1 then TLV 7, sized for num_obj (what the loop below checks)
            return (version, platform, frame_number, cpu_cycles, subframe, num_tlvs, num_obj, total, HEADER_LEN,
                    _POINTS_AND_SIDE, num_obj, None, data[off + TL_LEN : side_at - TL_LEN],
                    data[side_at : side_at + 4 * num_obj])
        avail = min(n, end)
        types: list[int] = []
        points_at = side_at = -1
        for _ in range(num_tlvs):
            if off + TL_LEN > avail:
                return None if off + TL_LEN > end else _NEED_MORE
            tlv_type, length = _TL.unpack_from(data, off)
            if off + TL_LEN + length > end or tlv_type in types and tlv_type in _KNOWN_SDK3:
                return None
            if tlv_type == TLV_DETECTED_POINTS:
                if length != POINT_DTYPE.itemsize * num_obj:
                    return None
                points_at = off + TL_LEN
            elif tlv_type == TLV_DETECTED_POINTS_SIDE_INFO:
                if length != SIDE_INFO_DTYPE.itemsize * num_obj:
                    return None
                side_at = off + TL_LEN
            elif (tlv_type == TLV_STATS and length != STATS_LEN
                  or tlv_type == TLV_TEMPERATURE_STATS and length != TEMPERATURE_STATS_LEN
                  or (tlv_type == TLV_RANGE_PROFILE or tlv_type == TLV_NOISE_PROFILE) and length % 2):
                return None
            types.append(tlv_type)
            off += TL_LEN + length
        if end - off >= SEGMENT_LEN:
            return None
        if end > n:
            return _NEED_MORE
        if points_at < 0:
            return self._record(data, version, platform, frame_number, cpu_cycles, subframe, num_tlvs, num_obj,
                                total, HEADER_LEN, types, points_at, side_at, None)
        if side_at < 0 and num_obj:
            return None
        if not _KNOWN_SDK3.issuperset(types):
            self.stats.unknown_tlvs += sum(1 for t in types if t not in _KNOWN_SDK3)
        # _record's, for a frame with points and side info
        return (version, platform, frame_number, cpu_cycles, subframe, num_tlvs, num_obj, total, HEADER_LEN,
                tuple(types), num_obj, None, data[points_at : points_at + 16 * num_obj],
                data[side_at : side_at + 4 * num_obj])

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

    def _warn_once(self, key: str, message: str, *args: object) -> None:
        """A real device condition, not line noise: tell the operator once."""
        if key not in self._warned:
            self._warned.add(key)
            log.warning(message, *args)

    def _layout(self, version: int, platform: int) -> int:
        """Header length for this version/platform, or _Reject with the reason."""
        major, minor = version >> 24, (version >> 16) & 0xFF
        if major == 3:
            return HEADER_LEN
        if major == 2 and platform in SDK2_HEADER_LEN:
            return SDK2_HEADER_LEN[platform]
        self.stats.unsupported_version += 1
        if major == 2:
            self._warn_once(f"platform{platform:x}",
                            "TI radar sends SDK 2.%d frames from platform 0x%X; SDK 2.x is decoded for xWR14xx "
                            "(0xA1443), xWR16xx (0xA1642) and xWR18xx (0xA1843) only", minor, platform)
            raise _Reject(f"SDK 2.x frame from platform 0x{platform:X}: only the xWR14xx (0xA1443), xWR16xx "
                          "(0xA1642) and xWR18xx (0xA1843) SDK 2.x layouts are documented")
        if major == 1:
            self._warn_once("major1", "TI radar sends SDK %d.%d frames (version 0x%08x); only SDK 2.x and 3.x are "
                            "decoded: flash the SDK 3.x out-of-box demo", major, minor, version)
        raise _Reject(f"unsupported version 0x{version:08x} (major {major}); only SDK 2.x and 3.x (major 2 or 3) "
                      "frames are decoded")

    def _try_frame(self, data: bytes | bytearray, p: int, n: int):
        """Validate the candidate at ``p``: its record (see :meth:`_record`), _NEED_MORE, or _Reject.

        Every check uses only the bytes of the claimed packet and, when its last bytes
        could begin a magic, the up to 7 bytes after it, so the outcome does not depend
        on how the stream was split into reads; checks run as soon as their bytes are
        present, so a false or cut-short magic is rejected without waiting for its length.
        """
        early = data.find(MAGIC, p + 1, min(n, p + HEADER_LEN))
        if early >= 0:  # cut inside its header: not a header at all, say nothing of versions
            self.stats.truncated_frames += 1
            raise _Reject(f"frame cut short: another frame's magic {early - p} bytes into its header")
        if n - p < HEADER_LEN_XWR14XX_SDK2:
            return _NEED_MORE
        version, total, platform = struct.unpack_from("<3I", data, p + len(MAGIC))
        header_len = self._layout(version, platform)
        if n - p < header_len:
            return _NEED_MORE
        frame_number, cpu_cycles, num_obj, num_tlvs = struct.unpack_from("<4I", data, p + 20)
        subframe = struct.unpack_from("<I", data, p + 36)[0] if header_len == HEADER_LEN else 0
        sdk2 = version >> 24 == 2
        if total < MIN_PACKET_LEN or total % SEGMENT_LEN or total > self.max_frame_bytes:
            raise _Reject(
                f"totalPacketLen {total} is not a multiple of {SEGMENT_LEN} in "
                f"[{MIN_PACKET_LEN}, {self.max_frame_bytes}]"
            )
        if header_len + TL_LEN * num_tlvs > total:
            raise _Reject(f"{num_tlvs} TLVs cannot fit in a {total}-byte packet")
        if subframe >= MAX_SUBFRAMES:
            raise _Reject(f"subFrameNumber {subframe} is not below {MAX_SUBFRAMES}")
        end = p + total
        avail = min(n, end)
        inner = data.find(MAGIC, p + 1, avail)
        try:
            walked = self._walk(data, p, avail, end, total, header_len, num_tlvs, num_obj, sdk2)
        except _Reject as exc:
            if inner >= 0:
                self.stats.truncated_frames += 1
                raise _Reject(f"{exc} (cut short: another frame's magic {inner - p} bytes in)") from None
            raise
        if inner >= 0:
            self.stats.truncated_frames += 1
            raise _Reject(f"frame cut short: another frame's magic {inner - p} bytes into its {total}-byte packet")
        if walked is _NEED_MORE:
            return _NEED_MORE
        types, points_at, side_at, q_format, off = walked
        padding = end - off
        if padding >= SEGMENT_LEN:
            raise _Reject(f"{padding} bytes after the last TLV; the device pads fewer than {SEGMENT_LEN}")
        if n < end:
            return _NEED_MORE
        for k in range(len(MAGIC) - 1, 0, -1) if data.find(MAGIC[:1], end - len(MAGIC) + 1, end) >= 0 else ():
            if data[end - k : end] != MAGIC[:k]:
                continue
            # The packet may end where a cut-short frame's successor begins.
            following = data[end : end - k + len(MAGIC)]
            if following != MAGIC[k : k + len(following)]:
                continue  # what follows is not the rest of a magic
            if len(following) == len(MAGIC) - k:
                self.stats.truncated_frames += 1
                raise _Reject(f"frame cut short: another frame's magic starts {k} bytes before the end of "
                              f"its {total}-byte packet")
            if not self._quiet:
                self.holding = True
                return _NEED_MORE
            # Quiet line: no successor is coming, the frame is whole.
        return self._record(data, version, platform, frame_number, cpu_cycles, subframe, num_tlvs, num_obj, total,
                            header_len, types, points_at, side_at, q_format)

    def _walk(self, data, p, avail, end, total, header_len, num_tlvs, num_obj, sdk2):
        """Walk the TLVs bounds-checked: (types, points_at, side_at, q_format, end of the
        last TLV), _NEED_MORE, or _Reject."""
        off = p + header_len
        types: list[int] = []
        points_at = side_at = -1
        q_format = None
        for index in range(num_tlvs):
            if off + TL_LEN > end:
                raise _Reject(f"TLV {index + 1} of {num_tlvs} starts past the {total}-byte packet")
            if off + TL_LEN > avail:
                return _NEED_MORE
            tlv_type, length = _TL.unpack_from(data, off)
            payload_end = off + TL_LEN + length
            if payload_end > end:
                raise _Reject(f"TLV type {tlv_type} of {length} bytes runs past the {total}-byte packet")
            if tlv_type in types and (tlv_type == TLV_DETECTED_POINTS or tlv_type == TLV_DETECTED_POINTS_SIDE_INFO
                                      or tlv_type in KNOWN_SKIPPED_TLVS):
                raise _Reject(f"two TLVs of type {tlv_type} in one frame")
            if tlv_type == TLV_DETECTED_POINTS:
                if sdk2:
                    if length != _DESCR.size + DETECTED_OBJ_DTYPE.itemsize * num_obj:
                        raise _Reject(f"SDK 2.x TLV 1 is {length} bytes for {num_obj} objects, expected "
                                      f"{_DESCR.size + 12 * num_obj}")
                    if off + TL_LEN + _DESCR.size > avail:
                        return _NEED_MORE
                    descr_num, q_format = _DESCR.unpack_from(data, off + TL_LEN)
                    if descr_num != num_obj or q_format > MAX_Q_FORMAT:
                        raise _Reject(f"SDK 2.x TLV 1 descriptor says {descr_num} objects in Q{q_format}, "
                                      f"the header {num_obj}")
                    points_at = off + TL_LEN + _DESCR.size
                else:
                    if length != POINT_DTYPE.itemsize * num_obj:
                        raise _Reject(f"TLV 1 is {length} bytes for {num_obj} points, expected {16 * num_obj}")
                    points_at = off + TL_LEN
            elif tlv_type == TLV_DETECTED_POINTS_SIDE_INFO and not sdk2:
                if length != SIDE_INFO_DTYPE.itemsize * num_obj:
                    raise _Reject(f"TLV 7 is {length} bytes for {num_obj} points, expected {4 * num_obj}")
                side_at = off + TL_LEN
            elif tlv_type == TLV_STATS and length != STATS_LEN:
                raise _Reject(f"TLV 6 (stats) is {length} bytes, expected {STATS_LEN}")
            elif tlv_type == TLV_TEMPERATURE_STATS and not sdk2 and length != TEMPERATURE_STATS_LEN:
                raise _Reject(f"TLV 9 (temperature) is {length} bytes, expected {TEMPERATURE_STATS_LEN}")
            elif tlv_type in (TLV_RANGE_PROFILE, TLV_NOISE_PROFILE) and length % 2:
                raise _Reject(f"TLV {tlv_type} (u16 per range bin) has an odd length {length}")
            types.append(tlv_type)
            off = payload_end
        return types, points_at, side_at, q_format, off

    def _record(self, data, version, platform, frame_number, cpu_cycles, subframe, num_tlvs, num_obj, total,
                header_len, types, points_at, side_at, q_format) -> tuple:
        """What :meth:`_build` needs of an accepted frame, its payload copied out of ``data``
        (the caller's buffer, which it changes after :meth:`feed`): (version, platform,
        frame_number, cpu_cycles, subframe, num_tlvs, num_obj, total, header_len, tlv types,
        point count, q_format, TLV 1 elements, TLV 7 elements or None)."""
        known = _KNOWN_SDK2 if version >> 24 == 2 else _KNOWN_SDK3
        if not known.issuperset(types):
            self.stats.unknown_tlvs += sum(1 for t in types if t not in known)
        count = num_obj if points_at >= 0 else 0
        if version >> 24 == 2:
            elements, side = bytes(data[points_at : points_at + DETECTED_OBJ_DTYPE.itemsize * count]), None
        else:
            elements = data[points_at : points_at + POINT_DTYPE.itemsize * count]
            side = data[side_at : side_at + SIDE_INFO_DTYPE.itemsize * count] if side_at >= 0 else None
        return (version, platform, frame_number, cpu_cycles, subframe, num_tlvs, num_obj, total, header_len,
                tuple(types), count, q_format, elements, side)
