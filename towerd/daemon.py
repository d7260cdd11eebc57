"""The daemon: wires sensors, pipeline, outbox and uplinks, and runs the main loop.

Threads: the main loop reads the sensors' ports itself, gpsd style: a sensor's thread
(:mod:`towerd.sensors`) only opens its port, with backoff, and hands it to the loop,
which polls it beside its other descriptors (a port without a descriptor keeps a reader
thread). Readings go through a bounded queue (:mod:`towerd.handoff`); everything runs in
the main loop, single-threaded: reading, detection, tracking, report building, outbox
writes and commits, uplink I/O, so a radar frame costs one wake-up of one thread. A full
queue (the loop falling behind) drops the newest reading and counts it; nothing is
dropped silently. The web
console (:mod:`towerd.web`) serves from its own threads; the loop hands it snapshots
only while a console is open.

The loop sleeps in one ``zmq.Poller`` on everything that can give it work: the sensors'
ports, a wake-up pipe the sensor threads (and signals) write to, the uplinks' sockets
and the status socket, with a timeout to its next timer (:mod:`towerd.handoff`). An idle tower costs
next to nothing and a radar frame is processed the moment it is read; what can wait (an
RF sweep, a central's reply, housekeeping timers) waits for that wake-up instead of
costing one of its own. An RF sweep that comes apart from the radar frame still wakes
the loop (it is read when it comes, so its time is true), but that pass only reads it
and sleeps again (:meth:`Daemon._idle_pass`).
"""

from __future__ import annotations

import logging
import os
import threading
import time
from pathlib import Path
from typing import Any

from towerd import __version__
from towerd.clock import Clock, SystemClock
from towerd.config import LoadedConfig
from towerd.drivers import driver_class
from towerd.errors import OutboxError
from towerd.handoff import RIDE_SLACK_S, Handoff
from towerd.notify import Notifier
from towerd.outbox.sqlite import Outbox
from towerd.pipeline import Pipeline
from towerd.reload import Reloading
from towerd.sensors import SensorEvent, SensorRunner, SensorState
from towerd.status import StatusServer
from towerd.uplink.client import UplinkClient
from towerd.web.console import Console

log = logging.getLogger(__name__)

EXPIRE_INTERVAL_S = 0.25
STATUS_INTERVAL_S = 5.0
MAX_SLEEP_S = 0.25
"""Longest the loop sleeps with nothing to do (bounds how late a resend or a stop is)."""
HOUSEKEEPING_SLACK_S = 0.1
"""How long a due housekeeping timer (expiry, STATUS=, the watchdog) waits for a wake-up
the loop has anyway (a reading: one every 100 ms per sensor at 10 Hz) before it wakes the
loop itself; expiry then runs at most this late."""
ACK_COMMIT_S = 1.0
"""Deletions of acknowledged records alone are committed this often: they cost a disk
sync and delay nothing (a crash before the commit only causes a resend)."""
STOP_FLUSH_S = 3.0
"""How long a graceful stop waits for centrals to acknowledge what is pending."""


class Daemon(Reloading):
    """One tower's daemon. Construct, then :meth:`run` until ``stop`` is set."""

    def __init__(
        self,
        loaded: LoadedConfig,
        *,
        clock: Clock | None = None,
        notifier: Notifier | None = None,
        pipeline: Pipeline | None = None,
    ) -> None:
        self.loaded = loaded
        self.config = loaded.config
        self.clock = clock or SystemClock()
        self.notifier = notifier or Notifier()
        self.pipeline = pipeline or Pipeline(self.config.pipeline, self.clock)
        self._handoff = Handoff(self.clock.monotonic)  # readings and events from the sensor threads
        self.runners: list[SensorRunner] = []
        self.uplinks: list[UplinkClient] = []
        self.outbox: Outbox | None = None
        self.status_server: StatusServer | None = None
        self.console = Console(self.config.web)  # started in run(); fed from the loop only while open
        self._started_mono = self.clock.monotonic()
        self._iterations = 0  # main-loop passes, for the watchdog
        self._reload_requested = threading.Event()
        self._records_waiting = False  # records or events added since the last commit
        self._waiting_since = 0.0  # monotonic time the oldest of them was added
        self._commit_every = self.config.outbox.commit_interval_s
        self._sensor_commits: dict[str, float] = {}  # sensor -> monotonic time its reading's records were committed
        self._last_commit = 0.0  # monotonic time of the last commit, whoever made it (see ACK_COMMIT_S)
        self._uplinks_fresh = False  # nothing for the uplinks since their last poll (see _housekeeping)
        self._uplinks_polled_at = float("-inf")  # monotonic time of their last poll
        self._next_expire = self._next_status = self._next_watchdog = 0.0  # housekeeping timers (monotonic)
        self._watchdog_s = 0.0  # 0: no watchdog
        self._pinged_at = -1  # loop pass of the last WATCHDOG=1
        self._last_reading = float("-inf")  # monotonic time a reading was last drained
        self._ready: set[int] = set()  # descriptors the last sleep found ready (sensors' ports among them)
        self._wake_at = 0.0  # monotonic time the last full pass planned to wake by (see _idle_pass)
        self._quiet_until = float("-inf")  # before it, a pass that reads only a riding reading has nothing else to do
        self._sensor_fds: frozenset[int] = frozenset()  # the sensors' ports the last full pass slept on
        self._polled: list[int] = []  # the descriptors it slept on
        self._sockets: list[Any] = []  # and the uplinks' sockets it would wait on
        self._awake: Any = lambda: False  # whether the loop must not sleep (a stop, a reload)
        self._receivers_watched = True  # Remote ID receivers' silence is followed (see _drain)

    # -- wiring -------------------------------------------------------------------

    def _open(self) -> None:
        state_dir = Path(self.config.state_dir)
        state_dir.mkdir(parents=True, exist_ok=True)
        names = [c.name for c in self.config.centrals]
        self.outbox = Outbox.from_settings(state_dir, self.config.outbox, clock=self.clock, centrals=names or None)
        log.info("outbox %s: stream %016x, next seq %d", state_dir / self.config.outbox.path,
                 self.outbox.stream_id, self.outbox.next_seq)
        for central in self.config.centrals:
            self.uplinks.append(self._make_uplink(central))
        for sensor in self.config.sensors:
            runner = self._make_runner(sensor)
            if runner is not None:
                self.runners.append(runner)

    def _make_runner(self, sensor: Any) -> SensorRunner | None:
        if not sensor.enabled:
            log.info("sensor %s: disabled in the configuration", sensor.name)
            return None
        driver = driver_class(sensor.driver)(sensor.name, sensor.settings, clock=self.clock)
        return SensorRunner(
            driver, self._on_reading, self._on_event,
            degraded_after_s=sensor.degraded_after_s, reconnect_max_s=sensor.reconnect_max_s, clock=self.clock,
            in_loop=True,
        )

    def _make_uplink(self, central: Any) -> UplinkClient:
        return UplinkClient(self.config.tower.id, central, self.outbox, clock=self.clock, health=self.health,
                            zone_of=self.pipeline.zone_of)

    def _open_status_socket(self) -> None:
        path = self.config.status_socket
        if not path:
            return
        try:
            self.status_server = StatusServer(path, self.status, __version__)
        except OSError as exc:
            # Never refuse to start over a diagnostic aid; say why it is missing.
            log.warning("status socket %s unavailable (%s): `towerd status` will not answer", path, exc)

    def _wake(self) -> None:
        """Make the loop's poll return (from any thread)."""
        self._handoff.wake()

    def _on_event(self, event: SensorEvent) -> None:
        """Called from sensor threads, or from the loop when it reads a port."""
        self._handoff.put_event(event)

    @property
    def dropped_readings(self) -> int:
        """Readings dropped because the loop was behind (the queue was full)."""
        return self._handoff.dropped

    def _on_reading(self, reading: Any) -> None:
        """Called by whoever read the port: the loop (:meth:`_read_sensors`) or a sensor's
        thread (see :meth:`Handoff.put_reading`)."""
        if not self._handoff.put_reading(reading):
            if self.dropped_readings in (1, 10, 100) or self.dropped_readings % 1000 == 0:
                log.warning("processing is behind: %d readings dropped so far", self.dropped_readings)

    # -- state for HEALTH and STATUS ------------------------------------------------

    def health(self) -> dict[str, Any]:
        """The ICD v1 HEALTH object."""
        outbox = self.outbox
        return {
            "tower_id": self.config.tower.id,
            "software_version": __version__,
            "config_digest": self.loaded.digest,
            "uptime_s": round(self.clock.monotonic() - self._started_mono, 3),
            "time_us": self.clock.utc_us(),
            "sensors": self._sensors_health(),
            "tracks_active": self.pipeline.tracks_active,
            "outbox": outbox.health() if outbox else {"pending": 0, "oldest_seq": None, "next_seq": None,
                                                        "dropped_total": 0},
            "readings_dropped": self.dropped_readings,
        }

    def _sensors_health(self) -> dict[str, Any]:
        """Each sensor's status; a Remote ID receiver's with ``covering`` (whether its
        silence counts as the absence of broadcasts, and why not)."""
        sensors = {r.name: r.status() for r in self.runners}
        for name, why in self.pipeline.identity.receivers.items():
            if name in sensors:
                sensors[name]["covering"] = why or "yes"
        return sensors

    def status(self) -> dict[str, Any]:
        """Everything `towerd status` shows: HEALTH plus per-central link details."""
        now = self.clock.monotonic()
        centrals = {}
        for uplink in self.uplinks:
            stats = uplink.stats
            last_ack = stats.get("last_ack_mono")
            centrals[uplink.settings.name] = {
                **stats,
                "endpoint": uplink.settings.endpoint,
                "link_up": uplink.link_up,
                "last_ack_age_s": None if last_ack is None else round(now - last_ack, 3),
            }
        return {**self.health(), "config_path": self.loaded.path, "state_dir": self.config.state_dir,
                "pid": os.getpid(), "centrals": centrals,
                "console_url": self.console.url}

    def status_line(self) -> str:
        sensors = " ".join(f"{r.name}:{r.state.value}" for r in self.runners) or "no sensors"
        links = " ".join(f"{u.settings.name}:{'up' if u.link_up else 'down'}" for u in self.uplinks) or "no centrals"
        pending = self.outbox.pending_count() if self.outbox else 0
        return f"{sensors}; tracks {self.pipeline.tracks_active}; {links}; backlog {pending}"

    # -- reload -------------------------------------------------------------------

    # -- loop ---------------------------------------------------------------------

    def run(self, stop: threading.Event) -> None:
        """Run until ``stop`` is set, then stop gracefully (flushing the outbox)."""
        self._open()
        assert self.outbox is not None
        outbox = self.outbox
        outbox.add_event("daemon.started", "info", f"towerd {__version__} started",
                         config_digest=self.loaded.digest)
        outbox.commit()
        self._open_status_socket()
        self.console.start()  # before the sensors: it imports its server on start, and the loop must follow them
        for runner in self.runners:
            runner.start()
        self.notifier.ready(self.status_line())
        log.info("running: tower %s, %d sensors, %d centrals", self.config.tower.id, len(self.runners),
                 len(self.uplinks))
        now = self.clock.monotonic()
        self._next_expire = self._next_status = self._next_watchdog = self._last_commit = now
        self._watchdog_s = self.notifier.watchdog_interval_s()
        if not self._handoff.wake_on_signals():
            log.debug("not the main thread: a stop is seen within MAX_SLEEP_S")
        try:
            while not stop.is_set():
                self._iterations += 1
                if self._reload_requested.is_set():
                    self._reload()
                self._read_sensors()
                if self._idle_pass():
                    continue
                self._drain()
                now = self.clock.monotonic()
                self._housekeeping(now)
                wake_at, replies = self._wake_time(now), not self._replies_wait(now)
                if not replies:
                    wake_at = min(wake_at, now + RIDE_SLACK_S)
                else:
                    self._quiet_until = float("-inf")
                self._wake_at = wake_at
                self._sleep(wake_at, stop, replies=replies)
                if replies:  # a reply or a link event may have ended the sleep
                    self._uplinks_fresh = False
        finally:
            self._shutdown()

    def _housekeeping(self, now: float) -> None:
        """The loop's work besides readings: expiry, the commit of waiting records,
        uplink and status-socket I/O, the console, STATUS= and the watchdog. Each timer
        runs once it is due, at whatever wake-up comes first (see :meth:`_wake_time`)."""
        if now >= self._next_expire:
            self._store(self.pipeline.expire(now))
            self._identity_out()
            self._next_expire = now + EXPIRE_INTERVAL_S
        if self._commit_due(now):
            self._commit_records(now)
        # The uplinks are polled when there may be work: rows committed, a reply, their
        # own timers (whenever an uplink has one, its sockets are polled: _replies_wait),
        # and at least every RIDE_SLACK_S (HEALTH's timer). A pass that only read an RF
        # sweep (it waits for the radar frame) leaves them alone.
        if not self._uplinks_fresh or now - self._uplinks_polled_at >= RIDE_SLACK_S:
            self._poll_uplinks(now)
        if self.status_server is not None and self.status_server.wanted(self._ready):
            self.status_server.poll()
        self.console.poll(self, now)
        if now >= self._next_status:
            self.notifier.status(self.status_line())
            self._next_status = now + STATUS_INTERVAL_S
        # WATCHDOG=1 comes from this loop only, so a hung loop stops it and systemd
        # restarts the daemon.
        if self._watchdog_s and now >= self._next_watchdog and self._iterations != self._pinged_at:
            self.notifier.send("WATCHDOG=1")
            self._pinged_at, self._next_watchdog = self._iterations, now + self._watchdog_s / 2.0

    def _wake_time(self, now: float) -> float:
        """When the loop must wake if nothing else wakes it first. The commit of waiting
        records and the uplinks' and console's timers are exact; housekeeping (expiry,
        STATUS=, the watchdog) is due at its time but wakes the loop only
        HOUSEKEEPING_SLACK_S later: a reading that comes before runs it (at 10 frames/s one
        always does), so it costs no wake-up of its own."""
        slack = HOUSEKEEPING_SLACK_S
        timers = [now + MAX_SLEEP_S]
        commit_at = self._commit_time()
        if commit_at is not None:
            timers.append(commit_at)
        timers += [now + u.next_timer_s() for u in self.uplinks]
        timers += [r.due() for r in self.runners]
        console_due = self.console.next_timer()
        if console_due is not None:
            timers.append(console_due)
        exact = min(timers)
        # Before the first timer is due (housekeeping's without its slack, and the
        # uplinks' poll of _housekeeping and the quiet sleep of _replies_wait), a pass
        # that only reads a riding reading has nothing else to do (see _idle_pass).
        due = min(self._next_expire, self._next_status, self._uplinks_polled_at + RIDE_SLACK_S,
                  self._last_reading + 2.0 * RIDE_SLACK_S)
        if self._watchdog_s:
            due = min(due, self._next_watchdog)
            exact = min(exact, self._next_watchdog + min(slack, self._watchdog_s / 4.0))
        self._quiet_until = min(exact, due)
        return min(exact, self._next_expire + slack, self._next_status + slack)

    def _idle_pass(self) -> bool:
        """After the sensors' ports were read: when the pass has nothing else to do, sleep
        again at once and return True. That is the usual pass for an RF sweep that comes
        apart from the radar frame: the sweep is read when it comes (its time is true)
        and waits, riding, for the radar frame (:mod:`towerd.handoff`); the loop then
        skips the queue, housekeeping and the planning of its sleep, which a full pass
        does for it. Nothing else may be waiting: only sensors' ports woke the loop
        from a sleep without the uplinks' sockets, no reading or event is to be taken
        (:meth:`Handoff.idle`), no timer is due yet (``_quiet_until``, set by
        :meth:`_wake_time`), the uplinks have nothing new, no status client is mid-request
        and no Remote ID receiver is configured (its silence is looked at every pass)."""
        if not (self._ready <= self._sensor_fds and self._uplinks_fresh and self._handoff.idle()):
            return False
        now = self.clock.monotonic()
        if now >= self._quiet_until or self._receivers_watched or (
                self.status_server is not None and self.status_server.wanted(set())):
            return False
        wake_at = self._wake_at
        for runner in self.runners:  # a read may have brought a driver's timer closer
            due = runner.due()
            if due < wake_at:
                wake_at = due
        self._ready = self._handoff.sleep(wake_at, self._polled, self._sockets, replies=False, awake=self._awake)
        return True

    def _replies_wait(self, now: float) -> bool:
        """Whether the loop's next sleep leaves the uplinks' sockets out: while readings
        flow (one drained within the last 2 RIDE_SLACK_S) and no uplink paces a backlog
        (whose replies open its window), a central's reply waits for the next reading's
        wake-up, at most RIDE_SLACK_S. An ACK only frees outbox rows and window space;
        nothing waits on it."""
        return now - self._last_reading < 2.0 * RIDE_SLACK_S and all(
            u.next_timer_s() == float("inf") for u in self.uplinks)

    def _sleep(self, wake_at: float, stop: threading.Event, *, replies: bool = True) -> None:
        """Wait until ``wake_at`` for work: a radar reading or an event (wake-up pipe), a
        reply on an uplink (unless ``replies`` is false), a status client."""
        sockets = [sock for uplink in self.uplinks for sock in uplink.pollables()]
        polled = self.status_server.filenos() if self.status_server is not None else []
        fds = [r.fd for r in self.runners if r.fd is not None]
        self._sensor_fds = frozenset(fds) if replies is False else frozenset()
        self._polled, self._sockets = polled + fds, sockets
        self._awake = lambda: stop.is_set() or self._reload_requested.is_set()
        self._ready = self._handoff.sleep(wake_at, self._polled, sockets, replies=replies, awake=self._awake)

    def _read_sensors(self) -> None:
        """Read the sensors' ports the last sleep found ready, and those whose driver is
        due a read without bytes (a held frame's release, a scan plan's timer) or whose
        silence is due to make them degraded (:meth:`SensorRunner.due`); their readings
        join the queue that :meth:`_drain` takes."""
        ready, now = self._ready, self.clock.monotonic()
        for runner in self.runners:
            fd = runner.fd
            if fd is not None and (fd in ready or now >= runner.due()):
                runner.read_ready(fd in ready)

    def _drain(self, *, everything: bool = False) -> None:
        """Process what the sensors' reads have queued: at most a full queue per pass,
        so readings arriving faster than they are processed cannot keep the loop from a
        stop, commits and the uplinks (the full queue drops and counts the excess); radar
        frames first. The loop does not sleep while a radar frame waits; an RF sweep waits
        for the next radar frame, at most RIDE_SLACK_S (:mod:`towerd.handoff`), unless
        ``everything`` (stopping)."""
        for event in self._handoff.take_events():
            self._event(event.code, event.severity, event.message, sensor=event.sensor)
        receivers = [r for r in self.runners if r.driver.kind == "remoteid"]
        identity = self.pipeline.identity
        if receivers or identity.receivers or identity.receivers_up:  # else it is already "none, not covering"
            now = self.clock.monotonic()
            self.pipeline.set_receivers({r.name: None if r.state is SensorState.DOWN else r.driver.silent_s(now)
                                         for r in receivers})
        self._receivers_watched = bool(receivers or identity.receivers or identity.receivers_up)
        for reading in self._handoff.take_readings(everything=everything):
            self._last_reading = self.clock.monotonic()
            stored = self._store(self.pipeline.process(reading))
            self.console.note(reading, self.pipeline)
            self._identity_out()
            if stored:
                # Commit and send now, not after the readings queued behind this one, and
                # not after another sensor's commit (a radar frame must not wait for the
                # commit interval because an RF sweep's records were just committed): only
                # the same sensor's commit less than commit_every ago (readings piled up)
                # makes them wait, with the other records, for the loop's commit.
                now = self.clock.monotonic()
                sensor = getattr(reading, "sensor", "")
                if now - self._sensor_commits.get(sensor, float("-inf")) >= self._commit_every:
                    self._commit_records(now)
                    self._sensor_commits[sensor] = now
                    self._poll_uplinks(now)

    def _poll_uplinks(self, now: float) -> None:
        """Send what is committed and read what the centrals replied (non-blocking)."""
        for uplink in self.uplinks:
            uplink.poll(0)
        self._uplinks_fresh, self._uplinks_polled_at = True, now

    def _identity_out(self) -> None:
        """Remote ID fusion's events (rid_mismatch, non-cooperative) and the track
        identities due into the outbox, after the records of the same cycle (the uplink
        sends identities on their own ICD v1.1 stream)."""
        fusion = self.pipeline.identity
        for code, severity, message, fields in fusion.pop_events():
            self._event(code, severity, message, **fields)
        identities = fusion.pop_identities()
        if identities:
            try:
                self.outbox.add_identities(identities)
                self._note_waiting()
            except (OutboxError, ValueError) as exc:
                log.error("outbox: %d track identities not stored: %s", len(identities), exc)

    # A full disk or an I/O error must not stop the tower: the outbox rolls back, counts
    # the loss, and announces it (outbox.write_failed) once writes work again.

    def _event(self, code: str, severity: str, message: str, **fields: Any) -> None:
        self.console.note_event(code, severity, message, self.clock.utc_us(), fields)
        try:
            self.outbox.add_event(code, severity, message, **fields)
            self._note_waiting()
        except OutboxError as exc:
            log.error("outbox: event %s not stored: %s", code, exc)

    def _store(self, records: Any) -> bool:
        """Add track records to the outbox; True when there were some and they were added."""
        if len(records):
            try:
                self.outbox.add_tracks(records)
                self._note_waiting()
                return True
            except OutboxError as exc:
                log.error("outbox: %d track records not stored: %s", len(records), exc)
        return False

    def _note_waiting(self) -> None:
        """Records were added: from now on they wait for a commit."""
        if not self._records_waiting:
            self._records_waiting, self._waiting_since = True, self.clock.monotonic()

    def _commit_time(self) -> float | None:
        """When the loop must commit what the open transaction holds (None: nothing open).

        A reading's records are committed (then sent) as soon as it is processed (see
        :meth:`_drain`); other records (the timer's, events, identities) wait up to
        commit_every for a reading's commit to carry them, then are committed on their own.
        Deletions of acknowledged records alone wait up to ACK_COMMIT_S after the last
        commit, whoever made it: at nominal load a reading's commit carries them, and
        they cost no disk sync of their own."""
        if not self.outbox.uncommitted:
            return None
        if self._records_waiting:
            return self._waiting_since + self._commit_every
        return self._last_commit + ACK_COMMIT_S

    def _commit_due(self, now: float) -> bool:
        """Whether the loop commits now (:meth:`_commit_time`)."""
        at = self._commit_time()
        return at is not None and now >= at

    def _commit_records(self, now: float) -> None:
        """Commit the records waiting (and whatever else the transaction holds)."""
        self._commit()
        self._records_waiting = False

    def _commit(self) -> None:
        """Commit whatever the transaction holds. Every commit restarts the ACK_COMMIT_S
        wait of acknowledgements: a reading's commit carries them as well as the loop's."""
        try:
            self.outbox.commit()
        except OutboxError as exc:
            log.error("outbox: commit failed: %s", exc)
        self._last_commit = self.clock.monotonic()
        self._uplinks_fresh = False  # committed rows to send

    def _shutdown(self) -> None:
        self.notifier.stopping()
        log.info("stopping")
        for runner in self.runners:
            runner.stop()
        outbox = self.outbox
        # Each step is guarded: whatever raised (the reason we are stopping, perhaps),
        # the uplinks, the status socket and above all the outbox are closed.
        try:
            if outbox is not None:
                self._drain(everything=True)
                self._store(self.pipeline.end_all(self.clock.monotonic()))
                self._event("daemon.stopping", "info", "towerd stopping")
                self._commit()
                deadline = time.monotonic() + STOP_FLUSH_S
                while self.uplinks and outbox.pending_count() and time.monotonic() < deadline:
                    for uplink in self.uplinks:
                        uplink.poll(20)
                if outbox.pending_count():
                    log.info("%d records stay in the outbox for the next start", outbox.pending_count())
        except Exception:
            log.exception("stopping: flushing the outbox failed; closing anyway")
        for closeable in (*self.uplinks, self.status_server, self.console, outbox):
            if closeable is None:
                continue
            try:
                closeable.close()
            except Exception:
                log.exception("stopping: closing %s failed", type(closeable).__name__)
        self._handoff.close()
        log.info("stopped")

