"""An independent decoder of NMEA 0183 radar recordings, built on pynmea2.

Sentences are framed and checksummed by pynmea2 (``pynmea2.parse(line, check=True)``);
the TTM/TLL fields are read from pynmea2's field list and converted to the golden's SI
units here (nautical mile 1852 m, kilometre 1000 m, statute mile 1609.344 m; knots and
the like per hour / 3600; TCPA minutes x 60; UTC hhmmss.ss -> seconds since midnight;
ddmm.mm -> degrees, south and west negative). Nothing is shared with
``towerd.drivers.nmea_radar.protocol``. It is meant for clean recordings (CR LF line
ends, every line one sentence, at most 100 characters, readable TTM/TLL fields; it
raises on anything else) and is what wrote the golden ``.json`` of the real recordings
in tests/captures/nmea_radar; ``tests/test_nmea_protocol.py`` checks that it still gives
exactly those files, and the conformance suite that the parser gives them too.

    python tests/nmea_reference.py tests/captures/nmea_radar/NAME.nmea

prints the golden JSON of a recording (to review, add ``description``, ``device`` and
``origin``, then keep beside it).

Goldens of recordings hold their targets compactly: ``columns`` (the parser's
TARGET_DTYPE field names) and one list of values per target in ``rows`` (``null`` = NaN).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

import pynmea2

COLUMNS = ("sentence", "talker", "target_number", "distance_m", "bearing_deg", "bearing_true", "speed_mps",
           "course_deg", "course_true", "cpa_m", "tcpa_s", "units", "name", "status", "reference", "utc_s",
           "acquisition", "latitude_deg", "longitude_deg")
METRES = {"N": 1852.0, "K": 1000.0, "S": 1609.344}
MAX_LINE = 100


def _number(text: str) -> float:
    """Empty -> NaN; anything unreadable raises (the recording is not clean)."""
    return math.nan if text == "" else float(text)


def _utc(text: str) -> float:
    if len(text) < 6 or not text[:6].isdigit():
        return math.nan
    h, m, s = int(text[:2]), int(text[2:4]), float(text[4:])
    return h * 3600.0 + m * 60.0 + s if h <= 23 and m <= 59 and s < 61.0 else math.nan


def _degrees(text: str, hemisphere: str, negative: str) -> float:
    head, _, _ = text.partition(".")
    degrees = int(head[:-2])
    value = degrees + float(text[len(head) - 2:]) / 60.0
    return -value if hemisphere == negative else value


def _ttm(talker: str, f: list[str]) -> dict:
    f = (f + [""] * 15)[:15]
    metres = METRES[f[9]]
    bearing, course = _number(f[2]), _number(f[5])
    return {"sentence": "TTM", "talker": talker, "target_number": int(f[0]), "distance_m": _number(f[1]) * metres,
            "bearing_deg": bearing % 360.0, "bearing_true": f[3] == "T",
            "speed_mps": _number(f[4]) * metres / 3600.0,
            "course_deg": course % 360.0 if f[6] in ("T", "R") else math.nan, "course_true": f[6] == "T",
            "cpa_m": _number(f[7]) * metres, "tcpa_s": _number(f[8]) * 60.0, "units": f[9], "name": f[10],
            "status": f[11], "reference": f[12] == "R", "utc_s": _utc(f[13]), "acquisition": f[14],
            "latitude_deg": math.nan, "longitude_deg": math.nan}


def _tll(talker: str, f: list[str]) -> dict:
    f = (f + [""] * 9)[:9]
    return {"sentence": "TLL", "talker": talker, "target_number": int(f[0]), "distance_m": math.nan,
            "bearing_deg": math.nan, "bearing_true": False, "speed_mps": math.nan, "course_deg": math.nan,
            "course_true": False, "cpa_m": math.nan, "tcpa_s": math.nan, "units": "", "name": f[5],
            "status": f[7], "reference": f[8] == "R", "utc_s": _utc(f[6]), "acquisition": "",
            "latitude_deg": _degrees(f[1], f[2], "S"), "longitude_deg": _degrees(f[3], f[4], "W")}


def decode(data: bytes) -> dict:
    """Targets (columns and rows), bytes consumed and parser counters of a clean recording."""
    lines = data.split(b"\r\n")
    if lines[-1]:
        raise ValueError("the recording must end with CR LF")
    rows, sentences, ignored = [], 0, 0
    for number, raw in enumerate(lines[:-1], 1):
        if len(raw) + 2 > MAX_LINE:
            raise ValueError(f"line {number} is longer than {MAX_LINE} characters")
        msg = pynmea2.parse(raw.decode("ascii"), check=True)  # raises on a bad checksum
        sentences += 1
        kind = msg.sentence_type if isinstance(msg, pynmea2.TalkerSentence) else ""
        if kind == "TTM":
            target = _ttm(msg.talker, list(msg.data))
        elif kind == "TLL":
            target = _tll(msg.talker, list(msg.data))
        else:
            ignored += 1
            continue
        rows.append([None if isinstance(target[c], float) and math.isnan(target[c]) else target[c]
                     for c in COLUMNS])
    stats = {"sentences": sentences, "targets": len(rows), "ignored": ignored, "bad_checksum": 0,
             "no_checksum": 0, "too_long": 0, "not_printable": 0, "malformed": 0, "dropped_bytes": 0,
             "resyncs": 0}
    return {"columns": list(COLUMNS), "rows": rows, "consumed": len(data), "stats": stats}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("file", type=Path)
    args = p.parse_args(argv)
    json.dump(decode(args.file.read_bytes()), sys.stdout, indent=None, separators=(",", ":"))
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
