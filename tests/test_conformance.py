"""Conformance: every registered driver against every capture in tests/captures/<driver>/.

Captures are discovered, not listed: a data file (any suffix but .json, .md, .cfg) with a
golden ``.json`` beside it (the format of each folder's README). Each capture goes, and
must give exactly its golden and never raise:

- through the driver's parser (the pure ``feed``): whole, one byte at a time, and at
  seeded random split points; the bytes consumed and the counters are the golden's too;
- through the driver on a real pseudo-terminal opened with pyserial (``driver.read()`` as
  the daemon calls it): whole, and at seeded random split points, each piece written only
  once the driver has read the previous one, so the reads really are cut there;
- through ``towerd replay`` (the CLI, in process): the capture written as a towerd raw
  capture (docs/raw-capture-format.md) in seeded random chunks, replayed with
  ``--readings``;
- through the driver's ``feed``: its counters are its parser's totals under the common
  names, every consumed byte in ``frame_bytes`` or ``dropped_bytes``.

And every registry entry: its emulator, made from ``towerd sim``'s options, feeds its
driver over a pty readings of the registered types only.

What "equals its golden" means for readings is derived here from the golden, with the
driver's documented conversion written out independently (TI points -> range/azimuth/
elevation; NMEA targets -> plots rows; RF Explorer sweeps -> spectra). Byte-by-byte
feeding costs ~13 us a byte in Python, so recordings over ``BYTEWISE_MAX`` go one byte at
a time through a seeded window of that size (the rest whole) in the quick suite, and all
the way through in a ``slow`` test.
"""

from __future__ import annotations

import json
import math
import select
import threading
import time
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pytest
from numpy.testing import assert_allclose, assert_array_equal

from towerd.cli import build_parser
from towerd.cli import main as towerd_main
from towerd.drivers import REGISTRY, DriverEntry, driver_class, reading_types
from towerd.drivers.base import DriverCounters, ParserTotals
from towerd.drivers.measurements import RemoteIdReading
from towerd.drivers.nmea_radar.driver import NmeaRadarSettings
from towerd.drivers.nmea_radar.protocol import NmeaParser
from towerd.drivers.remoteid.driver import RemoteIdSettings
from towerd.drivers.remoteid.protocol import RidParser
from towerd.drivers.rfexplorer.driver import RfExplorerSettings
from towerd.drivers.rfexplorer.protocol import RfeConfig, RfeModel, RfeParser, RfeReset, RfeSweep
from towerd.drivers.ti_mmwave.driver import TiMmwaveSettings
from towerd.drivers.ti_mmwave.protocol import TI_POINT_DTYPE, TiFrameParser
from towerd.errors import DriverTimeoutError
from towerd.sim import emulator_class
from towerd.sim.pty import PtyPair
from towerd.sim.scenario import builtin_scenario, load_scenario
from towerd.tools.output import jsonable
from towerd.tools.recording import RawWriter, RecordingHeader

CAPTURES = Path(__file__).parent / "captures"
NOT_DATA = {".json", ".md", ".cfg"}
BYTEWISE_MAX = 16 * 1024
RANDOM_CUTS_MAX = 1000
"""Random split points per trial at most (a feed of a few bytes costs ~1 ms in Python)."""
SEED = 20261203
SITE = "latitude_deg: 27.5036, longitude_deg: -99.5076, height_m: 130.0"


def captures_of(kind: str) -> list[Path]:
    folder = CAPTURES / kind
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir()
                  if p.is_file() and p.suffix not in NOT_DATA and p.with_suffix(".json").is_file())


ALL = [(kind, path) for kind in sorted(REGISTRY) for path in captures_of(kind)]
IDS = [f"{kind}/{path.name}" for kind, path in ALL]


def golden_of(path: Path) -> dict:
    return json.loads(path.with_suffix(".json").read_text())


# ----------------------------------------------------------------------------- per-driver profiles


def _close(got: np.ndarray, want: np.ndarray, label: str) -> None:
    assert got.shape == want.shape, (label, got.shape, want.shape)
    assert_allclose(got, want, rtol=1e-6, atol=1e-9, equal_nan=True, err_msg=label)


@dataclass
class Profile:
    """How one driver's parser output, readings and settings relate to its goldens."""

    kind: str
    new_parser: Callable[[dict], Any]
    feed: Callable[[Any, bytearray, bool], tuple[int, list]]  # (parser, buf, quiet) -> (consumed, items)
    check_items: Callable[[list, dict, str], None]  # parser output vs golden
    settings: Callable[[str, dict], Any]  # (port, golden) -> driver Settings
    check_readings: Callable[[list[dict], dict, str], None]  # jsonable readings vs golden
    yaml_settings: Callable[[dict], str]  # settings block for a replay configuration
    mount: bool = True
    stats_of: Callable[[Any], Any] = field(default=lambda parser: parser.stats)


# --- TI mmWave: frames -> RadarPlots, one per frame


def _ti_feed(parser: TiFrameParser, buf: bytearray, quiet: bool) -> tuple[int, list]:
    return parser.feed(buf, quiet=quiet)


def _ti_check_items(frames: list, golden: dict, label: str) -> None:
    want = golden["frames"]
    assert [f.frame_number for f in frames] == [w["frame_number"] for w in want], label
    for got, w in zip(frames, want):
        assert (got.version, got.platform, got.subframe, got.num_tlvs, got.num_detected_obj, got.total_packet_len,
                got.tlv_types) == (int(w["version"], 16), int(w["platform"], 16), w["subframe"], w["num_tlvs"],
                                   w["num_detected_obj"], w["total_packet_len"], tuple(w["tlv_types"])), label
        rows = [[p[f] if isinstance(p, dict) else p[i] for i, f in enumerate(TI_POINT_DTYPE.names)]
                for p in w["points"]]
        expect = np.array([[np.nan if v is None else v for v in r] for r in rows], dtype=np.float32).reshape(-1, 6)
        got_rows = np.stack([got.points[f] for f in TI_POINT_DTYPE.names], axis=1) if len(got.points) else \
            np.zeros((0, 6), np.float32)
        assert_array_equal(got_rows, expect, err_msg=f"{label}: frame {got.frame_number}")


def _ti_expected_plots(golden: dict) -> list[tuple[int, np.ndarray]]:
    """Golden points -> (frame_number, rows of range, azimuth, elevation, radial velocity,
    SNR): range = |p|, azimuth = atan2(x, y) in (-180, 180], elevation = atan2(z, hypot(x,
    y)); points with a non-finite coordinate are dropped (the driver's documented rules)."""
    out = []
    for w in golden["frames"]:
        pts = [[p[f] if isinstance(p, dict) else p[i] for i, f in enumerate(TI_POINT_DTYPE.names)] for p in w["points"]]
        a = np.array([[np.nan if v is None else v for v in r] for r in pts], dtype=np.float32).astype(np.float64)
        a = a.reshape(-1, 6)
        a = a[np.isfinite(a[:, :3]).all(axis=1)]
        x, y, z = a[:, 0], a[:, 1], a[:, 2]
        az = np.degrees(np.arctan2(x, y))
        az[az <= -180.0] += 360.0
        rows = np.column_stack([np.sqrt(x * x + y * y + z * z), az, np.degrees(np.arctan2(z, np.hypot(x, y))),
                                a[:, 3], a[:, 4]])
        out.append((w["frame_number"], rows))
    return out


def _ti_check_readings(readings: list[dict], golden: dict, label: str) -> None:
    want = _ti_expected_plots(golden)
    assert all(r["type"] == "RadarPlots" for r in readings), label
    assert [r["frame_number"] for r in readings] == [n for n, _ in want], label
    for r, (number, rows) in zip(readings, want):
        got = np.array([[np.nan if p[k] is None else p[k] for k in
                         ("range_m", "azimuth_deg", "elevation_deg", "radial_vel_mps", "snr_db")] for p in r["plots"]],
                       dtype=np.float64).reshape(-1, 5)
        _close(got, rows, f"{label}: frame {number}")


def _ti_settings(port: str, golden: dict) -> TiMmwaveSettings:
    return TiMmwaveSettings(port=port, doppler_resolution_mps=golden.get("doppler_resolution_mps"))


def _ti_yaml(golden: dict) -> str:
    res = golden.get("doppler_resolution_mps")
    return "{port: /dev/null" + (f", doppler_resolution_mps: {res!r}" if res is not None else "") + "}"


TI = Profile(
    kind="ti_mmwave",
    new_parser=lambda golden: TiFrameParser(doppler_resolution_mps=golden.get("doppler_resolution_mps")),
    feed=_ti_feed,
    check_items=_ti_check_items,
    settings=_ti_settings,
    check_readings=_ti_check_readings,
    yaml_settings=_ti_yaml,
)


# --- NMEA radar: targets -> RadarPlots (TTM) and GeoPlots (TLL), one pair per scan

_NMEA_NUMERIC = ("distance_m", "bearing_deg", "speed_mps", "course_deg", "cpa_m", "tcpa_s", "utc_s", "latitude_deg",
                 "longitude_deg")


def _nmea_feed(parser: NmeaParser, buf: bytearray, quiet: bool) -> tuple[int, list]:
    consumed, rows = parser.feed(buf)
    return consumed, list(rows)


def _num(value: Any) -> float:
    return math.nan if value is None else float(value)


def nmea_targets(golden: dict) -> list[dict]:
    """The golden's targets as dicts: hand-written goldens list them (``targets``),
    recordings' goldens hold ``columns`` and ``rows`` (tests/nmea_reference.py)."""
    if "targets" in golden:
        return golden["targets"]
    return [dict(zip(golden["columns"], row)) for row in golden["rows"]]


def _nmea_check_items(rows: list, golden: dict, label: str) -> None:
    want = nmea_targets(golden)
    assert len(rows) == len(want), label
    for i, (row, w) in enumerate(zip(rows, want)):
        for key, value in w.items():
            if key in _NMEA_NUMERIC:
                assert_allclose(float(row[key]), _num(value), rtol=1e-12, atol=1e-9, equal_nan=True,
                                err_msg=f"{label}[{i}].{key}")
            else:
                assert row[key] == value, (label, i, key, row[key], value)


def _nmea_check_readings(readings: list[dict], golden: dict, label: str) -> None:
    """TTM targets (status not L, distance and bearing present) become plot rows in order,
    TLL targets (status not L) geo rows in order; scans may group them differently."""
    targets = nmea_targets(golden)
    ttm = [t for t in targets if t["sentence"] == "TTM" and t["status"] != "L"
           and t["distance_m"] is not None and t["bearing_deg"] is not None]
    tll = [t for t in targets if t["sentence"] == "TLL" and t["status"] != "L"]
    plots = [p for r in readings if r["type"] == "RadarPlots" for p in r["plots"]]
    geo = [p for r in readings if r["type"] == "GeoPlots" for p in r["plots"]]
    assert {r["type"] for r in readings} <= {"RadarPlots", "GeoPlots"}, label
    assert [p["target_id"] for p in plots] == [t["target_number"] for t in ttm], label
    for p, t in zip(plots, ttm):
        bearing = t["bearing_deg"]
        azimuth = bearing if t["bearing_true"] else (bearing - 360.0 if bearing > 180.0 else bearing)
        course = t["course_deg"] if t["course_true"] else None
        got = [p["range_m"], p["azimuth_deg"], p["speed_mps"], p["course_deg"]]
        _close(np.array([_num(v) for v in got]), np.array([_num(v) for v in
                                                            (t["distance_m"], azimuth, t["speed_mps"], course)]),
               f"{label}: target {t['target_number']}")
        assert p["azimuth_is_true"] == t["bearing_true"], label
    assert [p["target_id"] for p in geo] == [t["target_number"] for t in tll], label
    for p, t in zip(geo, tll):
        _close(np.array([p["latitude_deg"], p["longitude_deg"]], dtype=float),
               np.array([t["latitude_deg"], t["longitude_deg"]], dtype=float), label)


NMEA = Profile(
    kind="nmea_radar",
    new_parser=lambda golden: NmeaParser(),
    feed=_nmea_feed,
    check_items=_nmea_check_items,
    settings=lambda port, golden: NmeaRadarSettings(port=port, baudrate=38400, sentences="both", scan_gap_s=0.05),
    check_readings=_nmea_check_readings,
    yaml_settings=lambda golden: "{port: /dev/null, baudrate: 38400, sentences: both, scan_gap_s: 0.05}",
)


# --- RF Explorer: sweeps -> Spectrum


def _rfe_feed(parser: RfeParser, buf: bytearray, quiet: bool) -> tuple[int, list]:
    return parser.feed(buf)


_RFE_TYPES = {RfeConfig: "config", RfeModel: "model", RfeReset: "reset", RfeSweep: "sweep"}


def _rfe_check_power(power: np.ndarray, want: dict, label: str) -> None:
    power = np.asarray(power, dtype=np.float32)
    if "power_dbm" in want:
        assert_array_equal(power, np.array(want["power_dbm"], dtype=np.float32), err_msg=label)
    else:
        assert len(power) == want["points"], label
        assert_array_equal(power[:16], np.array(want["power_dbm_head"], dtype=np.float32), err_msg=label)
        assert_array_equal(power[-16:], np.array(want["power_dbm_tail"], dtype=np.float32), err_msg=label)
        assert float(power.astype(np.float64).sum()) == want["power_dbm_sum"], label


def _rfe_check_items(messages: list, golden: dict, label: str) -> None:
    kept = [m for m in messages if type(m) in _RFE_TYPES]  # free text lines are not in the goldens
    want = golden["messages"]
    assert [_RFE_TYPES[type(m)] for m in kept] == [w["type"] for w in want], label
    for i, (m, w) in enumerate(zip(kept, want)):
        if w["type"] == "sweep":
            assert (m.variant, m.config.start_mhz, m.config.step_mhz) == (w["variant"], w["start_mhz"],
                                                                           w["step_mhz"]), (label, i)
            _rfe_check_power(m.power_dbm, w, f"{label}[{i}]")
        elif w["type"] == "config":
            for key, value in w.items():
                if key != "type":
                    assert getattr(m, key) == value, (label, i, key)


def _rfe_check_readings(readings: list[dict], golden: dict, label: str) -> None:
    sweeps = [w for w in golden["messages"] if w["type"] == "sweep"]
    assert all(r["type"] == "Spectrum" for r in readings), label
    assert len(readings) == len(sweeps), label
    for i, (r, w) in enumerate(zip(readings, sweeps)):
        assert (r["start_freq_mhz"], r["step_freq_mhz"]) == (w["start_mhz"], w["step_mhz"]), (label, i)
        _rfe_check_power(np.array([math.nan if v is None else v for v in r["power_dbm"]]), w, f"{label}: sweep {i}")


RFE = Profile(
    kind="rfexplorer",
    new_parser=lambda golden: RfeParser(),
    feed=_rfe_feed,
    check_items=_rfe_check_items,
    settings=lambda port, golden: RfExplorerSettings(port=port, command_gap_s=0.0),
    check_readings=_rfe_check_readings,
    yaml_settings=lambda golden: "{port: /dev/null}",
    mount=False,
)

# --- Remote ID: one reading per broadcast line; fields it did not carry keep their defaults

_RID_DEFAULTS = {f.name: f.default for f in fields(RemoteIdReading) if f.name not in ("sensor", "t_mono")}


def _rid_full(values: dict) -> dict:
    """Every RemoteIdReading field: the defaults, overridden by ``values`` (None = NaN)."""
    full = dict(_RID_DEFAULTS)
    full.update({k: v for k, v in values.items() if k in full})
    return {k: (math.nan if v is None else v) for k, v in full.items()}


def _rid_compare(got: dict, want: dict, label: str) -> None:
    got, want = _rid_full(got), _rid_full(want)
    for key, value in want.items():
        if isinstance(value, float):
            assert_allclose(float(got[key]), value, rtol=1e-6, atol=1e-9, equal_nan=True, err_msg=f"{label}.{key}")
        else:
            assert got[key] == value, (label, key, got[key], value)


def _rid_check_items(items: list, golden: dict, label: str) -> None:
    want = golden["readings"]
    assert len(items) == len(want), (label, len(items), len(want))
    for i, (got, w) in enumerate(zip(items, want)):
        _rid_compare(got, w, f"{label}[{i}]")


def _rid_check_readings(readings: list[dict], golden: dict, label: str) -> None:
    assert all(r["type"] == "RemoteIdReading" for r in readings), label
    _rid_check_items(readings, golden, label)


RID = Profile(
    kind="remoteid",
    new_parser=lambda golden: RidParser(),
    feed=lambda parser, buf, quiet: parser.feed(buf),
    check_items=_rid_check_items,
    settings=lambda port, golden: RemoteIdSettings(port=port),
    check_readings=_rid_check_readings,
    yaml_settings=lambda golden: "{port: /dev/null}",
    mount=False,
)

PROFILES = {p.kind: p for p in (TI, NMEA, RFE, RID)}


def test_every_registered_driver_has_a_profile_and_captures():
    assert set(PROFILES) == set(REGISTRY)
    for kind in REGISTRY:
        assert captures_of(kind), f"no capture with a golden under tests/captures/{kind}/"
        assert isinstance(REGISTRY[kind], DriverEntry) and driver_class(kind).kind == kind
        assert reading_types(kind) and emulator_class(kind) is not None


SIM_OPTIONS = {"nmea_radar": ["--scan-period", "0.2", "--baud", "38400"], "ti_mmwave": ["--rate", "20"],
               "rfexplorer": ["--rate", "20"], "remoteid": ["--site", "27.5036", "-99.5076", "130.0"]}
SIM_SCENARIOS = {"remoteid": Path(__file__).parent.parent / "config" / "scenarios" / "remoteid.yaml"}
"""Devices whose emulator needs a scenario other than the built-in demo (broadcasting drones)."""


@pytest.mark.parametrize("kind", sorted(REGISTRY))
def test_the_registered_emulator_feeds_its_driver_the_registered_readings(kind, pty_pair):
    """Through the registry alone, as `towerd sim` and the daemon find them: the emulator
    made from the sim's own options writes to a real pty, the driver reads it; every reading
    is of a registered type, the counters are the common ones and the driver's status is
    plain JSON."""
    args = build_parser().parse_args(["sim", "--device", kind, *SIM_OPTIONS.get(kind, [])])
    scenario = load_scenario(SIM_SCENARIOS[kind]) if kind in SIM_SCENARIOS else builtin_scenario("demo")
    em = emulator_class(kind).from_sim_args(scenario, args, np.random.default_rng(SEED))
    driver = driver_class(kind)("sim", PROFILES[kind].settings(pty_pair.path, {}))
    types = reading_types(kind)
    readings: list = []
    em.start(pty_pair)
    try:
        driver.open()
        deadline = time.monotonic() + 20.0
        while driver.counters.frames < 10 or not readings:
            assert time.monotonic() < deadline, (driver.counters, em.sim_status())
            readings += driver.read()
    finally:
        driver.close()
        em.stop()
    assert all(isinstance(r, types) for r in readings), {type(r) for r in readings}
    assert set(driver.counters.as_dict()) == {f.name for f in DriverCounters.__dataclass_fields__.values()}
    assert isinstance(driver.parser_totals(), ParserTotals)
    assert driver.counters.frame_bytes > 0 and driver.counters.bad_frames == 0
    json.dumps(driver.status(), allow_nan=False)
    assert "sent" in em.sim_status()


# ----------------------------------------------------------------------------- parser: whole, bytewise, random


def feed_pieces(profile: Profile, golden: dict, pieces: list[bytes]) -> tuple[Any, list, int]:
    """Feed pieces through a caller-owned buffer as a driver does, then a quiet line."""
    parser = profile.new_parser(golden)
    buf = bytearray()
    items: list = []
    consumed_total = 0
    for i, piece in enumerate(pieces + [b""]):
        buf += piece
        consumed, got = profile.feed(parser, buf, i == len(pieces))
        assert 0 <= consumed <= len(buf)
        del buf[:consumed]
        consumed_total += consumed
        items += got
    return parser, items, consumed_total


def check_parser(profile: Profile, golden: dict, pieces: list[bytes], label: str) -> None:
    parser, items, consumed = feed_pieces(profile, golden, pieces)
    assert consumed == golden["consumed"], label
    profile.check_items(items, golden, label)
    for key, value in golden["stats"].items():
        assert getattr(parser.stats, key) == value, (label, key)


def random_cuts(data: bytes, rng: np.random.Generator, count: int) -> list[bytes]:
    cuts = np.unique(rng.integers(1, max(2, len(data)), count))
    edges = [0, *[int(c) for c in cuts if 0 < c < len(data)], len(data)]
    return [data[a:b] for a, b in zip(edges[:-1], edges[1:])]


@pytest.mark.parametrize("kind, path", ALL, ids=IDS)
def test_parser_whole_and_at_random_split_points(kind, path):
    profile, golden, data = PROFILES[kind], golden_of(path), path.read_bytes()
    check_parser(profile, golden, [data], f"{path.name} whole")
    rng = np.random.default_rng([SEED, len(data)])
    for trial in range(3):
        check_parser(profile, golden, random_cuts(data, rng, min(RANDOM_CUTS_MAX, 1 + len(data) // 97)),
                     f"{path.name} random {trial}")


@pytest.mark.parametrize("kind, path", ALL, ids=IDS)
def test_parser_byte_by_byte(kind, path):
    """Whole captures up to BYTEWISE_MAX; larger ones byte by byte through a seeded window."""
    profile, golden, data = PROFILES[kind], golden_of(path), path.read_bytes()
    if len(data) <= BYTEWISE_MAX:
        check_parser(profile, golden, [data[i:i + 1] for i in range(len(data))], f"{path.name} bytewise")
        return
    start = int(np.random.default_rng([SEED, 1, len(data)]).integers(0, len(data) - BYTEWISE_MAX))
    window = [data[i:i + 1] for i in range(start, start + BYTEWISE_MAX)]
    check_parser(profile, golden, [data[:start], *window, data[start + BYTEWISE_MAX:]], f"{path.name} window")


@pytest.mark.slow
@pytest.mark.parametrize("kind, path", [c for c in ALL if c[1].stat().st_size > BYTEWISE_MAX],
                         ids=[i for c, i in zip(ALL, IDS) if c[1].stat().st_size > BYTEWISE_MAX])
def test_parser_byte_by_byte_all_the_way(kind, path):
    profile, golden, data = PROFILES[kind], golden_of(path), path.read_bytes()
    check_parser(profile, golden, [data[i:i + 1] for i in range(len(data))], f"{path.name} bytewise")


@pytest.mark.parametrize("kind, path", ALL, ids=IDS)
def test_driver_counters_are_the_parser_totals_in_common_names(kind, path):
    """The capture fed to the driver (as replay does): its counters are the parser's, under
    the names every driver uses, and every byte consumed is in frame_bytes or dropped_bytes."""
    profile, golden, data = PROFILES[kind], golden_of(path), path.read_bytes()
    driver = driver_class(kind)("capture", profile.settings("/dev/null", golden))
    driver.feed(data, 1.0)
    driver.poll(3600.0)
    totals, c = driver.parser_totals(), driver.counters
    assert (c.frames, c.bad_frames, c.resyncs, c.dropped_bytes) == (totals.frames, totals.bad_frames, totals.resyncs,
                                                                    totals.dropped_bytes)
    assert c.frame_bytes + c.dropped_bytes == golden["consumed"]
    assert c.reasons == {k: v for k, v in totals.reasons.items() if v}


# ----------------------------------------------------------------------------- driver over a real pty


class PacedWriter:
    """Writes pieces to the pty's device side, each once the driver has read the one
    before (so every read ends at a cut); drains whatever the driver sends (commands).
    Starts when ``go`` is set or the driver sends its first command (pyserial empties
    the input queue when it opens the port, so nothing may be written before that)."""

    def __init__(self, pair: PtyPair, pieces: list[bytes], bytes_read: Callable[[], int]) -> None:
        self.pair, self.pieces, self.bytes_read = pair, pieces, bytes_read
        self.total = sum(len(p) for p in pieces)
        self.error: BaseException | None = None
        self.commands = bytearray()
        self._stop = threading.Event()
        self.go = threading.Event()
        self._thread = threading.Thread(target=self._run, name="conformance-writer", daemon=True)

    def __enter__(self) -> "PacedWriter":
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(10.0)
        assert not self._thread.is_alive()

    def _drain(self) -> None:
        while True:
            data = self.pair.read()
            if not data:
                return
            self.commands += data

    def _run(self) -> None:
        try:
            while not (self.go.is_set() or self.commands or self._stop.is_set()):
                select.select([self.pair.master_fd], [], [], 0.01)
                self._drain()
            sent = 0
            for piece in self.pieces:
                view = memoryview(piece)
                while view:
                    if self._stop.is_set():
                        return
                    _, writable, _ = select.select([], [self.pair.master_fd], [], 0.05)
                    self._drain()
                    if writable:
                        view = view[self.pair.write(bytes(view[:4096])):]
                sent += len(piece)
                while self.bytes_read() < sent and not self._stop.is_set():
                    select.select([self.pair.master_fd], [], [], 0.002)  # wake on commands, else poll
                    self._drain()
            while not self._stop.is_set():
                select.select([self.pair.master_fd], [], [], 0.05)
                self._drain()
        except BaseException as exc:  # reported by the test
            self.error = exc


def read_through_pty(profile: Profile, golden: dict, pieces: list[bytes], pair: PtyPair) -> list[dict] | None:
    """Open the driver on the pty, let the writer send the pieces, read until every byte
    was read, then let time pass (a quiet line ends scans and releases held frames).
    None when the open timed out as it must (an RF Explorer capture without a
    configuration line: the driver never hears the answer to its request)."""
    cls = driver_class(profile.kind)
    driver = cls("capture", profile.settings(pair.path, golden))
    total = sum(len(p) for p in pieces)
    readings: list = []
    with PacedWriter(pair, pieces, lambda: driver.counters.bytes_in) as writer:
        try:
            driver.open()
        except DriverTimeoutError:
            # A device that never answered the open (an RF Explorer capture without a
            # configuration line): the driver says so and reads nothing.
            assert profile.kind == "rfexplorer" and not any(
                m["type"] == "config" for m in golden["messages"])
            return None
        writer.go.set()
        try:
            deadline = time.monotonic() + 30.0
            while True:  # at least one read: an RF Explorer returns what it decoded during open
                assert writer.error is None, writer.error
                readings += driver.read()
                if driver.counters.bytes_in >= total:
                    break
                assert time.monotonic() < deadline, f"read {driver.counters.bytes_in} of {total} bytes"
            readings += driver.poll(driver.clock.monotonic() + 3600.0)
        finally:
            driver.close()
    assert writer.error is None, writer.error
    return [jsonable(r) for r in readings]


@pytest.mark.parametrize("kind, path", ALL, ids=IDS)
def test_driver_over_a_real_pty_whole_and_at_random_split_points(kind, path, pty_pair):
    profile, golden, data = PROFILES[kind], golden_of(path), path.read_bytes()
    rng = np.random.default_rng([SEED, 2, len(data)])
    for label, pieces in (("whole", [data]), ("random", random_cuts(data, rng, min(64, 1 + len(data) // 64)))):
        readings = read_through_pty(profile, golden, pieces, pty_pair)
        if readings is not None:
            profile.check_readings(readings, golden, f"{path.name} pty {label}")


# ----------------------------------------------------------------------------- towerd replay


def replay_config(tmp_path: Path, profile: Profile, golden: dict) -> Path:
    mount = "\n    mount: {boresight_azimuth_deg: 0.0, position_enu_m: [0.0, 0.0, 10.0]}" if profile.mount else ""
    noise = "\n    noise: {range_sigma_m: 1.0, azimuth_sigma_deg: 1.0}" if profile.mount else ""
    path = tmp_path / "towerd.yaml"
    path.write_text(f"""\
version: 1
tower: {{id: tx-conformance-001, {SITE}}}
state_dir: {tmp_path / 'state'}
sensors:
  - name: capture
    driver: {profile.kind}
    settings: {profile.yaml_settings(golden)}{mount}{noise}
""")
    return path


@pytest.mark.parametrize("kind, path", ALL, ids=IDS)
def test_towerd_replay_of_the_capture(kind, path, tmp_path, capsys):
    """The capture as a towerd raw capture in seeded random chunks 5 ms apart, replayed by
    the CLI with --readings: the readings are the golden's."""
    profile, golden, data = PROFILES[kind], golden_of(path), path.read_bytes()
    header = RecordingHeader(sensor="capture", driver=kind, settings={}, started_utc_us=1_780_000_000_000_000,
                             started_mono=1000.0, note=f"conformance: {path.name}")
    raw = tmp_path / f"{path.stem}.raw"
    writer = RawWriter(raw, header)
    rng = np.random.default_rng([SEED, 3, len(data)])
    for i, piece in enumerate(random_cuts(data, rng, min(64, 1 + len(data) // 64))):
        writer.write(piece, 1000.0 + 0.005 * i)
    writer.close()
    cfg = replay_config(tmp_path, profile, golden)
    capsys.readouterr()
    status = towerd_main(["replay", str(raw), "--config", str(cfg), "--readings"])
    out = capsys.readouterr()
    assert status == 0, out.err
    lines = [json.loads(line) for line in out.out.splitlines() if line.strip()]
    readings = [x for x in lines if x.get("type") in ("RadarPlots", "GeoPlots", "Spectrum", "RemoteIdReading")]
    profile.check_readings(readings, golden, f"{path.name} replay")
    assert f"{len(data)} bytes" in out.err
