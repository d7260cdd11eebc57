"""Bare CURVE senders for the central benchmarks: towers without an outbox, so that what
is measured is the central and PostgreSQL, not the towers' emulation.

- :func:`blast` (ceiling): each sender keeps ``window`` messages in flight and sends a
  new one at every ACK, as fast as the central acknowledges;
- :func:`paced`: each sender offers its nominal rate (Poisson arrivals) and the ACK
  latency is counted from the time a message was *due*, so a sender that falls behind
  (its window full, or its own loop late) is charged, not hidden (no coordinated
  omission).

The senders use the load generator's tower keys and record layout and the ICD encoder;
they run in the benchmark's own process (one thread).
"""

from __future__ import annotations

import collections
import heapq
import math
import random
import struct
import time
from pathlib import Path

import numpy as np
import zmq
import zmq.auth

from towerd import icd
from towerd.central import loadgen


class _Senders:
    """``towers`` DEALERs with the generator's tower keys, connected to ``endpoint``."""

    def __init__(self, endpoint: str, work: Path, towers: int, per_msg: int) -> None:
        self.ctx = zmq.Context()
        self.per_msg = per_msg
        self.socks: list[zmq.Socket] = []
        self.seqs = [1] * towers
        self.sent: list[dict[int, float]] = [{} for _ in range(towers)]  # first seq -> time counted from
        self.poller = zmq.Poller()
        self.index: dict[zmq.Socket, int] = {}
        server_pub = zmq.auth.load_certificate(work / "keys" / "central.key")[0]
        for i in range(towers):
            s = self.ctx.socket(zmq.DEALER)
            s.linger = 0
            s.routing_id = loadgen.tower_id(i).encode()
            s.curve_publickey, s.curve_secretkey = zmq.auth.load_certificate(
                work / "keys" / f"{loadgen.tower_id(i)}.key_secret")
            s.curve_serverkey = server_pub
            s.connect(endpoint)
            self.socks.append(s)
            self.poller.register(s, zmq.POLLIN)
            self.index[s] = i

        # Each tower's message, encoded once by the ICD encoder; a send patches seq and
        # time_us (the first two fields of every record) into a copy.
        rec = loadgen._records(per_msg, 0, 0, np.random.default_rng(1))
        rec["seq"] = np.arange(1, per_msg + 1)
        self.frames = [icd.encode_tracks(0x5EED0000 + i, rec) for i in range(towers)]
        self._fields = struct.Struct("<Qq")
        self._offsets = [icd.HEADER_SIZE + k * icd.RECORD_SIZE for k in range(per_msg)]
        if icd.TRACK_RECORD_DTYPE.fields["seq"][1] != 0 or icd.TRACK_RECORD_DTYPE.fields["time_us"][1] != 8:
            raise RuntimeError("TRACKS records no longer start with seq, time_us")

    def send(self, i: int, t_from: float) -> None:
        """Send tower ``i``'s next message; its latency counts from ``t_from`` (monotonic)."""
        seq = self.seqs[i]
        frame = bytearray(self.frames[i])
        now_us = time.time_ns() // 1000
        for k, offset in enumerate(self._offsets):
            self._fields.pack_into(frame, offset, seq + k, now_us)
        self.socks[i].send(frame)
        self.sent[i][seq] = t_from
        self.seqs[i] = seq + self.per_msg

    def replies(self, timeout_ms: int):
        """Yield (tower, time counted from or None, is_ack) for the replies within ``timeout_ms``."""
        for s, _ in self.poller.poll(timeout_ms):
            i = self.index[s]
            while True:
                try:
                    frame = s.recv(zmq.NOBLOCK)
                except zmq.Again:
                    break
                msg = icd.decode(frame)
                if msg.type != icd.MsgType.ACK:  # ERROR central.store_failed: not stored
                    yield i, None, False
                    continue
                first, _last = icd.decode_ack(msg)
                yield i, self.sent[i].pop(first, None), True

    def close(self) -> None:
        for s in self.socks:
            s.close(0)
        self.ctx.term()


def _result(lat: list[float], acked: int, elapsed: float, errors: int) -> dict:
    a = np.asarray(lat)
    return {"records_per_s": acked / elapsed if elapsed > 0 else 0.0, "errors": errors, "n": int(a.size),
            "median": float(np.median(a)) if a.size else float("nan"),
            "p99": float(np.percentile(a, 99)) if a.size else float("nan"),
            "max": float(a.max()) if a.size else float("nan")}


def blast(endpoint: str, work: Path, towers: int, seconds: float, per_msg: int = 4, window: int = 4) -> dict:
    """The central's own ceiling: ``towers`` bare senders each keeping ``window``
    TRACKS messages of ``per_msg`` records in flight, a new one sent at every ACK."""
    snd = _Senders(endpoint, work, towers, per_msg)
    lat: list[float] = []
    acked = errors = 0
    try:
        for i in range(towers):
            for _ in range(window):
                snd.send(i, time.monotonic())
        t0 = time.monotonic()
        warm = t0 + 3.0
        counted_from = None
        while time.monotonic() - t0 < seconds:
            for i, t, ok in snd.replies(100):
                if not ok:
                    errors += 1
                    continue
                now = time.monotonic()
                if t is not None and now >= warm:
                    if counted_from is None:
                        counted_from = now
                    lat.append((now - t) * 1000)
                    acked += per_msg
                snd.send(i, time.monotonic())
        elapsed = time.monotonic() - (counted_from or t0)
    finally:
        snd.close()
    return _result(lat, acked, elapsed, errors)


def paced(endpoint: str, work: Path, towers: int, seconds: float, rate_rps: float = 20.0, per_msg: int = 4,
          window: int = 64, warmup_s: float = 5.0, seed: int = 2, burst_factor: float = 2.0,
          burst_every_s: float = 20.0, burst_s: float = 1.0, tick_s: float = 0.005) -> dict:
    """``towers`` bare senders each offering ``rate_rps`` records a second in messages of
    ``per_msg`` (Poisson arrivals; ``burst_factor`` times the rate for ``burst_s`` in every
    ``burst_every_s``, as the load generator's towers), at most ``window`` unacknowledged;
    latency from each message's due time to its ACK, for messages due after ``warmup_s``.

    The loop polls at most once per ``tick_s`` (one zmq_poll over all the sockets each
    time), so its own cost stays small; what that delays is charged to the latency."""
    rng = random.Random(seed)

    def interval(t: float) -> float:
        bursting = (t - t0) % burst_every_s < burst_s
        return rng.expovariate(rate_rps * (burst_factor if bursting else 1.0) / per_msg)

    snd = _Senders(endpoint, work, towers, per_msg)
    waiting = [collections.deque() for _ in range(towers)]  # due times of messages held by a full window
    lat: list[float] = []
    acked = errors = 0
    try:
        t0 = time.monotonic()
        due = [(t0 + interval(t0), i) for i in range(towers)]
        heapq.heapify(due)
        warm, end = t0 + warmup_s, t0 + warmup_s + seconds
        last_poll = -math.inf
        while True:
            now = time.monotonic()
            if now >= end:
                break
            while due[0][0] <= now:
                t, i = heapq.heappop(due)
                if len(snd.sent[i]) < window:
                    snd.send(i, t)
                else:
                    waiting[i].append(t)
                heapq.heappush(due, (t + interval(t), i))
            now = time.monotonic()
            if now < last_poll + tick_s:  # at most one poll of all the sockets per tick
                time.sleep(last_poll + tick_s - now)
            last_poll = time.monotonic()
            timeout_ms = max(0, math.ceil((min(due[0][0], end) - last_poll) * 1000))
            for i, t, ok in snd.replies(timeout_ms):
                if not ok:
                    errors += 1
                    continue
                now = time.monotonic()
                if t is not None and t >= warm:
                    lat.append((now - t) * 1000)
                    acked += per_msg
                if waiting[i]:
                    snd.send(i, waiting[i].popleft())
    finally:
        snd.close()
    return _result(lat, acked, seconds, errors)
