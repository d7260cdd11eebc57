"""Proof that nothing is lost, with real processes on loopback: a tower process (real
outbox + real UplinkClients, tests/tower_harness.py) and real `towerd central` processes
over CURVE.

1. Link cut and restored several times under load: the central killed with SIGKILL and
   restarted, and the network path stalled while both run (tests/netfaults.py). Every
   record the tower committed is in the central exactly once, nothing missing; records
   held during an outage arrive flagged REPLAY; live records are not held behind the
   backlog. The number of cycles is TOWERD_SOAK_CYCLES (2 for CI).
2. The tower killed with SIGKILL during heavy writing, twice, then restarted: no seq is
   ever given to two records, and every record committed before a kill is delivered.
3. The outbox cap reached during a long outage: what is missing at the central is exactly
   what the tower announced as dropped, and the tower keeps working.
4. A partner central receives only what its sharing rule allows, coarsened, while the
   tower's own central receives everything.
"""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from netfaults import StallProxy
from processes import free_tcp_port
from towerd import icd, keys
from towerd.central.store import CentralStore
from towerd.clock import SystemClock
from towerd.outbox.sqlite import Outbox
from towerd.uplink.sharing import coarsen

HARNESS = Path(__file__).with_name("tower_harness.py")
TOWER = "tx-soak-01"


def wait_for(cond: Callable[[], object], timeout_s: float, what: str, interval_s: float = 0.02) -> None:
    """Poll another process's files or database until ``cond`` holds (there is no event
    to wait on across processes); fail after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")
        time.sleep(interval_s)


class Keys:
    def __init__(self, root: Path) -> None:
        self.central = keys.generate_keypair(root / "central", "central")
        self.tower = keys.generate_keypair(root / "tower", "tower")
        self.allow = root / "allow"
        keys.allow_tower(TOWER, self.tower.public_file, self.allow)


class CentralProc:
    """`towerd central` (CURVE) on a fixed loopback port, killable and restartable."""

    def __init__(self, exe: str, port: int, db: Path, k: Keys, log: Path) -> None:
        self.args = [exe, "central", "--bind", f"tcp://127.0.0.1:{port}", "--db", str(db),
                     "--secret-key", str(k.central.secret_file), "--allow-dir", str(k.allow), "--log-level", "INFO"]
        self.port = port
        self.db = db
        self.log = log
        self.proc: subprocess.Popen | None = None
        self.starts = 0
        self.aborts = 0

    def start(self) -> CentralProc:
        self.starts += 1
        marker = f"listening on tcp://127.0.0.1:{self.port}"
        with open(self.log, "ab") as fh:
            self.proc = subprocess.Popen(self.args, stdout=fh, stderr=subprocess.STDOUT)
        wait_for(lambda: self.log.read_text(errors="replace").count(marker) >= self.starts or self.proc.poll() is not None,
                 20, "central start")
        assert self.proc.poll() is None, self.log.read_text()
        return self

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait(10)

    def restart_if_libzmq_aborted(self) -> None:
        """Restart the central, as its supervisor would, if it died of libzmq 4.3.5's
        ``!_io_error`` assertion (SIGABRT in stream_engine_base.cpp when a connection whose
        receive queue is full is reset; seen under load in this test, an open upstream
        defect reproduced in tests/test_central_reset_abort.py). Anything else that ends
        the central fails the test. What the tower sent stays due, so the test's
        no-loss assertions hold across the restart."""
        if self.proc is None or self.proc.poll() is None:
            return
        text = self.log.read_text(errors="replace")
        assert self.proc.returncode == -6 and "Assertion failed: !_io_error" in text, text[-2000:]
        self.aborts += 1
        self.start()

    def stop(self) -> int:
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else 0
        self.proc.terminate()
        try:
            return self.proc.wait(15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait(5)


class TowerProc:
    """tests/tower_harness.py in its own process."""

    def __init__(self, tmp: Path, run: int, **cfg) -> None:
        self.cfg_path = tmp / f"tower-{run}.json"
        self.ledger = tmp / "ledger.txt"
        self.log = tmp / f"tower-{run}.log"
        config = {"tower_id": TOWER, "outbox": str(tmp / "outbox.sqlite"), "ledger": str(self.ledger), "run": run,
                  **cfg}
        self.cfg_path.write_text(json.dumps(config))
        with open(self.log, "ab") as fh:
            self.proc = subprocess.Popen([sys.executable, str(HARNESS), str(self.cfg_path)], stdout=fh,
                                         stderr=subprocess.STDOUT)
        wait_for(lambda: "ready" in self.log.read_text(errors="replace") or self.proc.poll() is not None, 20,
                 "tower start")
        assert self.proc.poll() is None, self.log.read_text()

    def stop(self, timeout_s: float = 30.0) -> dict:
        """SIGTERM: stop writing, drain, exit 0; returns the final stats."""
        self.proc.terminate()
        assert self.proc.wait(timeout_s) == 0, self.log.read_text()[-3000:]
        return json.loads(Path(str(self.ledger) + ".stats.json").read_text())

    def kill(self) -> None:
        self.proc.kill()
        self.proc.wait(10)

    def ensure_dead(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)


def read_ledger(path: Path) -> dict[int, tuple[int, int]]:
    """seq -> (run, counter; -1 for an event) of every record a tower reported committed.
    Fails if a seq was reported twice: that would be a seq given to two records."""
    out: dict[int, tuple[int, int]] = {}
    if not path.exists():
        return out
    for line in path.read_text().splitlines():
        parts = line.split()
        if len(parts) != 4:
            continue  # a line cut by SIGKILL
        first, last, run, c0 = map(int, parts)
        for seq in range(first, last + 1):
            assert seq not in out, f"seq {seq} committed twice: {out[seq]} and run {run}"
            out[seq] = (run, c0 + seq - first if c0 >= 0 else -1)
    return out


def central_rows(db: Path) -> dict[int, dict]:
    """seq -> row of everything the central holds from TOWER (tracks and events)."""
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    conn.row_factory = sqlite3.Row
    try:
        rows = {r["seq"]: dict(r) for r in conn.execute(
            "SELECT seq, track_id, replay, time_us, received_us, rx_msg, stream_id FROM tracks WHERE tower_id = ?",
            (TOWER,))}
        for r in conn.execute("SELECT seq, replay, time_us, received_us, rx_msg, stream_id FROM events "
                              "WHERE tower_id = ?", (TOWER,)):
            assert r["seq"] not in rows
            rows[r["seq"]] = {**dict(r), "track_id": None}
        return rows
    except sqlite3.OperationalError:
        return {}
    finally:
        conn.close()


def central_count(db: Path) -> int:
    return len(central_rows(db)) if db.exists() else 0


def assert_content_matches(ledger: dict[int, tuple[int, int]], rows: dict[int, dict]) -> None:
    for seq, (run, counter) in ledger.items():
        row = rows.get(seq)
        assert row is not None, f"committed seq {seq} (run {run}) never reached the central"
        if counter >= 0:
            assert row["track_id"] == run * 1_000_000 + counter, f"seq {seq} holds another record"


def tower_settings(endpoint: str, k: Keys, name: str = "hq", **kw) -> dict:
    base = {"name": name, "endpoint": endpoint, "server_public_key_file": str(k.central.public_file),
            "client_secret_key_file": str(k.tower.secret_file), "heartbeat_ivl_s": 0.2, "heartbeat_timeout_s": 0.6,
            "reconnect_ivl_s": 0.1, "reconnect_ivl_max_s": 0.5, "ack_timeout_s": 1.0}
    base.update(kw)
    return base


@pytest.fixture
def k(tmp_path) -> Keys:
    return Keys(tmp_path / "keys")


# ------------------------------------------------------------------------------ 1. cuts under load


@pytest.mark.soak
def test_link_cut_and_restored_under_load_loses_nothing(towerd_exe, tmp_path, k):
    cycles = int(os.environ.get("TOWERD_SOAK_CYCLES", "2"))
    db = tmp_path / "central.sqlite"
    central = CentralProc(towerd_exe, free_tcp_port(), db, k, tmp_path / "central.log").start()
    proxy = StallProxy(central.port)
    tower = None
    kills: list[tuple[int, int]] = []
    try:
        # The backlog replays at 250 records/s: each cycle leaves up to ~6 s of it to drain.
        drain_s = 10.0 + 6.0 * cycles
        tower = TowerProc(tmp_path, 1, rate_rps=300, batch=6, event_every=25, drain_s=drain_s, centrals=[
            tower_settings(f"tcp://127.0.0.1:{proxy.port}", k, replay_rate_rps=250.0, replay_window=4)])

        def ledger_size() -> int:
            return len(read_ledger(tower.ledger))

        def flowing_after(t_us: int, n: int = 1) -> bool:
            return sum(r["time_us"] > t_us and not r["replay"] for r in central_rows(db).values()) >= n

        wait_for(lambda: central_count(db) > 300, 20, "first records at the central")
        for _ in range(cycles):
            # The central dies (SIGKILL: unacknowledged messages in its socket are lost).
            central.kill()
            t_dead = SystemClock().utc_us()   # from here until the restart no central exists
            n = ledger_size()
            wait_for(lambda: ledger_size() > n + 400, 20, "records written during the outage")
            t_starting = SystemClock().utc_us()
            central.start()
            t_restart = SystemClock().utc_us()
            # About a second of live load while the backlog (paced at 250/s) is replayed.
            wait_for(lambda: central.restart_if_libzmq_aborted() or flowing_after(t_restart, 250), 20,
                     "live records after the restart")
            # The path stalls while both ends run: only heartbeats can tell.
            t_block = SystemClock().utc_us()
            kills.append((t_dead, t_starting, t_restart, t_block))
            proxy.block()
            n = ledger_size()
            wait_for(lambda: ledger_size() > n + 400, 20, "records written during the stall")
            proxy.unblock()
            wait_for(lambda: central.restart_if_libzmq_aborted() or (
                flowing_after(SystemClock().utc_us() - 200_000) and central_count(db) > 0), 20, "flow after the stall")
            assert t_block > t_restart
        stats = tower.stop(timeout_s=drain_s + 30)
        assert stats["pending"] == 0, stats
    finally:
        if tower is not None:
            tower.ensure_dead()
        proxy.close()
        status = central.stop()
    assert status == 0
    if central.aborts:
        warnings.warn(f"the central aborted {central.aborts} time(s) in libzmq (!_io_error) and was restarted; "
                      "nothing was lost (asserted below)", stacklevel=1)
    ledger = read_ledger(tower.ledger)
    rows = central_rows(db)
    # Every committed record exactly once (the store's key makes "once"), nothing else.
    assert sorted(rows) == sorted(ledger) == list(range(1, len(ledger) + 1))
    assert_content_matches(ledger, rows)
    assert {r["stream_id"] for r in rows.values()} == {f"{stats['stream_id']:016x}"}
    store = CentralStore(db, read_only=True)
    try:
        (summary,) = store.streams(TOWER)
        assert summary.missing == () and summary.records == len(ledger)
    finally:
        store.close()
    uplink = stats["uplinks"]["hq"]
    assert uplink["connects"] >= 1 + 2 * cycles and uplink["replay_records"] > 0
    for t_dead, t_starting, t_restart, t_block in kills:
        held = [r for r in rows.values() if t_dead < r["time_us"] < t_starting]
        assert len(held) > 300 and all(r["replay"] for r in held), "records held during an outage lack REPLAY"
        # Live records are not held behind the backlog: created after the link came back
        # (unflagged) and before the stall, they overtook the backlog and kept their latency.
        live = [r for r in rows.values() if not r["replay"] and t_restart < r["time_us"] < t_block - 300_000]
        assert len(live) > 100
        assert max(r["rx_msg"] for r in held) > max(r["rx_msg"] for r in live), "backlog went before live"
        worst_live_s = max(r["received_us"] - r["time_us"] for r in live) / 1e6
        assert worst_live_s < 0.5, worst_live_s


# ------------------------------------------------------------------------------ 2. tower killed


def test_tower_killed_during_heavy_writing_reuses_no_seq_and_delivers_every_commit(towerd_exe, tmp_path, k):
    db = tmp_path / "central.sqlite"
    central = CentralProc(towerd_exe, free_tcp_port(), db, k, tmp_path / "central.log").start()
    endpoint = f"tcp://127.0.0.1:{central.port}"
    heavy = {"rate_rps": 20_000, "batch": 200, "commit_interval_s": 0.02, "event_every": 20,
             "centrals": [tower_settings(endpoint, k, replay_rate_rps=100_000.0)]}
    towers: list[TowerProc] = []
    try:
        for run in (1, 2):
            towers.append(TowerProc(tmp_path, run, **heavy))
            target = len(read_ledger(towers[-1].ledger)) + 6000
            wait_for(lambda: len(read_ledger(towers[-1].ledger)) > target, 30, f"run {run} writing")
            towers[-1].kill()   # SIGKILL in the middle of writing and sending
            committed = read_ledger(towers[-1].ledger)
            box = Outbox(tmp_path / "outbox.sqlite", clock=SystemClock())
            try:   # the store itself: every committed seq is below next_seq, never handed out again
                assert box.next_seq > max(committed)
            finally:
                box.close()
        towers.append(TowerProc(tmp_path, 3, rate_rps=500, batch=10,
                                centrals=[tower_settings(endpoint, k, replay_rate_rps=100_000.0)]))
        n = len(read_ledger(towers[-1].ledger))
        wait_for(lambda: len(read_ledger(towers[-1].ledger)) > n + 200, 30, "run 3 writing")
        stats = towers[-1].stop(timeout_s=60)
        assert stats["pending"] == 0, stats
    finally:
        for t in towers:
            t.ensure_dead()
        central.stop()
    ledger = read_ledger(tmp_path / "ledger.txt")   # unique seqs checked while reading
    rows = central_rows(db)
    assert_content_matches(ledger, rows)
    # Records committed in the instant between a commit and its ledger line are at the
    # central without a ledger line; they belong to a killed run and sit below the next run.
    unlisted = sorted(set(rows) - set(ledger))
    for seq in unlisted:
        run = rows[seq]["track_id"] // 1_000_000 if rows[seq]["track_id"] is not None else None
        assert run in (1, 2, None), (seq, rows[seq])
    assert sorted(rows) == list(range(1, max(rows) + 1))   # contiguous: nothing missing, nothing reused
    assert {ledger[s][0] for s in ledger} == {1, 2, 3}


# ------------------------------------------------------------------------------ 3. cap during an outage


def test_cap_reached_during_a_long_outage_drops_exactly_what_it_announces(towerd_exe, tmp_path, k):
    db = tmp_path / "central.sqlite"
    central = CentralProc(towerd_exe, free_tcp_port(), db, k, tmp_path / "central.log")
    tower = TowerProc(tmp_path, 1, rate_rps=4000, batch=40, max_records=3000, event_every=10,
                      centrals=[tower_settings(f"tcp://127.0.0.1:{central.port}", k, replay_rate_rps=50_000.0)])
    try:
        wait_for(lambda: len(read_ledger(tower.ledger)) > 9000, 30, "the outage outgrowing the cap")
        central.start()
        t_up = SystemClock().utc_us()
        wait_for(lambda: any(r["time_us"] > t_up + 300_000 for r in central_rows(db).values()), 30,
                 "records written after the central came up")
        stats = tower.stop()
        assert stats["pending"] == 0, stats
    finally:
        tower.ensure_dead()
        central.stop()
    ledger = read_ledger(tower.ledger)
    rows = central_rows(db)
    store = CentralStore(db, read_only=True)
    try:
        (summary,) = store.streams(TOWER)
        drops = store.dropped(TOWER)
    finally:
        store.close()
    assert stats["dropped_total"] > 5000
    assert summary.unexplained == ()   # every missing seq was announced
    # Exact: the seqs named by the announcements received are the records lost (the
    # tower's own count), none of them is at the central, and everything else is.
    dropped = {s for d in drops for a, b in d["ranges"] for s in range(a, b + 1)}
    assert len(dropped) == stats["dropped_total"] == summary.missing_records
    assert not dropped & set(rows)
    assert dropped | set(rows) == set(range(1, max(rows) + 1))
    assert set(ledger) <= dropped | set(rows)
    tail = [s for s in ledger if s > max(dropped)]
    assert len(tail) > 1000 and all(s in rows for s in tail)   # it kept working


# ------------------------------------------------------------------------------ 4. partner


def test_partner_central_receives_only_what_its_rule_allows(towerd_exe, tmp_path, k):
    own_db, partner_db = tmp_path / "own.sqlite", tmp_path / "partner.sqlite"
    own = CentralProc(towerd_exe, free_tcp_port(), own_db, k, tmp_path / "own.log").start()
    partner = CentralProc(towerd_exe, free_tcp_port(), partner_db, k, tmp_path / "partner.log").start()
    rule = {"categories": ["uas"], "statuses": ["confirmed", "coasting", "ended"], "events": False,
            "coarsen_m": 500.0}
    tower = TowerProc(tmp_path, 1, rate_rps=1000, batch=20, event_every=5, centrals=[
        tower_settings(f"tcp://127.0.0.1:{own.port}", k, name="hq"),
        tower_settings(f"tcp://127.0.0.1:{partner.port}", k, name="partner", share=rule)])
    try:
        wait_for(lambda: len(read_ledger(tower.ledger)) > 2000, 30, "records written")
        stats = tower.stop()
        assert stats["pending"] == 0, stats   # deleted only once both centrals were done
    finally:
        tower.ensure_dead()
        own.stop()
        partner.stop()
    ledger = read_ledger(tower.ledger)
    assert sorted(central_rows(own_db)) == sorted(ledger)

    def allowed(counter: int) -> bool:
        return counter >= 0 and counter % 3 == 0 and counter % 4 != 0   # uas; not tentative

    expected = sorted(s for s, (_, c) in ledger.items() if allowed(c))
    conn = sqlite3.connect(f"file:{partner_db}?mode=ro", uri=True)
    try:
        got = conn.execute("SELECT seq, lat_e7, lon_e7, range_m, pos_sigma_m FROM tracks ORDER BY seq").fetchall()
        n_events = conn.execute("SELECT count(*) FROM events").fetchone()[0]
    finally:
        conn.close()
    assert [g[0] for g in got] == expected and n_events == 0
    assert all(g[3] is None for g in got)   # range withheld (NULL = NaN = unknown)
    rec = icd.empty_track_records(len(got))
    rec["lat_e7"] = [g[1] for g in got]
    rec["lon_e7"] = [g[2] for g in got]
    assert coarsen(rec, 500.0)[["lat_e7", "lon_e7"]].tolist() == rec[["lat_e7", "lon_e7"]].tolist()
    np.testing.assert_allclose([g[4] for g in got], np.sqrt(9.0 + 500.0**2 / 6), rtol=1e-5)
    assert stats["uplinks"]["partner"]["skipped_records"] == len(ledger) - len(expected)
