"""A throwaway PostgreSQL cluster for tests, started from the Debian server binaries.

``PostgresCluster.start()`` runs ``initdb`` and ``pg_ctl start`` in a temporary folder on a free
loopback port (as the ``postgres`` user through ``runuser`` when running as root, since initdb
refuses root); ``stop()`` runs ``pg_ctl stop -m fast`` and, as a last resort, kills the postmaster
by the PID in ``postmaster.pid``. ``find_pg_bin()`` returns None when the binaries are absent, and
the fixtures skip with that reason.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import uuid
from pathlib import Path

PG_BIN_GLOB = "/usr/lib/postgresql/*/bin"


def find_pg_bin() -> Path | None:
    """Return the newest ``/usr/lib/postgresql/N/bin`` holding initdb and pg_ctl, else None."""
    env = os.environ.get("MEDVLM_PG_BIN")
    candidates = [Path(env)] if env else sorted(Path("/").glob(PG_BIN_GLOB.lstrip("/")), reverse=True)
    for cand in candidates:
        if (cand / "initdb").exists() and (cand / "pg_ctl").exists():
            return cand
    return None


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class PostgresCluster:
    """One temporary cluster; ``url(db)`` gives a SQLAlchemy URL for a database in it."""

    def __init__(self, pg_bin: Path) -> None:
        self.pg_bin = pg_bin
        self.root = Path(tempfile.mkdtemp(prefix="medvlm-pg-"))
        self.data = self.root / "data"
        self.port = _free_port()
        self._as_postgres = os.geteuid() == 0

    def _run(self, *args: str) -> subprocess.CompletedProcess:
        cmd = list(args)
        if self._as_postgres:
            cmd = ["runuser", "-u", "postgres", "--", *cmd]
        return subprocess.run(cmd, cwd=self.root, capture_output=True, text=True, timeout=60, check=False)

    def start(self) -> PostgresCluster:
        """Create and start the cluster; raises RuntimeError with the tool's output on failure."""
        if self._as_postgres:
            shutil.chown(self.root, "postgres", "postgres")
        os.chmod(self.root, 0o700)
        out = self._run(
            str(self.pg_bin / "initdb"),
            "-D", str(self.data), "-U", "postgres", "-A", "trust", "-E", "UTF8", "--locale=C", "--no-sync",
        )  # fmt: skip
        if out.returncode != 0:
            raise RuntimeError(f"initdb failed: {out.stderr.strip()[-2000:]}")
        options = (
            f"-c listen_addresses=127.0.0.1 -p {self.port} -k {self.root} -c fsync=off -c max_connections=60"
        )
        out = self._run(
            str(self.pg_bin / "pg_ctl"),
            "-D",
            str(self.data),
            "-l",
            str(self.root / "log"),
            "-w",
            "-o",
            options,
            "start",
        )
        if out.returncode != 0:
            log = (
                (self.root / "log").read_text(errors="replace")[-2000:]
                if (self.root / "log").exists()
                else ""
            )
            raise RuntimeError(f"pg_ctl start failed: {out.stderr.strip()[-1000:]} {log}")
        return self

    def url(self, database: str = "postgres") -> str:
        """SQLAlchemy URL of ``database`` in this cluster."""
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/{database}"

    def create_database(self) -> str:
        """Create a fresh empty database and return its URL."""
        import psycopg

        name = "t_" + uuid.uuid4().hex[:12]
        with psycopg.connect(
            f"host=127.0.0.1 port={self.port} user=postgres dbname=postgres", autocommit=True
        ) as c:
            c.execute(f"CREATE DATABASE {name}")
        return self.url(name)

    def stop(self) -> None:
        """Stop the cluster (fast shutdown, then SIGKILL by PID) and remove its folder."""
        try:
            self._run(str(self.pg_bin / "pg_ctl"), "-D", str(self.data), "-m", "fast", "-w", "-t", "10", "stop")
        except subprocess.TimeoutExpired:
            pass
        pid_file = self.data / "postmaster.pid"
        if pid_file.exists():
            try:
                os.kill(int(pid_file.read_text().splitlines()[0]), signal.SIGKILL)
            except (ValueError, IndexError, ProcessLookupError, PermissionError):
                pass
        shutil.rmtree(self.root, ignore_errors=True)


def start_cluster_or_skip_reason() -> tuple[PostgresCluster | None, str]:
    """Start a cluster; return (cluster, "") or (None, reason to skip)."""
    pg_bin = find_pg_bin()
    if pg_bin is None:
        return (
            None,
            "PostgreSQL server binaries absent (/usr/lib/postgresql/*/bin): apt-get install postgresql",
        )
    if os.geteuid() == 0 and shutil.which("runuser") is None:
        return None, "running as root without runuser: cannot start initdb as postgres"
    try:
        return PostgresCluster(pg_bin).start(), ""
    except (RuntimeError, OSError, subprocess.TimeoutExpired, KeyError, LookupError) as exc:
        return None, f"could not start a throwaway PostgreSQL cluster: {exc}"
