"""SensorRunner over a real pty: a missing port is retried, a port that appears comes
up, an unplug (the pty vanishing) is noticed and reopened, silence is 'degraded'; the
same whether the runner's thread reads the port or a caller's loop does (``in_loop``,
as the daemon's)."""

from __future__ import annotations

import os
import queue
import select
import threading

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


class Loop:
    """A caller's loop as the daemon's (``in_loop``): waits on the runner's descriptor
    until its due time, then reads what is ready, in a thread of its own."""

    def __init__(self, runner: SensorRunner) -> None:
        self.runner = runner
        self.stop = threading.Event()
        self.wake_r, self.wake_w = os.pipe()  # the runner's events (port handed over) end a wait
        self.thread = threading.Thread(target=self._run, name="test-loop")
        self.thread.start()

    def _run(self) -> None:
        runner = self.runner
        while not self.stop.is_set():
            fd = runner.fd
            timeout_s = min(0.05, max(0.0, runner.due() - runner.clock.monotonic()))
            try:
                ready = select.select([self.wake_r] + ([fd] if fd is not None else []), [], [], timeout_s)[0]
            except (OSError, ValueError):  # the descriptor was closed under the wait (stop)
                continue
            if self.wake_r in ready:
                os.read(self.wake_r, 4096)
            if fd is not None and runner.fd == fd and (fd in ready or runner.clock.monotonic() >= runner.due()):
                runner.read_ready(fd in ready)

    def close(self) -> None:
        self.stop.set()
        os.write(self.wake_w, b"\0")
        self.thread.join(5)
        assert not self.thread.is_alive()
        os.close(self.wake_r)
        os.close(self.wake_w)


@pytest.fixture(params=[False, True], ids=["thread-reads", "loop-reads"])
def runner_on_link(request, tmp_path):
    """A runner whose port is a symlink the test can point at a pty, or remove; read by
    its thread, or by a loop of the test's (``in_loop``)."""
    link = tmp_path / "radar0-data"
    rec = Recorder()
    driver = TiMmwaveDriver("radar0", TiMmwaveSettings(port=str(link)))
    loop: Loop | None = None

    def on_event(event):
        rec.events.put(event)
        if loop is not None:
            os.write(loop.wake_w, b"\0")

    runner = SensorRunner(driver, rec.readings.put, on_event, degraded_after_s=0.5, reconnect_max_s=0.2,
                          in_loop=request.param)
    runner.backoff_initial_s = 0.05
    if request.param:
        loop = Loop(runner)
    yield runner, link, rec
    if loop is not None:
        loop.close()
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
        if runner.in_loop:  # the port went to the loop; the opening thread ends
            assert runner.fd is not None
            runner._thread.join(5)
            assert not runner._thread.is_alive()
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
    assert runner.fd is None  # back to a thread, which reopens the port

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
