"""One transaction's statements and ``COPY`` data in as few round trips as the protocol
allows, on psycopg's libpq connection (:attr:`psycopg.Connection.pgconn`, its documented
way to "use features not currently wrapped by Psycopg").

Why: psycopg sends each statement on its own and waits for its answer, and its
``Cursor.copy`` refuses any other statement in the same query. A commit of the store
was five round trips (``BEGIN``; the ``rx_msg`` numbers; ``COPY`` started; its data;
``COMMIT``), each a wake-up of PostgreSQL's backend and then of the central's writer,
which on a busy machine is what a commit waits for most (docs/central.md, "Ingest").
PostgreSQL's simple query protocol runs a whole string of statements, ``COPY … FROM
STDIN`` among them: the server stops at each ``COPY`` for its data and goes on with the
next statement once it has it. So ``BEGIN; SELECT …; COPY …; COMMIT`` is two round
trips: the string, answered up to the ``COPY`` (so the data may use the ``SELECT``'s
answer); then the data, answered with the ``COPY``'s and ``COMMIT``'s results.

An error stops the string where it happens (the statements after it are not run; the
transaction, begun explicitly, is then aborted and must be rolled back): :func:`run`
raises it as psycopg's exception for its SQLSTATE once every result is read, so the
connection is ready for ``ROLLBACK``. An exception while building a ``COPY``'s data
fails that ``COPY`` (so the string stops there too) and is raised the same way.
Anything else going wrong mid-way (the connection lost, an interrupt) leaves the
protocol's state unknown: the connection is closed if it is not already (the server
rolls the transaction back) and the caller reconnects.

psycopg 3.1 API used: ``Connection.pgconn``, ``pq.PGconn.send_query``,
``consume_input``, ``is_busy``, ``get_result``, ``flush``, ``put_copy_data``,
``put_copy_end``, ``socket``, ``status``, ``pq.PGresult.status``, ``error_field``,
``error_message``, ``psycopg.errors.lookup``. The waiting is a ``poll`` on the socket (the
GIL is free meanwhile, as in psycopg's own waiting).
"""

from __future__ import annotations

import select
from collections.abc import Callable
from typing import Any

try:
    import psycopg
    from psycopg import errors as pg_errors
    from psycopg import pq
except ImportError:  # pragma: no cover - the extra is not installed
    psycopg = None

CopyFeed = Callable[[int, list], bytes]
"""``feed(i, results)``: the data of the script's ``COPY`` number ``i`` (from 0), given
the results of the statements before it (``pq.PGresult``, in order)."""


def run(conn: Any, sql: str, feed: CopyFeed | None = None) -> list:
    """Send ``sql`` (statements separated by ``;``, without parameters) as one simple
    query on ``conn``, give each ``COPY … FROM STDIN`` in it the bytes ``feed`` returns,
    and return every statement's result (``pq.PGresult``) in order. Raises the first
    error the server reported, as psycopg's exception for its SQLSTATE, after reading
    every result; closes ``conn`` if anything else interrupts it."""
    pgconn = conn.pgconn
    if pgconn.transaction_status != pq.TransactionStatus.IDLE:
        raise psycopg.ProgrammingError("a script starts its own transaction: the connection is in one")
    results: list = []
    error: Exception | None = None
    copies = 0
    try:
        pgconn.send_query(sql.encode())
        _flush(pgconn)
        while True:
            _wait_result(pgconn)
            res = pgconn.get_result()
            if res is None:
                break
            status = res.status
            if status == pq.ExecStatus.COPY_IN:
                data = None
                if error is None and feed is not None:
                    try:
                        data = feed(copies, results)
                    except Exception as exc:  # noqa: BLE001 - raised below, once the server is done
                        error = exc
                if data is None:  # the COPY fails, the string stops there, the transaction is aborted
                    while pgconn.put_copy_end(b"no data for this COPY") == 0:
                        _wait(pgconn, select.POLLOUT)
                else:
                    while pgconn.put_copy_data(data) == 0:
                        _wait(pgconn, select.POLLOUT)
                    while pgconn.put_copy_end(None) == 0:
                        _wait(pgconn, select.POLLOUT)
                _flush(pgconn)
                copies += 1
                continue
            if status == pq.ExecStatus.FATAL_ERROR and error is None:
                error = _error(res, pgconn)
            results.append(res)
    except BaseException:
        if pgconn.status != pq.ConnStatus.BAD:
            conn.close()  # the protocol's state is unknown: the server rolls the transaction back
        raise
    if error is not None:
        raise error
    return results


def _error(res: Any, pgconn: Any) -> Exception:
    message = (res.error_message or b"").decode(errors="replace").strip() or "statement failed"
    sqlstate = res.error_field(pq.DiagnosticField.SQLSTATE)
    if sqlstate:
        try:
            return pg_errors.lookup(sqlstate.decode())(message)
        except KeyError:
            return psycopg.DatabaseError(message)
    if pgconn.status == pq.ConnStatus.BAD:
        return psycopg.OperationalError(message)
    return psycopg.DatabaseError(message)


def _wait(pgconn: Any, events: int) -> int:
    """Until the socket is ready for ``events`` (or failed); the events that happened."""
    poller = select.poll()
    poller.register(pgconn.socket, events)
    ready = 0
    for _, ev in poller.poll():
        ready |= ev
    return ready


def _flush(pgconn: Any) -> None:
    """Send what libpq holds (psycopg makes the connection non-blocking), reading the
    server's answers meanwhile if it waits for us to read before it reads more."""
    while pgconn.flush():
        if _wait(pgconn, select.POLLOUT | select.POLLIN) & select.POLLIN:
            pgconn.consume_input()


def _wait_result(pgconn: Any) -> None:
    """Until ``get_result`` has a result (or the end) without blocking."""
    while pgconn.is_busy():
        _wait(pgconn, select.POLLIN)
        pgconn.consume_input()
