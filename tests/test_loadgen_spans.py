"""The load generator's books of unacknowledged records (one range per commit, not one
entry per record) give what one entry per record gave: each live record's latency once,
records caught by an outage untimed, the backlog count."""
from __future__ import annotations

import random
from types import SimpleNamespace

from towerd.central.loadtower import _Spans, _Tower


def _per_record_acked(t: SimpleNamespace, first: int, last: int, now: float) -> None:
    """The per-record books the ranges replace (a dict seq -> time, a set of seqs)."""
    times = [t.live.pop(seq, None) for seq in range(first, last + 1)]
    t.latencies.extend([(now - x) * 1000.0 for x in times if x is not None])
    for seq, x in zip(range(first, last + 1), times):
        if x is None:
            if seq in t.stale:
                t.stale.discard(seq)
            elif t.backlog_lo <= seq <= t.backlog_hi:
                t.backlog_left -= 1
    t.acked += last - first + 1


def _state(live, stale) -> SimpleNamespace:
    return SimpleNamespace(live=live, stale=stale, latencies=[], acked=0, backlog_lo=0, backlog_hi=0,
                           backlog_left=0, backlog_started=None, drained_s=None)


def test_ranges_give_the_per_record_books(monkeypatch):
    rng = random.Random(7)
    now = 1000.0
    monkeypatch.setattr("towerd.central.loadtower.time.monotonic", lambda: now)
    for trial in range(200):
        ref, new = _state({}, set()), _state(_Spans(), _Spans())
        seq = 1
        for step in range(40):
            op = rng.random()
            if op < 0.45:  # a commit of 1-8 live records
                n = rng.randint(1, 8)
                t = rng.uniform(0, 999)
                ref.live.update(dict.fromkeys(range(seq, seq + n), t))
                new.live.add(seq, seq + n - 1, t)
                seq += n
            elif op < 0.5:  # an outage: what is live is caught in flight
                ref.stale.update(ref.live)
                ref.live.clear()
                new.live.move_to(new.stale)
            elif op < 0.6:  # offline records: a backlog range
                n = rng.randint(1, 10)
                for s in (ref, new):
                    s.backlog_lo, s.backlog_hi, s.backlog_left = seq, seq + n - 1, n
                seq += n
            elif seq > 1:  # an ACK: usually the oldest message, sometimes any range, or again
                if ref.live and rng.random() < 0.6:  # from the oldest live record, maybe part of a commit
                    lo = min(ref.live)
                else:
                    lo = rng.randint(1, seq - 1)
                hi = min(seq - 1, lo + rng.randint(0, 9))
                _per_record_acked(ref, lo, hi, now)
                _Tower._acked(new, lo, hi)
        assert sorted(new.latencies) == sorted(ref.latencies), trial
        assert (new.acked, new.backlog_left) == (ref.acked, ref.backlog_left), trial
        assert {s for a, b, _ in new.live.items for s in range(a, b + 1)} == set(ref.live), trial
        assert {s for a, b, _ in new.stale.items for s in range(a, b + 1)} == ref.stale, trial
