"""``towerd replay``: a raw capture through its driver and the whole pipeline.

The bytes go through a driver of the recorded kind (``feed`` with the recorded read
times, ``poll`` as recorded time passes, as :meth:`SensorDriver.read` does live) and
every reading through :class:`towerd.pipeline.Pipeline` on a clock that shows the
recorded time (monotonic = the recorder's, UTC = the recording's start plus the
offset), so track records carry the times of the field session. Stale tracks are
expired every 0.25 s of recorded time, as the daemon does, and the end of the capture
ends every track. Output: one JSON object per track record (``--readings`` also prints
each reading), as fast as possible or, with ``--realtime``, at the recorded pace.

Mounting, site and tracker settings come from the configuration file; the sensor's
driver settings too when the configuration has a sensor of the recorded name (else the
recorded settings are used). ``--sensor`` replays the capture as another configured
sensor (another mounting, say).
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
import types
import typing
from typing import Any

from towerd.clock import ManualClock
from towerd.config import DEFAULT_PATH, load_config
from towerd.drivers import driver_class
from towerd.errors import EX_CONFIG, ConfigError
from towerd.tools.output import dumps, jsonable, plural, track_records
from towerd.tools.recording import RecordingError, read_recording

EXPIRE_INTERVAL_S = 0.25
"""As the daemon's main loop."""
END_MARGIN_S = 60.0
"""After the last byte, time is moved on this far so held-back readings come out."""


def _settings_from_header(cls: type, raw: dict[str, Any]) -> Any:
    """Rebuild a Settings dataclass from its recorded dict: the header holds JSON, so
    nested dataclasses (an RF Explorer's scan plan of Band) come back as dicts and
    tuples as lists; both are rebuilt from the field types, at any depth."""
    if not isinstance(raw, dict):
        raise ValueError(f"expected an object for {cls.__name__}, got {raw!r}")
    hints = typing.get_type_hints(cls)
    values = {f.name: _from_json(hints[f.name], raw[f.name]) for f in dataclasses.fields(cls) if f.name in raw}
    return cls(**values)


def _from_json(hint: Any, value: Any) -> Any:
    """``value`` as read from JSON, turned back into the type ``hint`` names where JSON
    lost it (dataclass from a dict, tuple from a list); anything else is left as it is."""
    if dataclasses.is_dataclass(hint) and isinstance(hint, type):
        return _settings_from_header(hint, value)
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin is tuple and isinstance(value, list):
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_from_json(args[0], v) for v in value)
        if args and len(args) == len(value):
            return tuple(_from_json(a, v) for a, v in zip(args, value))
        return tuple(value)
    if origin in (typing.Union, types.UnionType) and value is not None:
        for arg in args:  # Band | None and the like: the first dataclass member that takes it
            if dataclasses.is_dataclass(arg) and isinstance(value, dict):
                return _settings_from_header(arg, value)
    return value


def cmd_replay(args: argparse.Namespace) -> int:
    try:
        recording = read_recording(args.file)
    except RecordingError as exc:
        print(f"towerd replay: {exc}", file=sys.stderr)
        return 1
    header = recording.header
    try:
        config = load_config(args.config).config
    except ConfigError as exc:
        for problem in exc.problems:
            print(problem, file=sys.stderr)
        return EX_CONFIG
    name = args.sensor or header.sensor
    sensor = next((s for s in config.sensors if s.name == name), None)
    if sensor is None:
        known = ", ".join(s.name for s in config.sensors) or "none"
        print(f"towerd replay: sensor {name!r} of the capture is not in {args.config} (sensors: {known}); "
              f"pass --sensor NAME to replay it as a configured sensor", file=sys.stderr)
        return EX_CONFIG
    try:
        cls = driver_class(header.driver)
    except ConfigError as exc:
        print(f"towerd replay: {exc}", file=sys.stderr)
        return EX_CONFIG
    if sensor.driver == header.driver:
        settings = sensor.settings
    else:
        try:
            settings = _settings_from_header(cls.Settings, header.settings)
        except (TypeError, ValueError, ConfigError) as exc:
            print(f"towerd replay: the recorded {header.driver} settings are unusable: {exc}", file=sys.stderr)
            return 1
    from towerd.pipeline import Pipeline  # detection and tracking: imported once the inputs are good

    t0 = header.started_mono
    clock = ManualClock(start_mono=t0, utc_epoch_us=header.started_utc_us - round(t0 * 1e6))
    driver = cls(name, settings, clock=clock)
    pipeline = Pipeline(config, clock)
    counts = {"readings": 0, "records": 0}

    def emit_records(records: Any) -> None:
        for row in track_records(records):
            print(dumps(row), flush=args.realtime)
            counts["records"] += 1

    def handle(readings: list[Any]) -> None:
        for reading in readings:
            counts["readings"] += 1
            if args.readings:
                print(dumps(jsonable(reading)), flush=args.realtime)
            emit_records(pipeline.process(reading))

    wall0 = time.monotonic()
    next_expire = t0
    try:
        for offset, data in recording.records:
            t = t0 + offset
            if args.realtime:
                pause = offset - (time.monotonic() - wall0)
                if pause > 0:
                    time.sleep(pause)
            while next_expire <= t:  # time passes between reads as it did live
                clock.advance(next_expire - clock.monotonic())
                handle(driver.poll(next_expire))
                emit_records(pipeline.expire(next_expire))
                next_expire += EXPIRE_INTERVAL_S
            clock.advance(t - clock.monotonic())
            handle(driver.feed(data, t))
            handle(driver.poll(t))
        t_end = t0 + recording.duration_s + END_MARGIN_S
        clock.advance(t_end - clock.monotonic())
        handle(driver.poll(t_end))
        emit_records(pipeline.end_all(t_end))
    except BrokenPipeError:
        return 0
    c = driver.counters
    print(f"towerd replay: {args.file}: {plural(recording.total_bytes, 'byte')}, "
          f"{plural(len(recording.records), 'chunk')}, "
          f"{recording.duration_s:.1f} s of {header.driver} {header.sensor!r} from {header.started_utc or '?'}"
          f"{' (cut short)' if recording.truncated else ''}; {plural(counts['readings'], 'reading')}, "
          f"{plural(counts['records'], 'track record')}; frames {c.frames} ({c.frame_bytes} bytes), bad {c.bad_frames}, "
          f"resyncs {c.resyncs}, dropped bytes {c.dropped_bytes}"
          f"{''.join(f', {key} {n}' for key, n in c.reasons.items())}; device {dumps(jsonable(driver.status()))}", file=sys.stderr)
    return 0


def register_replay(sub: Any) -> None:
    p = sub.add_parser("replay", help="feed a capture through its driver and the whole pipeline",
                       description="Replay a `towerd record` capture through the driver, detection, tracking "
                                   "and reports, printing the track records as JSON lines.")
    p.add_argument("file", help="capture file written by `towerd record`")
    p.add_argument("--config", "-c", default=DEFAULT_PATH,
                   help=f"configuration with the site, the sensor's mount and the tracker (default {DEFAULT_PATH})")
    p.add_argument("--sensor", help="replay as this configured sensor (default: the recorded sensor's name)")
    p.add_argument("--realtime", action="store_true", help="keep the recorded pace (default: as fast as possible)")
    p.add_argument("--readings", action="store_true", help="also print every decoded reading")
    p.set_defaults(func=cmd_replay)
