"""TI mmWave SDK 3.x frame parser: golden captures, resync, bounds and fuzz.

Frames here are built byte by byte from TI's documented layout (mmw_output.h,
dpif_pointcloud.h, mmw_mss.c of SDK 3.x) with ``struct``, independently of the parser.
"""

from __future__ import annotations

import json
import struct
import time
from pathlib import Path

import numpy as np
import pytest
from numpy.testing import assert_array_equal

import ti_reference
from towerd.drivers.ti_mmwave.cli import doppler_resolution_mps, load_chirp_config
from towerd.drivers.ti_mmwave.protocol import (
    HEADER_DTYPE,
    MAGIC,
    POINT_DTYPE,
    SIDE_INFO_DTYPE,
    TI_POINT_DTYPE,
    TiFrame,
    TiFrameParser,
)

CAPTURES = Path(__file__).parent / "captures" / "ti_mmwave"
SYNC = bytes([2, 1, 4, 3, 6, 5, 8, 7])
V3 = 0x03050004  # SDK 3.5.0.4


# ----------------------------------------------------------------------------- builders


def tlv(tlv_type: int, payload: bytes, length: int | None = None) -> bytes:
    return struct.pack("<II", tlv_type, len(payload) if length is None else length) + payload


def points_tlv(rows) -> bytes:
    return tlv(1, b"".join(struct.pack("<4f", *r) for r in rows))


def side_tlv(rows) -> bytes:
    return tlv(7, b"".join(struct.pack("<hh", *r) for r in rows))


def frame(
    tlvs=(),
    *,
    num_obj: int = 0,
    version: int = V3,
    platform: int = 0xA6843,
    frame_number: int = 1,
    cpu: int = 0,
    subframe: int = 0,
    total: int | None = None,
    num_tlvs: int | None = None,
    pad: int = 0x0F,
) -> bytes:
    """An SDK 3.x frame; ``total``/``num_tlvs`` override the header to make it lie."""
    body = b"".join(tlvs)
    unpadded = 40 + len(body)
    real_total = -(-unpadded // 32) * 32
    header = SYNC + struct.pack(
        "<8I",
        version,
        real_total if total is None else total,
        platform,
        frame_number,
        cpu,
        num_obj,
        len(tlvs) if num_tlvs is None else num_tlvs,
        subframe,
    )
    return header + body + bytes([pad]) * (real_total - unpadded)


def sdk2_frame(tlvs=(), *, num_obj: int = 0, frame_number: int = 1, cpu: int = 0, platform: int = 0xA1443,
               version: int = 0x02010004) -> bytes:
    """An SDK 2.x frame: 36-byte header on xWR14xx (no subFrameNumber), 40 on xWR16xx."""
    body = b"".join(tlvs)
    fields = [version, 0, platform, frame_number, cpu, num_obj, len(tlvs)] + ([] if platform == 0xA1443 else [0])
    header_len = 8 + 4 * len(fields)
    fields[1] = -(-(header_len + len(body)) // 32) * 32
    return SYNC + struct.pack(f"<{len(fields)}I", *fields) + body + b"\x0f" * (fields[1] - header_len - len(body))


def good(frame_number: int, n: int = 2) -> bytes:
    rows = [(float(i), 10.0 + i, 0.5, -1.0) for i in range(n)]
    sides = [(100 + i, 300) for i in range(n)]
    return frame([points_tlv(rows), side_tlv(sides)], num_obj=n, frame_number=frame_number)


def feed_all(parser: TiFrameParser, data: bytes, chunks=None) -> tuple[list[TiFrame], bytearray, int]:
    """Feed ``data`` (in ``chunks`` sizes if given) as a driver would, then tell the parser
    the line went quiet; return frames, the leftover buffer and the total consumed."""
    buf = bytearray()
    frames: list[TiFrame] = []
    consumed_total = 0
    pieces = [data] if chunks is None else chunks
    for i, piece in enumerate(list(pieces) + [b""]):
        buf += piece
        consumed, got = parser.feed(buf, quiet=i == len(pieces))
        assert 0 <= consumed <= len(buf)
        del buf[:consumed]
        consumed_total += consumed
        frames += got
        assert len(buf) < parser.max_frame_bytes + 7
    # Every consumed byte is either in an accepted frame or counted as dropped.
    assert parser.stats.dropped_bytes + sum(f.total_packet_len for f in frames) == consumed_total
    return frames, buf, consumed_total


def frame_summary(f: TiFrame) -> tuple:
    return (f.frame_number, f.version, f.platform, f.subframe, f.num_tlvs, f.tlv_types, f.points.tobytes())


# ----------------------------------------------------------------------------- golden captures

# Capture 1, written out byte by byte from the vendor structs (see captures/README.md).
IWR6843_TWO_POINTS = bytes.fromhex(
    # MmwDemo_output_message_header
    "0201040306050807"  # magicWord 0x0102 0x0304 0x0506 0x0708
    "04000503"  # version 0x03050004 = SDK 3.5.0.4
    "80000000"  # totalPacketLen 128
    "43680a00"  # platform 0xA6843
    "d2040000"  # frameNumber 1234
    "78563412"  # timeCpuCycles 0x12345678
    "02000000"  # numDetectedObj 2
    "03000000"  # numTLVs 3
    "00000000"  # subFrameNumber 0
    # TLV 1, 32 bytes: DPIF_PointCloudCartesian x2
    "01000000" "20000000"
    "0000c03f" "00002041" "000080be" "000020c0"  # x 1.5, y 10.0, z -0.25, v -2.5
    "000040c0" "0000a441" "0000803f" "0000403f"  # x -3.0, y 20.5, z 1.0, v 0.75
    # TLV 7, 8 bytes: DPIF_PointCloudSideInfo x2 (int16, 0.1 dB)
    "07000000" "08000000"
    "9900" "9001"  # snr 153 (15.3 dB), noise 400 (40.0 dB)
    "f4ff" "8101"  # snr -12 (-1.2 dB), noise 385 (38.5 dB)
    # TLV 6, 24 bytes: MmwDemo_output_message_stats
    "06000000" "18000000"
    "b0040000" "5e010000" "e87a0100" "0c000000" "1e000000" "08000000"
    # 40 + 40 + 16 + 32 = 128: already a multiple of 32, no padding
)


def build_captures() -> dict[str, bytes]:
    """The bytes of every file in captures/ti_mmwave, rebuilt from the layout."""
    stats_payload = struct.pack("<6I", 1200, 350, 97000, 12, 30, 8)
    two_points = frame(
        [
            points_tlv([(1.5, 10.0, -0.25, -2.5), (-3.0, 20.5, 1.0, 0.75)]),
            side_tlv([(153, 400), (-12, 385)]),
            tlv(6, stats_payload),
        ],
        num_obj=2,
        frame_number=1234,
        cpu=0x12345678,
    )
    assert two_points == IWR6843_TWO_POINTS
    # SDK 3.x with guiMonitor detectedObjects 1 and no detection: TLV 1 of length 0.
    empty_points = frame([tlv(1, b"")], frame_number=1235, cpu=0x12500000)
    no_tlvs = frame([], frame_number=7, cpu=1000, pad=0x00)
    awr1843 = frame(
        [
            points_tlv([(0.0, 5.0, 0.0, 0.0), (2.0, 2.0, 1.0, 3.25), (-4.5, 120.0, 7.75, -12.5)]),
            tlv(2, struct.pack("<8H", *[512 * (i + 1) for i in range(8)])),
            tlv(1000, bytes(range(12))),  # not a TI SDK 3.x type: skipped by length
        ],
        num_obj=3,
        platform=0xA1843,
        frame_number=99,
        cpu=5,
        subframe=1,
    )
    garbage = bytes([0xFF, 0x00, 0x41, 0x54, 0x5A, 0x0D, 0x0A, 0x2B, 0x2B, 0x2B, 0x10, 0x20, 0x30])
    stream = garbage + two_points + awr1843[:70] + empty_points + b"\x0d\x0a\x4f\x4b\x0a"
    # SDK 2.1 on an IWR1443: 36-byte header (no subFrameNumber), objects TLV in Q9, stats;
    # then a frame without detections (SDK 2.x sends no TLV 1 then).
    objects = [(100, -4, 5000, 512, 5120, -128), (200, 3, 1200, -1536, 10496, 512)]
    sdk2_points = tlv(1, struct.pack("<2H", 2, 9) + b"".join(struct.pack("<HhHhhh", *o) for o in objects))
    iwr1443 = sdk2_frame([sdk2_points, tlv(6, stats_payload)], num_obj=2, frame_number=7, cpu=0x00BC614E)
    iwr1443 += sdk2_frame([tlv(6, stats_payload)], frame_number=8, cpu=0x00C65D40)
    return {
        "iwr1443_sdk2_1_objects_then_none.bin": iwr1443,
        "iwr6843_two_points.bin": two_points,
        "iwr6843_empty_points_tlv.bin": empty_points,
        "iwr6843_no_tlvs.bin": no_tlvs,
        "awr1843_points_range_profile_unknown_tlv.bin": awr1843,
        "stream_garbage_truncated.bin": stream,
    }


def is_recording(capture: Path) -> bool:
    """Real device recordings carry their origin in the golden; the others are built here."""
    return "origin" in json.loads(capture.with_suffix(".json").read_text())


def test_capture_files_are_the_documented_bytes():
    built = build_captures()
    on_disk = {p.name: p.read_bytes() for p in CAPTURES.glob("*.bin") if not is_recording(p)}
    assert set(on_disk) == set(built)
    for name, data in built.items():
        assert on_disk[name] == data, name


@pytest.mark.parametrize("capture", sorted(p.name for p in CAPTURES.glob("*.bin")))
def test_golden_capture_decodes_to_expected(capture):
    data = (CAPTURES / capture).read_bytes()
    expected = json.loads((CAPTURES / capture).with_suffix(".json").read_text())
    parser = TiFrameParser(doppler_resolution_mps=expected.get("doppler_resolution_mps"))
    frames, rest, consumed = feed_all(parser, data)
    assert consumed == expected["consumed"]
    check_frames(frames, expected["frames"], capture)
    stats = parser.stats
    for key, value in expected["stats"].items():
        assert getattr(stats, key) == value, key


def check_frames(frames: list[TiFrame], expected: list[dict], label: str) -> None:
    """Frames equal to a golden's: every header field and every point bit for bit (float32).
    Points are objects keyed by TI_POINT_DTYPE field or lists in its field order."""
    assert len(frames) == len(expected), label
    for got, want in zip(frames, expected):
        assert got.version == int(want["version"], 16)
        assert got.platform == int(want["platform"], 16)
        assert got.frame_number == want["frame_number"]
        assert got.time_cpu_cycles == want["time_cpu_cycles"]
        assert got.subframe == want["subframe"]
        assert got.num_tlvs == want["num_tlvs"]
        assert got.num_detected_obj == want["num_detected_obj"]
        assert got.total_packet_len == want["total_packet_len"]
        assert got.tlv_types == tuple(want["tlv_types"])
        assert got.header_len == want.get("header_len", 40)
        assert got.xyz_q_format == want.get("xyz_q_format")
        if "objects" in want:
            assert got.objects.tolist() == [tuple(o) for o in want["objects"]], label
        assert got.points.dtype == TI_POINT_DTYPE
        assert len(got.points) == len(want["points"])
        for i, field in enumerate(TI_POINT_DTYPE.names):
            values = [p[field] if isinstance(p, dict) else p[i] for p in want["points"]]
            column = np.array([np.nan if v is None else v for v in values], dtype=np.float32)
            assert_array_equal(got.points[field], column, err_msg=f"{label}: frame {got.frame_number}: {field}")


@pytest.mark.parametrize("capture", sorted(p.name for p in CAPTURES.glob("*.bin") if is_recording(p)))
def test_real_recording_goldens_are_the_independent_decoders_output(capture):
    """The goldens of real recordings are what tests/ti_reference.py (plain struct, TI's
    layouts, nothing shared with the parser) says, apart from the notes around them."""
    expected = json.loads((CAPTURES / capture).with_suffix(".json").read_text())
    for key in ("description", "device", "sdk", "origin"):
        assert expected[key], key
    assert set(expected["origin"]) >= {"repo", "path", "commit", "licence", "changes"}
    data = (CAPTURES / capture).read_bytes()
    if "refused" in expected:
        # Not the demo's layout (the reference would read it as frames): every magic in
        # the file is a refused candidate, and only the last 7 bytes may stay unread.
        assert expected["frames"] == [] and expected["stats"]["frames"] == 0
        assert expected["stats"]["bad_frames"] == data.count(ti_reference.MAGIC)
        assert expected["consumed"] == expected["stats"]["dropped_bytes"] == len(data) - 7
        return
    reference = ti_reference.decode(data, expected.get("doppler_resolution_mps"))
    assert {k: expected[k] for k in reference} == json.loads(json.dumps(reference))
    if "chirp_config" in expected:
        lines = load_chirp_config(CAPTURES / expected["chirp_config"])
        assert doppler_resolution_mps(lines) == expected["doppler_resolution_mps"]


def test_header_dtype_reads_the_capture_header():
    hdr = np.frombuffer(IWR6843_TWO_POINTS[:40], dtype=HEADER_DTYPE)[0]
    assert hdr["magic"] == MAGIC
    assert (int(hdr["version"]), int(hdr["total_packet_len"]), int(hdr["platform"])) == (0x03050004, 128, 0xA6843)
    assert (int(hdr["frame_number"]), int(hdr["num_detected_obj"]), int(hdr["num_tlvs"])) == (1234, 2, 3)


def test_wire_dtypes_match_vendor_structs():
    assert MAGIC == SYNC
    assert HEADER_DTYPE.itemsize == 40
    assert POINT_DTYPE.itemsize == 16 and all(POINT_DTYPE[n] == np.dtype("<f4") for n in POINT_DTYPE.names)
    assert SIDE_INFO_DTYPE.itemsize == 4 and SIDE_INFO_DTYPE["snr"] == np.dtype("<i2")


# ----------------------------------------------------------------------------- splitting


def test_split_at_every_byte_boundary_feeds_identically():
    stream = b"\x00\x07junk" + good(1, 3) + IWR6843_TWO_POINTS + good(3, 0) + b"\x02\x01\x04" + good(4, 1) + SYNC[:5]
    whole = TiFrameParser()
    ref_frames, ref_rest, ref_consumed = feed_all(whole, stream)
    assert [f.frame_number for f in ref_frames] == [1, 1234, 3, 4]
    ref = [frame_summary(f) for f in ref_frames]
    for cut in range(1, len(stream)):
        parser = TiFrameParser()
        frames, rest, consumed = feed_all(parser, stream, [stream[:cut], stream[cut:]])
        assert [frame_summary(f) for f in frames] == ref, cut
        assert parser.stats == whole.stats, cut
        assert bytes(rest) == bytes(ref_rest)
    parser = TiFrameParser()
    frames, rest, _ = feed_all(parser, stream, [stream[i : i + 1] for i in range(len(stream))])
    assert [frame_summary(f) for f in frames] == ref
    assert parser.stats == whole.stats


def test_memoryview_and_bytes_inputs():
    data = good(5) + good(6)
    for buf in (memoryview(data), bytes(data), bytearray(data)):
        consumed, frames = TiFrameParser().feed(buf)
        assert consumed == len(data)
        assert [f.frame_number for f in frames] == [5, 6]


def test_incomplete_frame_consumes_nothing_until_complete():
    data = good(8, 4)
    parser = TiFrameParser()
    for cut in (1, 8, 39, 40, 60, len(data) - 1):
        assert parser.feed(data[:cut]) == (0, [])
    consumed, frames = parser.feed(data)
    assert consumed == len(data) and len(frames) == 1
    assert parser.stats.dropped_bytes == 0 and parser.stats.resyncs == 0


# ----------------------------------------------------------------------------- resync


def test_garbage_before_and_between_frames_resynchronises():
    parser = TiFrameParser()
    g1, g2 = b"\x11" * 37, bytes(range(3, 200))
    frames, rest, consumed = feed_all(parser, g1 + good(1) + g2 + good(2) + good(3))
    assert [f.frame_number for f in frames] == [1, 2, 3]
    s = parser.stats
    assert (s.frames, s.bad_frames, s.resyncs, s.dropped_bytes) == (3, 0, 2, len(g1) + len(g2))
    assert consumed == len(g1) + len(g2) + 3 * len(good(1)) and not rest


def test_no_magic_keeps_only_the_last_seven_bytes():
    parser = TiFrameParser()
    data = bytes(1000) + SYNC[:7]
    consumed, frames = parser.feed(data)
    assert (consumed, frames) == (1000, [])
    assert parser.stats.dropped_bytes == 1000 and parser.stats.resyncs == 1
    # The kept bytes complete the magic of the next frame.
    consumed, frames = parser.feed(SYNC[:7] + good(9)[7:])
    assert [f.frame_number for f in frames] == [9] and parser.stats.bad_frames == 0


def test_truncated_frame_then_good_frame():
    cut = good(1, 4)[:100]  # ends inside TLV 1
    parser = TiFrameParser()
    frames, rest, _ = feed_all(parser, cut + good(2) + good(3))
    assert [f.frame_number for f in frames] == [2, 3]
    assert parser.stats.bad_frames == 1 and parser.stats.resyncs == 1
    assert parser.stats.dropped_bytes == len(cut)


def test_false_magic_is_rejected_without_waiting_for_its_claimed_length():
    # Claims 60000 bytes, but its first TLV already runs past that: reject at once.
    liar = SYNC + struct.pack("<8I", V3, 60000 - 60000 % 32, 0xA6843, 1, 0, 0, 1, 0) + struct.pack("<II", 2, 70000)
    parser = TiFrameParser()
    consumed, frames = parser.feed(liar + good(2))
    assert [f.frame_number for f in frames] == [2]
    assert parser.stats.bad_frames == 1 and "runs past" in parser.stats.last_error


def _bad_frames():
    pts = points_tlv([(1.0, 2.0, 3.0, 0.0)])
    return {
        "total not multiple of 32": frame([pts], num_obj=1, total=72),
        "total below 64": frame([], total=32),
        "total above max_frame_bytes": frame([pts], num_obj=1, total=65536 + 32),
        "TLV runs past packet": frame([tlv(2, bytes(20), length=200)]),
        "padding of 32 bytes or more": frame([pts], num_obj=1, total=128),
        "numTLVs larger than present": frame([pts], num_obj=1, num_tlvs=3),
        "numTLVs cannot fit": frame([], num_tlvs=10),
        "TLV 1 length mismatch": frame([points_tlv([(1.0, 2.0, 3.0, 0.0)] * 2)], num_obj=3),
        "TLV 7 length mismatch": frame([pts, side_tlv([(1, 2), (3, 4)])], num_obj=1),
        "two TLV 1": frame([pts, pts], num_obj=1),
        "subframe out of range": frame([pts], num_obj=1, subframe=4),
        "stats TLV not 24 bytes": frame([pts, tlv(6, bytes(28))], num_obj=1),
        "temperature TLV not 28 bytes": frame([pts, tlv(9, bytes(24))], num_obj=1),
        "range profile of odd length": frame([pts, tlv(2, bytes(15))], num_obj=1),
        "two range profiles": frame([pts, tlv(2, bytes(16)), tlv(2, bytes(16))], num_obj=1),
    }


@pytest.mark.parametrize("case", sorted(_bad_frames()))
def test_inconsistent_frames_are_dropped_and_counted(case):
    bad = _bad_frames()[case]
    parser = TiFrameParser()
    frames, rest, _ = feed_all(parser, bad + good(2) + good(3))
    assert [f.frame_number for f in frames] == [2, 3], case
    s = parser.stats
    assert (s.bad_frames, s.resyncs, s.dropped_bytes) == (1, 1, len(bad)), case
    assert s.last_error


@pytest.mark.parametrize("version", [0x01020000, 0x04000000, 0x00000000, 0x7F000000])
def test_wrong_version_dropped_with_reason(version):
    old = frame([points_tlv([(1.0, 2.0, 3.0, 0.0)])], num_obj=1, version=version)
    parser = TiFrameParser()
    frames, rest, _ = feed_all(parser, old + good(2))
    assert [f.frame_number for f in frames] == [2]
    s = parser.stats
    assert (s.bad_frames, s.unsupported_version) == (1, 1)
    assert f"unsupported version 0x{version:08x}" in s.last_error


def test_old_sdk_firmware_is_reported_once(caplog):
    parser = TiFrameParser()
    with caplog.at_level("WARNING", logger="towerd.drivers.ti_mmwave.protocol"):
        feed_all(parser, frame([], version=0x01020000) * 3 + frame([], version=0x7F000000))
    warnings = [r for r in caplog.records if r.levelname == "WARNING"]
    assert len(warnings) == 1 and "SDK 1.2 frames (version 0x01020000)" in warnings[0].getMessage()
    assert parser.stats.unsupported_version == 4


def test_sdk2_from_a_platform_without_a_documented_sdk2_layout_is_refused(caplog):
    parser = TiFrameParser()
    with caplog.at_level("WARNING", logger="towerd.drivers.ti_mmwave.protocol"):
        frames, _, _ = feed_all(parser, frame([], version=0x02010004, platform=0xA6843) * 2 + good(2))
    assert [f.frame_number for f in frames] == [2]
    assert parser.stats.unsupported_version == 2
    assert "platform 0xA6843" in parser.stats.last_error and "only the xWR14xx" in parser.stats.last_error
    assert len([r for r in caplog.records if r.levelname == "WARNING"]) == 1


def test_other_sdk3_minor_versions_accepted():
    for version in (0x03000000, 0x03020001, 0x03060000):
        consumed, frames = TiFrameParser().feed(frame([], version=version))
        assert len(frames) == 1 and frames[0].version == version


# ----------------------------------------------------------------------------- content


def test_unknown_tlv_skipped_and_counted():
    data = frame(
        [tlv(1234, b"\xaa" * 13), points_tlv([(1.0, 2.0, 3.0, 4.0)]), tlv(5, bytes(64)), tlv(77, b"")], num_obj=1
    )
    parser = TiFrameParser()
    consumed, frames = parser.feed(data)
    assert consumed == len(data) and len(frames) == 1
    assert frames[0].tlv_types == (1234, 1, 5, 77)
    assert_array_equal(frames[0].points[["x_m", "y_m", "z_m", "doppler_mps"]].tolist(), [(1.0, 2.0, 3.0, 4.0)])
    assert parser.stats.unknown_tlvs == 2 and parser.stats.bad_frames == 0


def test_empty_frame_without_tlvs_has_no_points():
    consumed, frames = TiFrameParser().feed(frame([], frame_number=42))
    assert consumed == 64
    (f,) = frames
    assert f.points.shape == (0,) and f.points.dtype == TI_POINT_DTYPE
    assert f.tlv_types == () and f.num_tlvs == 0 and f.frame_number == 42


def test_points_count_without_points_tlv_gives_no_points():
    # guiMonitor detectedObjects 0: numDetectedObj is set but no TLV 1 is sent.
    consumed, frames = TiFrameParser().feed(frame([tlv(6, bytes(24))], num_obj=5))
    assert frames[0].num_detected_obj == 5 and len(frames[0].points) == 0


def test_signed_negative_snr_decodes_negative():
    data = frame([points_tlv([(0.0, 1.0, 0.0, 0.0)] * 3), side_tlv([(-5, -300), (-32768, 0), (32767, 1)])], num_obj=3)
    (f,) = TiFrameParser().feed(data)[1]
    np.testing.assert_allclose(f.points["snr_db"], [-0.5, -3276.8, 3276.7], rtol=1e-6)
    np.testing.assert_allclose(f.points["noise_db"], [-30.0, 0.0, 0.1], rtol=1e-6)


def test_snr_nan_without_side_info():
    (f,) = TiFrameParser().feed(frame([points_tlv([(0.0, 1.0, 0.0, 0.0)])], num_obj=1))[1]
    assert np.isnan(f.points["snr_db"]).all() and np.isnan(f.points["noise_db"]).all()


def test_padding_content_is_not_checked():
    for pad in (0x00, 0x0F, 0xFF):
        assert len(TiFrameParser().feed(good(1, 1)[:-4] + bytes([pad]) * 4)[1]) == 1
    # A last byte that could begin a magic: the frame waits for the next bytes (a frame
    # cut short there would be followed by a magic), then is accepted all the same.
    parser = TiFrameParser()
    held = good(1, 1)[:-4] + b"\x02" * 4
    assert parser.feed(held) == (0, [])
    consumed, frames = parser.feed(held + good(2))
    assert [f.frame_number for f in frames] == [1, 2] and parser.stats.bad_frames == 0


# ----------------------------------------------------------------------------- fuzz


def test_random_bytes_never_raise_and_buffer_stays_bounded():
    rng = np.random.default_rng(20240611)
    parser = TiFrameParser(max_frame_bytes=4096)
    pieces = []
    for _ in range(400):
        kind = rng.integers(0, 4)
        if kind == 0:
            pieces.append(rng.integers(0, 256, rng.integers(1, 3000), dtype=np.uint8).tobytes())
        elif kind == 1:
            # A magic with a random but plausible header: exercises the deep paths.
            head = struct.pack(
                "<8I",
                int(rng.choice([V3, 0x02000000, int(rng.integers(0, 2**32))])),
                int(rng.choice([64, 96, 128, 4096, 8192, int(rng.integers(0, 2**32))])),
                0xA6843,
                int(rng.integers(0, 2**32)),
                0,
                int(rng.integers(0, 8)),
                int(rng.integers(0, 6)),
                int(rng.integers(0, 5)),
            )
            pieces.append(SYNC + head + rng.integers(0, 256, rng.integers(0, 200), dtype=np.uint8).tobytes())
        else:
            pieces.append(good(int(rng.integers(0, 1000)), int(rng.integers(0, 5))))
    data = b"".join(pieces)
    cuts = np.sort(rng.integers(0, len(data), 3000))
    chunks = [data[a:b] for a, b in zip(np.r_[0, cuts], np.r_[cuts, len(data)])]
    frames, rest, consumed = feed_all(parser, data, chunks)
    assert consumed + len(rest) == len(data)
    assert parser.stats.frames == len(frames) >= sum(1 for p in pieces if p[:8] == SYNC) // 3


def test_corrupted_real_frames_never_raise_and_good_frames_survive():
    rng = np.random.default_rng(7)
    pieces, corrupted = [], set()
    for k in range(300):
        f = bytearray(good(k, int(rng.integers(0, 6))))
        action = rng.integers(0, 3)
        if action == 1:
            f[int(rng.integers(0, len(f)))] ^= int(rng.integers(1, 256))
            corrupted.add(k)
        elif action == 2:
            f = f[: int(rng.integers(1, len(f)))]
            corrupted.add(k)
        pieces.append(bytes(f))
    parser = TiFrameParser()
    data = b"".join(pieces)
    chunks = [data[i : i + 97] for i in range(0, len(data), 97)]
    frames, rest, consumed = feed_all(parser, data, chunks)
    got = {f.frame_number for f in frames}
    # A truncated frame may swallow its successor's first bytes as padding, so only
    # frames whose predecessor was intact are guaranteed.
    must = {k for k in range(1, 300) if k not in corrupted and k - 1 not in corrupted}
    assert must <= got
    assert parser.stats.bad_frames > 0


def test_megabytes_without_magic_are_skipped_quickly():
    data = np.random.default_rng(3).integers(0, 256, 4_000_000, dtype=np.uint8).tobytes()
    parser = TiFrameParser()
    t0 = time.perf_counter()
    consumed, frames = parser.feed(data)
    elapsed = time.perf_counter() - t0
    assert data.find(SYNC) < 0
    assert consumed == len(data) - 7 and frames == []
    assert elapsed < 0.5
