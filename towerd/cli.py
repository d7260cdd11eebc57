"""``towerd`` command line: run, central, demo, check-config."""

from __future__ import annotations

import argparse
import importlib
import logging
import signal
import sys
import threading
from typing import Callable

from towerd import __version__
from towerd.config import DEFAULT_PATH, load_config
from towerd.errors import EX_CONFIG, ConfigError, TowerdError
from towerd.logsetup import setup_logging

log = logging.getLogger("towerd")

COMMAND_MODULES: tuple[str, ...] = ("towerd.status", "towerd.doctor", "towerd.keys", "towerd.tools")
"""Modules that add subcommands: each has ``register(subparsers)`` which adds its
parser(s) with ``set_defaults(func=...)``; ``func(args) -> int`` is the exit status."""


def _stop_on_signals(stop: threading.Event, reload: Callable[[], None] | None = None) -> None:
    """SIGTERM/SIGINT set ``stop``; SIGHUP calls ``reload`` (or is ignored with a log line)."""

    def handler(signum: int, _frame: object) -> None:
        log.info("received %s", signal.Signals(signum).name)
        stop.set()

    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGINT, handler)

    def hup(_signum: int, _frame: object) -> None:
        if reload is None:
            log.info("SIGHUP ignored: nothing to reload")
        else:
            log.info("SIGHUP: reloading the configuration")
            reload()

    signal.signal(signal.SIGHUP, hup)


def cmd_run(args: argparse.Namespace) -> int:
    from towerd.daemon import Daemon

    try:
        loaded = load_config(args.config)
    except ConfigError as exc:
        for problem in exc.problems:
            print(problem, file=sys.stderr)
        print(f"towerd: configuration {args.config} is invalid, not starting", file=sys.stderr)
        return EX_CONFIG
    setup_logging(args.log_level or loaded.config.logging.level)
    # A file size limit (ulimit -f) must fail the outbox's writes (EFBIG), which it
    # handles like a full disk and status shows, not kill the daemon.
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    stop = threading.Event()
    try:
        daemon = Daemon(loaded)
        _stop_on_signals(stop, daemon.request_reload)
        daemon.run(stop)
    except ConfigError as exc:
        log.error("configuration problem: %s", exc)
        return EX_CONFIG
    except TowerdError as exc:
        log.error("%s", exc)
        return 1
    return 0


def cmd_check_config(args: argparse.Namespace) -> int:
    try:
        loaded = load_config(args.file)
    except ConfigError as exc:
        for problem in exc.problems:
            print(problem, file=sys.stderr)
        n = len(exc.problems)
        print(f"{args.file}: {n} problem{'s' if n != 1 else ''}, configuration rejected", file=sys.stderr)
        return 1
    cfg = loaded.config
    print(f"{args.file}: configuration OK (tower {cfg.tower.id}, {len(cfg.sensors)} sensors, "
          f"{len(cfg.centrals)} centrals, sha256 {loaded.digest[:16]})")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from towerd.demo import run_demo

    setup_logging(args.log_level)
    stop = threading.Event()
    _stop_on_signals(stop)
    return run_demo(duration_s=args.duration, stop=stop, seed=args.seed, show=args.show)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="towerd", description="Sensor tower daemon: radars and RF sensors in, "
                                     "drone tracks out to the central over ZeroMQ (ICD v1).")
    parser.add_argument("--version", action="version", version=f"towerd {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("run", help="run the daemon")
    p.add_argument("--config", "-c", default=DEFAULT_PATH, help=f"configuration file (default {DEFAULT_PATH})")
    p.add_argument("--log-level", choices=["debug", "info", "warning", "error"],
                   help="override logging.level from the configuration")
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("check-config", help="validate a configuration file and exit 0 (valid) or 1")
    p.add_argument("file", nargs="?", default=DEFAULT_PATH)
    p.set_defaults(func=cmd_check_config)

    # Listed for --help only: main() hands `towerd central ...` to the central's own parser.
    sub.add_parser("central", help="run the reference central receiver (see `towerd central --help`)",
                   add_help=False)

    p = sub.add_parser("demo", help="simulated radar, daemon and local central with live tracks on screen")
    p.add_argument("--duration", type=float, default=None, metavar="S",
                   help="stop after S seconds and print a summary (default: until Ctrl-C)")
    p.add_argument("--seed", type=int, default=1, help="random seed of the simulated radar")
    p.add_argument("--show", choices=["auto", "live", "lines", "none"], default="auto",
                   help="live table (terminal), periodic lines (pipe), or nothing until the summary")
    p.add_argument("--log-level", default="warning", choices=["debug", "info", "warning", "error"])
    p.set_defaults(func=cmd_demo)

    for name in COMMAND_MODULES:
        importlib.import_module(name).register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["central"]:
        # The central parses its own options (argparse REMAINDER mishandles leading flags).
        from towerd.central.server import main as central_main

        return central_main(argv[1:])
    args = build_parser().parse_args(argv)
    return args.func(args)
