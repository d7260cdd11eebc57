"""Per-tower limits of the reference central, and the token bucket that enforces rates.

Why: one allowed tower (a stolen tower computer) or, with ``--plain``, anyone must not be
able to monopolise the central: its store, its memory or its log. Every limit has a
default that a genuine tower never reaches (docs/protocol.md "Limits"); an operator
may change the defaults and give single towers their own values in a YAML file
(``towerd central --limits FILE``), validated like towerd's own configuration (unknown
keys, wrong types and out-of-range values are errors: exit 78)::

    default:
      max_message_bytes: 6291456
      records_per_s: 20000
    towers:
      - tower: tx-lrd-014
        records_per_s: 50000

Rates slow a tower down instead of losing its data: records beyond its rate wait (in a
bounded queue) and are stored and acknowledged when the bucket refills; only when that
queue is full is a message refused, unacknowledged (the tower keeps it and sends it
again) and answered with ERROR ``central.busy``.
"""

from __future__ import annotations

import dataclasses
import typing
from dataclasses import dataclass
from pathlib import Path

from towerd.errors import ConfigError
from towerd.schema import INVALID, Validator, compose, read_config_text, spec

MAX_LIMITS_FILE_BYTES = 1 << 20


_PER_TOWER: dict[str, dict] = {
    "max_message_bytes": dict(default=6 * 1024 * 1024, doc="largest message (a full TRACKS is 5,242,896 bytes)",
                              unit="bytes", lo=1024, hi=64 * 1024 * 1024),
    "max_event_bytes": dict(default=64 * 1024, doc="largest EVENTS object, as stored", unit="bytes", lo=256,
                            hi=16 * 1024 * 1024),
    "max_health_bytes": dict(default=64 * 1024, doc="largest HEALTH body", unit="bytes", lo=256,
                             hi=16 * 1024 * 1024),
    "max_health_values": dict(default=4096, doc="most JSON values (keys count) in a HEALTH body", lo=16,
                              hi=200_000),
    "records_per_s": dict(default=20_000.0, doc="records (tracks and events) stored per second, bursts of one "
                          "second", unit="records/s", lo=1.0, hi=10_000_000.0),
    "bytes_per_s": dict(default=8.0 * 1024 * 1024, doc="message bytes stored per second, bursts of one second",
                        unit="bytes/s", lo=1024.0, hi=1e10),
    "max_deferred_bytes": dict(default=16 * 1024 * 1024, doc="messages held back by the rates, waiting to be "
                               "stored; beyond it a message is refused unacknowledged (ERROR central.busy)",
                               unit="bytes", lo=0, hi=1 << 34),
    "error_replies_per_s": dict(default=20.0, doc="ERROR replies to its malformed or refused messages per second, "
                                "bursts of 50; beyond it they are counted, not answered (no amplification)",
                                unit="1/s", lo=0.0, hi=1_000_000.0),
    "handshakes_per_s": dict(default=2.0, doc="CURVE handshakes admitted per second for one key, bursts of 10",
                             unit="1/s", lo=0.01, hi=10_000.0),
}


def _limit(name: str, optional: bool = False):
    kw = dict(_PER_TOWER[name])
    if optional:
        kw["default"] = None
    return spec(**kw)


@dataclass(frozen=True)
class TowerLimits:
    """What one tower may cost the central."""

    max_message_bytes: int = _limit("max_message_bytes")
    max_event_bytes: int = _limit("max_event_bytes")
    max_health_bytes: int = _limit("max_health_bytes")
    max_health_values: int = _limit("max_health_values")
    records_per_s: float = _limit("records_per_s")
    bytes_per_s: float = _limit("bytes_per_s")
    max_deferred_bytes: int = _limit("max_deferred_bytes")
    handshakes_per_s: float = _limit("handshakes_per_s")
    error_replies_per_s: float = _limit("error_replies_per_s")


TowerOverride = dataclasses.make_dataclass(
    "TowerOverride",
    [("tower", str, spec(doc="tower id", pattern=r"[A-Za-z0-9._-]{1,64}"))]
    + [(name, typing.get_type_hints(TowerLimits)[name] | None, _limit(name, True)) for name in _PER_TOWER],
    frozen=True)
TowerOverride.__doc__ = "Limits of one tower that differ from the defaults (the others: None)."


@dataclass(frozen=True)
class CentralLimits:
    """Defaults for every tower, overrides per tower, and the central's own bounds."""

    default: TowerLimits = spec(TowerLimits(), doc="every tower's limits, unless listed under towers")
    towers: tuple[TowerOverride, ...] = spec((), doc="towers with limits of their own")
    max_peers: int = spec(4096, doc="claimed tower ids whose counters, rates and last HEALTH are kept (the "
                          "least recently heard are forgotten beyond it; with CURVE the allow-list bounds them)",
                          lo=16, hi=1_000_000)
    total_health_bytes: int = spec(16 * 1024 * 1024, doc="the last HEALTH of every tower together (the least "
                                   "recently received are forgotten beyond it)", unit="bytes", lo=0, hi=1 << 34)
    total_deferred_bytes: int = spec(64 * 1024 * 1024, doc="messages held back by rates, all towers together",
                                     unit="bytes", lo=0, hi=1 << 36)
    handshake_timeout_s: float = spec(10.0, doc="a connection that has not completed its ZMTP/CURVE handshake "
                                      "by then is closed (bounds what idle connections hold)", unit="s",
                                      lo=0.5, hi=300.0)
    receive_queue: int = spec(96, doc="messages libzmq queues per connection before it stops reading "
                              "that connection (ZMQ_RCVHWM); above what a tower may have in flight (its "
                              "window of 64, 8 IDENTITY, HEALTH), so a tower within its window is always read "
                              "and its heartbeats answered", lo=1, hi=100_000)
    log_interval_s: float = spec(1.0, doc="at most one log line per reason in this interval", unit="s",
                                 lo=0.01, hi=3600.0)

    def __post_init__(self) -> None:
        names = [o.tower for o in self.towers]
        if len(names) != len(set(names)):
            raise ValueError("a tower is listed twice under towers")

    def for_tower(self, tower_id: str) -> TowerLimits:
        base = self.default
        for override in self.towers:
            if override.tower == tower_id:
                changes = {f.name: getattr(override, f.name) for f in dataclasses.fields(TowerLimits)
                           if getattr(override, f.name) is not None}
                return dataclasses.replace(base, **changes)
        return base

    @property
    def largest_message_bytes(self) -> int:
        """The socket's MAXMSGSIZE: the largest any tower may send."""
        return max([self.default.max_message_bytes] + [o.max_message_bytes for o in self.towers
                                                if o.max_message_bytes is not None])


def load_limits(path: str | Path) -> CentralLimits:
    """Read and validate a limits file; ConfigError (every problem, located) otherwise."""
    path = Path(path)
    text, _raw = read_config_text(path, MAX_LIMITS_FILE_BYTES)
    root, problems = compose(text, str(path))
    if problems:
        raise ConfigError([p.format(str(path)) for p in problems])
    if root is None:
        return CentralLimits()
    v = Validator()
    limits = v.build(root, CentralLimits)
    if v.problems or limits is INVALID:
        raise ConfigError([p.format(str(path)) for p in sorted(v.problems, key=lambda p: (p.line, p.column))])
    return limits


class TokenBucket:
    """``rate`` per second, holding at most ``burst`` (default one second's worth). A
    taker may overdraw (a message larger than the burst still passes once the bucket
    is full); the debt is paid back before the next one passes."""

    def __init__(self, rate: float, now: float, burst: float | None = None) -> None:
        self.rate = rate
        self.burst = rate if burst is None else burst
        self.tokens = self.burst
        self._last = now

    def _refill(self, now: float) -> None:
        self.tokens = min(self.burst, self.tokens + max(0.0, now - self._last) * self.rate)
        self._last = now

    def ready(self, amount: float, now: float) -> bool:
        """Whether ``amount`` may be spent now."""
        self._refill(now)
        return self.tokens >= min(amount, self.burst)

    def spend(self, amount: float) -> None:
        self.tokens -= amount

    def wait_s(self, amount: float, now: float) -> float:
        """Seconds until ``ready(amount)``."""
        self._refill(now)
        return max(0.0, (min(amount, self.burst) - self.tokens) / self.rate)
