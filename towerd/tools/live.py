"""``towerd tap`` and ``towerd record``: one configured sensor, opened by itself.

Both open the sensor exactly as the daemon does (same driver, same settings, so a TI
radar with ``cli_port`` gets its chirp configuration pushed first) and hold its ports
with the same exclusive lock. They never take a port from a running daemon: when the
port is busy they say so, name the process holding it, and exit with status 75
(EX_TEMPFAIL) without touching the device.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import sys
import threading
import time
from pathlib import Path
from typing import Any, Callable

from towerd.clock import SystemClock
from towerd.config import DEFAULT_PATH, SensorConfig, load_config
from towerd.drivers import driver_class
from towerd.drivers.base import SensorDriver
from towerd.errors import EX_CONFIG, ConfigError, DriverError
from towerd.tools.output import dumps, jsonable
from towerd.tools.recording import RawWriter, RecordingError, RecordingHeader

EX_TEMPFAIL = 75
"""sysexits.h: the port is busy (try again later)."""


def find_sensor(config_path: str, name: str) -> SensorConfig:
    """The sensor called ``name`` in the configuration; ConfigError otherwise."""
    cfg = load_config(config_path).config
    for sensor in cfg.sensors:
        if sensor.name == name:
            return sensor
    known = ", ".join(s.name for s in cfg.sensors) or "none"
    raise ConfigError(f"{config_path}: no sensor named {name!r} (sensors: {known})")


def open_driver(
    sensor: SensorConfig, tool: str, before_open: Callable[[SensorDriver], None] | None = None
) -> tuple[SensorDriver | None, int]:
    """Make and open the sensor's driver: (driver, 0), or (None, exit status) after
    printing why it could not be opened. ``before_open`` runs first (e.g. to attach a
    raw sink, so that what the device says while it is being configured is kept)."""
    driver = driver_class(sensor.driver)(sensor.name, sensor.settings, clock=SystemClock())
    if before_open is not None:
        before_open(driver)
    try:
        driver.open()
    except DriverError as exc:
        busy = "busy" in str(exc)
        print(f"towerd {tool}: sensor {sensor.name}: {exc}", file=sys.stderr)
        if busy:
            print(f"towerd {tool}: the port is in use; nothing was sent to the device. If the daemon holds it, "
                  f"its readings are in the journal (`journalctl -u towerd`), or stop it for a moment "
                  f"(`systemctl stop towerd`).", file=sys.stderr)
        return None, EX_TEMPFAIL if busy else 1
    return driver, 0


def _stop_event() -> threading.Event:
    import signal

    stop = threading.Event()

    def handler(_signum: int, _frame: object) -> None:
        stop.set()

    signal.signal(signal.SIGINT, handler)
    signal.signal(signal.SIGTERM, handler)
    return stop


def _load(args: argparse.Namespace, tool: str) -> tuple[SensorConfig | None, int]:
    try:
        return find_sensor(args.config, args.sensor), 0
    except ConfigError as exc:
        for problem in exc.problems:
            print(problem, file=sys.stderr)
        print(f"towerd {tool}: cannot use {args.config}", file=sys.stderr)
        return None, EX_CONFIG


def cmd_tap(args: argparse.Namespace) -> int:
    """Print the sensor's decoded readings as JSON lines until Ctrl-C, --count or --duration."""
    sensor, status = _load(args, "tap")
    if sensor is None:
        return status
    stop = _stop_event()
    driver, status = open_driver(sensor, "tap")
    if driver is None:
        return status
    shown = 0
    deadline = time.monotonic() + args.duration if args.duration else None
    try:
        while not stop.is_set() and (deadline is None or time.monotonic() < deadline):
            try:
                readings = driver.read()
            except DriverError as exc:
                print(f"towerd tap: sensor {sensor.name}: {exc}", file=sys.stderr)
                return 1
            for reading in readings:
                print(dumps(jsonable(reading)), flush=True)
                shown += 1
                if args.count and shown >= args.count:
                    return 0
    except BrokenPipeError:  # `towerd tap ... | head`
        return 0
    finally:
        driver.close()
        print(f"towerd tap: {shown} readings; counters {dumps(driver.counters.as_dict())}; "
              f"device {dumps(jsonable(driver.status()))}", file=sys.stderr)
    return 0


def _settings_dict(settings: Any) -> dict[str, Any]:
    return jsonable(dataclasses.asdict(settings)) if dataclasses.is_dataclass(settings) else {}


def cmd_record(args: argparse.Namespace) -> int:
    """Save the sensor's raw bytes with their timing for --duration (see recording.py)."""
    sensor, status = _load(args, "record")
    if sensor is None:
        return status
    stop = _stop_event()
    opened: dict[str, Any] = {}

    def attach_writer(driver: SensorDriver) -> None:
        """Start the capture before the port opens: the configuration dialogue (e.g. an
        RF Explorer's model and settings lines) is part of what replay needs."""
        started = driver.clock.monotonic()
        utc_us = driver.clock.utc_us(started)
        header = RecordingHeader(
            sensor=sensor.name, driver=sensor.driver, settings=_settings_dict(sensor.settings),
            mount=jsonable(dataclasses.asdict(sensor.mount)) if sensor.mount else None,
            started_utc_us=utc_us, started_mono=started,
            started_utc=datetime.datetime.fromtimestamp(utc_us / 1e6, datetime.timezone.utc).isoformat(),
            note=args.note,
        )
        writer = opened["writer"] = RawWriter(args.file, header)
        opened["started"] = started

        def keep(data: bytes, t_mono: float) -> None:
            # A read that returns after the end (it waited for bytes) is not part of
            # the --duration asked for.
            if t_mono - started <= args.duration:
                writer.write(data, t_mono)

        driver.raw_sink = keep

    try:
        driver, status = open_driver(sensor, "record", before_open=attach_writer)
    except RecordingError as exc:
        print(f"towerd record: {exc}", file=sys.stderr)
        return 1
    if driver is None:
        if "writer" in opened:  # nothing was captured: leave no empty file behind
            opened["writer"].close()
            Path(args.file).unlink(missing_ok=True)
        return status
    writer, started, clock = opened["writer"], opened["started"], driver.clock
    readings = 0
    try:
        while not stop.is_set() and clock.monotonic() - started < args.duration:
            try:
                readings += len(driver.read())
            except DriverError as exc:
                print(f"towerd record: sensor {sensor.name}: {exc}; the capture keeps what came before",
                      file=sys.stderr)
                return 1
    finally:
        driver.close()
        writer.close()
        print(f"towerd record: {args.file}: {writer.bytes} bytes in {writer.chunks} chunks over "
              f"{clock.monotonic() - started:.1f} s from {sensor.name} ({sensor.driver}); {readings} readings "
              f"decoded; counters {dumps(driver.counters.as_dict())}", file=sys.stderr)
    return 0


def register_live(sub: Any) -> None:
    p = sub.add_parser("tap", help="print one sensor's decoded readings as JSON lines (like gpspipe)",
                       description="Open one configured sensor by itself and print what it decodes, one JSON "
                                   "object a line. Refuses (exit 75) when the port is busy, e.g. held by the "
                                   "running daemon.")
    p.add_argument("sensor", help="sensor name from the configuration")
    p.add_argument("--config", "-c", default=DEFAULT_PATH, help=f"configuration file (default {DEFAULT_PATH})")
    p.add_argument("--count", "-n", type=int, default=0, help="stop after N readings")
    p.add_argument("--duration", type=float, default=0.0, metavar="S", help="stop after S seconds (default: 0, no limit)")
    p.set_defaults(func=cmd_tap)

    p = sub.add_parser("record", help="save one sensor's raw bytes with timestamps to a file",
                       description="Open one configured sensor and save every byte it sends, with the time it "
                                   "was read, to FILE (format: docs/raw-capture-format.md); replay it with "
                                   "`towerd replay FILE`.")
    p.add_argument("sensor", help="sensor name from the configuration")
    p.add_argument("file", help="capture file to write")
    p.add_argument("--duration", type=float, required=True, metavar="S", help="how long to record, in seconds")
    p.add_argument("--config", "-c", default=DEFAULT_PATH, help=f"configuration file (default {DEFAULT_PATH})")
    p.add_argument("--note", default="", help="free text kept in the file's header (site, what was seen)")
    p.set_defaults(func=cmd_record)
