"""Logging: repeated warnings are rate-limited per message template, with a count of
what was suppressed; structured extras become journald's UPPERCASE fields."""

from __future__ import annotations

import logging

from towerd.logsetup import RateLimitFilter, _JournalFields


class Clock:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


def record(msg: str, level: int = logging.ERROR, **extra) -> logging.LogRecord:
    rec = logging.LogRecord("towerd.sensors", level, __file__, 1, msg, ("radar0",), None)
    for k, v in extra.items():
        setattr(rec, k, v)
    return rec


def test_rate_limit_per_template_and_suppressed_count():
    clock = Clock()
    f = RateLimitFilter(burst=3, interval_s=10.0, clock=clock)
    passed = [f.filter(record("sensor %s: read failed")) for _ in range(50)]
    assert passed == [True] * 3 + [False] * 47
    assert f.filter(record("another %s problem"))  # a different template has its own budget
    assert f.filter(record("sensor %s: ok", level=logging.INFO))  # info is never limited
    clock.t = 10.5
    rec = record("sensor %s: read failed")
    assert f.filter(rec)
    assert rec.getMessage() == "sensor radar0: read failed [47 similar messages suppressed]"


def test_structured_fields_are_uppercased_for_the_journal():
    rec = record("x %s", sensor="radar0", central="hq")
    assert _JournalFields().filter(rec)
    assert rec.SENSOR == "radar0" and rec.CENTRAL == "hq"
    assert not hasattr(rec, "TRACK")
