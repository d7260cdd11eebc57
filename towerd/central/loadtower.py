"""One emulated tower of the load generator (:mod:`towerd.central.loadgen`): a real
SQLite outbox and a real uplink, written at a Poisson rate with bursts, outages and a
backlog as the daemon would keep them; and the run's settings (:class:`LoadSpec`)."""

from __future__ import annotations

import math
import random
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import zmq

from towerd.clock import SystemClock
from towerd.icd import Category, Status, Threat, empty_track_records
from towerd.outbox.sqlite import Outbox
from towerd.uplink.client import CentralSettings, UplinkClient


def tower_id(i: int) -> str:
    return f"lg-{i:04d}"


@dataclass(frozen=True)
class LoadSpec:
    """What to run (see the module doc and ``--help``)."""

    directory: str
    endpoints: tuple[str, ...]
    towers: int = 500
    rate: float = 20.0
    duration_s: float = 60.0
    warmup_s: float = 5.0
    procs: int = 2
    all_endpoints: bool = False
    commit_s: float = 0.2
    burst_factor: float = 1.0
    burst_every_s: float = 20.0
    burst_s: float = 2.0
    outage_towers: int = 0
    outage_at_s: float = 0.0
    outage_s: float = 0.0
    backlog_towers: int = 0
    backlog_s: float = 0.0
    outbox_dir: str | None = None
    plain: bool = False
    seed: int = 1
    stop_when_drained: bool = False
    after_drain_s: float = 0.0
    progress_s: float = 0.0
    nice: int = 0
    """Added to the workers' nice value: on a machine shared with the central under test,
    the emulated towers (other computers in the field) yield the CPU to it and its database."""


def _records(n: int, counter: int, t_us: np.ndarray | int, rng: np.random.Generator) -> np.ndarray:
    rec = empty_track_records(n)
    c = counter + np.arange(n)
    rec["time_us"] = t_us
    rec["track_id"] = c // 20
    rec["status"] = Status.CONFIRMED
    rec["category"] = np.where(c % 3 == 0, Category.UAS, Category.BIRD)
    rec["threat"] = Threat.LOW
    rec["confidence"] = 80
    rec["sources"] = 1
    rec["hits"] = np.minimum(c % 1000, 65535)
    rec["lat_e7"] = 294_000_000 + rng.integers(-500_000, 500_000, n)
    rec["lon_e7"] = -985_000_000 + rng.integers(-500_000, 500_000, n)
    rec["alt_m"] = 120.0
    rec["range_m"] = rng.uniform(100, 5000, n)
    rec["azimuth_deg"] = rng.uniform(0, 360, n)
    rec["pos_sigma_m"] = 5.0
    return rec



_POOL = 4096


class _RecordPool:
    """Varied records made once (per worker: its towers share it, which keeps the memory
    they touch small); each write takes the next slice and stamps the time (building
    small NumPy arrays per write would cost more than the outbox)."""

    def __init__(self, rng: np.random.Generator) -> None:
        self._pool = _records(_POOL, 0, 0, rng)
        self._next = 0

    def take(self, n: int, t_us: np.ndarray | int) -> np.ndarray:
        """``n`` records stamped ``t_us``: a slice of the pool, stamped in place (the
        outbox copies what it is given), or a copy for more than the pool holds."""
        if n > _POOL:
            rec = self._pool[(self._next + np.arange(n)) % _POOL]
        else:
            if self._next + n > _POOL:
                self._next = 0
            rec = self._pool[self._next:self._next + n]
            self._next += n
        rec["time_us"] = t_us
        return rec


def _overlap(a: int, b: int, lo: int, hi: int) -> int:
    return max(0, min(b, hi) - max(a, lo) + 1)


class _Spans:
    """Seq ranges ``[lo, hi]``, each with the time it was committed: a tower's records
    not acknowledged yet, one entry per commit (not per record), ascending and disjoint
    (seqs only grow)."""

    def __init__(self) -> None:
        self.items: deque[list] = deque()  # [lo, hi, t]

    def add(self, lo: int, hi: int, t: float) -> None:
        self.items.append([lo, hi, t])

    def move_to(self, other: _Spans) -> None:
        """Append every range to ``other`` (whose ranges are all older) and forget them."""
        other.items.extend(self.items)
        self.items.clear()

    def take(self, lo: int, hi: int) -> list[tuple[int, int, float]]:
        """Remove ``lo..hi`` from the ranges; the parts removed, as ``(a, b, t)``."""
        items = self.items
        out: list[tuple[int, int, float]] = []
        if items and items[0][0] >= lo:  # the usual: the oldest ranges are acknowledged
            while items and items[0][0] <= hi:
                a, b, t = items[0]
                if b <= hi:
                    items.popleft()
                    out.append((a, b, t))
                else:
                    items[0][0] = hi + 1
                    out.append((a, hi, t))
            return out
        keep: deque[list] = deque()
        for a, b, t in items:
            if b < lo or a > hi:
                keep.append([a, b, t])
                continue
            out.append((max(a, lo), min(b, hi), t))
            if a < lo:
                keep.append([a, lo - 1, t])
            if b > hi:
                keep.append([hi + 1, b, t])
        self.items = keep
        return out


class _TimedOutbox(Outbox):
    """The real outbox, telling its tower when rows are acknowledged."""

    on_ack = None

    def ack(self, first_seq: int, last_seq: int, central: str | None = None) -> int:
        n = super().ack(first_seq, last_seq, central)
        if self.on_ack is not None:
            self.on_ack(first_seq, last_seq)
        return n


class _Tower:
    def __init__(self, i: int, spec: LoadSpec, paths: dict, outbox_dir: Path, endpoint_ix: list[int],
                 rng: np.random.Generator, clock: SystemClock, ctx: zmq.Context,
                 pool: _RecordPool | None = None) -> None:
        self.id = tower_id(i)
        self.spec = spec
        self.clock = clock
        self.ctx = ctx
        self.rng = rng
        # synchronous=full as the daemon's default; the file lock held for the outbox's life
        # (nobody else opens an emulated tower's file; see Outbox's ``exclusive``).
        self.box = _TimedOutbox(outbox_dir / f"{self.id}.sqlite", clock=clock, synchronous="full",
                                max_records=10_000_000, max_bytes=2**36, exclusive=True)
        self.box.on_ack = self._acked
        eps = [spec.endpoints[k] for k in endpoint_ix]
        key_dir = Path(spec.directory) / "keys"
        self.settings = CentralSettings(
            "central", eps[0], extra_endpoints=tuple(eps[1:]), plain=spec.plain,
            server_public_key_file=None if spec.plain else str(paths["central_public"]),
            client_secret_key_file=None if spec.plain else str(key_dir / f"{self.id}.key_secret"))
        self.client: UplinkClient | None = None
        self.counter = 0
        self.live = _Spans()  # live records not yet acknowledged, with their commit times
        self.stale = _Spans()  # live records caught in flight by an outage (not timed)
        self.backlog_lo = self.backlog_hi = 0
        self.backlog_left = 0
        self.backlog_started: float | None = None
        self.drained_s: float | None = None
        self.latencies: list[float] = []
        self.acked = 0
        self.burst_phase = rng.uniform(0, spec.burst_every_s)
        self.draws = random.Random(int(rng.integers(2**63)))  # the Poisson draws (see _poisson)
        self.pool = pool if pool is not None else _RecordPool(rng)  # a worker's towers share one
        self.last_write = self.next_write = 0.0

    def connect(self, now: float) -> None:
        self.client = UplinkClient(self.id, self.settings, self.box, clock=self.clock, context=self.ctx,
                                   health=self.box.health)
        if self.backlog_left:
            self.backlog_started = now

    def disconnect(self) -> None:
        if self.client is not None:
            self.client.close()
            self.client = None
        self.live.move_to(self.stale)

    def prefill(self, seconds: float) -> None:
        """``seconds`` of records time-stamped over the past, as left by an outage."""
        n = int(seconds * self.spec.rate)
        now_us = self.clock.utc_us()
        lo = self.box.committed_next_seq
        for start in range(0, n, 5000):
            k = min(5000, n - start)
            t = now_us - int(seconds * 1e6) + (start + np.arange(k)) * int(1e6 / self.spec.rate)
            self.box.add_tracks(self.pool.take(k, t))
            self.counter += k
            self.box.commit()
        self._mark_backlog(lo, self.box.committed_next_seq - 1)

    def _mark_backlog(self, lo: int, hi: int) -> None:
        if hi >= lo:
            self.backlog_lo, self.backlog_hi = lo, hi
            self.backlog_left = hi - lo + 1
            self.drained_s = None

    def write(self, now: float, dt: float, t0: float) -> None:
        rate = self.spec.rate
        spec = self.spec
        if spec.burst_factor != 1.0 and (now - t0 + self.burst_phase) % spec.burst_every_s < spec.burst_s:
            rate *= spec.burst_factor
        n = self._poisson(rate * dt)  # a Poisson process at the current rate
        if n <= 0:
            return
        first, last = self.box.add_tracks(self.pool.take(n, self.clock.utc_us()))
        self.counter += n
        self.box.commit()
        t = time.monotonic()
        if self.client is None or not self.client.link_up:  # offline, or not up yet: this is backlog (ICD)
            if self.backlog_left == 0 or first != self.backlog_hi + 1:
                self._mark_backlog(first, last)
            else:
                self.backlog_hi = last
                self.backlog_left += last - first + 1
        else:
            self.live.add(first, last, t)

    def _poisson(self, lam: float) -> int:
        """One Poisson draw of mean ``lam``: Knuth's product of uniforms for the small
        means of a commit period (a NumPy call per draw costs more than the draw), NumPy's
        sampler above 30."""
        if lam > 30.0:
            return int(self.rng.poisson(lam))
        limit, k, p = math.exp(-lam), 0, self.draws.random()
        while p > limit:
            k += 1
            p *= self.draws.random()
        return k

    def _acked(self, first: int, last: int) -> None:
        now = time.monotonic()
        lo, hi = self.backlog_lo, self.backlog_hi
        backlog = _overlap(first, last, lo, hi)  # less what was live or caught by an outage
        timed = 0
        for a, b, t in self.live.take(first, last):
            self.latencies.extend([(now - t) * 1000.0] * (b - a + 1))
            timed += b - a + 1
            backlog -= _overlap(a, b, lo, hi)
        if timed < last - first + 1:  # not all live: caught by an outage, or backlog
            for a, b, _ in self.stale.take(first, last):
                backlog -= _overlap(a, b, lo, hi)
        self.backlog_left -= backlog
        self.acked += last - first + 1
        if self.backlog_left == 0 and self.backlog_started is not None and self.drained_s is None:
            self.drained_s = now - self.backlog_started

    def close(self) -> None:
        self.disconnect()
        self.box.close()

