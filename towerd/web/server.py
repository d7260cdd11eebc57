"""The console's HTTP server: static assets, JSON, and a server-sent-event stream.

Standard library only (``http.server.ThreadingHTTPServer``): a tower serves one or two
technicians, server-sent events need nothing but a long response, and a server that runs
in its own threads cannot hold the daemon's loop up. aiohttp would bring an event loop
and a dependency for no gain at this scale.

Read-only: GET and HEAD only, every other method gets 405. Who may read:

- a request from this computer (peer 127.0.0.1 or ::1) naming the server by an IP
  literal or ``localhost`` in its Host header (so a web page elsewhere cannot read the
  console through DNS rebinding);
- any other peer only with the token (``web.token_file``), given as
  ``Authorization: Bearer <token>``, the ``towerd_token`` cookie, or once as
  ``?token=<token>`` (which sets the cookie, so the browser's stream carries it).
"""

from __future__ import annotations

import hmac
import ipaddress
import logging
import os
import re
import select
import socket
import threading
import zlib
from http.cookies import SimpleCookie
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

from towerd.web.feed import ConsoleFeed
from towerd.web.view import ConsoleView

log = logging.getLogger(__name__)

LOCAL_PEERS = frozenset({"127.0.0.1", "::1", "::ffff:127.0.0.1"})
CONTENT_TYPES = {".html": "text/html; charset=utf-8", ".js": "text/javascript; charset=utf-8",
                 ".css": "text/css; charset=utf-8", ".svg": "image/svg+xml", ".png": "image/png",
                 ".ico": "image/x-icon"}
STREAM_KEEPALIVE_S = 10.0
CLIENT_TIMEOUT_S = 10.0
FIRST_FRAME_WAIT_S = 3.0
TILE_PATH = re.compile(r"/tiles/(\d{1,2})/(\d{1,7})/(\d{1,7})\.png")
STATIC_NAME = re.compile(r"[a-z0-9][a-z0-9_.-]{0,63}")
MIN_TOKEN_CHARS = 16
GZIP_LEVEL = 1
"""Fastest compression: most of the gain for a fraction of the CPU (numbers in JSON)."""


def load_assets() -> dict[str, tuple[bytes, str]]:
    """Every file shipped in towerd/web/static, by name (nothing is fetched from elsewhere)."""
    out = {}
    for entry in resources.files("towerd.web").joinpath("static").iterdir():
        if entry.is_file() and STATIC_NAME.fullmatch(entry.name):
            out[entry.name] = (entry.read_bytes(), CONTENT_TYPES.get(Path(entry.name).suffix, "application/octet-stream"))
    return out


def read_token(path: str) -> str:
    """The token in ``path`` (whitespace stripped); OSError/ValueError saying what is wrong."""
    token = Path(path).read_text(encoding="utf-8").strip()
    if len(token) < MIN_TOKEN_CHARS or any(c.isspace() for c in token):
        raise ValueError(f"token file {path}: the token must be one word of {MIN_TOKEN_CHARS}+ characters")
    return token


class ConsoleHTTPServer(ThreadingHTTPServer):
    daemon_threads = False  # server_close() joins the handler threads (no thread outlives the console)
    block_on_close = True
    request_queue_size = 16

    def __init__(self, address: tuple[str, int], *, feed: ConsoleFeed, view: ConsoleView,
                 assets: dict[str, tuple[bytes, str]], token: str | None, max_clients: int,
                 tile_folder: str | None, tile_origin: str | None) -> None:
        self.address_family = socket.AF_INET6 if ":" in address[0] else socket.AF_INET
        self.feed, self.view, self.assets, self.token = feed, view, assets, token
        self.max_clients = max_clients
        self.tile_folder = Path(tile_folder) if tile_folder else None
        self.tile_origin = tile_origin
        self.streams = 0
        self.streams_lock = threading.Lock()
        self.stopping = threading.Event()
        self.refused = 0
        self._wake_r, self._wake_w = os.pipe()  # stop_serving() ends serve()'s wait (closed by server_close)
        super().__init__(address, ConsoleHandler)

    def serve(self) -> None:
        """Accept connections (each served by a thread of its own) until :meth:`stop_serving`,
        asleep until one comes: socketserver's serve_forever looks for a shutdown every
        poll_interval, four wake-ups a second of an idle tower for nothing."""
        while True:
            ready = select.select([self, self._wake_r], [], [])[0]
            if self._wake_r in ready:
                return
            self._handle_request_noblock()

    def stop_serving(self) -> None:
        """End :meth:`serve` (from another thread); then :meth:`server_close`."""
        os.write(self._wake_w, b"\0")

    def server_close(self) -> None:
        super().server_close()  # joins the handler threads
        for fd in (self._wake_r, self._wake_w):
            os.close(fd)


class ConsoleHandler(BaseHTTPRequestHandler):
    server: ConsoleHTTPServer
    server_version = "towerd-console"
    protocol_version = "HTTP/1.0"  # one request per connection; the stream ends with the connection

    def setup(self) -> None:
        super().setup()
        self.connection.settimeout(CLIENT_TIMEOUT_S)

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("console %s: " + format, self.client_address[0], *args)

    # -- methods --------------------------------------------------------------------

    def do_GET(self) -> None:
        self._serve(body=True)

    def do_HEAD(self) -> None:
        self._serve(body=False)

    def _refuse_method(self) -> None:
        self._send(405, b"the console is read-only: GET and HEAD only\n", "text/plain; charset=utf-8",
                   {"Allow": "GET, HEAD"})

    do_POST = do_PUT = do_DELETE = do_PATCH = do_OPTIONS = do_TRACE = do_CONNECT = _refuse_method

    # -- access ---------------------------------------------------------------------

    def _authorised(self, query: dict[str, list[str]]) -> tuple[bool, str | None]:
        """(allowed, token to set as a cookie)."""
        peer = self.client_address[0]
        if peer in LOCAL_PEERS and _local_host_header(self.headers.get("Host")):
            return True, None
        token = self.server.token
        if token is None:
            return False, None
        given = []
        auth = self.headers.get("Authorization", "")
        if auth.startswith("Bearer "):
            given.append(auth[7:].strip())
        cookie = SimpleCookie()
        try:
            cookie.load(self.headers.get("Cookie", ""))
        except Exception:  # a malformed cookie header is simply no token
            cookie = SimpleCookie()
        if "towerd_token" in cookie:
            given.append(cookie["towerd_token"].value)
        from_query = query.get("token", [])
        for candidate in given + from_query:
            if hmac.compare_digest(candidate.encode(), token.encode()):
                return True, candidate if candidate in from_query else None
        return False, None

    # -- routing --------------------------------------------------------------------

    def _serve(self, body: bool) -> None:
        url = urlsplit(self.path)
        query = parse_qs(url.query)
        allowed, set_cookie = self._authorised(query)
        if not allowed:
            self.server.refused += 1
            log.info("console: refused %s %s from %s (no valid token)", self.command, url.path, self.client_address[0])
            self._send(403, b"forbidden: this console answers other hosts only with its token\n",
                       "text/plain; charset=utf-8", body=body)
            return
        extra = {}
        if set_cookie:
            extra["Set-Cookie"] = f"towerd_token={set_cookie}; Path=/; HttpOnly; SameSite=Strict"
        path = url.path
        srv = self.server
        if path in ("/", "/index.html"):
            self._asset("index.html", extra, body)
        elif path.startswith("/static/"):
            self._asset(path[len("/static/"):], extra, body)
        elif path == "/api/state":
            srv.feed.touch()
            self._json(self._fresh_frame(), extra, body)
        elif path == "/api/health":
            srv.feed.touch()
            self._fresh_frame()
            self._json(srv.view.health_json, extra, body)
        elif path == "/api/waterfall":
            self._json(srv.view.rows_since(0), extra, body)
        elif path == "/api/stream":
            self._stream(extra, body)
        elif TILE_PATH.fullmatch(path):
            self._tile(path, extra, body)
        else:
            self._send(404, b"not found\n", "text/plain; charset=utf-8", extra, body)

    def _fresh_frame(self) -> bytes:
        view = self.server.view
        frame, _ = view.current()
        view.wait_frame(frame, FIRST_FRAME_WAIT_S)
        _, text = view.current()
        return text or b"{}"

    def _asset(self, name: str, extra: dict[str, str], body: bool) -> None:
        asset = self.server.assets.get(name)
        if asset is None:
            self._send(404, b"not found\n", "text/plain; charset=utf-8", extra, body)
            return
        data, ctype = asset
        self._send(200, data, ctype, {**extra, "Cache-Control": "no-cache"}, body)

    def _json(self, data: bytes, extra: dict[str, str], body: bool) -> None:
        self._send(200, data, "application/json", {**extra, "Cache-Control": "no-store"}, body)

    def _tile(self, path: str, extra: dict[str, str], body: bool) -> None:
        folder = self.server.tile_folder
        m = TILE_PATH.fullmatch(path)
        file = folder / m.group(1) / m.group(2) / f"{m.group(3)}.png" if folder is not None and m else None
        try:
            data = file.read_bytes() if file is not None else None
        except OSError:
            data = None
        if data is None:
            self._send(404, b"no such tile\n", "text/plain; charset=utf-8", extra, body)
        else:
            self._send(200, data, "image/png", {**extra, "Cache-Control": "max-age=3600"}, body)

    def _stream(self, extra: dict[str, str], body: bool) -> None:
        srv = self.server
        with srv.streams_lock:
            if srv.streams >= srv.max_clients:
                full = True
            else:
                full = False
                srv.streams += 1
        if full:
            self._send(503, f"{srv.max_clients} consoles are open already (web.max_clients)\n".encode(),
                       "text/plain; charset=utf-8", {**extra, "Retry-After": "10"}, body)
            return
        try:
            self.send_response(200)
            self._common_headers()
            gzip = _accepts_gzip(self.headers.get("Accept-Encoding", ""))
            headers = {**extra, "Content-Type": "text/event-stream", "Cache-Control": "no-store"}
            if gzip:
                headers["Content-Encoding"] = "gzip"
            for k, v in headers.items():
                self.send_header(k, v)
            self.end_headers()
            if not body:
                return
            srv.feed.client_opened()
            try:
                self._pump(_GzipStream(self.wfile) if gzip else self.wfile)
            finally:
                srv.feed.client_closed()
        except OSError as exc:  # the browser went away (closed tab, timeout)
            log.debug("console stream to %s ended: %s", self.client_address[0], exc)
        finally:
            with srv.streams_lock:
                srv.streams -= 1

    def _pump(self, out: Any) -> None:
        srv = self.server
        view = srv.view
        out.write(b"retry: 2000\n\n")
        out.flush()
        sent, _ = view.current()  # never start with a frame made before this client came
        rows_from = 0  # but the whole waterfall held
        while not srv.stopping.is_set():
            frame = view.wait_frame(sent, STREAM_KEEPALIVE_S)
            if srv.stopping.is_set():
                return
            if frame == sent:
                out.write(b": keep-alive\n\n")
                out.flush()
                continue
            frame, text = view.current()
            rows = view.rows_since(rows_from)
            out.write(b"event: state\nid: %d\ndata: %s\n\nevent: rows\ndata: %s\n\n" % (frame, text, rows))
            out.flush()
            sent = rows_from = frame

    # -- low level --------------------------------------------------------------------

    def _common_headers(self) -> None:
        img = "'self' data:" + (f" {self.server.tile_origin}" if self.server.tile_origin else "")
        self.send_header("Content-Security-Policy",
                         f"default-src 'self'; img-src {img}; connect-src 'self'; frame-ancestors 'none'")
        self.send_header("X-Content-Type-Options", "nosniff")
        self.send_header("Referrer-Policy", "no-referrer")

    def _send(self, code: int, data: bytes, ctype: str, headers: dict[str, str] | None = None,
              body: bool = True) -> None:
        try:
            self.send_response(code)
            self._common_headers()
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(data)))
            for k, v in (headers or {}).items():
                self.send_header(k, v)
            self.end_headers()
            if body:
                self.wfile.write(data)
        except OSError as exc:
            log.debug("console reply to %s failed: %s", self.client_address[0], exc)


class _GzipStream:
    """A gzip stream flushed after every event (Z_SYNC_FLUSH: the browser can decode each
    event as it arrives). JSON of positions and spectra shrinks about fivefold, which
    matters to a technician looking through an SSH tunnel over a cellular link."""

    def __init__(self, raw: Any) -> None:
        self.raw = raw
        self.z = zlib.compressobj(GZIP_LEVEL, zlib.DEFLATED, 31)  # wbits 31: gzip header and trailer

    def write(self, data: bytes) -> None:
        self.raw.write(self.z.compress(data))

    def flush(self) -> None:
        self.raw.write(self.z.flush(zlib.Z_SYNC_FLUSH))
        self.raw.flush()


def _accepts_gzip(header: str) -> bool:
    for part in header.split(","):
        name, _, params = part.strip().partition(";")
        if name.strip().lower() == "gzip":
            return params.replace(" ", "") not in ("q=0", "q=0.0", "q=0.00", "q=0.000")
    return False


def _local_host_header(host: str | None) -> bool:
    """Host names a loopback literal or localhost (not a name a remote page controls)."""
    if not host:
        return False
    name = host.rsplit(":", 1)[0] if not host.endswith("]") else host
    if name.startswith("[") and "]" in name:
        name = name[1:name.index("]")]
    if name.lower() == "localhost":
        return True
    try:
        ipaddress.ip_address(name)
    except ValueError:
        return False
    return True
