"""``python -m benchmarks [--quick] [--only NAME ...] [--out docs/benchmarks.md]``"""

from __future__ import annotations

import argparse
import importlib
import sys
import time
from pathlib import Path

from benchmarks.common import Section, machine

SUITES = ("parsers", "tracking", "tower", "outbox", "sensing", "hostile", "rf_sensing", "radar_clutter", "console", "central_pg", "central_pg_backlog", "remoteid", "identity", "stages", "coldstart", "rid_fusion")
"""Benchmark modules, each with ``run(quick: bool) -> Section``, in report order."""


def render(sections: list[Section], info: dict[str, str], quick: bool) -> str:
    lines = [
        "# Benchmarks",
        "",
        "Measured by `bash scripts/bench`" + (" --quick" if quick else "") + " (`python -m benchmarks`). "
        "Every figure is the median of several runs, with the range (min–max) in brackets, "
        "and its reference measured in the same run. Regenerate rather than edit.",
        "",
        "| machine | |",
        "|---|---|",
        *[f"| {k} | {v} |" for k, v in info.items()],
        "",
    ]
    for section in sections:
        lines += [f"## {section.title}", ""]
        if section.text:
            lines += [section.text, ""]
        if section.figures:
            lines += ["| figure | measured | beside it |", "|---|---|---|"]
            for f in section.figures:
                lines.append(f"| {f.name} | {f.format_value()} | {f.reference} |")
            lines.append("")
            notes = [f"- {f.name}: {f.note}" for f in section.figures if f.note]
            if notes:
                lines += notes + [""]
        lines += [stamp(info), ""]
    return "\n".join(lines)


STAMP = "_Measured "
"""How the line that ends each section, saying when and where it was measured, starts."""


def stamp(info: dict[str, str]) -> str:
    """The line ending a section: its run's date, CPU and commit (from :func:`machine`),
    so that a section kept from an earlier run on another machine says so."""
    return (f"{STAMP}{info.get('date (UTC)', 'unknown')} UTC on {info.get('cpu', 'an unknown cpu')}, "
            f"towerd commit {info.get('towerd commit', 'unknown')}._")


def _machine_table(head: str) -> dict[str, str]:
    """The machine table of a rendered report's preamble, as :func:`machine` gave it."""
    rows = (line.split("|") for line in head.splitlines() if line.startswith("| ") and line.count("|") == 3)
    return {r[1].strip(): r[2].strip() for r in rows if r[1].strip() not in ("machine", "")}


def _split(text: str) -> tuple[str, dict[str, str]]:
    """(preamble, {"## title": section text}) of a rendered report."""
    head, *parts = text.split("\n## ")
    return head, {"## " + p.split("\n", 1)[0]: "## " + p for p in parts}


def merge(old: str, new: str) -> str:
    """``old`` with the sections ``new`` has replaced (the machine table from ``new``,
    noting that other sections are from an earlier run)."""
    old_head, old_sections = _split(old.rstrip("\n"))
    new_head, new_sections = _split(new.rstrip("\n"))
    old_info = _machine_table(old_head)
    unstamped = (f"{STAMP}at or before {old_info.get('date (UTC)', 'an unknown date')} UTC on "
                 f"{old_info.get('cpu', 'an unknown cpu')} (this section's own run date and commit "
                 "were not recorded)._")
    for title, text in old_sections.items():
        if STAMP not in text:
            old_sections[title] = text.rstrip("\n") + "\n\n" + unstamped + "\n"
    merged = {**old_sections, **new_sections}
    order = list(old_sections) + [k for k in new_sections if k not in old_sections]
    note = ("The machine above is this run's. Sections not re-run in it keep the figures of an "
            "earlier run: each section ends with the date, CPU and commit of the run that "
            "measured it.\n")
    return new_head.rstrip("\n") + "\n\n" + note + "\n" + "\n".join(merged[k].rstrip("\n") + "\n" for k in order)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="fewer runs and smaller inputs (under a minute)")
    parser.add_argument("--only", nargs="*", choices=SUITES, help="run only these suites")
    parser.add_argument("--out", default="docs/benchmarks.md", help="where to write the report ('-': stdout only)")
    parser.add_argument("--update", action="store_true",
                        help="with --only: replace just those sections in the existing report")
    args = parser.parse_args(argv)
    sections = []
    for name in args.only or SUITES:
        t0 = time.monotonic()
        print(f"== {name} ...", file=sys.stderr, flush=True)
        section = importlib.import_module(f"benchmarks.{name}").run(args.quick)
        sections.append(section)
        for f in section.figures:
            print(f"   {f.name}: {f.format_value()}  [{f.reference}]", file=sys.stderr, flush=True)
        print(f"   ({time.monotonic() - t0:.1f} s)", file=sys.stderr, flush=True)
    report = render(sections, machine(), args.quick)
    if args.update and args.out != "-" and Path(args.out).exists():
        report = merge(Path(args.out).read_text(), report)
    print(report)
    if args.out != "-":
        Path(args.out).write_text(report + "\n")
        print(f"wrote {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
