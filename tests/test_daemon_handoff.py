"""The hand-off from the sensors' reads to the daemon's loop (towerd.handoff): a radar
frame wakes the sleeping loop at once; an RF sweep rides on the loop's next wake-up
unless that is more than RIDE_SLACK_S away, and is processed with the next radar frame
or once it has waited RIDE_SLACK_S; radar frames are processed before the sweeps taken
with them."""

from __future__ import annotations

import os
import threading
import time

import numpy as np
import pytest

from towerd.drivers.measurements import RadarPlots, Spectrum
from towerd.handoff import QUEUE_MAX_READINGS, RIDE_SLACK_S, Handoff


def radar(number: int, t: float = 0.0) -> RadarPlots:
    return RadarPlots.of("radar0", t, number, np.zeros(0))


def sweep(number: int, t: float = 0.0) -> Spectrum:
    return Spectrum.of("rf0", t, number, 2400.0, 0.5, np.zeros(8, dtype=np.float32), "ism2400", float("nan"),
                       "normal")


@pytest.fixture
def handoff():
    h = Handoff(time.monotonic)
    yield h
    h.close()


def woken(h: Handoff) -> bool:
    """Whether the wake-up pipe was written (and empty it)."""
    try:
        return len(os.read(h._wake_r, 4096)) > 0
    except BlockingIOError:
        return False


def asleep_until(h: Handoff, wake_at: float) -> None:
    """The state the loop's sleep is in once it has looked at the queue."""
    h._wake_at, h._sleeping = wake_at, True


def test_a_radar_frame_wakes_the_sleeping_loop_a_sweep_rides(handoff):
    now = time.monotonic()
    assert handoff.put_reading(sweep(1)) and not woken(handoff)  # the loop is awake: nobody is woken
    asleep_until(handoff, now + RIDE_SLACK_S / 2)
    assert handoff.put_reading(sweep(2)) and not woken(handoff)  # it wakes soon enough anyway
    assert handoff.put_reading(radar(1)) and woken(handoff)
    asleep_until(handoff, now + 10.0)
    assert handoff.put_reading(sweep(3)) and woken(handoff)  # too long to wait: it wakes the loop
    assert [r.sweep_number if isinstance(r, Spectrum) else -r.frame_number for r in handoff.take_readings()] \
        == [-1, 1, 2, 3]


def test_radar_frames_are_taken_first_each_kind_in_order(handoff):
    for reading in (sweep(1), radar(1), sweep(2), radar(2), sweep(3)):
        handoff.put_reading(reading)
    taken = handoff.take_readings()
    assert [type(r).__name__ for r in taken] == ["RadarPlots"] * 2 + ["Spectrum"] * 3
    assert [r.frame_number for r in taken[:2]] == [1, 2]
    assert [r.sweep_number for r in taken[2:]] == [1, 2, 3]
    assert handoff.take_readings() == []


def test_a_sweep_alone_waits_for_a_radar_frame_or_its_slack():
    now = [100.0]
    h = Handoff(lambda: now[0])
    try:
        h.put_reading(sweep(1))
        now[0] += RIDE_SLACK_S / 2
        h.put_reading(sweep(2))
        assert h.take_readings() == []  # read, queued: its processing waits for a radar frame
        h.put_reading(radar(1))
        assert [type(r).__name__ for r in h.take_readings()] == ["RadarPlots", "Spectrum", "Spectrum"]
        h.put_reading(sweep(3))
        now[0] += RIDE_SLACK_S / 2
        assert h.take_readings() == []
        now[0] += RIDE_SLACK_S / 2  # no radar frame came: it has waited long enough
        assert [r.sweep_number for r in h.take_readings()] == [3]
        h.put_reading(sweep(4))
        assert [r.sweep_number for r in h.take_readings(everything=True)] == [4]  # stopping
    finally:
        h.close()


def test_idle_says_whether_take_would_give_nothing():
    """Handoff.idle: the loop's pass that only read a sweep may sleep again at once
    (the daemon's _idle_pass) exactly while taking would give it nothing."""
    now = [100.0]
    h = Handoff(lambda: now[0])
    try:
        assert h.idle()  # nothing queued
        h.put_reading(sweep(1))
        now[0] += RIDE_SLACK_S / 2
        assert h.idle() and h.take_readings() == []  # a sweep that may still ride
        now[0] += RIDE_SLACK_S / 2
        assert not h.idle()  # it has waited long enough
        assert len(h.take_readings()) == 1 and h.idle()
        h.put_reading(radar(1))
        assert not h.idle()
        h.take_readings()
        h.put_event("sensor.up")
        assert not h.idle()
        assert h.take_events() == ["sensor.up"] and h.idle()
    finally:
        h.close()


def test_a_full_queue_refuses_and_counts(handoff):
    for k in range(QUEUE_MAX_READINGS):
        assert handoff.put_reading(radar(k))
    assert not handoff.put_reading(radar(-1)) and handoff.dropped == 1
    assert len(handoff.take_readings()) == QUEUE_MAX_READINGS


def sleeps_briefly(h: Handoff, planned_s: float) -> bool:
    """Whether a sleep planned ``planned_s`` long ends within 5 s (in a thread)."""
    done = threading.Event()
    thread = threading.Thread(target=lambda: (h.sleep(time.monotonic() + planned_s, [], []), done.set()))
    thread.start()
    try:
        return done.wait(5.0)
    finally:
        thread.join(planned_s + 5.0)


def test_a_queued_radar_frame_skips_the_sleep_a_queued_sweep_shortens_it(handoff):
    handoff.put_reading(radar(1))  # queued while the loop was busy: it does not sleep at all
    assert sleeps_briefly(handoff, 30.0)
    handoff.take_readings()
    handoff.put_reading(sweep(1))  # it sleeps, at most RIDE_SLACK_S
    assert sleeps_briefly(handoff, 30.0)


def test_a_reply_wakes_the_loop_only_when_replies_are_polled(handoff):
    """With ``replies=False`` (readings flow: the daemon's _replies_wait) a message waiting
    on an uplink's socket does not end the sleep; with replies it ends it at once."""
    import zmq

    ctx = zmq.Context.instance()
    central, tower = ctx.socket(zmq.PAIR), ctx.socket(zmq.PAIR)
    try:
        port = central.bind_to_random_port("tcp://127.0.0.1")
        tower.connect(f"tcp://127.0.0.1:{port}")
        central.send(b"ack")
        assert tower.poll(5000)  # the reply is there
        t0 = time.monotonic()
        handoff.sleep(t0 + 0.3, [], [tower], replies=False)
        assert time.monotonic() - t0 >= 0.25
        t0 = time.monotonic()
        handoff.sleep(t0 + 30.0, [], [tower], replies=True)
        assert time.monotonic() - t0 < 5.0
    finally:
        central.close(0)
        tower.close(0)
