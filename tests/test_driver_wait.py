"""The base driver's wait for bytes over a real pty: one wait then all that came, and a
driver's own wait (TI: long while idle, until a held frame's release while one is held)."""

from __future__ import annotations

import os

from test_ti_driver import frame
from towerd.drivers.ti_mmwave.driver import TiMmwaveDriver, TiMmwaveSettings


def test_a_burst_is_read_at_once_and_a_held_frame_is_released_after_a_short_wait(pty_pair):
    with TiMmwaveDriver("radar", TiMmwaveSettings(port=pty_pair.path)) as driver:
        assert driver.wait_s(driver.clock.monotonic()) == TiMmwaveDriver.IDLE_WAIT_S  # nothing held
        # Two frames in one burst: both come out, in order.
        os.write(pty_pair.master_fd, frame([(1.0, 2.0, 0.0, 0.0)], frame_number=1) + frame([], frame_number=2))
        out = []
        for _ in range(5):
            out += driver.read()
            if len(out) == 2:
                break
        assert [r.frame_number for r in out] == [1, 2]
        # A frame whose last byte could begin a magic is held: the next wait is short and
        # the quiet line then releases it (poll), stamped with its own read time.
        held = frame([(1.0, 2.0, 0.0, 0.0)] * 2, frame_number=3)
        held = held[:-1] + b"\x02"
        os.write(pty_pair.master_fd, held)
        reads, got = 0, []
        while not got and reads < 20:
            got = driver.read()
            reads += 1
            if not got and driver.parser.holding:
                assert driver.wait_s(driver.clock.monotonic()) <= TiMmwaveDriver.HOLD_RELEASE_S + 0.001
        assert [r.frame_number for r in got] == [3]
        assert reads <= 3  # the read, then the wait for the release (load: one more)
        assert driver.wait_s(driver.clock.monotonic()) == TiMmwaveDriver.IDLE_WAIT_S
