"""When the daemon commits (then sends) the records of a reading: at once, unless the same
sensor's records were committed less than outbox.commit_interval_s before. A radar frame
processed just after an RF sweep's commit must not wait out the interval (that wait was
the end-to-end latency's tail, set by the phase between the two sensors)."""

from __future__ import annotations

import numpy as np
import pytest

from towerd.clock import ManualClock
from towerd.config import load_config
from towerd.daemon import ACK_COMMIT_S, EXPIRE_INTERVAL_S, HOUSEKEEPING_SLACK_S, MAX_SLEEP_S, Daemon
from towerd.handoff import RIDE_SLACK_S
from towerd.drivers.measurements import RadarPlots, Spectrum
from towerd.icd import empty_track_records
from towerd.pipeline import Pipeline
from towerd.sensors import SensorEvent

CONFIG = """\
version: 1
tower: {{id: tx-test-001, latitude_deg: 27.5, longitude_deg: -99.5, height_m: 130.0}}
state_dir: {state}
status_socket: null
sensors: []
web: {{enabled: false}}
outbox: {{commit_interval_s: 0.02}}
"""


class OneRecordPerReading(Pipeline):
    """The real pipeline's interface; every reading gives one track record."""

    def process(self, reading):
        rec = empty_track_records(1)
        rec["track_id"] = reading.frame_number
        rec["time_us"] = self.clock.utc_us(reading.t_mono)
        return rec


@pytest.fixture
def daemon(tmp_path):
    (tmp_path / "towerd.yaml").write_text(CONFIG.format(state=tmp_path / "state"))
    loaded = load_config(tmp_path / "towerd.yaml")
    clock = ManualClock(start_mono=100.0)
    d = Daemon(loaded, clock=clock, pipeline=OneRecordPerReading(loaded.config.pipeline, clock))
    d._open()
    yield d
    d.outbox.close()
    d.console.close()


def reading(sensor: str, clock: ManualClock, number: int) -> RadarPlots:
    return RadarPlots.of(sensor, clock.monotonic(), number, np.zeros(0))


def all_committed(d: Daemon) -> bool:
    return d.outbox.committed_next_seq == d.outbox.next_seq


def test_another_sensors_commit_does_not_hold_a_reading_back(daemon):
    clock = daemon.clock
    daemon._on_reading(reading("rf0", clock, 1))
    daemon._drain()
    assert all_committed(daemon) and daemon.outbox.next_seq == 2
    clock.advance(0.005)  # well within commit_interval_s of the RF commit
    daemon._on_reading(reading("radar0", clock, 2))
    daemon._drain()
    assert all_committed(daemon) and daemon.outbox.next_seq == 3


def test_the_same_sensor_within_the_interval_waits_for_the_loop(daemon):
    clock = daemon.clock
    daemon._on_reading(reading("radar0", clock, 1))
    daemon._drain()
    assert all_committed(daemon)
    clock.advance(0.005)
    daemon._on_reading(reading("radar0", clock, 2))
    daemon._drain()
    assert not all_committed(daemon) and daemon._records_waiting
    assert daemon._waiting_since == pytest.approx(clock.monotonic())  # the loop commits it 20 ms from now
    clock.advance(0.02)
    daemon._on_reading(reading("radar0", clock, 3))  # the interval is over: this commit carries both
    daemon._drain()
    assert all_committed(daemon) and daemon.outbox.next_seq == 4


def test_records_of_the_timer_and_events_ride_with_the_next_readings_commit(daemon):
    clock = daemon.clock
    daemon._event("test.event", "info", "an event")
    assert daemon._records_waiting and not all_committed(daemon)
    clock.advance(0.01)
    daemon._on_reading(reading("radar0", clock, 1))
    daemon._drain()
    assert all_committed(daemon) and not daemon._records_waiting


def test_a_readings_commit_carries_the_acknowledgements_and_restarts_their_wait(daemon):
    """Deletions of acknowledged records wait ACK_COMMIT_S after the last commit, whoever
    made it: a reading's commit carries them, so at nominal load they never cost a disk
    sync of their own (the loop once timed them from its own commits only, and synced an
    acknowledgement alone about once a second while readings were committed ten times a
    second)."""
    clock = daemon.clock
    daemon._on_reading(reading("radar0", clock, 1))
    daemon._drain()
    assert all_committed(daemon) and daemon._commit_time() is None
    daemon.outbox.ack(1, 1)
    assert daemon.outbox.uncommitted and not daemon._commit_due(clock.monotonic())
    clock.advance(0.9)
    daemon._on_reading(reading("radar0", clock, 2))
    daemon._drain()  # commits the reading's record and the deletion
    assert not daemon.outbox.uncommitted
    clock.advance(0.2)  # 1.1 s after the first commit, 0.2 s after the last
    daemon.outbox.ack(2, 2)
    assert not daemon._commit_due(clock.monotonic())
    assert daemon._commit_time() == pytest.approx(clock.monotonic() + ACK_COMMIT_S - 0.2)
    clock.advance(ACK_COMMIT_S - 0.2)
    assert daemon._commit_due(clock.monotonic())  # no reading came: the deletion is committed alone


def test_housekeeping_waits_for_a_readings_wake_up_but_a_commit_does_not(daemon):
    """When the loop sleeps: a commit of waiting records wakes it at its time; expiry
    (and STATUS=, the watchdog) falls due at its time but wakes the loop only
    HOUSEKEEPING_SLACK_S later, so at 10 frames/s it runs at a reading's wake-up and
    costs none of its own. Whatever wake-up comes first runs what is due."""
    clock = daemon.clock
    now = clock.monotonic()
    daemon._next_expire, daemon._next_status = now, now + 5.0
    assert daemon._wake_time(now) == pytest.approx(now + HOUSEKEEPING_SLACK_S)
    daemon._event("test.event", "info", "an event")  # records waiting: committed within commit_every
    assert daemon._wake_time(now) == pytest.approx(now + daemon._commit_every)
    clock.advance(0.05)  # a reading's wake-up, before any timer's own
    daemon._on_reading(reading("radar0", clock, 1))
    daemon._drain()
    daemon._housekeeping(clock.monotonic())
    assert daemon._next_expire == pytest.approx(clock.monotonic() + EXPIRE_INTERVAL_S)  # expiry ran
    assert all_committed(daemon)
    now = clock.monotonic()
    assert daemon._wake_time(now) == pytest.approx(min(now + EXPIRE_INTERVAL_S + HOUSEKEEPING_SLACK_S,
                                                       now + MAX_SLEEP_S))


def test_replies_wait_for_a_readings_wake_up_only_while_readings_flow(daemon):
    clock = daemon.clock
    assert not daemon._replies_wait(clock.monotonic())  # no reading yet: a reply wakes the loop
    daemon._on_reading(reading("radar0", clock, 1))
    daemon._drain()
    assert daemon._replies_wait(clock.monotonic())
    clock.advance(2 * RIDE_SLACK_S + 0.01)
    assert not daemon._replies_wait(clock.monotonic())  # the sensors went quiet


def sweep_reading(clock: ManualClock, number: int) -> Spectrum:
    return Spectrum.of("rf0", clock.monotonic(), number, 2400.0, 0.5, np.zeros(8, dtype=np.float32), "ism2400",
                       float("nan"), "normal")


def after_a_full_pass(d: Daemon) -> None:
    """The loop's state after a full pass that processed a radar frame and planned a
    quiet sleep (readings flow) on one sensor's port, which the sleep then found ready."""
    clock = d.clock
    d._on_reading(reading("radar0", clock, 1))
    d._drain()
    now = clock.monotonic()
    d._housekeeping(now)
    assert d._replies_wait(now)
    d._wake_at = min(d._wake_time(now), now + RIDE_SLACK_S)
    d._sensor_fds, d._ready = frozenset({12345}), {12345}


def test_a_pass_that_only_read_a_sweep_sleeps_again_at_once(daemon):
    """An RF sweep that comes apart from the radar frame is read when it comes (its time
    is the read's) and rides to the next radar frame; the pass that read it skips the
    queue, housekeeping and the planning of the sleep (_idle_pass), and sleeps again
    until the time the last full pass planned."""
    clock = daemon.clock
    after_a_full_pass(daemon)
    clock.advance(0.03)
    daemon._on_reading(sweep_reading(clock, 7))
    next_expire, iterations = daemon._next_expire, daemon._iterations
    daemon._wake_at = clock.monotonic()  # the sleep below returns at once
    assert daemon._idle_pass()
    assert daemon._next_expire == next_expire and daemon._iterations == iterations  # nothing else ran
    assert [r.sweep_number for r in daemon._handoff.readings] == [7]  # still riding, time as read
    assert daemon._handoff.readings[0].t_mono == pytest.approx(clock.monotonic())
    daemon._on_reading(reading("radar0", clock, 2))  # the radar frame: a full pass takes both
    assert not daemon._idle_pass()


@pytest.mark.parametrize("what", ["event", "sweep waited its slack", "timer due", "socket ready",
                                  "replies polled", "uplinks not polled", "status client"])
def test_a_pass_with_anything_else_to_do_is_a_full_pass(daemon, what):
    clock = daemon.clock
    after_a_full_pass(daemon)
    clock.advance(0.03)
    daemon._on_reading(sweep_reading(clock, 7))
    if what == "event":
        daemon._on_event(SensorEvent("rf0", "sensor.degraded", "warning", "quiet", clock.monotonic()))
    elif what == "sweep waited its slack":
        clock.advance(RIDE_SLACK_S)
    elif what == "timer due":
        clock.advance(daemon._next_expire - clock.monotonic())
    elif what == "socket ready":
        daemon._ready = {12345, 99}  # the wake-up pipe, or a port the last full pass did not sleep on
    elif what == "replies polled":
        daemon._quiet_until = float("-inf")  # what a full pass that polled the uplinks' sockets sets
    elif what == "uplinks not polled":
        daemon._commit()  # rows committed for the uplinks
    elif what == "status client":
        class Busy:
            def wanted(self, ready):
                return True
        daemon.status_server = Busy()
    assert clock.monotonic() < daemon._wake_at or what in ("sweep waited its slack", "timer due")
    assert not daemon._idle_pass()
