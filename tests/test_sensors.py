"""SensorRunner over a real pty: a missing port is retried, a port that appears comes
up, an unplug (the pty vanishing) is noticed and reopened, silence is 'degraded'."""

from __future__ import annotations

import os
import queue

import numpy as np
import pytest

from towerd.drivers.measurements import RadarPlots
from towerd.drivers.ti_mmwave.driver import TiMmwaveDriver, TiMmwaveSettings
from towerd.sensors import SensorRunner, SensorState
from towerd.sim.pty import PtyPair
from towerd.sim.scenario import builtin_scenario
from towerd.sim.ti_mmwave import TiMmwaveEmulator


class Recorder:
    """Collects readings and events from the runner's thread; waits on queues."""

    def __init__(self) -> None:
        self.readings: queue.Queue = queue.Queue()
        self.events: queue.Queue = queue.Queue()

    def next_event(self, timeout_s: float = 10.0):
        try:
            return self.events.get(timeout=timeout_s)
        except queue.Empty:
            pytest.fail("no sensor event within the deadline")

    def next_reading(self, timeout_s: float = 10.0):
        try:
            return self.readings.get(timeout=timeout_s)
        except queue.Empty:
            pytest.fail("no reading within the deadline")


@pytest.fixture
def runner_on_link(tmp_path):
    """A runner whose port is a symlink the test can point at a pty, or remove."""
    link = tmp_path / "radar0-data"
    rec = Recorder()
    driver = TiMmwaveDriver("radar0", TiMmwaveSettings(port=str(link)))
    runner = SensorRunner(driver, rec.readings.put, rec.events.put, degraded_after_s=0.5, reconnect_max_s=0.2)
    runner.backoff_initial_s = 0.05
    yield runner, link, rec
    runner.stop()


def test_missing_port_then_plugged_unplugged_replugged(runner_on_link):
    runner, link, rec = runner_on_link
    runner.start()
    ev = rec.next_event()
    assert (ev.code, ev.severity) == ("sensor.down", "error")
    assert "cannot open" in ev.message and runner.state is SensorState.DOWN

    scenario = builtin_scenario("demo")
    pty = PtyPair.open()
    emulator = TiMmwaveEmulator(scenario, boresight_azimuth_deg=0.0, position_enu_m=(0.0, 0.0, 10.0),
                                frame_rate_hz=20.0, rng=np.random.default_rng(3))
    try:
        os.symlink(pty.path, link)  # the technician plugs the radar in
        assert rec.next_event().code == "sensor.up"
        emulator.start(pty)
        reading = rec.next_reading()
        assert isinstance(reading, RadarPlots) and reading.sensor == "radar0"
        assert runner.state is SensorState.OK
        status = runner.status()
        assert status["state"] == "ok" and status["frames"] >= 1 and status["bytes_in"] > 0

        emulator.stop()  # the radar stops sending but the port stays open
        ev = rec.next_event()
        assert ev.code == "sensor.degraded" and "no data" in ev.message
        assert runner.status()["last_error"].startswith("no data for")
    finally:
        emulator.stop()
        os.unlink(link)
        pty.close()  # unplug: the pty disappears under the open port
    ev = rec.next_event()
    assert ev.code == "sensor.down"
    assert runner.state is SensorState.DOWN

    pty2 = PtyPair.open()
    emulator2 = TiMmwaveEmulator(scenario, boresight_azimuth_deg=0.0, position_enu_m=(0.0, 0.0, 10.0),
                                 frame_rate_hz=20.0, rng=np.random.default_rng(4))
    try:
        os.symlink(pty2.path, link)  # replugged, maybe as another ttyACM: the stable name follows
        assert rec.next_event().code == "sensor.up"
        emulator2.start(pty2)
        assert isinstance(rec.next_reading(), RadarPlots)
        assert runner.driver.counters.reconnects == 1
    finally:
        emulator2.stop()
        runner.stop()
        pty2.close()


def test_stop_is_prompt_and_idempotent_while_reading(runner_on_link, pty_pair):
    runner, link, rec = runner_on_link
    os.symlink(pty_pair.path, link)
    runner.start()
    assert rec.next_event().code == "sensor.up"
    runner.stop()
    runner.stop()
    assert not runner.driver.is_open
