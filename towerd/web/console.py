"""The console as the daemon sees it: start, feed from the loop, reconfigure, close.

The daemon calls :meth:`Console.note` for each reading it processed and
:meth:`Console.poll` once per loop pass; both return at once unless a console is open
(see :mod:`towerd.web.feed`). The server and the view run in their own threads.
"""

from __future__ import annotations

import json
import logging
import threading
from typing import TYPE_CHECKING, Any, Protocol
from urllib.parse import urlsplit

import numpy as np

from towerd.drivers.measurements import Spectrum
from towerd.icd import TRACK_RECORD_DTYPE
from towerd.web.feed import ConsoleFeed
from towerd.web.settings import WebSettings

if TYPE_CHECKING:
    from towerd.web.server import ConsoleHTTPServer
    from towerd.web.view import ConsoleView

log = logging.getLogger(__name__)

HEALTH_INTERVAL_S = 1.0


class Watched(Protocol):
    """What the console reads from the daemon, on the daemon's loop thread only."""

    pipeline: Any
    config: Any
    loaded: Any
    outbox: Any
    clock: Any

    def status(self) -> dict[str, Any]: ...


class Console:
    """One console: feed, view thread and HTTP server for ``settings``."""

    def __init__(self, settings: WebSettings) -> None:
        self.settings = settings
        self.feed = ConsoleFeed(settings.rate_hz)
        self.view: ConsoleView | None = None
        self.server: ConsoleHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._next_health = 0.0
        self.url: str | None = None

    # -- life -----------------------------------------------------------------------

    def start(self) -> bool:
        """Listen and start the threads; False (with the reason logged) when it cannot:
        the tower runs on without a console, as it does without a status socket."""
        s = self.settings
        if not s.enabled:
            log.info("web console disabled in the configuration")
            return False
        # Imported here: a tower without a console does not carry the HTTP server (http.server,
        # email, html, socketserver) and the view in its resident memory.
        from towerd.web.server import ConsoleHTTPServer, load_assets, read_token
        from towerd.web.view import ConsoleView

        try:
            token = read_token(s.token_file) if s.token_file else None
        except (OSError, ValueError, UnicodeDecodeError) as exc:
            log.error("web console not started: %s", exc)
            return False
        self.feed.interval_s = 1.0 / s.rate_hz
        self.view = ConsoleView(self.feed, s)
        tile_origin = None
        if s.tiles.url:
            u = urlsplit(s.tiles.url.replace("{", "").replace("}", ""))
            tile_origin = f"{u.scheme}://{u.netloc}"
        try:
            self.server = ConsoleHTTPServer((s.bind, s.port), feed=self.feed, view=self.view, assets=load_assets(),
                                            token=token, max_clients=s.max_clients, tile_folder=s.tiles.folder,
                                            tile_origin=tile_origin)
        except OSError as exc:
            log.warning("web console unavailable on %s port %d (%s); the tower runs on without it",
                        s.bind, s.port, exc)
            self.server = None
            return False
        host, port = self.server.server_address[:2]
        self.url = f"http://{'[' + host + ']' if ':' in host else host}:{port}/"
        self.view.start()
        self._thread = threading.Thread(target=self.server.serve, name="towerd-web", daemon=True)
        self._thread.start()
        log.info("web console on %s%s", self.url, " (token required from other hosts)" if token else "")
        return True

    def close(self) -> None:
        server, self.server = self.server, None
        if server is None:
            return
        server.stopping.set()
        if self.view is not None:
            self.view.stop()
        server.stop_serving()
        if self._thread is not None:
            self._thread.join(5.0)
        server.server_close()
        self.url = None

    def reconfigure(self, settings: WebSettings) -> None:
        """Apply a reloaded ``web:`` section (restart the server only if it changed)."""
        if settings == self.settings:
            return
        log.info("web console settings changed: restarting it")
        self.close()
        self.settings = settings
        self.start()

    # -- loop side ------------------------------------------------------------------

    def note(self, reading: Any, pipeline: Any) -> None:
        """After the pipeline processed ``reading`` (cheap: references only)."""
        if not self.feed.active:
            return
        if isinstance(reading, Spectrum):
            bands = getattr(pipeline, "last_rf_bands", ())
            if bands:
                self.feed.note_reading(bands)
        else:
            self.feed.note_reading(reading)

    def note_event(self, code: str, severity: str, message: str, utc_us: int, fields: dict[str, Any]) -> None:
        self.feed.note_event(code, severity, message, utc_us, fields)

    def next_timer(self) -> float | None:
        """Monotonic time the loop should wake for the next snapshot, None when idle."""
        return self.feed.next_due() if self.server is not None else None

    def poll(self, daemon: Watched, now: float) -> None:
        """Publish a snapshot when one is due (only while a console is open)."""
        if self.server is None or not self.feed.due(now):
            return
        p = daemon.pipeline
        tracks = p.tracker.tracks
        labels, cls = p.last_labels, p.last_classification
        if labels is None or len(labels.category) != len(tracks):
            labels = None
        features = cls.features if cls is not None and labels is not None and len(cls.features) == len(tracks) \
            else None
        health = None
        if now >= self._next_health:
            self._next_health = now + HEALTH_INTERVAL_S
            health = daemon.status()
            health["outbox"] = {**health.get("outbox", {}), **_outbox_extra(daemon.outbox, daemon.clock)}
            health["console_url"] = self.url
            centrals = health.get("centrals", {})
            if len(centrals) == 1:  # one central: what it still needs is what the outbox holds
                next(iter(centrals.values()))["backlog"] = health["outbox"].get("pending")
        self.feed.publish(dict(
            t_mono=now, utc_us=daemon.clock.utc_us(), tracks=tracks, labels=labels, features=features,
            rf_tracks=p.rf.tracks, rf_band_keys=tuple(p.rf.band_keys),
            health=health, config=daemon.config, config_digest=daemon.loaded.digest, events=self.feed.events(),
        ), now)


def _outbox_extra(outbox: Any, clock: Any) -> dict[str, Any]:
    """Size on disk and the age of the oldest record held (one indexed row read)."""
    if outbox is None:
        return {}
    out: dict[str, Any] = {}
    try:
        stats = outbox.stats()
        out["bytes"] = stats.get("bytes")
        out["max_records"] = stats.get("max_records")
        out["write_failures"] = stats.get("write_failures")
        rows = outbox.pending(limit=1)
        if rows:
            _, kind, payload = rows[0]
            if kind == "T":
                t_us = int(np.frombuffer(payload, dtype=TRACK_RECORD_DTYPE, count=1)["time_us"][0])
            else:
                t_us = int(json.loads(payload)["time_us"])
            out["oldest_age_s"] = round((clock.utc_us() - t_us) / 1e6, 1)
    except Exception as exc:  # a diagnostic aid: never let it disturb the loop
        log.debug("console: outbox details unavailable: %s", exc)
    return out
