"""Sensing: what the drivers make of real recordings, and of a UART that drops bytes.

One row per real device recording in tests/captures/<driver>/ (a golden with an
``origin``): the recording fed whole through its driver (``feed``, then a quiet line),
with what came out and what the driver counted, and the median time to decode it.
Then the TI truncation experiment (towerd/sim/ti_truncation.py, 10,000 seeded cuts; 2,000
in --quick) for this parser beside the parser of commit 90bf4e8, loaded from git in the
same run.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import subprocess
import sys
import tempfile
from pathlib import Path

from benchmarks import nmea_pipeline
from benchmarks.common import Figure, Section, repeat, timed
from towerd.drivers import REGISTRY, driver_class
from towerd.drivers.ti_mmwave.protocol import TiFrameParser
from towerd.sim.ti_truncation import run as truncation_trials

REPO = Path(__file__).resolve().parents[1]
CAPTURES = REPO / "tests" / "captures"
BEFORE = "90bf4e8"
"""The commit before the structural checks against cut-short frames."""


def recordings() -> list[tuple[str, Path, dict]]:
    """(driver, data file, golden) of every real device recording (a golden with an
    ``origin`` and a ``device``), in driver and name order."""
    out = []
    for kind in sorted(REGISTRY):
        folder = CAPTURES / kind
        for golden_path in sorted(folder.glob("*.json")) if folder.is_dir() else []:
            golden = json.loads(golden_path.read_text())
            data = [p for p in folder.glob(golden_path.stem + ".*") if p.suffix not in (".json", ".md", ".cfg")]
            # A real device recording names its device; test vectors of a reference library do not.
            if isinstance(golden, dict) and golden.get("origin") and golden.get("device") and len(data) == 1:
                out.append((kind, data[0], golden))
    return out


def _settings(kind: str, golden: dict):
    cls = driver_class(kind).Settings
    if kind == "ti_mmwave":
        return cls(port="/dev/null", doppler_resolution_mps=golden.get("doppler_resolution_mps"))
    return cls(port="/dev/null")


def _decode(kind: str, data: bytes, golden: dict):
    driver = driver_class(kind)("bench", _settings(kind, golden))
    readings = driver.feed(data, 0.0) + driver.poll(3600.0)
    return driver, readings


def _points(reading) -> int:
    plots = getattr(reading, "plots", None)
    return len(plots) if plots is not None else 1


def _row(kind: str, path: Path, golden: dict, runs: int, old_parser) -> str:
    """The table row of one recording (see the module docstring)."""
    data = path.read_bytes()
    before = "n/a"
    if kind == "ti_mmwave" and old_parser is not None:
        before = str(len(old_parser().feed(data)[1]))
    driver, readings = _decode(kind, data, golden)
    seconds, _, _ = repeat(lambda: timed(lambda: _decode(kind, data, golden)), runs)
    c = driver.counters
    origin = golden["origin"]
    device = f"{golden.get('device', '?')}, SDK {golden['sdk']}" if golden.get("sdk") else golden.get("device", "?")
    row = (f"| `{kind}/{path.name}` | {device} | {len(data):,} | {len(readings)} | "
           f"{sum(_points(r) for r in readings):,} | {c.frames:,} | {before} | {c.dropped_bytes:,} | {c.bad_frames:,} | "
           f"{seconds * 1e3:.1f} ms | {origin.get('repo', '?')} |")
    return row


def _old_parser():
    """TiFrameParser as of commit BEFORE, from git (None when git or the commit is absent)."""
    try:
        source = subprocess.run(["git", "-C", str(REPO), "show", f"{BEFORE}:drivers/ti_mmwave/protocol.py"],
                                capture_output=True, text=True, timeout=10, check=True).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    name = f"ti_protocol_{BEFORE}"
    with tempfile.TemporaryDirectory() as scratch:
        path = Path(scratch) / f"{name}.py"
        path.write_text(source)
        spec = importlib.util.spec_from_file_location(name, path)
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module  # dataclasses look their module up
        spec.loader.exec_module(module)
    return module.TiFrameParser


NMEA_SETUPS = (
    nmea_pipeline.Setup("shipped defaults (scan_gap_s 0.5, tracking defaults)", 0.5, ""),
    nmea_pipeline.Setup("set for a one-target-a-second relay (scan_gap_s 2.0; coast_after_s 5, "
                        "confirmed_max_coast_s 12, tentative_max_misses 4)", 2.0,
                        "tracking: {coast_after_s: 5.0, confirmed_max_coast_s: 12.0, tentative_max_misses: 4}"),
)


def _nmea_pipeline_table() -> str:
    """Each real NMEA radar recording through towerd replay, per setup (benchmarks/nmea_pipeline.py)."""
    rows = []
    for kind, path, golden in recordings():
        if kind != "nmea_radar" or "vessels" not in golden:
            continue
        targets = [dict(zip(golden["columns"], row)) for row in golden["rows"]]
        vessels = [set(v) for v in golden["vessels"]]
        for setup in NMEA_SETUPS:
            o = nmea_pipeline.run(path.read_bytes(), targets, vessels, golden["recorded_utc_date"], setup)
            rows.append(f"| `{kind}/{path.name}` | {setup.label} | {o.readings} | {o.tracks} | {o.confirmed} | "
                        f"{o.followed} | {o.false_tracks} | {o.uas_percent:.0f} % | {o.categories} |")
    if not rows:
        return ""
    return "\n".join([
        "| recording | setup | readings | tracks reported | confirmed | vessels followed | false tracks | "
        "records classified uas | categories of confirmed records |",
        "|---|---|---|---|---|---|---|---|---|",
        *rows,
    ])


def run(quick: bool) -> Section:
    runs = 3 if quick else 7
    old = _old_parser()
    logging.getLogger(f"ti_protocol_{BEFORE}").setLevel(logging.ERROR)  # its version warnings
    rows = [_row(kind, path, golden, runs, old) for kind, path, golden in recordings()]
    table = "\n".join([
        f"| recording | device, SDK | bytes | readings | points | frames decoded | frames decoded at {BEFORE} | "
        "dropped bytes | bad frames | decode time (median) | source |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
        *rows,
    ])
    text = (
        "Each real device recording in `tests/captures/` (origin, licence and quirks in each folder's README) "
        "fed whole through its driver, then a quiet line. Dropped bytes are the partial frames a recording "
        "starts with; a partial frame at the end stays in the buffer (not counted). Every reading equals "
        f"the recording's golden (tests/test_conformance.py). Beside it, the frames the parser of {BEFORE} "
        "decoded from the same bytes (it refused SDK 2.x).\n\n" + table + "\n\n"
        "NMEA radar recordings through `towerd replay` (driver, detection, tracking, reports), paced by the "
        "recording's own `$GPZDA` seconds, the tower where the recording's boat lay, scored against the "
        "radar's own ARPA reports (benchmarks/nmea_pipeline.py: a confirmed record is explained by a TTM "
        f"within {nmea_pipeline.MATCH_S:.0f} s and {nmea_pipeline.MATCH_M:.0f} m; a false track is one most "
        "of whose confirmed records nothing explains; ARPA targets 1 and 2 are one vessel). This relay sends "
        "one target a second in turn, so with the shipped scan_gap_s each reading holds one target and the "
        "others count a miss. Every track here is a vessel's: a 2D radar measures no height, so since "
        "commit 2d485d3 the classifier ignores the antenna height the detection layer assumes for its "
        "targets (at eba8ce2, before it, 80 % and 86 % of these confirmed records were classified uas).\n\n"
        + _nmea_pipeline_table() + "\n\n"
        "Truncation: a TI frame cut at a uniform random byte, then intact frames (towerd/sim/ti_truncation.py); "
        f"beside each figure the parser of commit {BEFORE}, measured in the same run on the same trials."
    )
    figures = []
    trials = 2_000 if quick else 10_000
    for side, label in ((True, "TLVs 1 and 7"), (False, "TLV 1 only")):
        now = truncation_trials(TiFrameParser, trials=trials, side=side)
        before = truncation_trials(old, trials=trials, side=side) if old is not None else None
        for name, attr in (("cut frame emitted", "cut_emitted"), ("cut frame emitted with points not its own",
                                                                   "cut_emitted_wrong_points"),
                           ("next (intact) frame lost", "next_lost")):
            ref = f"{BEFORE}: {100 * getattr(before, attr) / trials:.1f} %" if before is not None else "n/a"
            figures.append(Figure(f"{name} ({label})", 100 * getattr(now, attr) / trials, "%", reference=ref,
                                  note=f"{trials:,} seeded trials" if attr == "cut_emitted" else ""))
    return Section("Sensing: real recordings", figures, text)
