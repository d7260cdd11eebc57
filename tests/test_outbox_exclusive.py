"""The outbox opened with ``exclusive=True`` (the load generator's emulated towers):
the file stays locked while it is open, works as the default outbox does, and what it
committed is there for the next (default) opening."""

from __future__ import annotations

import sqlite3

import numpy as np
import pytest

from towerd.clock import ManualClock
from towerd.icd import empty_track_records
from towerd.outbox.sqlite import Outbox


def _tracks(n: int) -> np.ndarray:
    rec = empty_track_records(n)
    rec["time_us"] = 1_700_000_000_000_000 + np.arange(n) * 1000
    rec["track_id"] = np.arange(n)
    return rec


def test_exclusive_outbox_locks_its_file_and_keeps_what_it_committed(tmp_path):
    path = tmp_path / "outbox.sqlite"
    clock = ManualClock()
    box = Outbox(path, clock=clock, exclusive=True)
    try:
        assert box.add_tracks(_tracks(5)) == (1, 5)
        box.commit()
        assert [seq for seq, _, _ in box.pending(0, 10)] == [1, 2, 3, 4, 5]
        assert box.ack(1, 2) == 2
        box.commit()
        assert not (tmp_path / "outbox.sqlite-shm").exists()  # no shared-memory index
        other = sqlite3.connect(str(path), timeout=0)
        try:
            with pytest.raises(sqlite3.OperationalError, match="locked"):
                other.execute("SELECT count(*) FROM records").fetchone()
        finally:
            other.close()
    finally:
        box.close()
    again = Outbox(path, clock=clock)  # the default mode reads the file an exclusive one left
    try:
        assert [seq for seq, _, _ in again.pending(0, 10)] == [3, 4, 5]
        assert again.next_seq == 6
    finally:
        again.close()
