"""Command-line consistency: every command that reads a configuration takes -c; every
--help lists its defaults and exit statuses; one spelling for log levels and durations;
`towerd sim` refuses a --link another sim holds; plurals agree with their numbers."""

from __future__ import annotations

import argparse
import os
import subprocess

import pytest

from processes import Sim
from towerd.cli import EXIT_STATUS, build_parser
from towerd.tools.output import plural


def subparsers(parser: argparse.ArgumentParser, prefix: str = ""):
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, child in action.choices.items():
                full = f"{prefix} {name}".strip()
                yield full, child
                yield from subparsers(child, full)


COMMANDS = dict(subparsers(build_parser()))


@pytest.mark.parametrize("name", sorted(n for n in COMMANDS if n != "central"))
def test_every_help_lists_exit_statuses_and_defaults(name):
    parser = COMMANDS[name]
    text = parser.format_help()
    assert "exit status: " in text, text
    for action in parser._actions:
        if action.option_strings and action.default not in (None, False, argparse.SUPPRESS) and action.help:
            assert "default" in parser._get_formatter()._get_help_string(action), (name, action.dest)


@pytest.mark.parametrize("name", ["run", "check-config", "status", "doctor", "tap", "record", "replay"])
def test_every_command_that_reads_a_configuration_takes_c(name):
    options = {o for a in COMMANDS[name]._actions for o in a.option_strings}
    assert {"-c", "--config"} <= options


def test_one_spelling_for_log_levels_and_durations():
    for name, parser in COMMANDS.items():
        options = {o: a for a in parser._actions for o in a.option_strings}
        assert "--seconds" not in options, name
        if "--log-level" in options:
            assert list(options["--log-level"].choices) == ["debug", "info", "warning", "error"], name
    for name in ("demo", "sim", "tap", "record"):
        assert "--duration" in {o for a in COMMANDS[name]._actions for o in a.option_strings}, name
    from towerd.central.server import main as central_main  # its own parser: same spelling
    with pytest.raises(SystemExit) as exit_info:
        central_main(["--db", "x.sqlite", "--plain", "--log-level", "verbose"])
    assert exit_info.value.code == 2


def test_plurals():
    assert [plural(n, "central") for n in (0, 1, 2)] == ["0 centrals", "1 central", "2 centrals"]


def test_sim_refuses_a_link_another_sim_holds(towerd_exe, tmp_path):
    link = tmp_path / "radar0"
    first = Sim(towerd_exe, tmp_path, "--device", "nmea_radar", "--link", str(link), log_name="first.log")
    try:
        first.wait_for("ready")
        target = os.readlink(link)
        second = subprocess.run([towerd_exe, "sim", "--device", "nmea_radar", "--link", str(link), "--duration", "1"],
                                capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)
        assert second.returncode == 1, second.stdout + second.stderr
        assert f"{link} is in use: it points at {target}, held by " in second.stderr
        assert os.readlink(link) == target, "the first sim's link is left alone"
    finally:
        assert first.stop() == 0, first.log()
    assert not link.exists()
    # A stale link (its sim is gone) is simply replaced.
    os.symlink("/dev/pts/999999", link)
    again = subprocess.run([towerd_exe, "sim", "--device", "nmea_radar", "--link", str(link), "--duration", "0.5"],
                           capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)
    assert again.returncode == 0, again.stderr
    assert not os.path.lexists(link)


def test_every_command_in_exit_status_exists():
    assert set(EXIT_STATUS) <= set(COMMANDS)
