"""TI mmWave out-of-box demo, SDK 3.x and 2.x: the data-UART frame format (layout,
constants, structured dtypes) and the decoded frame; the parser is
:mod:`towerd.drivers.ti_mmwave.protocol`.

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

SDK 2.x (``version >> 24 == 2``: xWR14xx and xWR16xx out-of-box demos, SDK 2.0/2.1) is
decoded too, into the same points. Its differences, from SDK 2.1 ``demo/io_interface/
mmw_output.h`` and the xWR14xx/xWR16xx demos' ``MmwDemo_transmitProcessedOutput``
(public copies, e.g. the xWR14xx ``main.c`` quoted in Chen-HR/Ti_mmwave_OutOfBoxDemo_xwr1443):

    header   ``subFrameNumber`` exists only ``#ifdef SOC_XWR16XX``: the xWR14xx header is
             36 bytes with the magic (platform 0xA1443), the xWR16xx one 40 (0xA1642)
    TLV 1    ``MmwDemo_output_message_dataObjDescr`` (u16 numDetetedObj, u16 xyzQFormat),
             then per object ``MmwDemo_detectedObj``: u16 rangeIdx, int16 dopplerIdx
             (signed: negative towards the sensor), u16 peakVal, int16 x, y, z in metres
             times 2**xyzQFormat  -> length 4 + 12 * numDetectedObj; sent only when there
             are detections
    TLV 2..6 as in SDK 3.x (range profile, noise profile, azimuth heat map, range-Doppler
             heat map, stats); 7 and above did not exist and are skipped as unknown

TI's mmWave Demo Visualizer 2.1 reads them the same way (``app/mmWave.js`` in the public copy
arghasen10/mmWave-Demo-Visualizer: subFrameNumber only for xWR16xx/xWR18xx from version
1.1 on; ``processDetectedPoints``: dopplerIdx signed above version 1.0, x/y/z divided by
2**xyzQFormat). Doppler in m/s is ``dopplerIdx * dopplerResolutionMps``, as the same
function computes it; the resolution comes from the chirp
profile (:func:`towerd.drivers.ti_mmwave.cli.doppler_resolution_mps`) and is given to the
parser; without it SDK 2.x points carry NaN Doppler. SNR/noise are NaN (SDK 2.x sends a
peak value, not an SNR). Other majors (1.x, whose layout is not checked here, and 4 and
above) are dropped and counted (the parser's ``ParserStats.unsupported_version``) with a
clear reason; so is an SDK 2.x frame from a platform other than xWR14xx/xWR16xx/xWR18xx. ``subFrameNumber``
above 3 is rejected as TI's parser does (at most four sub-frames).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

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
"""Frame header as on the wire, 40 bytes including the magic (SDK 3.x, SDK 2.x xWR16xx)."""

TL_DTYPE = np.dtype([("type", "<u4"), ("length", "<u4")])
"""TLV header: type and payload length in bytes (the 8-byte TLV header not included)."""

POINT_DTYPE = np.dtype([("x", "<f4"), ("y", "<f4"), ("z", "<f4"), ("velocity", "<f4")])
"""TLV 1 element (DPIF_PointCloudCartesian): metres in the sensor frame, m/s Doppler."""

SIDE_INFO_DTYPE = np.dtype([("snr", "<i2"), ("noise", "<i2")])
"""TLV 7 element (DPIF_PointCloudSideInfo): SIGNED int16, units of 0.1 dB."""

OBJ_DESCR_DTYPE = np.dtype([("num_obj", "<u2"), ("xyz_q_format", "<u2")])
"""SDK 2.x TLV 1 prefix (MmwDemo_output_message_dataObjDescr)."""

DETECTED_OBJ_DTYPE = np.dtype(
    [
        ("range_idx", "<u2"),
        ("doppler_idx", "<i2"),  # signed: negative moving towards the sensor
        ("peak_val", "<u2"),
        ("x", "<i2"),  # metres * 2**xyzQFormat
        ("y", "<i2"),
        ("z", "<i2"),
    ]
)
"""SDK 2.x TLV 1 element (MmwDemo_detectedObj), 12 bytes."""

TI_POINT_DTYPE = np.dtype(
    [
        ("x_m", "<f4"),  # right of boresight
        ("y_m", "<f4"),  # along boresight
        ("z_m", "<f4"),  # up
        ("doppler_mps", "<f4"),  # radial velocity, positive moving away; NaN when unknown
        ("snr_db", "<f4"),  # NaN when the frame had no TLV 7 (always for SDK 2.x)
        ("noise_db", "<f4"),  # NaN when the frame had no TLV 7 (always for SDK 2.x)
    ]
)
"""Decoded point, one row per detection of a frame."""

HEADER_LEN = HEADER_DTYPE.itemsize
HEADER_LEN_XWR14XX_SDK2 = HEADER_LEN - 4
"""SDK 2.x on xWR14xx: no subFrameNumber."""
TL_LEN = TL_DTYPE.itemsize
SEGMENT_LEN = 32
"""totalPacketLen is a multiple of this (MMWDEMO_OUTPUT_MSG_SEGMENT_LEN)."""
MIN_PACKET_LEN = 64
"""The header alone, rounded up to SEGMENT_LEN."""
SUPPORTED_MAJORS = (2, 3)
SDK2_HEADER_LEN = {0xA1443: HEADER_LEN_XWR14XX_SDK2, 0xA1642: HEADER_LEN, 0xA1843: HEADER_LEN}
"""SDK 2.x platforms (``header.platform``) and their header length with the magic (TI's
visualiser 2.1 reads xWR18xx as xWR16xx: with subFrameNumber)."""
MAX_SUBFRAMES = 4
MAX_Q_FORMAT = 15
"""An int16 coordinate in Q15 already spans only +-1 m: more is not a real format."""

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
"""Known SDK 3.x TLV types that carry no points: skipped by length, not counted as unknown."""
KNOWN_SKIPPED_TLVS_SDK2 = frozenset({2, 3, 4, 5, 6})
"""The same for SDK 2.x, which had types 1..6 only."""
STATS_LEN = 24
"""TLV 6 (MmwDemo_output_message_stats): six u32, in SDK 2.x and 3.x alike."""
TEMPERATURE_STATS_LEN = 28
"""TLV 9 (SDK 3.x MmwDemo_temperatureStats): int32 tempReportValid, then rlRfTempData_t (u32
time, ten int16 sensor temperatures); 28 bytes in the AWR1642 SDK 3.6 recording too."""


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
    header_len: int = HEADER_LEN  # 40, or 36 for SDK 2.x on xWR14xx
    objects: np.ndarray | None = None  # SDK 2.x only: the raw TLV 1 objects, DETECTED_OBJ_DTYPE
    xyz_q_format: int | None = None  # SDK 2.x only: coordinates are int16 / 2**xyz_q_format
