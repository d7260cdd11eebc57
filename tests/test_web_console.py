"""The web console in a real headless Chromium, against a real `towerd run` fed by
`towerd sim` emulators (radar and RF Explorer on ptys) and reporting to a real central.

One run, in order: the page loads and draws tracks that move; the RF and health views
fill; screenshots of the picture, RF, health and alignment views go to
build/console-screenshots/; the emulated radar is unplugged and its badge turns red; a
configuration reload (a new zone) reaches the open page without breaking its stream; no
endpoint accepts a state-changing method; a request from another address (127.0.0.2)
is refused without the token and served with it.
"""

from __future__ import annotations

import http.client
import signal
import time
from pathlib import Path

import pytest

from cdp import Browser
from processes import Child, Sim
from towerd.demo import demo_config
from towerd.status import query

REPO = Path(__file__).resolve().parents[1]
SHOTS = REPO / "build" / "console-screenshots"
TOKEN = "k3Jx9-test-token-0123456789"
ZONE = """\
threat:
  zones:
    - name: test-strip
      polygon: [[27.5040, -99.5082], [27.5040, -99.5070], [27.5046, -99.5070], [27.5046, -99.5082]]
      rules:
        - {categories: [uas], level: high}
"""

pytestmark = pytest.mark.slow  # about 20 s: one daemon, two emulators, one browser for every check


def request(url: str, method: str = "GET", source: str | None = None, headers: dict | None = None) -> tuple[int, bytes]:
    """One HTTP request; ``source``: the local address to send it from."""
    host, port = url.split("//", 1)[1].split("/", 1)[0].rsplit(":", 1)
    conn = http.client.HTTPConnection(host, int(port), timeout=10, source_address=(source, 0) if source else None)
    try:
        conn.request(method, "/" + url.split("//", 1)[1].split("/", 1)[1], headers=headers or {})
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


def wait_until(predicate, timeout_s: float, what: str, log=lambda: ""):
    deadline = time.monotonic() + timeout_s
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}\n{log()}")
        time.sleep(0.1)  # another process's state: nothing to wait on but asking it


def console_url(sock: str) -> str | None:
    try:
        reply = query(sock, timeout_s=2.0)
    except (OSError, ValueError):
        return None
    return reply.get("status", {}).get("console_url")


def test_console_in_chromium_against_a_running_daemon(towerd_exe, tmp_path, central):
    radar = Sim(towerd_exe, tmp_path, "--device", "ti_mmwave", "--link", str(tmp_path / "radar0"), "--seed", "3",
                log_name="sim-radar.log")
    rf = Sim(towerd_exe, tmp_path, "--device", "rfexplorer", "--link", str(tmp_path / "rf0"), "--seed", "4",
             log_name="sim-rf.log")
    token_file = tmp_path / "console.token"
    token_file.write_text(TOKEN + "\n")
    cfg = tmp_path / "towerd.yaml"
    base = demo_config(str(tmp_path / "radar0"), central.endpoint, tmp_path / "state", str(tmp_path / "rf0"))
    assert "\nweb:\n  port: 0\n" in base
    base = base.replace("\nweb:\n  port: 0\n", f"\nweb:\n  port: 0\n  token_file: {token_file}\n")
    cfg.write_text(base)
    daemon = Child([towerd_exe, "run", "--config", str(cfg)], tmp_path / "daemon.log")
    browser = None
    try:
        radar.wait_for("ready")
        rf.wait_for("ready")
        url = wait_until(lambda: console_url(str(tmp_path / "state" / "status.sock")), 30, "the console's address",
                         daemon.log)
        assert url.startswith("http://127.0.0.1:"), url
        browser = Browser(tmp_path / "chromium", tmp_path / "chromium.log", width=1400, height=1100)

        # The page loads and tracks appear and move.
        browser.navigate(url + "#ppi")
        confirmed = "towerd.frame ? towerd.frame.tracks.filter(t => t.status === 'confirmed') : []"
        browser.wait_for(f"({confirmed}).length >= 2", 30, "two confirmed tracks on the page")
        first = {t["id"]: t["en"] for t in browser.evaluate(confirmed)}
        frames = browser.evaluate("towerd.frames")

        def moved():
            now = {t["id"]: t["en"] for t in browser.evaluate(confirmed)}
            return [i for i in now if i in first and abs(now[i][0] - first[i][0]) + abs(now[i][1] - first[i][1]) > 2.0]

        assert wait_until(moved, 15, "a track to move"), "no track moved"
        assert browser.evaluate("towerd.frames") > frames
        assert browser.evaluate("document.querySelector('#live').dataset.state") == "live"
        browser.wait_for(f"({confirmed}).some(t => t.trail.length >= 8)", 15, "trails")
        # A click on a track opens its details.
        opened = browser.evaluate("""(() => {
            const ok = towerd.frame.tracks.filter(t => t.status === 'confirmed');
            const t = ok.find(t => t.category === 'uas') || ok[0];
            const c = document.getElementById('ppi'), r = c.getBoundingClientRect();
            const ppi = towerd.ppi, [x, y] = ppi.toScreen(t.en[0], t.en[1]);
            for (const type of ['mousedown', 'mouseup'])
                c.dispatchEvent(new MouseEvent(type, {bubbles: true, clientX: r.left + x, clientY: r.top + y}));
            return t.id;
        })()""")
        browser.wait_for(f"document.querySelector('#details h3')?.textContent === 'Track {opened}'", 5,
                         "track details")
        # Zoom (wheel) and pan (drag) move the picture; "fit" brings it back.
        assert browser.evaluate("""(() => {
            const c = document.getElementById('ppi'), p = towerd.ppi, s0 = p.scale, e0 = p.cx;
            c.dispatchEvent(new WheelEvent('wheel', {deltaY: -100, clientX: 300, clientY: 300, bubbles: true,
                                                     cancelable: true}));
            const zoomed = p.scale > s0;
            c.dispatchEvent(new MouseEvent('mousedown', {clientX: 300, clientY: 300, bubbles: true}));
            window.dispatchEvent(new MouseEvent('mousemove', {clientX: 200, clientY: 300}));
            window.dispatchEvent(new MouseEvent('mouseup', {clientX: 200, clientY: 300}));
            const panned = p.cx > e0;
            document.getElementById('zoom-reset').click();
            return zoomed && panned;
        })()""")
        browser.wait_for("towerd.ppi.fitted", 5, "the picture fitted again")
        browser.screenshot(SHOTS / "ppi.png")

        # RF: spectrum, floor, threshold and waterfall per band.
        browser.evaluate("location.hash = '#rf'")
        browser.wait_for("document.querySelectorAll('#rf-bands .band').length >= 2 && towerd.rowsReceived >= 30",
                         30, "RF bands with a waterfall")
        browser.wait_for("towerd.frame.rf.tracks.some(t => t.drone_link)", 20, "a drone link marked")
        browser.screenshot(SHOTS / "rf.png")

        browser.evaluate("location.hash = '#align'")
        browser.wait_for("document.querySelectorAll('#align-body table').length >= 1", 10, "alignment table")
        browser.screenshot(SHOTS / "alignment.png")

        browser.evaluate("location.hash = '#health'")
        browser.wait_for("document.querySelector('#health-body table') !== null", 10, "health tables")
        browser.screenshot(SHOTS / "health.png")

        # The radar unplugged in its emulator: its badge and health row turn red.
        radar.send("unplug")
        badge = "document.querySelector('[data-sensor=\"radar0\"]')"
        browser.wait_for(f"{badge} && {badge}.dataset.state === 'down'", 20, "radar0 down on the page")
        assert browser.evaluate(f"getComputedStyle({badge}).backgroundColor") == "rgb(239, 68, 68)"
        browser.wait_for("[...document.querySelectorAll('#health-body td.state.down')].length >= 1", 5,
                         "the health table's red state")
        assert "sensor radar0 is down" in browser.evaluate("document.querySelector('#health-body').innerText")
        browser.screenshot(SHOTS / "health-radar-unplugged.png")

        # A configuration reload reaches the open page; the stream keeps going.
        digest = browser.evaluate("towerd.frame.tower.config_digest")
        cfg.write_text(base + ZONE)
        daemon.proc.send_signal(signal.SIGHUP)
        browser.wait_for(f"towerd.frame.tower.config_digest !== '{digest}' && "
                         "towerd.frame.geometry.zones.length === 1", 20, "the reloaded configuration on the page",)
        frames = browser.evaluate("towerd.frames")
        browser.wait_for(f"towerd.frames >= {frames + 4}", 10, "updates after the reload")
        assert browser.evaluate("document.querySelector('#live').dataset.state") == "live"
        radar.send("replug")
        browser.wait_for(f"{badge}.dataset.state === 'ok'", 30, "radar0 back")

        # Read-only: the browser's own POST is refused, as is every other method.
        assert browser.evaluate("fetch('/api/state', {method: 'POST', body: 'x'}).then(r => r.status)") == 405
        for method in ("POST", "PUT", "DELETE", "PATCH"):
            for path in ("/", "/api/state", "/api/stream"):
                status, _ = request(url.rstrip("/") + path, method)
                assert status == 405, (method, path, status)
        assert browser.console_errors() == []

        # Another address: refused without the token, served with it.
        status, body = request(url + "api/health", source="127.0.0.2")
        assert status == 403, body
        status, _ = request(url + "api/health", source="127.0.0.2", headers={"Authorization": "Bearer wrong-token-xxxxxxx"})
        assert status == 403
        status, body = request(url + "api/health", source="127.0.0.2", headers={"Authorization": f"Bearer {TOKEN}"})
        assert status == 200 and b'"radar0"' in body
        # From this computer but under a name another site could point at us (DNS rebinding): refused.
        status, _ = request(url + "api/health", headers={"Host": "attacker.example:80"})
        assert status == 403
    finally:
        if browser is not None:
            browser.close()
        code = daemon.stop()
        radar.stop()
        rf.stop()
    assert code == 0, daemon.log()
    assert "Traceback" not in daemon.log(), daemon.log()
