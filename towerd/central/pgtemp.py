"""A throwaway PostgreSQL cluster (for the tests, the benchmarks and trying the central
out): the server's own initdb / pg_ctl, in a temporary directory, listening only on a
Unix socket in that directory (no TCP port, so parallel runs never collide), removed
when stopped. ``durable=False`` (the tests) turns fsync off; the benchmarks keep the
server's durable defaults.

PostgreSQL refuses to run as root; when the tests run as root the cluster runs as the
unprivileged user ``nobody`` (``runuser``) in a directory it owns.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import subprocess
import tempfile
from pathlib import Path

PORT = 5432  # only names the socket file (.s.PGSQL.5432) in the cluster's own directory


def find_bindir() -> Path | None:
    """The newest installed server's bin directory (Debian: /usr/lib/postgresql/N/bin),
    or the directory of an ``initdb`` on PATH."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(Path(p).parts[-3]))
    if found:
        return Path(found[-1]).parent
    on_path = shutil.which("initdb")
    return Path(on_path).parent if on_path else None


def child_pids(parent: int) -> set[int]:
    """The processes whose parent is ``parent`` (from /proc)."""
    out = set()
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat", "rb") as fh:
                    if int(fh.read().rsplit(b")", 1)[1].split()[1]) == parent:
                        out.add(int(entry))
            except (OSError, ValueError, IndexError):
                continue
    return out


class PgCluster:
    """``start()`` runs initdb and pg_ctl start; ``stop()`` / ``start_again()`` stop and
    restart the same cluster (what a database outage looks like to the central);
    ``remove()`` stops it and deletes everything."""

    def __init__(self, bindir: Path, *, durable: bool = False, settings: dict[str, str] | None = None) -> None:
        self.bindir = bindir
        self.durable = durable
        self.settings = dict(settings or {})
        self.root = Path(tempfile.mkdtemp(prefix="towerd-pg-"))
        self.data = self.root / "data"
        self.log = self.root / "server.log"
        self._as: list[str] = []
        if os.geteuid() == 0:
            user = pwd.getpwnam("nobody")
            os.chown(self.root, user.pw_uid, user.pw_gid)
            self._as = ["runuser", "-u", "nobody", "--"]
        self.running = False

    def url(self, dbname: str = "postgres") -> str:
        return f"postgresql://postgres@/{dbname}?host={self.root}&port={PORT}"

    def _run(self, *args: str, timeout: float = 60.0) -> None:
        proc = subprocess.run([*self._as, *args], cwd=self.root, capture_output=True, text=True, timeout=timeout)
        if proc.returncode != 0:
            log = self.log.read_text(errors="replace") if self.log.exists() else ""
            raise RuntimeError(f"{' '.join(args)} failed ({proc.returncode}):\n{proc.stdout}{proc.stderr}\n{log}")

    def start(self) -> None:
        self._run(str(self.bindir / "initdb"), "-D", str(self.data), "-U", "postgres", "--auth=trust",
                  "-E", "UTF8", "--locale=C", "--no-sync")
        self.start_again()

    def start_again(self) -> None:
        opts = f"-c listen_addresses='' -k {self.root} -p {PORT} -c max_connections=50"
        if not self.durable:
            opts += " -c fsync=off -c full_page_writes=off -c shared_buffers=32MB"
        for key, value in self.settings.items():
            opts += f" -c {key}={value}"
        self._run(str(self.bindir / "pg_ctl"), "-D", str(self.data), "-l", str(self.log), "-o", opts,
                  "-w", "-t", "60", "start")
        self.running = True

    def server_pids(self) -> list[int]:
        """The postmaster and its children (for CPU accounting)."""
        try:
            master = int((self.data / "postmaster.pid").read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return []
        return [master, *sorted(child_pids(master))]

    def stop(self, mode: str = "fast") -> None:
        self._run(str(self.bindir / "pg_ctl"), "-D", str(self.data), "-m", mode, "-w", "-t", "60", "stop")
        self.running = False

    def remove(self) -> None:
        try:
            if self.running:
                self.stop("immediate")
        finally:
            shutil.rmtree(self.root, ignore_errors=True)
