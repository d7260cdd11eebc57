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
from towerd.config import DEFAULT_PATH, LoadedConfig, load_config
from towerd.errors import EX_CONFIG, ConfigError, TowerdError
from towerd.files import Account, check_files, key_marks, service_account
from towerd.logsetup import setup_logging
from towerd.tools.output import plural

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


def file_problems(loaded: LoadedConfig, account: Account) -> list[str]:
    """The configuration's files as ``account`` meets them, as located messages."""
    problems = check_files(loaded.config, account)
    if not problems:
        return []
    marks = key_marks(loaded.path)
    located = sorted(problems, key=lambda p: marks.get(p.key, (1, 1)))
    return [p.format(loaded.path, marks) for p in located]


def cmd_run(args: argparse.Namespace) -> int:
    from towerd.daemon import Daemon

    try:
        loaded = load_config(args.config)
        # Before anything is created on disk: the files the configuration names, as
        # this process (the service user) will open them.
        problems = file_problems(loaded, Account.caller())
    except ConfigError as exc:
        problems = exc.problems
    if problems:
        for problem in problems:
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
    path = args.file or args.config
    account = None
    try:
        loaded = load_config(path)
        problems = []
        if not args.schema_only:
            account = service_account(args.user)
            problems = file_problems(loaded, account)
    except ConfigError as exc:
        problems = exc.problems
    if problems:
        for problem in problems:
            print(problem, file=sys.stderr)
        print(f"{path}: {plural(len(problems), 'problem')}, configuration rejected", file=sys.stderr)
        return 1
    cfg = loaded.config
    checked = "schema only" if account is None else f"files checked as user {account.name}"
    print(f"{path}: configuration OK (tower {cfg.tower.id}, {plural(len(cfg.sensors), 'sensor')}, "
          f"{plural(len(cfg.centrals), 'central')}, sha256 {loaded.digest[:16]}; {checked})")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from towerd.demo import run_demo

    setup_logging(args.log_level)
    stop = threading.Event()
    _stop_on_signals(stop)
    return run_demo(duration_s=args.duration, stop=stop, seed=args.seed, show=args.show)


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Every option's default in --help (unless its text gives it already or there is
    none), and epilogs kept as written."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        text = action.help or ""
        if "default" in text or action.default in (None, False, argparse.SUPPRESS) or not action.option_strings:
            return text
        return text + " (default: %(default)s)"

    def _fill_text(self, text: str, width: int, indent: str) -> str:
        return "".join(indent + line for line in text.splitlines(keepends=True))


EXIT_STATUS = {
    "run": "0 stopped by SIGTERM/SIGINT, 1 failed while running, 78 configuration or a file it names is "
           "invalid (systemd does not restart it)",
    "check-config": "0 valid, 1 problems (each as file:line:col: key: message), 2 bad usage",
    "status": "0 all well, 1 something needs attention (the sentences say what), 3 the daemon does not answer",
    "doctor": "0 no problems found, 1 problems found (each with its fix), 2 bad usage",
    "demo": "0 tracks were received, 1 none were, 2 bad usage",
    "tap": "0 done, 1 the sensor failed, 75 the port is busy, 78 configuration invalid, 2 bad usage",
    "record": "0 done, 1 the sensor failed, 75 the port is busy, 78 configuration invalid, 2 bad usage",
    "replay": "0 done, 1 the capture is unusable, 78 configuration invalid, 2 bad usage",
    "sim": "0 stopped, 1 could not start (a port or link in use, a bad scenario), 2 bad usage",
    "keys": "0 done, 1 refused (the message says why), 2 bad usage",
}
"""What each command's exit status means, shown at the end of its --help."""


def _finish_help(parser: argparse.ArgumentParser, name: str) -> None:
    """Defaults and exit statuses in every subcommand's --help, nested ones included."""
    parser.formatter_class = HelpFormatter
    top = name.split()[0]
    if not parser.epilog and top in EXIT_STATUS:
        parser.epilog = f"exit status: {EXIT_STATUS[top]}"
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for child_name, child in action.choices.items():
                _finish_help(child, f"{name} {child_name}")


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

    p = sub.add_parser("check-config", help="validate a configuration file and the files it names; exit 0 "
                       "(valid) or 1", epilog="exit status: 0 valid, 1 problems (each printed as "
                       "file:line:col: key: message), 2 bad usage", formatter_class=HelpFormatter)
    p.add_argument("file", nargs="?", default=None, help=f"configuration file (same as -c; default {DEFAULT_PATH})")
    p.add_argument("--config", "-c", default=DEFAULT_PATH, help="configuration file")
    p.add_argument("--schema-only", action="store_true",
                   help="check the YAML only, not the files it names (keys, chirp profile, state directory)")
    p.add_argument("--user", help="check the files as this user can use them (default: the service user "
                   "'towerd' when run as root and it exists, else you)")
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
    for name, child in sub.choices.items():
        if name != "central":
            _finish_help(child, name)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["central"]:
        # The central parses its own options (argparse REMAINDER mishandles leading flags).
        from towerd.central.server import main as central_main

        return central_main(argv[1:])
    args = build_parser().parse_args(argv)
    return args.func(args)
