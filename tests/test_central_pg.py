"""The central's PostgreSQL store against a real PostgreSQL server (a throwaway cluster
started by the tests, towerd/central/pgtemp.py), with real towers: a real SQLite outbox and a
real UplinkClient over ZeroMQ with CURVE, or raw DEALER sockets."""

from __future__ import annotations

import json
import signal
import subprocess
import threading
import time
from pathlib import Path

import numpy as np
import psycopg
import pytest
import zmq
import zmq.auth

from processes import Child, free_tcp_port, wait_for, wait_listening
from towerd import icd
from towerd import keys as towerd_keys
from towerd.central.pgstore import DAY_US, PgCentralStore
from towerd.central.server import CentralServer
from towerd.central.store import Pending
from towerd.clock import ManualClock, SystemClock
from towerd.errors import OutboxError
from towerd.icd import empty_track_records
from towerd.outbox.sqlite import Outbox
from towerd.uplink.client import CentralSettings, UplinkClient

TOWER = "tx-pg-01"


def tracks(n: int, time_us: int | None = None) -> np.ndarray:
    rec = empty_track_records(n)
    rec["time_us"] = time_us if time_us is not None else SystemClock().utc_us()
    rec["track_id"] = np.arange(n) + 1
    rec["lat_e7"] = 294_000_000 + np.arange(n)
    rec["lon_e7"] = -985_000_000
    rec["range_m"] = 500.0
    return rec


@pytest.fixture
def curve(tmp_path) -> dict:
    """Central key pair, one tower key pair, the allow-list holding the tower's key."""
    d = tmp_path / "keys"
    central = towerd_keys.generate_keypair(d, "central")
    tower = towerd_keys.generate_keypair(d, "tower")
    allow = tmp_path / "allow"
    towerd_keys.allow_tower(TOWER, tower.public_file, allow)
    return {"central": central, "tower": tower, "allow": allow}


class ServerThread:
    """A CentralServer with a PostgreSQL store, served from a thread."""

    def __init__(self, curve: dict, store: PgCentralStore, bind: str = "tcp://127.0.0.1:*") -> None:
        self.server = CentralServer(bind, "", server_secret_key_file=curve["central"].secret_file,
                                    allow_dir=curve["allow"], store=store)
        self.endpoint = self.server.bound_endpoint
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self.server.serve_forever, args=(self._stop,), name="central")
        self._thread.start()

    def close(self) -> None:
        self._stop.set()
        self._thread.join(10)
        self.server.close()


def tower(tmp_path: Path, curve: dict, *endpoints: str, name: str = "outbox.sqlite") -> tuple[Outbox, UplinkClient]:
    box = Outbox(tmp_path / name, clock=SystemClock())
    s = CentralSettings("hq", endpoints[0], extra_endpoints=tuple(endpoints[1:]),
                        server_public_key_file=str(curve["central"].public_file),
                        client_secret_key_file=str(curve["tower"].secret_file), ack_timeout_s=0.5,
                        heartbeat_ivl_s=0.2, heartbeat_timeout_s=0.6, reconnect_ivl_s=0.05, reconnect_ivl_max_s=0.2)
    return box, UplinkClient(TOWER, s, box, clock=SystemClock(), health=box.health)


def held_seqs(url: str, tower_id: str = TOWER) -> list[int]:
    with psycopg.connect(url) as conn:
        return [r[0] for r in conn.execute(
            "SELECT seq FROM tracks WHERE tower_id = %s UNION ALL SELECT seq FROM events WHERE tower_id = %s "
            "ORDER BY 1", (tower_id, tower_id))]


# ------------------------------------------------------------------------------ the store itself


def test_duplicates_are_dropped_within_and_across_batches(pg_url):
    store = PgCentralStore(pg_url, retention_days=2)
    try:
        rec = tracks(5)
        rec["seq"] = np.arange(1, 6)
        sid = 2**64 - 3  # a u64 beyond bigint's range round-trips
        assert store.store_many([Pending("a", sid, False, records=rec),
                                 Pending("a", sid, True, records=rec[:3]),
                                 Pending("b", sid, False, records=rec[:2])]) == [5, 0, 2]
        assert store.store_many([Pending("a", sid, True, records=rec)]) == [0]
        held = store.tracks("a")
        assert [d["seq"] for d in held] == [1, 2, 3, 4, 5] and {d["stream_id"] for d in held} == {sid}
        assert not any(d["replay"] for d in held)  # the first copy is kept
        assert np.isnan(held[0]["alt_m"]) and held[0]["range_m"] == 500.0  # NaN stored as NULL, read back as NaN
        assert store.count_tracks() == 7
    finally:
        store.close()


def test_records_taken_for_new_that_another_process_stored_are_stored_once(pg_url):
    """Live records of a stream a store has not committed go straight into ``tracks``
    (no staging table); when another central sharing the database had stored them, the
    transaction is rolled back whole and the batch goes through the staging path:
    each record once, the right counts, the other messages of the batch kept."""
    first, second = PgCentralStore(pg_url, retention_days=2), PgCentralStore(pg_url, retention_days=2)
    try:
        rec = tracks(6)
        rec["seq"] = np.arange(1, 7)
        other = tracks(2)
        other["seq"] = [1, 2]
        assert first.store_many([Pending("a", 5, False, records=rec[:4])]) == [4]
        assert first.stats["direct_conflicts"] == 0
        # ``second`` has committed nothing of stream ("a", 5): it takes rec[:4] for new.
        assert second.store_many([Pending("b", 5, False, records=other), Pending("a", 5, False, records=rec[:4]),
                                  Pending("a", 5, False, records=rec[4:])]) == [2, 0, 2]
        assert second.stats["direct_conflicts"] == 1
        # Now it knows the stream: a message at or below what it committed is staged (no
        # conflict), one above goes straight in, and one overlapping an earlier message of
        # the same batch is staged too.
        more = tracks(3)
        more["seq"] = [7, 8, 9]
        assert second.store_many([Pending("a", 5, False, records=rec[2:]), Pending("a", 5, False, records=more),
                                  Pending("a", 5, False, records=more[1:])]) == [0, 3, 0]
        assert second.stats["direct_conflicts"] == 1
        assert [d["seq"] for d in first.tracks("a")] == list(range(1, 10))
        assert [d["seq"] for d in first.tracks("b")] == [1, 2] and first.count_tracks() == 11
        held = first.tracks("a")
        assert len({d["rx_msg"] for d in held}) == 3  # one number per message that stored records
        assert np.isnan(held[0]["alt_m"]) and held[0]["range_m"] == 500.0  # NaN stored as NULL either way
    finally:
        first.close()
        second.close()


def test_every_field_round_trips_through_either_path(pg_url):
    """The binary COPY images (straight into tracks, or through the staging table) carry
    every ICD field, widened where unsigned, extremes included; NaN is NULL."""
    store = PgCentralStore(pg_url, retention_days=2)
    try:
        rec = tracks(4)
        rec["seq"] = np.arange(2**63 - 4, 2**63, dtype=np.uint64)  # the largest seqs a central keeps
        rec["track_id"] = [0, 1, 2**31, 2**32 - 1]
        rec["status"], rec["category"], rec["confidence"] = [0, 1, 2, 3], [0, 1, 2, 3], [0, 50, 100, 255]
        rec["threat"], rec["sources"], rec["reserved"] = [0, 1, 2, 3], [1, 2, 4, 7], [0, 0, 0, 255]
        rec["hits"] = [0, 1, 2**15, 2**16 - 1]
        rec["lat_e7"] = [-900_000_000, 900_000_000, -2**31, 1]
        rec["lon_e7"] = [-1_800_000_000, 1_800_000_000, -2**31, -1]
        for n, name in enumerate(("alt_m", "azimuth_deg", "vel_up_mps", "rf_power_dbm")):
            rec[name] = [1.5 * n, -np.float32(3.4e38), np.nan, 1e-3]
        sid = 2**64 - 1
        for replay in (False, True):  # live and new: straight in; REPLAY: staged
            tower = f"t{int(replay)}-long-tower-id"
            assert store.store_many([Pending(tower, sid, replay, records=rec)]) == [4]
            held = store.tracks(tower)
            assert [d["stream_id"] for d in held] == [sid] * 4 and [d["replay"] for d in held] == [replay] * 4
            for name in rec.dtype.names:  # floats: PostgreSQL's real, read back as text, is the same float32
                got = np.array([d[name] for d in held], dtype=rec.dtype[name] if rec.dtype[name].kind == "f" else object)
                np.testing.assert_array_equal(got, rec[name].astype(got.dtype), err_msg=name)
    finally:
        store.close()


def test_streams_name_missing_dropped_and_unexplained_ranges_and_export_matches(pg_url, tmp_path, towerd_exe):
    store = PgCentralStore(pg_url, retention_days=2)
    try:
        rec = tracks(10)
        rec["seq"] = np.arange(1, 11)
        dropped = {"seq": 20, "time_us": 1, "code": "outbox.dropped", "severity": "error", "message": "cap",
                   "first_seq": 11, "last_seq": 14, "count": 4}
        assert store.store_many([Pending(TOWER, 7, False, records=rec[:3]), Pending(TOWER, 7, False, records=rec[5:]),
                                 Pending(TOWER, 7, False, events=[dropped])]) == [3, 5, 1]
        (s,) = store.streams()
        assert (s.records, s.first_seq, s.last_seq, s.missing_records) == (9, 1, 20, 11)
        assert s.missing == ((4, 5), (11, 19)) and s.dropped == ((11, 14),)
        assert s.unexplained == ((4, 5), (15, 19))
    finally:
        store.close()
    out = subprocess.run([towerd_exe, "central", "export", "--store", pg_url], capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == 0, out.stderr
    lines = [json.loads(x) for x in out.stdout.splitlines()]
    assert [x["kind"] for x in lines] == ["track"] * 8 + ["event", "stream"]
    assert lines[0]["stream_id"] == "0000000000000007" and lines[0]["alt_m"] is None
    assert lines[-1]["unexplained"] == [[4, 5], [15, 19]]


def test_day_partitions_retention_and_records_outside_the_window(pg_url):
    clock = ManualClock(utc_epoch_us=20_000 * DAY_US + 3_600_000_000)  # 2024-10-04 01:00 UTC
    store = PgCentralStore(pg_url, clock=clock, retention_days=2, ahead_days=1)
    try:
        def parts() -> list[str]:
            with psycopg.connect(pg_url) as conn:
                return sorted(r[0] for r in conn.execute(
                    "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
                    "JOIN pg_class p ON p.oid = i.inhparent WHERE p.relname = 'tracks'"))

        assert parts() == ["tracks_20241002", "tracks_20241003", "tracks_20241004", "tracks_20241005",
                           "tracks_default"]
        far = tracks(2, time_us=20_004 * DAY_US)  # 2024-10-08: a tower clock days ahead
        far["seq"] = [1, 2]
        old = tracks(1, time_us=19_990 * DAY_US)  # older than retention
        old["seq"] = [3]
        assert store.store_many([Pending(TOWER, 1, False, records=far), Pending(TOWER, 1, False, records=old)]) \
            == [2, 1]
        with psycopg.connect(pg_url) as conn:
            assert conn.execute("SELECT count(*) FROM tracks_default").fetchone()[0] == 3
        clock.advance(4 * 86400)  # 2024-10-08: its partition is made, the rows move in, old days go
        store.upkeep()
        assert parts() == ["tracks_20241006", "tracks_20241007", "tracks_20241008", "tracks_20241009",
                           "tracks_default"]
        with psycopg.connect(pg_url) as conn:
            assert conn.execute("SELECT count(*) FROM tracks_20241008").fetchone()[0] == 2
            assert conn.execute("SELECT count(*) FROM tracks_default").fetchone()[0] == 0
        assert store.store_many([Pending(TOWER, 1, True, records=far)]) == [0]  # still de-duplicated
        assert store.stats["partitions_dropped"] == 4 * 4  # four days of tracks, events, health and identities
    finally:
        store.close()


# ------------------------------------------------------------------------------ through the server


def test_a_message_sent_twice_is_acked_twice_and_stored_once(pg_url, curve):
    central = ServerThread(curve, PgCentralStore(pg_url, retention_days=2))
    ctx = zmq.Context()
    sock = ctx.socket(zmq.DEALER)
    try:
        sock.linger = 0
        sock.routing_id = TOWER.encode()
        pub, sec = zmq.auth.load_certificate(curve["tower"].secret_file)
        sock.curve_publickey, sock.curve_secretkey = pub, sec
        sock.curve_serverkey = zmq.auth.load_certificate(curve["central"].public_file)[0]
        sock.connect(central.endpoint)
        rec = tracks(4)
        rec["seq"] = np.arange(1, 5)
        frame = icd.encode_tracks(99, rec)
        acks = []
        for _ in range(2):
            sock.send(frame)
            assert sock.poll(10_000), "no ACK"
            acks.append(icd.decode_ack(icd.decode(sock.recv())))
        assert acks == [(1, 4), (1, 4)]
        assert held_seqs(pg_url) == [1, 2, 3, 4]
        assert central.server.stats["duplicates"] == 4 and central.server.stats["stored_tracks"] == 4
    finally:
        sock.close(0)
        ctx.term()
        central.close()


def test_database_outage_no_ack_without_commit_then_reconnect_and_nothing_lost(pg_url, pg_cluster, curve, tmp_path):
    store = PgCentralStore(pg_url, retention_days=2, reconnect_ivl_s=0.1)
    central = ServerThread(curve, store)
    box, client = tower(tmp_path, curve, central.endpoint)
    try:
        def step() -> None:
            client.poll(10)

        box.add_tracks(tracks(50))
        box.commit()
        wait_for(lambda: box.pending_count() == 0, step, what="first records acknowledged")
        acked_before = client.stats["acked_records"]

        pg_cluster.stop("fast")  # the database goes away while the towers keep sending
        box.add_tracks(tracks(30))
        box.add_event("test.marker", "info", "during the outage")
        box.commit()
        wait_for(lambda: client.stats["errors_received"] >= 2, step, what="central.store_failed errors")
        assert box.pending_count() == 31, "records acknowledged although the database was down"
        assert client.stats["acked_records"] == acked_before

        pg_cluster.start_again()
        box.add_tracks(tracks(20))
        box.commit()
        wait_for(lambda: box.pending_count() == 0, step, timeout_s=20, what="everything acknowledged after restart")
        assert held_seqs(pg_url) == list(range(1, 102))  # every record once, none lost, none twice
        assert store.stats["reconnects"] >= 1
        (s,) = store.streams()
        assert s.unexplained == () and s.records == 101
    finally:
        client.close()
        box.close()
        central.close()


def central_cmd(towerd_exe: str, endpoint: str, pg_url: str, curve: dict) -> list[str]:
    return [towerd_exe, "central", "--bind", endpoint, "--store", pg_url, "--retention-days", "2",
            "--secret-key", str(curve["central"].secret_file), "--allow-dir", str(curve["allow"])]


@pytest.mark.slow
def test_central_process_killed_and_restarted_loses_nothing(pg_url, curve, tmp_path, towerd_exe):
    endpoint = f"tcp://127.0.0.1:{free_tcp_port()}"
    child = Child(central_cmd(towerd_exe, endpoint, pg_url, curve), tmp_path / "central.log")
    box, client = tower(tmp_path, curve, endpoint)
    try:
        wait_listening(endpoint, child)
        written = 0
        for phase in range(3):
            deadline = time.monotonic() + 1.0
            while time.monotonic() < deadline:  # ~1,000 records/s in commits of 10
                box.add_tracks(tracks(10))
                box.commit()
                written += 10
                client.poll(10)
            if phase == 0:
                child.proc.send_signal(signal.SIGKILL)  # mid-stream: commits in flight, ACKs unsent
                child.proc.wait(10)
                child = Child(central_cmd(towerd_exe, endpoint, pg_url, curve), tmp_path / "central.log")
                wait_listening(endpoint, child)
        wait_for(lambda: box.pending_count() == 0, lambda: client.poll(10), timeout_s=30,
                 what="everything acknowledged")
        assert held_seqs(pg_url) == list(range(1, written + 1))
    finally:
        client.close()
        box.close()
        child.stop()


@pytest.mark.slow
def test_two_central_processes_share_one_database_and_a_tower_fails_over(pg_url, curve, tmp_path, towerd_exe):
    """The tower lists both processes; one is killed; the other takes everything, and
    the store holds every record exactly once."""
    endpoints = [f"tcp://127.0.0.1:{free_tcp_port()}" for _ in range(2)]
    children = [Child(central_cmd(towerd_exe, e, pg_url, curve), tmp_path / f"central{i}.log")
                for i, e in enumerate(endpoints)]
    box, client = tower(tmp_path, curve, *endpoints)
    try:
        for child, e in zip(children, endpoints):
            wait_listening(e, child)
        wait_for(lambda: len(client._up_endpoints) == 2, lambda: client.poll(10), what="both endpoints up")
        written = 0
        for phase in range(2):
            deadline = time.monotonic() + 1.0
            while time.monotonic() < deadline:
                box.add_tracks(tracks(10))
                box.commit()
                written += 10
                client.poll(10)
            if phase == 0:
                children[0].proc.send_signal(signal.SIGKILL)
                children[0].proc.wait(10)
        wait_for(lambda: box.pending_count() == 0, lambda: client.poll(10), timeout_s=30,
                 what="everything acknowledged by the surviving process")
        assert held_seqs(pg_url) == list(range(1, written + 1))
        assert client.link_up and client.stats["disconnects"] >= 1
    finally:
        client.close()
        box.close()
        for child in children:
            child.stop()


def test_store_url_errors_are_configuration_errors(tmp_path, towerd_exe):
    proc = subprocess.run([towerd_exe, "central", "--store", "postgresql://x@/db?host=/nonexistent-dir",
                           "--plain", "--bind", "tcp://127.0.0.1:*"], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 1 and "cannot connect" in proc.stderr
    proc = subprocess.run([towerd_exe, "central", "--store", "postgresql://x@/db", "--db", "x.sqlite", "--plain"],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and "not allowed with" in proc.stderr


def test_a_message_the_database_refuses_does_not_hold_up_the_others(pg_url):
    """An event whose time_us does not fit a bigint fails alone; the rest of its batch is stored."""
    store = PgCentralStore(pg_url, retention_days=2)
    try:
        rec = tracks(3)
        rec["seq"] = [1, 2, 3]
        bad = {"seq": 4, "time_us": 2**70, "code": "x", "severity": "info", "message": "clock gone mad"}
        ok = {"seq": 1, "time_us": 5, "code": "x", "severity": "info", "message": "fine"}
        out = store.store_many([Pending("a", 1, False, records=rec), Pending("a", 1, False, events=[bad]),
                                Pending("b", 2, False, events=[ok])])
        assert out[0] == 3 and out[2] == 1
        assert isinstance(out[1], OutboxError) and "refused by the database" in str(out[1])
        assert store.stats["refused_messages"] == 1 and held_seqs(pg_url, "a") == [1, 2, 3]
    finally:
        store.close()


def test_load_generator_towers_deliver_everything_through_an_outage(pg_url, tmp_path):
    """The load generator's towers (real outboxes and uplinks, own keys) against a central
    with the PostgreSQL store: live records timed, a backlog built by an outage and one
    prefilled, all acknowledged and stored exactly once."""
    from towerd.central import loadgen

    paths = loadgen.make_keys(tmp_path, 3)
    curve = {"central": type("K", (), {"secret_file": paths["central_secret"]})(), "allow": paths["allow"]}
    store = PgCentralStore(pg_url, retention_days=2)
    central = ServerThread(curve, store)
    try:
        spec = loadgen.LoadSpec(directory=str(tmp_path), endpoints=(central.endpoint,), towers=3, rate=40.0,
                                duration_s=30.0, warmup_s=1.0, procs=1, commit_s=0.05, outage_towers=1,
                                outage_at_s=1.0, outage_s=1.0, backlog_towers=1, backlog_s=2.0,
                                outbox_dir=str(tmp_path / "outboxes"), stop_when_drained=True)
        result = loadgen.run(spec)
    finally:
        central.close()
    assert result["ack_latency_ms"]["n"] > 100 and result["backlog_left_records"] == 0
    assert result["drain_s"]["not_drained_towers"] == 0 and result["errors_received"] == 0
    with psycopg.connect(pg_url) as conn:
        rows = conn.execute("SELECT tower_id, count(*), count(DISTINCT seq), min(seq), max(seq), "
                            "bool_or(replay) FROM tracks GROUP BY tower_id ORDER BY 1").fetchall()
    assert [r[0] for r in rows] == ["lg-0000", "lg-0001", "lg-0002"]
    for tower_id, n, distinct, first, last, replayed in rows:
        assert n == distinct == last and first == 1, tower_id  # every seq once, none missing
    assert rows[0][5], "lg-0000 (outage and prefilled backlog) sent REPLAY"
    # At the stop some records may be stored whose ACK the towers had not yet seen, or not yet sent.
    assert result["acked_records"] <= sum(r[1] for r in rows) <= result["written_records"]


def test_upkeep_blocked_by_a_long_query_does_not_hold_up_the_reports(pg_url, caplog):
    """Dropping a partition waits for an analyst's open transaction on tracks; the upkeep
    gives up after its lock timeout and the batch is stored anyway."""
    clock = ManualClock(utc_epoch_us=20_000 * DAY_US)
    store = PgCentralStore(pg_url, clock=clock, retention_days=2, ahead_days=1, upkeep_interval_s=3600)
    analyst = psycopg.connect(pg_url)
    try:
        analyst.execute("SELECT count(*) FROM tracks").fetchone()  # transaction left open: AccessShare held
        clock.advance(86400 + 3600)  # the oldest day is due to go
        rec = tracks(2, time_us=clock.utc_us())
        rec["seq"] = [1, 2]
        t0 = time.monotonic()
        assert store.store_many([Pending(TOWER, 1, False, records=rec)]) == [2]
        assert time.monotonic() - t0 < 10
        assert "partition upkeep failed" in caplog.text and store.stats["partitions_dropped"] == 0
        analyst.rollback()
        clock.advance(120)
        assert store.store_many([Pending(TOWER, 1, True, records=rec)]) == [0]  # upkeep retried, done
        assert store.stats["partitions_dropped"] == 4  # one day of tracks, events, health and identities
    finally:
        analyst.close()
        store.close()


def identities(seqs: list[int]) -> np.ndarray:
    rec = icd.empty_identity_records(len(seqs))
    rec["seq"] = seqs
    rec["time_us"] = SystemClock().utc_us()
    rec["status"] = 1
    rec["uas_id"] = b"1581F5FKD229400"
    return rec


def test_identity_streams_are_summarised_and_the_health_history_is_exported(pg_url, tmp_path, towerd_exe):
    store = PgCentralStore(pg_url, retention_days=2)
    try:
        rec = tracks(2)
        rec["seq"] = [1, 2]
        assert store.store_many([Pending(TOWER, 7, False, records=rec),
                                 Pending(TOWER, 9, False, identities=identities([1, 2, 5]))]) == [2, 3]
        store.record_health(TOWER, {"link": {"up": True}, "sensors": {"radar": "ok"}})
        store.record_health(TOWER, {"link": {"up": False}, "sensors": {"radar": "silent"}})
        streams = {s.stream_id: s for s in store.streams(TOWER)}
        assert set(streams) == {7, 9}  # the identity stream is summarised beside the records stream
        assert (streams[9].records, streams[9].last_seq, streams[9].unexplained) == (3, 5, ((3, 4),))
    finally:
        store.close()  # writes the HEALTH objects held
    out = subprocess.run([towerd_exe, "central", "export", "--store", pg_url, "--health", "--tower", TOWER],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    lines = [json.loads(x) for x in out.stdout.splitlines()]
    assert [(x["kind"], x["tower_id"], x["health"]["sensors"]["radar"]) for x in lines] == [
        ("health", TOWER, "ok"), ("health", TOWER, "silent")]
    assert lines[0]["received_us"] <= lines[1]["received_us"]
    sqlite_db = tmp_path / "c.sqlite"
    from towerd.central.store import CentralStore
    CentralStore(sqlite_db).close()
    out = subprocess.run([towerd_exe, "central", "export", "--db", str(sqlite_db), "--health"],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 1 and "keeps no HEALTH history" in out.stderr
