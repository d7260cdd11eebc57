"""The web console's configuration, access rules and hand-over, without a daemon: a real
console server on an ephemeral loopback port, real HTTP requests (the browser test,
tests/test_web_console.py, runs it inside `towerd run`)."""

from __future__ import annotations

import http.client
import socket
import time
import zlib
from pathlib import Path

import pytest

from processes import free_tcp_port
from towerd.config import parse_config
from towerd.errors import ConfigError
from towerd.web.console import Console
from towerd.web.feed import ConsoleFeed
from towerd.web.server import load_assets
from towerd.web.settings import TileSettings, WebSettings

REPO = Path(__file__).resolve().parents[1]
TOKEN = "0123456789abcdef-token"
BASE = """\
version: 1
tower: {id: tx-test-001, latitude_deg: 27.5, longitude_deg: -99.5, height_m: 130}
"""


def problems_of(text: str) -> list[str]:
    with pytest.raises(ConfigError) as info:
        parse_config(text, "t.yaml")
    return info.value.problems


def test_shipped_configuration_documents_the_defaults():
    from towerd.config import load_config

    assert load_config(REPO / "config" / "towerd.yaml").config.web == WebSettings()
    assert parse_config(BASE, "t.yaml").web == WebSettings()


def test_web_section_is_validated_like_the_others():
    assert problems_of(BASE + "web:\n  prot: 8000\n") == ["t.yaml:4:3: web.prot: unknown key, did you mean 'port'?"]
    assert problems_of(BASE + "web: {port: 70000}\n")[0].startswith("t.yaml:3:13: web.port: 70000 is out of range")
    [problem] = problems_of(BASE + "web: {bind: 0.0.0.0}\n")
    assert "web" in problem and "bind 0.0.0.0 lets other hosts connect: set token_file" in problem
    [problem] = problems_of(BASE + "web: {bind: tower.local, token_file: /etc/towerd/console.token}\n")
    assert "is not an IP address" in problem
    [problem] = problems_of(BASE + "web: {tiles: {url: 'https://tiles.example/{z}/{x}.png'}}\n")
    assert "tiles.url lacks {y}" in problem
    ok = parse_config(BASE + "web: {bind: 0.0.0.0, token_file: /etc/towerd/console.token}\n", "t.yaml")
    assert ok.web.bind == "0.0.0.0" and not ok.web.loopback_only


def test_assets_are_shipped_in_the_package_and_self_contained():
    assets = load_assets()
    assert {"index.html", "console.js", "console.css"} <= set(assets)
    for name, (data, _) in assets.items():
        text = data.decode()
        # Nothing from the internet: no absolute URLs in what the page loads.
        assert "src=\"http" not in text and "href=\"http" not in text and "@import" not in text, name


def request(port: int, path: str, method: str = "GET", source: str | None = None,
            headers: dict | None = None) -> http.client.HTTPResponse:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10,
                                      source_address=(source, 0) if source else None)
    conn.request(method, path, headers=headers or {})
    resp = conn.getresponse()
    resp.body = resp.read()
    conn.close()
    return resp


@pytest.fixture
def console(tmp_path):
    token = tmp_path / "token"
    token.write_text(TOKEN + "\n")
    c = Console(WebSettings(port=0, token_file=str(token), max_clients=1))
    assert c.start()
    yield c
    c.close()


def port_of(console: Console) -> int:
    return int(console.url.rsplit(":", 1)[1].strip("/"))


def test_read_only_and_who_may_read(console):
    port = port_of(console)
    page = request(port, "/")
    assert page.status == 200 and b"console.js" in page.body
    assert "default-src 'self'" in page.getheader("Content-Security-Policy")
    for method in ("POST", "PUT", "DELETE", "PATCH", "OPTIONS"):
        resp = request(port, "/api/state", method)
        assert resp.status == 405 and resp.getheader("Allow") == "GET, HEAD", method
    assert request(port, "/static/../settings.py").status == 404
    assert request(port, "/static/console.js").getheader("Content-Type").startswith("text/javascript")
    # Another address: only with the token.
    assert request(port, "/api/health", source="127.0.0.2").status == 403
    assert request(port, "/", source="127.0.0.2", headers={"Authorization": "Bearer nope"}).status == 403
    assert request(port, "/", source="127.0.0.2", headers={"Authorization": f"Bearer {TOKEN}"}).status == 200
    once = request(port, f"/?token={TOKEN}", source="127.0.0.2")
    assert once.status == 200
    cookie = once.getheader("Set-Cookie")
    assert cookie.startswith(f"towerd_token={TOKEN};") and "HttpOnly" in cookie and "SameSite=Strict" in cookie
    assert request(port, "/", source="127.0.0.2", headers={"Cookie": f"towerd_token={TOKEN}"}).status == 200
    # This computer, but through a name another web site could control (DNS rebinding).
    assert request(port, "/", headers={"Host": "evil.example"}).status == 403
    assert request(port, "/", headers={"Host": "localhost:1234"}).status == 200


def test_without_a_token_only_this_computer(tmp_path):
    c = Console(WebSettings(port=0))
    assert c.start()
    try:
        port = port_of(c)
        assert request(port, "/").status == 200
        assert request(port, "/", source="127.0.0.2", headers={"Authorization": f"Bearer {TOKEN}"}).status == 403
    finally:
        c.close()


def test_a_missing_token_file_or_a_busy_port_leaves_no_console_but_no_crash(tmp_path):
    assert not Console(WebSettings(port=0, bind="0.0.0.0", token_file=str(tmp_path / "absent"))).start()
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen(1)
        c = Console(WebSettings(port=busy.getsockname()[1]))
        assert not c.start() and c.url is None
        c.close()


def test_stream_clients_are_bounded_and_close_promptly(console):
    port = port_of(console)
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    conn.request("GET", "/api/stream")
    resp = conn.getresponse()
    assert resp.status == 200 and resp.getheader("Content-Type") == "text/event-stream"
    assert resp.fp.readline() == b"retry: 2000\n"
    assert console.feed.active and console.feed.clients == 1
    assert request(port, "/api/stream").status == 503  # max_clients=1
    t0 = time.monotonic()
    console.close()  # with a stream open: its handler thread ends, nothing leaks
    assert time.monotonic() - t0 < 3.0
    conn.close()


def test_feed_takes_snapshots_only_while_watched():
    feed = ConsoleFeed(rate_hz=4.0)
    feed.note_event("daemon.started", "info", "started", 1, {"config_digest": "ab", "ignored": 1})
    assert not feed.due(0.0) and feed.next_due() is None
    feed.client_opened()
    assert feed.due(0.0)
    feed.note_reading("frame")
    assert feed.take_readings() == ("frame",)
    feed.publish(dict(t_mono=0.0, utc_us=0, tracks=None, labels=None, features=None, rf_tracks=None,
                      rf_band_keys=(), health=None, config=None, config_digest="ab",
                      events=feed.events()), now=10.0)
    assert not feed.due(10.1) and feed.due(10.25) and feed.next_due() == 10.25
    assert feed.latest().events == ({"code": "daemon.started", "severity": "info", "message": "started",
                                     "time_us": 1, "config_digest": "ab"},)
    feed.client_closed()
    assert not feed.due(11.0) and not feed.active  # nobody watches: the loop does nothing


def test_reload_moves_the_console_and_tiles_come_from_the_folder(tmp_path):
    (tmp_path / "tiles" / "16" / "14910").mkdir(parents=True)
    (tmp_path / "tiles" / "16" / "14910" / "27500.png").write_bytes(b"\x89PNG tile")
    c = Console(WebSettings(port=0, tiles=TileSettings(folder=str(tmp_path / "tiles"))))
    assert c.start()
    try:
        port = port_of(c)
        tile = request(port, "/tiles/16/14910/27500.png")
        assert tile.status == 200 and tile.body == b"\x89PNG tile" and tile.getheader("Content-Type") == "image/png"
        assert request(port, "/tiles/16/14910/27501.png").status == 404
        assert request(port, "/tiles/16/../../x.png").status == 404
        moved = free_tcp_port()
        c.reconfigure(WebSettings(port=moved))  # a reload with another port: the server moves
        assert port_of(c) == moved
        with pytest.raises(OSError):
            request(port, "/")
        assert request(moved, "/").status == 200
    finally:
        c.close()


def test_stream_is_gzipped_event_by_event_when_asked(console):
    with socket.create_connection(("127.0.0.1", port_of(console)), timeout=10) as sock:
        sock.sendall(b"GET /api/stream HTTP/1.0\r\nHost: 127.0.0.1\r\nAccept-Encoding: gzip, br\r\n\r\n")
        data = b""
        while b"\r\n\r\n" not in data:
            data += sock.recv(4096)
        head, body = data.split(b"\r\n\r\n", 1)
        assert b"Content-Encoding: gzip" in head
        unzip = zlib.decompressobj(31)
        text = unzip.decompress(body)
        while b"\n\n" not in text:  # the first event arrives whole, flushed on its own
            text += unzip.decompress(sock.recv(4096))
        assert text.startswith(b"retry: 2000\n\n")
