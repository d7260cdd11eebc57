"""The central's store writer on its own: it takes what is queued as soon as the commit
before returns, live messages first and a bounded slice of REPLAY backlog per
transaction, and reports when each commit started and returned."""

from __future__ import annotations

import select
import threading

import numpy as np
import pytest

from towerd.central.storetypes import Pending
from towerd.central.writer import AckTiming, StoreWriter
from towerd.icd import empty_track_records


class _GatedStore:
    """A batching store whose every commit waits for ``release`` (what it was given is kept)."""

    batch_records = 1000

    def __init__(self) -> None:
        self.entered = threading.Semaphore(0)
        self.release = threading.Semaphore(0)
        self.batches: list[list[str]] = []

    def store_many(self, items):
        self.entered.release()
        assert self.release.acquire(timeout=5)
        self.batches.append([f"{'R' if p.replay else 'L'}{p.records.size}" for p in items])
        return [p.records.size for p in items]

    def record_health(self, tower_id, health):
        pass


def _entry(n: int, replay: bool):
    rec = empty_track_records(n)
    rec["seq"] = np.arange(1, n + 1)
    return (b"tx", 1, n, Pending("tx", 7, replay, records=rec), 0.0)


def _results(writer: StoreWriter, count: int) -> list:
    out: list = []
    while len(out) < count:
        assert select.select([writer.fd], [], [], 5)[0], "no result in 5 s"
        out += writer.results()
    return out


def test_live_first_and_a_slice_of_backlog_per_transaction_taken_as_soon_as_the_commit_returns():
    store = _GatedStore()
    writer = StoreWriter(store)  # replay slice: a fifth of batch_records, 200 records
    try:
        writer.put([_entry(1, False)])
        assert store.entered.acquire(timeout=5)  # the first commit is under way
        writer.put([_entry(150, True), _entry(150, True), _entry(150, True), _entry(4, False), _entry(600, False),
                    _entry(600, False)])
        assert writer.queued_records == 1654 and writer.busy
        for _ in range(4):
            store.release.release()
        done = _results(writer, 3)
        assert store.batches == [["L1"],
                                 ["L4", "L600", "L600", "R150", "R150"],  # live up to the limit, then the slice
                                 ["R150"]]
        assert writer.queued_records == 0 and not writer.busy and len(done) == 3
        for batch, results, internal, started, finished in done:
            assert results == [e[3].records.size for e in batch] and not internal and started <= finished
    finally:
        for _ in range(4):
            store.release.release()
        writer.close()


def test_live_left_waiting_gets_the_commits_and_the_backlog_one_message_each_until_caught_up():
    store = _GatedStore()
    writer = StoreWriter(store)  # batch limit 1000 records, replay slice 200
    try:
        writer.put([_entry(1, False)])
        assert store.entered.acquire(timeout=5)  # the first commit is under way
        writer.put([_entry(120, True)] * 4 + [_entry(600, False)] * 3)  # live behind by more than a batch
        for _ in range(4):
            store.release.release()
        _results(writer, 4)
        assert store.batches == [["L1"],
                                 ["L600", "L600", "R120"],  # live left waiting: one backlog message
                                 ["L600", "R120", "R120"],  # caught up: the backlog's slice
                                 ["R120"]]
        assert writer.queued_records == 0
    finally:
        for _ in range(5):
            store.release.release()
        writer.close()


def test_ack_timing_sums_up_the_parts():
    timing = AckTiming()
    for k in range(5):
        timing.add(queued=10.0, started=10.1, finished=10.3, acked=10.3 + 0.001 * k)
    summary = timing.summary()
    assert summary["queue"]["median_ms"] == pytest.approx(100.0, rel=0.005)
    assert summary["commit"]["median_ms"] == pytest.approx(200.0, rel=0.005)
    assert summary["ack"]["n"] == 5 and summary["ack"]["median_ms"] == pytest.approx(2.0, rel=0.005)


def test_ack_timing_counts_every_message_since_start():
    """The summary covers the whole life, not the last N messages: a slow first stretch
    stays in the p99 however many fast messages follow (so two centrals of one run,
    one taking twice the messages of the other, summarise the same stretch of time)."""
    timing = AckTiming()
    for _ in range(2_000):  # 2 % of the messages: slow commits at the start
        timing.add(queued=0.0, started=0.0, finished=0.5, acked=0.5)
    for _ in range(98_000):
        timing.add(queued=0.0, started=0.0, finished=0.02, acked=0.02)
    commit = timing.summary()["commit"]
    assert commit["n"] == 100_000
    assert commit["median_ms"] == pytest.approx(20.0, rel=0.005)
    assert commit["p99_ms"] == pytest.approx(500.0, rel=0.005)
    timing.add(queued=0.0, started=0.0, finished=1e-7, acked=1e6)  # out of range either side: counted, clamped
    assert timing.summary()["ack"]["n"] == 100_001


def test_commits_start_at_least_min_interval_apart_unless_a_full_batch_waits():
    store = _GatedStore()
    writer = StoreWriter(store, min_interval_s=1.0)
    starts = []
    try:
        for n in (1, 2, 1000):  # the second (small) waits for the spacing; the third (full) does not
            writer.put([_entry(n, False)])
            assert store.entered.acquire(timeout=5)
            store.release.release()
            ((_batch, _results_, _internal, started, _finished),) = _results(writer, 1)
            starts.append(started)
        assert store.batches == [["L1"], ["L2"], ["L1000"]]
        assert starts[1] - starts[0] >= 1.0 and starts[2] - starts[1] < 0.9
    finally:
        for _ in range(3):
            store.release.release()
        writer.close()
