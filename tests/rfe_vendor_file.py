"""RF Explorer for Windows ``.rfe`` sweep files -> the device's serial stream.

The vendor's PC client saves sweeps in its own binary file (``RFESweepDataCollection.cs``
``SaveFile``/``LoadFile`` in arocholl/rfexplorer, GPL-3): a .NET ``BinaryWriter`` string
header ``"RFExplorer PC Client - Format v001"`` (or v002), start and step in MHz
(float64), the sweep count (u16 in v001, u32 after), the points per sweep (u16), in v002
the configuration and model texts, then per sweep (v002: its capture time as an int32
length and a string) one float64 dBm per point. No serial capture of a real unit is
published, so ``python tests/rfe_vendor_file.py VENDOR_REPO_DIR`` re-encodes the
vendor's sample recordings into what the device sends after ``#\\x04C0``: a ``#C2-M:``
line when the file names the model, a ``#C2-F:`` line, and one ``$S`` sweep per
recorded sweep (amplitude byte b = -2 dBm: the recorded values are the device's
half-dB steps, so the re-encoding is exact). It writes each ``.bin`` and its expected
decoding ``.json`` into tests/captures/rfexplorer/.
"""

from __future__ import annotations

import json
import re
import statistics
import struct
import subprocess
import sys
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import numpy as np

OUT = Path(__file__).parent / "captures" / "rfexplorer"
REPO = "arocholl/rfexplorer"
COMMIT = "325612c82eb44f528297c42fa2c1749d7a1cf375"
LICENCE = "GPL-3.0 (RFExplorerClient/License-GPL.txt of the same repository)"


@dataclass(frozen=True)
class Recording:
    name: str  # capture file stem
    path: str  # in the vendor repository
    what: str
    min_khz: int  # module limits for the #C2-F: line (from the file's model text, else assumed)
    max_khz: int
    max_span_khz: int
    limits_note: str
    period_s: float | None = None  # None: from the file's capture times


RECORDINGS = (
    Recording("real_wifi_2g4", "RFExplorerClient/Samples/WIFI_activity.rfe",
              "802.11 activity in the 2.4 GHz band, 2400-2484 MHz", 2350000, 2550000, 100000,
              "file v001 names no model: 2.4G module limits assumed (2350-2550 MHz, span 100 MHz)", 0.1),
    Recording("real_ism433_ook", "RFExplorerClient/Samples/Standard_ISM_433Mhz_OOK_activity.rfe",
              "433 MHz ISM OOK remote-control activity, 430-440 MHz", 240000, 960000, 100000,
              "file v001 names no model: WSUB1G limits assumed (240-960 MHz, span 100 MHz)", 0.1),
    Recording("real_dtv_ch55", "RFExplorerClient/Samples/Digital_TV_Channel_55.rfe",
              "digital broadcast TV, UHF channel 55, 845-855 MHz", 240000, 960000, 100000,
              "file v001 names no model: WSUB1G limits assumed (240-960 MHz, span 100 MHz)", 0.1),
    Recording("real_fm_93m9", "RFExplorerClient/Samples/Antenna_FM_93.9MHz.rfe",
              "broadcast FM station at 93.9 MHz, 1 MHz span", 15000, 2700000, 600000,
              "limits from the file's model text (WSUB3G expansion active, 15-2700 MHz); max span assumed"),
    Recording("real_siggen_cw_1400", "RFExplorerClient/Samples/SignalGenerator_CW_1400MHz.rfe",
              "signal generator, CW carrier at 1400 MHz, 50 MHz span", 15000, 2700000, 600000,
              "limits from the file's model text (WSUB3G expansion active, 15-2700 MHz); max span assumed"),
    Recording("real_siggen_fm_1400",
              "RFExplorerClient/Samples/SignalGenerator_CW_1400MHZ_FM_100KHz_Deviation_growing_1MHz-8MHz.rfe",
              "signal generator at 1400 MHz, FM with deviation growing 1 to 8 MHz, 22.4 MHz span",
              15000, 2700000, 600000,
              "limits from the file's model text (WSUB3G expansion active, 15-2700 MHz); max span assumed"),
)


def _string(b: bytes, p: int) -> tuple[str, int]:
    """.NET BinaryReader.ReadString: 7-bit encoded length, UTF-8."""
    n = shift = 0
    while True:
        c = b[p]
        p += 1
        n |= (c & 0x7F) << shift
        shift += 7
        if not c & 0x80:
            break
    return b[p:p + n].decode("utf-8"), p + n


def read_rfe(b: bytes) -> dict:
    """Decode a .rfe file (formats v001 and v002) as the vendor's LoadFile does."""
    header, p = _string(b, 0)
    if header not in ("RFExplorer PC Client - Format v001", "RFExplorer PC Client - Format v002"):
        raise ValueError(f"unknown .rfe header {header!r}")
    v1 = header.endswith("001")
    start, step = struct.unpack_from("<dd", b, p)
    p += 16
    (count,) = struct.unpack_from("<H" if v1 else "<I", b, p)
    p += 2 if v1 else 4
    (points,) = struct.unpack_from("<H", b, p)
    p += 2
    config = model = ""
    if not v1:
        config, p = _string(b, p)
        model, p = _string(b, p)
    times, sweeps = [], []
    for _ in range(count):
        if not v1:
            p += 4
            t, p = _string(b, p)
            times.append(t)
        sweeps.append(np.frombuffer(b, "<f8", points, p).copy())
        p += 8 * points
    if p != len(b):
        raise ValueError(f"{len(b) - p} bytes left after {count} sweeps")
    return {"header": header, "start_mhz": start, "step_mhz": step, "config": config, "model": model,
            "times": times, "power_dbm": np.array(sweeps)}


def _seconds(t: str) -> float:
    m = re.match(r"(.*T\d\d:\d\d:\d\d)(\.\d+)?(.*)", t)
    frac = float(m.group(2) or 0.0)
    return datetime.fromisoformat(m.group(1) + m.group(3)).timestamp() + frac


def encode(rec: Recording, f: dict) -> tuple[bytes, dict]:
    """(serial bytes, expected decoding) of one recording."""
    power = f["power_dbm"]
    amps = -2.0 * power
    if not (np.all(amps == np.rint(amps)) and amps.min() >= 0 and amps.max() <= 255):
        raise ValueError(f"{rec.name}: amplitudes are not the device's half-dB steps in 0..-127.5 dBm")
    start_khz = int(round(f["start_mhz"] * 1000))
    step_hz = int(round(f["step_mhz"] * 1e6))
    n_sweeps, points = power.shape
    rbw = re.search(r"RBW:(\d+)KHz", f["config"])
    offset = re.search(r"Amp Offset:(-?\d+)dBm", f["config"])
    fields = [f"{start_khz:07d}", f"{step_hz:07d}", "-010", "-120", f"{points:04d}",
              "1" if "(ACTIVE)" in f["model"] else "0", "000",
              f"{rec.min_khz:07d}", f"{rec.max_khz:07d}", f"{rec.max_span_khz:07d}"]
    if rbw:  # firmware 1.11 sends RBW and offset, not the calculator mode (from 1.12)
        fields += [f"{int(rbw.group(1)):05d}", f"{int(offset.group(1)) if offset else 0:04d}"]
    config = "#C2-F:" + ",".join(fields)
    head = b""
    messages: list[dict] = []
    fw = re.search(r"Firmware v(\d\d\.\d\d)", f["model"])
    if fw:  # the file names the model: WSUB1G main (3) with a WSUB3G expansion (5)
        line = f"#C2-M:003,005,{fw.group(1)}"
        head += line.encode("ascii") + b"\r\n"
        messages.append({"type": "model", "main_model": 3, "expansion_model": 5, "firmware": fw.group(1)})
    head += config.encode("ascii") + b"\r\n"
    messages.append({"type": "config", "start_khz": start_khz, "step_hz": step_hz, "amp_top_dbm": -10,
                     "amp_bottom_dbm": -120, "points": points, "expansion_active": fields[5] == "1", "mode": 0,
                     "min_khz": rec.min_khz, "max_khz": rec.max_khz, "max_span_khz": rec.max_span_khz,
                     "rbw_khz": int(rbw.group(1)) if rbw else None,
                     "offset_db": int(offset.group(1)) if offset else 0, "calculator": None})
    body = bytearray()
    for row in amps.astype(np.uint8):
        body += b"$S" + bytes([points]) + row.tobytes() + b"\r\n"
    for row in power.astype(np.float32):
        messages.append({"type": "sweep", "variant": "$S", "start_mhz": start_khz / 1e3, "step_mhz": step_hz / 1e6,
                         "power_dbm_head": row[:16].tolist(), "power_dbm_tail": row[-16:].tolist(),
                         "power_dbm_sum": float(row.astype(np.float64).sum()), "points": points})
    data = head + bytes(body)
    if f["times"]:
        t = [_seconds(x) for x in f["times"]]
        period = round(statistics.median(np.diff(t)), 3)
        timing = f"median interval of the file's capture times ({n_sweeps} sweeps over {t[-1] - t[0]:.1f} s)"
    else:
        period = rec.period_s
        timing = "the file (format v001) carries no times: assumed (10 sweeps/s, as the issue reproduced it)"
    expected = {
        "description": f"REAL RECORDING: {rec.what}; {n_sweeps} sweeps of {points} points, re-encoded from the "
                       f"vendor's .rfe sample into the serial stream",
        "origin": {"repository": REPO, "path": rec.path, "commit": COMMIT, "licence": LICENCE,
                   "recorded_with": f["model"] or "not stated (file format v001)",
                   "device_configuration": f["config"] or "not stated (file format v001)",
                   "changed": "re-encoded: model line (when the file names it), #C2-F: line (start/step from the "
                              "file; amplitude top/bottom -10/-120 assumed; " + rec.limits_note + "), one $S sweep "
                              "per recorded sweep, amplitude byte = -2 x dBm (exact)"},
        "sweep_period_s": period,
        "sweep_period_source": timing,
        "consumed": len(data),
        "messages": messages,
        "stats": {"frames": len(messages), "sweeps": n_sweeps, "configs": 1, "models": 1 if fw else 0,
                  "bad_frames": 0, "resyncs": 0, "dropped_bytes": 0},
    }
    return data, expected


def write_json(path: Path, expected: dict) -> None:
    """Indented, with one message per line (the sweep lists stay compact)."""
    top = {k: v for k, v in expected.items() if k != "messages"}
    text = json.dumps(top, indent=1)[:-2]
    lines = ",\n".join("  " + json.dumps(m, separators=(", ", ": ")) for m in expected["messages"])
    path.write_text(text + ',\n "messages": [\n' + lines + "\n ]\n}\n")


def main(repo_dir: str) -> None:
    for rec in RECORDINGS:
        raw = subprocess.run(["git", "-C", repo_dir, "show", f"{COMMIT}:{rec.path}"], check=True,
                             capture_output=True).stdout
        data, expected = encode(rec, read_rfe(raw))
        (OUT / f"{rec.name}.bin").write_bytes(data)
        write_json(OUT / f"{rec.name}.json", expected)
        print(f"{rec.name}: {len(data)} bytes, {expected['stats']['sweeps']} sweeps, "
              f"period {expected['sweep_period_s']} s")


if __name__ == "__main__":
    main(sys.argv[1])
