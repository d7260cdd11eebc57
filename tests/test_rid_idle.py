"""Remote ID fusion's idle fast path: with nothing heard and no receiver able to hear,
it skips the evaluation; its records, events and identities stay those of the full one."""

from __future__ import annotations

import numpy as np

from test_rid_fusion import Tower, moving, reading
from towerd.identity import EVENT_NON_COOPERATIVE, RemoteIdFusion


class FullFusion(RemoteIdFusion):
    """The fusion without the fast path: every evaluation runs in full."""

    def _evaluate(self, t: float) -> np.ndarray:
        self._quiet = False
        return super()._evaluate(t)


def script(tower: Tower, drone, bird) -> None:
    """Radar only, then a broadcast for a while, silence past the transmitter timeout,
    the receiver down and up again, and radar only once more."""
    tower.run(0.0, 2.0, drone)
    tower.run(2.0, 4.0, drone, lambda t: reading(t, drone(t), (1.0, 1.0, 0.0)))
    tower.run(4.0, 6.0, bird, lambda t: reading(t, bird(t), (2.0, 0.0, 0.0), mac="60:60:1f:00:00:02"))
    tower.run(6.0, 17.0, drone)  # the transmitters time out (10 s): ID-only track ENDED
    tower.fusion.receivers_up = False
    tower.run(17.0, 19.0, drone)
    tower.fusion.receivers_up = True
    tower.run(19.0, 28.0, drone)  # listening: the silent uas becomes non-cooperative (8 s)


def outputs(listening: bool, full: bool) -> tuple[bytes, list, list, int]:
    tower = Tower(listening=listening)
    if full:
        tower.fusion.__class__ = FullFusion
    calls = 0
    judge = tower.fusion.silent.judge

    def counted(*args):
        nonlocal calls
        calls += 1  # every full evaluation judges the silent tracks
        return judge(*args)

    tower.fusion.silent.judge = counted
    script(tower, moving((30.0, 180.0, 60.0), (1.0, 1.0, 0.0)), moving((-100.0, -500.0, 80.0), (2.0, 0.0, 0.0)))
    return tower.all_records.tobytes(), tower.events, tower.identities, calls


def test_the_idle_fast_path_gives_the_same_records_events_and_identities():
    for listening in (False, True):
        fast, full = outputs(listening, full=False), outputs(listening, full=True)
        assert fast[:3] == full[:3]
        assert len(fast[0]) > 0 and len(fast[2]) > 0
        if listening:
            assert any(e[0] == EVENT_NON_COOPERATIVE for e in fast[1])
        else:
            # Taken: without a receiver, full evaluations only while transmitters are known.
            assert fast[3] < full[3] / 2
