"""SIGHUP reload of the daemon: re-read the configuration, apply it whole or not at all.

A mixin of :class:`towerd.daemon.Daemon` (its loop calls :meth:`Reloading._reload` when
:meth:`Reloading.request_reload` has been asked): the new file is validated and its
files checked before anything changes; then the pipeline, the sensors whose settings
changed, the centrals whose settings changed, logging and the web console are
reconfigured, and the rest keeps running.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from towerd.config import Config, load_config
from towerd.errors import ConfigError
from towerd.files import Account, check_files
from towerd.sensors import SensorRunner
from towerd.uplink.client import UplinkClient

log = logging.getLogger(__name__)


class Reloading:
    """The reload half of the daemon (uses its config, pipeline, runners, uplinks, outbox,
    console, notifier and event hook)."""

    RESTART_ONLY = ("tower.id", "state_dir", "outbox.path", "outbox.synchronous", "outbox.max_records",
                    "outbox.max_bytes", "status_socket")
    """Settings a reload cannot change: they name the tower or its files."""

    def request_reload(self) -> None:
        """Ask for a reload at the next loop pass (safe from a signal handler)."""
        self._reload_requested.set()
        self._wake()

    def _reload(self) -> None:
        """Re-read the configuration file; apply it whole or not at all."""
        self._reload_requested.clear()
        now_us = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
        self.notifier.send("RELOADING=1", f"MONOTONIC_USEC={now_us}")
        path = self.loaded.path
        try:
            loaded = load_config(path)
            self._check_reloadable(loaded.config)
            # The files it names, as this process meets them (a key it cannot read would
            # otherwise fail half-way through applying the new configuration).
            file_problems = check_files(loaded.config, Account.caller())
            if file_problems:
                raise ConfigError([p.format(path) for p in file_problems])
        except Exception as exc:  # ConfigError, or a defect: either way the running configuration stays
            if not isinstance(exc, ConfigError):
                log.exception("reload: reading %s failed unexpectedly", path)
                exc = ConfigError(f"{path}: cannot be loaded: {type(exc).__name__}: {str(exc)[:200]}")
            for problem in exc.problems:
                log.error("reload rejected: %s", problem)
            self._event(
                "config.rejected", "warning",
                f"configuration {path} rejected ({len(exc.problems)} problems); still running with "
                f"sha256 {self.loaded.digest[:12]}", problems=exc.problems, config_digest=self.loaded.digest)
            self.notifier.send("READY=1", f"STATUS=reload rejected, old configuration kept; {self.status_line()}")
            return
        old, new = self.config, loaded.config
        self.loaded, self.config = loaded, new
        self.pipeline.reconfigure(new.pipeline)
        self._commit_every = new.outbox.commit_interval_s
        self._reconcile_sensors(old, new)
        self._reconcile_centrals(old, new)
        logging.getLogger().setLevel(new.logging.level.upper())
        self.console.reconfigure(new.web)
        log.info("configuration reloaded: sha256 %s", loaded.digest)
        self._event("config.reloaded", "info", f"configuration {path} reloaded", config_digest=loaded.digest)
        self.notifier.send("READY=1", f"STATUS={self.status_line()}")

    def _check_reloadable(self, new: Config) -> None:
        old = self.config
        problems = []
        for key in self.RESTART_ONLY:
            before, after = _dig(old, key), _dig(new, key)
            if before != after:
                problems.append(f"{self.loaded.path}: {key}: changed from {before!r} to {after!r}, which takes a "
                                f"restart (systemctl restart towerd), not a reload")
        if problems:
            raise ConfigError(problems)

    def _reconcile_sensors(self, old: Config, new: Config) -> None:
        """Reopen the sensors whose device settings changed; keep the others running."""
        before = {s.name: s for s in old.sensors}
        runners = {r.name: r for r in self.runners}
        kept: list[SensorRunner] = []
        for sensor in new.sensors:
            prev, runner = before.get(sensor.name), runners.pop(sensor.name, None)
            same = prev is not None and (prev.driver, prev.settings, prev.enabled) == (
                sensor.driver, sensor.settings, sensor.enabled)
            if runner is not None and same:
                runner.degraded_after_s = sensor.degraded_after_s
                runner.reconnect_max_s = sensor.reconnect_max_s
                kept.append(runner)
                continue
            if runner is not None:
                log.info("sensor %s: settings changed, reopening", sensor.name)
                runner.stop()
            new_runner = self._make_runner(sensor)
            if new_runner is not None:
                new_runner.start()
                kept.append(new_runner)
        for name, runner in runners.items():
            log.info("sensor %s: removed from the configuration, closing", name)
            runner.stop()
        self.runners = kept

    def _reconcile_centrals(self, old: Config, new: Config) -> None:
        """Reconnect to the centrals whose settings changed; the outbox keeps the records
        (a new central receives every record still held)."""
        wanted = {c.name: c for c in new.centrals}
        kept: dict[str, UplinkClient] = {}
        for uplink in self.uplinks:
            name = uplink.settings.name
            if wanted.get(name) == uplink.settings:
                kept[name] = uplink
                continue
            log.info("central %s: %s, disconnecting", name, "settings changed" if name in wanted else "removed")
            uplink.close()
        self.outbox.set_centrals(list(wanted) or None)
        self.uplinks = [kept.get(name) or self._make_uplink(central) for name, central in wanted.items()]


def _dig(obj: Any, dotted: str) -> Any:
    for part in dotted.split("."):
        obj = getattr(obj, part)
    return obj
