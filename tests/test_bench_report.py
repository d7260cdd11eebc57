"""The benchmark report's merge (``python -m benchmarks --only ... --update``): a section
kept from an earlier run says when, on which CPU and at which commit it was measured, so
that figures from two machines are never read as one run's."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # benchmarks/ is run from the repository, not installed

from benchmarks.__main__ import STAMP, merge, render  # noqa: E402
from benchmarks.common import Figure, Section  # noqa: E402


def info(date: str, cpu: str, commit: str) -> dict[str, str]:
    return {"date (UTC)": date, "cpu": cpu, "towerd commit": commit}


def section(title: str, value: float) -> Section:
    return Section(title, [Figure("speed", value, "MB/s", reference="beside")], "text")


def test_each_rendered_section_ends_with_its_run() -> None:
    text = render([section("A", 1.0), section("B", 2.0)], info("2026-12-01 10:00", "EPYC, 2 cores", "aaa1111"), False)
    stamps = [line for line in text.splitlines() if line.startswith(STAMP)]
    assert stamps == ["_Measured 2026-12-01 10:00 UTC on EPYC, 2 cores, towerd commit aaa1111._"] * 2


def test_merge_keeps_the_old_sections_stamp_and_stamps_the_new_ones() -> None:
    old = render([section("A", 1.0), section("B", 2.0)], info("2026-12-01 10:00", "EPYC, 2 cores", "aaa1111"), False)
    new = render([section("B", 3.0)], info("2026-12-04 18:00", "Xeon, 2 cores", "bbb2222"), False)
    merged = merge(old, new)
    a, b = merged.split("## A", 1)[1].split("## B", 1)
    assert "EPYC, 2 cores, towerd commit aaa1111" in a and "Xeon" not in a
    assert "Xeon, 2 cores, towerd commit bbb2222" in b and "EPYC" not in b and "3" in b
    assert "| cpu | Xeon, 2 cores |" in merged.split("## ", 1)[0]


def test_merge_marks_a_section_from_before_the_stamps() -> None:
    old = render([section("A", 1.0)], info("2026-11-30 06:07", "EPYC, 2 cores", "ccc3333"), False)
    old = "\n".join(line for line in old.splitlines() if not line.startswith(STAMP))
    merged = merge(old, render([section("B", 3.0)], info("2026-12-04 18:00", "Xeon, 2 cores", "ddd4444"), False))
    a = merged.split("## A", 1)[1].split("## B", 1)[0]
    assert "_Measured at or before 2026-11-30 06:07 UTC on EPYC, 2 cores (this section's own run date" in a
