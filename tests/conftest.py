"""Shared fixtures: real pseudo-terminals, leak checks, and the towerd executable.

A test that leaks a thread, a child process or an open pty fails (see ``_no_leaks``).
"""

from __future__ import annotations

import os
import shutil
import sys
import threading
import time
from pathlib import Path

import pytest

from processes import Child, free_tcp_port, wait_listening
from towerd.sim.pty import PtyPair

REPO = Path(__file__).resolve().parents[1]


def _child_pids() -> set[int]:
    me = str(os.getpid())
    kids = set()
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as fh:
                fields = fh.read().rsplit(b")", 1)[1].split()
        except OSError:
            continue
        # fields[0] is state, fields[1] ppid; zombies (state Z) are not yet reaped.
        if fields[1].decode() == me:
            kids.add(int(entry))
    return kids


@pytest.fixture(autouse=True)
def _no_leaks():
    """Fail a test that leaves threads or child processes running behind it."""
    threads_before = set(threading.enumerate())
    kids_before = _child_pids()
    yield
    deadline = time.monotonic() + 5.0
    while True:
        extra_threads = [t for t in threading.enumerate() if t not in threads_before and t.is_alive()]
        extra_kids = _child_pids() - kids_before
        if not extra_threads and not extra_kids:
            return
        if time.monotonic() > deadline:
            break
        time.sleep(0.05)
    pytest.fail(f"leaked threads {[t.name for t in extra_threads]} / child processes {sorted(extra_kids)}")


@pytest.fixture
def pty_pair():
    """A raw pseudo-terminal: ``.master_fd`` is the device side, ``.path`` the port."""
    pair = PtyPair.open()
    yield pair
    pair.close()


@pytest.fixture(scope="session")
def towerd_exe() -> str:
    """Path of the installed ``towerd`` console script (the real CLI, as field users run it)."""
    exe = Path(sys.executable).with_name("towerd")
    if exe.exists():
        return str(exe)
    found = shutil.which("towerd")
    if not found:
        pytest.fail("towerd console script is not installed: run scripts/test")
    return found


@pytest.fixture
def central(towerd_exe, tmp_path):
    """A running reference central (`towerd central --plain`) on a free loopback port.
    Yields the Child with ``.endpoint`` and ``.db_path``."""
    endpoint = f"tcp://127.0.0.1:{free_tcp_port()}"
    db_path = tmp_path / "central.sqlite"
    child = Child([towerd_exe, "central", "--bind", endpoint, "--db", str(db_path), "--plain"],
                  tmp_path / "central.log")
    child.endpoint = endpoint
    child.db_path = db_path
    wait_listening(endpoint, child)
    yield child
    child.stop()


# ------------------------------------------------------------------ PostgreSQL (issue 13)


@pytest.fixture(scope="session")
def pg_cluster():
    """A throwaway PostgreSQL cluster for the whole session (towerd/central/pgtemp.py), stopped
    and removed at the end, also after failures. Skips only when no server is installed
    (scripts/bootstrap.sh installs it)."""
    from towerd.central.pgtemp import PgCluster, find_bindir

    bindir = find_bindir()
    if bindir is None:
        pytest.skip("PostgreSQL server not installed (bash scripts/bootstrap.sh installs it)")
    cluster = PgCluster(bindir)
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.remove()


@pytest.fixture
def pg_url(pg_cluster, request):
    """URL of a fresh, empty database in the session's cluster (dropped afterwards)."""
    import psycopg

    if not pg_cluster.running:
        pg_cluster.start_again()
    name = "t_" + "".join(c if c.isalnum() else "_" for c in request.node.name.lower())[:50]
    with psycopg.connect(pg_cluster.url(), autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}"')
        conn.execute(f'CREATE DATABASE "{name}"')
    yield pg_cluster.url(name)
    if not pg_cluster.running:
        pg_cluster.start_again()
    with psycopg.connect(pg_cluster.url(), autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


# ------------------------------------------------------------------ parallel runs (pytest-xdist)
# scripts/test runs the suite in 2 worker processes (`-n 2 --dist loadgroup`). A test that
# uses something machine-wide (apt/dpkg, the `towerd` system user, systemd units, a fixed
# TCP port such as the shipped configuration's web console 8470) must not overlap another
# such test: mark it (or its module, `pytestmark = pytest.mark.system`) with
# `@pytest.mark.system`; all such tests then run one after another in one worker. Tests
# that use the session's PostgreSQL cluster (the `pg_cluster` / `pg_url` fixtures) are put
# in one worker too, so that one cluster serves them all. Everything else must be safe in
# parallel: its own tmp_path, ephemeral ports (bind to port 0), no fixed file names.


def pytest_collection_modifyitems(config, items):
    for item in items:
        if item.get_closest_marker("system") is not None:
            item.add_marker(pytest.mark.xdist_group("system"))
        elif "pg_cluster" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.xdist_group("postgresql"))
