"""A commit of the PostgreSQL store as one simple-query script (towerd/central/pgwire.py)
against a real PostgreSQL server: its round trips, and every way it can fail part-way
(a statement after the COPY, the COMMIT itself, building the COPY's data, the connection
lost mid-way): nothing of the transaction kept, no ACK, the connection usable or
reconnected, and everything stored once afterwards."""

from __future__ import annotations

import numpy as np
import psycopg
import pytest
from psycopg import pq

from processes import wait_for
from test_central_pg import TOWER, ServerThread, curve, held_seqs, tower, tracks  # noqa: F401 (curve: a fixture)
from towerd.central import pgwire, pgwrite
from towerd.central.pgstore import PgCentralStore
from towerd.central.store import Pending
from towerd.clock import SystemClock
from towerd.errors import OutboxError

REFUSE = """
CREATE TABLE test_refuse (refuse boolean NOT NULL);
INSERT INTO test_refuse VALUES (true);
CREATE FUNCTION test_refuse() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  IF (SELECT refuse FROM test_refuse) THEN RAISE EXCEPTION 'refused at commit (test)'; END IF;
  RETURN NULL;
END $$;
CREATE CONSTRAINT TRIGGER test_refuse AFTER INSERT ON tracks DEFERRABLE INITIALLY DEFERRED
  FOR EACH ROW EXECUTE FUNCTION test_refuse();
"""
"""A deferred constraint trigger: while ``test_refuse.refuse``, every transaction that
inserted into ``tracks`` fails at its COMMIT, the last statement of the script."""


NOW_US = SystemClock().utc_us()


def message(tower_id: str, stream: int, first: int, n: int, replay: bool = False) -> Pending:
    """Records ``first..first+n-1`` of a stream; the same seq is the same record (time)."""
    rec = tracks(n)
    rec["seq"] = np.arange(first, first + n)
    rec["time_us"] = NOW_US + rec["seq"] * 1000
    return Pending(tower_id, stream, replay, records=rec, first_seq=first, last_seq=first + n - 1)


def round_trips(trace: str) -> int:
    """Turns from the client's messages to the server's in a libpq trace."""
    turns, last = 0, "B"
    for line in trace.splitlines():
        parts = line.split("\t")
        if len(parts) > 1 and parts[1] in ("F", "B"):
            if parts[1] == "F" and last == "B":
                turns += 1
            last = parts[1]
    return turns


def traced(store: PgCentralStore, tmp_path, batch: list[Pending]) -> tuple[list, int]:
    path = tmp_path / "trace.txt"
    with open(path, "wb") as fh:
        store._conn.pgconn.trace(fh.fileno())
        try:
            results = store.store_many(batch)
        finally:
            store._conn.pgconn.untrace()
    return results, round_trips(path.read_text(errors="replace"))


def test_a_commit_is_two_round_trips_live_or_backlog_and_three_with_both(pg_url, tmp_path):
    store = PgCentralStore(pg_url, retention_days=2, index_closed_days_after_s=None)
    try:
        assert store.store_many([message("a", 1, 1, 3)]) == [3]  # the session's first statements, untraced
        assert traced(store, tmp_path, [message("a", 1, 4, 3), message("b", 1, 1, 2)]) == ([3, 2], 2)
        assert traced(store, tmp_path, [message("a", 1, 1, 6, replay=True)]) == ([0], 2)  # staged, all duplicates
        assert traced(store, tmp_path, [message("a", 1, 7, 2), message("b", 1, 2, 3, replay=True)]) == ([2, 2], 3)
        assert [d["seq"] for d in store.tracks("a")] == list(range(1, 9))
        assert [d["seq"] for d in store.tracks("b")] == [1, 2, 3, 4]
        rx = [d["rx_msg"] for d in store.tracks()]
        assert len(set(rx)) == 5  # one number per message that stored records
    finally:
        store.close()


def test_rx_numbers_of_a_commit_follow_each_other_or_are_listed_when_not(pg_url):
    """The rx_msg numbers come in the script's first round trip; when another session
    took numbers in between they are listed one by one, still ascending."""
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute("CREATE SEQUENCE towerd_rx_msg INCREMENT BY 1")
        (res,) = pgwire.run(conn, pgwrite._RX_SELECT.format(n=4))
        assert pgwrite._rx_numbers(res, 4) == [1, 2, 3, 4]
        conn.execute("ALTER SEQUENCE towerd_rx_msg INCREMENT BY 3")  # as if another process took two each time
        (res,) = pgwire.run(conn, pgwrite._RX_SELECT.format(n=3))
        assert pgwrite._rx_numbers(res, 3) == [7, 10, 13]


def test_an_error_after_the_copy_keeps_nothing_and_the_connection_is_ready(pg_url):
    with psycopg.connect(pg_url) as conn:
        conn.execute("CREATE TABLE t (v integer)")
        conn.commit()
        with pytest.raises(psycopg.errors.DivisionByZero):
            pgwire.run(conn, "BEGIN; COPY t FROM STDIN; SELECT 1 / 0; COMMIT", lambda i, done: b"1\n2\n")
        assert conn.pgconn.transaction_status == pq.TransactionStatus.INERROR  # COMMIT never ran
        conn.rollback()
        assert conn.execute("SELECT count(*) FROM t").fetchone()[0] == 0
        conn.rollback()
        # A COPY whose data cannot be built fails, and so does the rest of the script.
        with pytest.raises(ZeroDivisionError):
            pgwire.run(conn, "BEGIN; COPY t FROM STDIN; COMMIT", lambda i, done: 1 // 0)
        conn.rollback()
        (res,) = pgwire.run(conn, "SELECT count(*) FROM t")
        assert res.get_value(0, 0) == b"0" and not conn.closed


def test_a_commit_refused_at_commit_time_keeps_nothing_then_everything_once(pg_url):
    store = PgCentralStore(pg_url, retention_days=2, index_closed_days_after_s=None)
    try:
        assert store.store_many([message("a", 1, 1, 2)]) == [2]
        with psycopg.connect(pg_url) as conn:
            conn.execute(REFUSE)
        live, backlog = message("a", 1, 3, 3), message("b", 1, 1, 4, replay=True)
        results = store.store_many([live, backlog])  # one batch, then one by one: each refused
        assert all(isinstance(r, OutboxError) for r in results), results
        assert store.stats["refused_messages"] == 2
        assert [d["seq"] for d in store.tracks()] == [1, 2]
        with psycopg.connect(pg_url) as conn:
            conn.execute("UPDATE test_refuse SET refuse = false")
        assert store.store_many([live, backlog]) == [3, 4]
        assert store.store_many([live, backlog]) == [0, 0]  # sent again: duplicates
        assert [d["seq"] for d in store.tracks("a")] == [1, 2, 3, 4, 5]
        assert [d["seq"] for d in store.tracks("b")] == [1, 2, 3, 4]
        assert store.stats["reconnects"] == 0  # the connection stayed usable throughout
    finally:
        store.close()


def test_data_that_cannot_be_built_fails_the_batch_and_the_next_one_is_stored(pg_url, monkeypatch):
    store = PgCentralStore(pg_url, retention_days=2, index_closed_days_after_s=None)
    try:
        real = pgwrite.direct_image
        monkeypatch.setattr(pgwrite, "direct_image", lambda *a: 1 // 0)
        with pytest.raises(ZeroDivisionError):  # a defect: the writer turns it into no ACK
            store.store_many([message("a", 1, 1, 3)])
        monkeypatch.setattr(pgwrite, "direct_image", real)
        assert store.tracks() == []
        assert store.store_many([message("a", 1, 1, 3)]) == [3]
        assert store.stats["reconnects"] == 0
    finally:
        store.close()


def test_the_connection_lost_mid_script_loses_nothing_and_reconnects(pg_url, monkeypatch):
    """The backend is killed while the script waits for the COPY's data: the batch is
    reported not stored, and the next one reconnects and stores it."""
    store = PgCentralStore(pg_url, retention_days=2, reconnect_ivl_s=0.0, index_closed_days_after_s=None)
    try:
        assert store.store_many([message("a", 1, 1, 2)]) == [2]
        real = pgwrite.direct_image
        pid = store._conn.info.backend_pid

        def killed_first(*args):
            with psycopg.connect(pg_url, autocommit=True) as other:
                other.execute("SELECT pg_terminate_backend(%s, 10000)", (pid,))
            return real(*args)

        monkeypatch.setattr(pgwrite, "direct_image", killed_first)
        batch = [message("a", 1, 3, 3), message("b", 1, 1, 2)]
        results = store.store_many(batch)
        assert all(isinstance(r, OutboxError) for r in results), results
        assert store.stats["failed_batches"] == 1
        monkeypatch.setattr(pgwrite, "direct_image", real)
        assert store.store_many(batch) == [3, 2]
        assert store.stats["reconnects"] == 1
        assert [d["seq"] for d in store.tracks("a")] == [1, 2, 3, 4, 5]
        assert [d["seq"] for d in store.tracks("b")] == [1, 2]
    finally:
        store.close()


def test_a_tower_gets_no_ack_while_commits_fail_and_loses_nothing(pg_url, curve, tmp_path):  # noqa: F811
    store = PgCentralStore(pg_url, retention_days=2, index_closed_days_after_s=None)
    central = ServerThread(curve, store)
    box, client = tower(tmp_path, curve, central.endpoint)
    try:
        def step() -> None:
            client.poll(10)

        box.add_tracks(tracks(20))
        box.commit()
        wait_for(lambda: box.pending_count() == 0, step, what="first records acknowledged")
        with psycopg.connect(pg_url) as conn:
            conn.execute(REFUSE)
        acked = client.stats["acked_records"]
        box.add_tracks(tracks(15))
        box.commit()
        wait_for(lambda: client.stats["errors_received"] >= 1, step, what="central.store_failed")
        assert box.pending_count() == 15 and client.stats["acked_records"] == acked
        assert held_seqs(pg_url) == list(range(1, 21))
        with psycopg.connect(pg_url) as conn:
            conn.execute("UPDATE test_refuse SET refuse = false")
        wait_for(lambda: box.pending_count() == 0, step, timeout_s=20, what="acknowledged once commits succeed")
        assert held_seqs(pg_url) == list(range(1, 36))
        (s,) = store.streams()
        assert s.unexplained == () and s.records == 35
    finally:
        client.close()
        box.close()
        central.close()
