"""An independent, plain ``struct`` decoder of TI mmWave data-UART recordings.

Written from TI's layouts (SDK 3.x ``mmw_output.h`` / ``dpif_pointcloud.h``, SDK 2.x
``mmw_output.h`` and the xWR14xx/xWR16xx demos' ``MmwDemo_transmitProcessedOutput``) the way
TI's own example parser (``parser_mmw_demo.py``) reads a file: frame after frame from the
magic word, nothing shared with ``towerd.drivers.ti_mmwave.protocol``. It is meant for
clean recordings (frames back to back, possibly a partial frame at each end) and is what
wrote the golden ``.json`` of the real recordings in tests/captures/ti_mmwave; the tests
check that it still gives exactly those files, and the conformance suite that the parser
gives them too.

    python tests/ti_reference.py tests/captures/ti_mmwave/NAME.bin [--doppler-resolution M]

prints the golden JSON of a recording (to review, then keep beside it).
"""

from __future__ import annotations

import argparse
import json
import struct
import sys
from pathlib import Path

import numpy as np

MAGIC = bytes([2, 1, 4, 3, 6, 5, 8, 7])


def f32(value: float) -> float:
    """A float32 value as the shortest decimal that gives it back (JSON keeps it exact)."""
    return float(np.format_float_positional(np.float32(value), unique=True, trim="-"))


def decode(data: bytes, doppler_resolution_mps: float | None = None) -> dict:
    """Frames, bytes consumed and counters of a clean recording (see the module doc)."""
    frames = []
    pos = data.find(MAGIC)
    first = pos
    consumed = len(data) - 7 if pos < 0 else pos
    while pos >= 0:
        if len(data) - pos < 44:
            break
        version, total, platform = struct.unpack_from("<3I", data, pos + 8)
        header_len = 36 if (version >> 24 == 2 and platform == 0xA1443) else 40
        frame_number, cycles, num_obj, num_tlvs = struct.unpack_from("<4I", data, pos + 20)
        subframe = struct.unpack_from("<I", data, pos + 36)[0] if header_len == 40 else 0
        if pos + total > len(data):
            break  # cut off by the end of the recording
        off = pos + header_len
        frame = {"version": f"0x{version:08X}", "platform": f"0x{platform:08X}", "frame_number": frame_number,
                 "time_cpu_cycles": cycles, "subframe": subframe, "num_tlvs": num_tlvs, "num_detected_obj": num_obj,
                 "total_packet_len": total, "header_len": header_len, "tlv_types": [], "points": []}
        side = None
        for _ in range(num_tlvs):
            tlv_type, length = struct.unpack_from("<2I", data, off)
            payload = data[off + 8 : off + 8 + length]
            frame["tlv_types"].append(tlv_type)
            if tlv_type == 1 and version >> 24 == 3:
                for i in range(num_obj):
                    x, y, z, v = struct.unpack_from("<4f", payload, 16 * i)
                    frame["points"].append([f32(x), f32(y), f32(z), f32(v), None, None])
            elif tlv_type == 1:
                count, q = struct.unpack_from("<2H", payload, 0)
                frame["xyz_q_format"] = q
                frame["objects"] = []
                for i in range(count):
                    r, d, peak, x, y, z = struct.unpack_from("<HhHhhh", payload, 4 + 12 * i)
                    frame["objects"].append([r, d, peak, x, y, z])
                    v = None if doppler_resolution_mps is None else f32(d * doppler_resolution_mps)
                    frame["points"].append([f32(x / 2**q), f32(y / 2**q), f32(z / 2**q), v, None, None])
            elif tlv_type == 7 and version >> 24 == 3:
                side = [struct.unpack_from("<hh", payload, 4 * i) for i in range(num_obj)]
            off += 8 + length
        if side is not None:
            for point, (snr, noise) in zip(frame["points"], side):
                point[4] = f32(np.float32(snr) / np.float32(10))
                point[5] = f32(np.float32(noise) / np.float32(10))
        frames.append(frame)
        pos += total
        consumed = pos
        if data[pos : pos + 8] != MAGIC:
            nxt = data.find(MAGIC, pos)
            consumed = max(pos, len(data) - 7) if nxt < 0 else nxt
            pos = nxt
    dropped = consumed - sum(f["total_packet_len"] for f in frames)
    return {
        "consumed": consumed,
        "frames": frames,
        "stats": {"frames": len(frames), "bad_frames": 0, "resyncs": int(first != 0) + int(dropped > max(first, 0)),
                  "dropped_bytes": dropped, "unknown_tlvs": 0, "unsupported_version": 0},
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("capture")
    ap.add_argument("--doppler-resolution", type=float)
    args = ap.parse_args()
    out = decode(Path(args.capture).read_bytes(), args.doppler_resolution)
    print(dump_golden(out), end="")
    return 0



def dump_golden(obj: dict) -> str:
    """JSON with one frame per line: reviewable in a diff, a few lines per recording."""
    lines = ["{"]
    keys = list(obj)
    for i, key in enumerate(keys):
        comma = "," if i < len(keys) - 1 else ""
        if key == "frames":
            frames = obj[key]
            lines.append(' "frames": [')
            for j, frame in enumerate(frames):
                lines.append("  " + json.dumps(frame, separators=(",", ":")) + ("," if j < len(frames) - 1 else ""))
            lines.append(" ]" + comma)
        else:
            lines.append(f" {json.dumps(key)}: {json.dumps(obj[key])}{comma}")
    lines.append("}")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
