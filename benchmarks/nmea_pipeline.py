"""A real NMEA radar recording through ``towerd replay`` (driver, detection, tracking,
reports), scored against the radar's own ARPA targets.

The recording (a text log without read times) is written as a towerd raw capture with
each line at the second of the ``$GPZDA`` sentence before it (plus 1 ms per line within
that second: the bus's order), so the driver and tracker see the recorded pace. The tower
stands where the recording's own boat lay (its GPS position; it did not move), the radar
at 5 m. The radar's own TTM reports (status not L) are the reference: a confirmed track
record is explained when a TTM within ``MATCH_S`` of it lies within ``MATCH_M`` of its
position; a track most of whose confirmed records nothing explains is a false track; a
vessel is followed when one of its ARPA target numbers explains a confirmed record.
"""

from __future__ import annotations

import contextlib
import io
import json
import math
import tempfile
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from towerd.cli import main as towerd_main
from towerd.tools.recording import RawWriter, RecordingHeader

MATCH_S = 5.0
MATCH_M = 200.0


@dataclass(frozen=True)
class Setup:
    """One way to configure the tower for the recording."""

    label: str
    scan_gap_s: float
    tracking_yaml: str  # a YAML tracking: block, or ""


@dataclass(frozen=True)
class Outcome:
    readings: int
    tracks: int  # track ids reported
    confirmed: int  # of which confirmed at least once
    false_tracks: int
    followed: str  # vessels followed, e.g. "2 of 3"
    categories: str  # categories named in confirmed records, most frequent first
    uas_percent: float  # share of confirmed records classified uas (every record here is a vessel's)


def _utc_of_day(text: bytes) -> int:
    return int(text[:2]) * 3600 + int(text[2:4]) * 60 + int(text[4:6])


def timed_capture(data: bytes, raw: Path, start_utc_us: int) -> int:
    """Write ``data`` as a raw capture paced by its $GPZDA seconds; return the first
    $GPZDA's UTC second of day (the capture's time zero)."""
    header = RecordingHeader(sensor="radar", driver="nmea_radar", settings={}, started_utc_us=start_utc_us,
                             started_mono=1000.0, note="paced by the recording's $GPZDA sentences")
    writer = RawWriter(raw, header)
    zero = second = None
    k = 0
    for line in data.split(b"\r\n")[:-1]:
        if line.startswith(b"$GPZDA,"):
            day_s = _utc_of_day(line.split(b",")[1])
            zero = day_s if zero is None else zero
            second, k = day_s - zero, 0
        k += 1
        writer.write(line + b"\r\n", 1000.0 + (second or 0) + 0.001 * k)
    writer.close()
    return zero


def _config(folder: Path, site: tuple[float, float], setup: Setup) -> Path:
    path = folder / "towerd.yaml"
    path.write_text(f"""\
version: 1
tower: {{id: marpa-bench-001, latitude_deg: {site[0]}, longitude_deg: {site[1]}, height_m: 5.0}}
state_dir: {folder / 'state'}
sensors:
  - name: radar
    driver: nmea_radar
    settings: {{port: /dev/null, baudrate: 4800, sentences: ttm, scan_gap_s: {setup.scan_gap_s}}}
    mount: {{boresight_azimuth_deg: 0.0, position_enu_m: [0.0, 0.0, 5.0]}}
    noise: {{range_sigma_m: 10.0, azimuth_sigma_deg: 1.0, elevation_sigma_deg: 10.0}}
{setup.tracking_yaml}
""")
    return path


def _site(data: bytes) -> tuple[float, float]:
    """The first $GPRMC position of the recording (the boat lay still)."""
    for line in data.split(b"\r\n"):
        if line.startswith(b"$GPRMC,"):
            f = line.decode("ascii").split(",")
            lat = int(f[3][:2]) + float(f[3][2:]) / 60.0
            lon = int(f[5][:3]) + float(f[5][3:]) / 60.0
            return (-lat if f[4] == "S" else lat, -lon if f[6] == "W" else lon)
    raise ValueError("no $GPRMC in the recording")


def run(data: bytes, targets: list[dict], vessels: list[set[int]], day: str, setup: Setup) -> Outcome:
    """Replay ``data`` with ``setup``; score it against ``targets`` (the golden's TTM
    rows as dicts) grouped into ``vessels`` (sets of ARPA target numbers). ``day`` is
    the recording's UTC date (YYYY-MM-DD)."""
    midnight = datetime.fromisoformat(day).replace(tzinfo=timezone.utc)
    with tempfile.TemporaryDirectory(prefix="towerd-nmea-bench-") as scratch:
        folder = Path(scratch)
        raw = folder / "capture.raw"
        first = data.index(b"$GPZDA,")
        zero = _utc_of_day(data[first + 7:first + 13])
        start_us = int(midnight.timestamp() * 1e6) + zero * 1_000_000
        timed_capture(data, raw, start_us)
        out, err = io.StringIO(), io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            status = towerd_main(["replay", str(raw), "--config", str(_config(folder, _site(data), setup))])
        if status != 0:
            raise RuntimeError(f"towerd replay failed: {err.getvalue()}")
    records = [json.loads(line) for line in out.getvalue().splitlines() if line.strip()]
    readings = int(err.getvalue().split(" reading")[0].rsplit(" ", 1)[-1])
    reference = [(t["utc_s"] - zero, t["distance_m"] * math.sin(math.radians(t["bearing_deg"])),
                  t["distance_m"] * math.cos(math.radians(t["bearing_deg"])), t["target_number"])
                 for t in targets if t["sentence"] == "TTM" and t["status"] != "L" and t["bearing_true"]]
    by_track: dict[int, list[dict]] = {}
    for r in records:
        by_track.setdefault(r["track_id"], []).append(r)
    confirmed = false = 0
    seen: set[int] = set()
    categories: dict[str, int] = {}
    for rows in by_track.values():
        good = [r for r in rows if r["status_name"] in ("confirmed", "coasting")]
        if not good:
            continue
        confirmed += 1
        explained = 0
        for r in good:
            t = (r["time_us"] - start_us) / 1e6
            e = r["range_m"] * math.sin(math.radians(r["azimuth_deg"]))
            n = r["range_m"] * math.cos(math.radians(r["azimuth_deg"]))
            near = [num for (tt, te, tn, num) in reference
                    if abs(tt - t) <= MATCH_S and math.hypot(te - e, tn - n) <= MATCH_M]
            explained += bool(near)
            seen.update(near)
            categories[r["category_name"]] = categories.get(r["category_name"], 0) + 1
        false += explained * 2 < len(good)
    followed = sum(1 for v in vessels if v & seen)
    named = ", ".join(f"{k} {100 * n / sum(categories.values()):.0f} %"
                      for k, n in sorted(categories.items(), key=lambda kv: -kv[1]))
    uas = 100.0 * categories.get("uas", 0) / max(sum(categories.values()), 1)
    return Outcome(readings, len(by_track), confirmed, false, f"{followed} of {len(vessels)}", named or "none", uas)
