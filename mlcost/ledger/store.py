"""The one module that owns the ledger's database engines (STYLE.md habit 12).

- One engine per (target, read-only or not, process), made on first use and kept: a metered step
  in a long-lived worker reuses its pooled connection instead of paying a connect per write.
- PostgreSQL: ``connect_timeout`` of :data:`CONNECT_TIMEOUT_S` and a statement timeout on the
  write path, a pre-ping that drops connections a restarted server closed; never a retry with
  backoff: a step fails fast into its outbox.
- SQLite: ``BEGIN IMMEDIATE`` for every write transaction (the write lock is taken up front, so
  two writers queue on the busy timeout instead of deadlocking on a lock upgrade), WAL journal,
  ``synchronous=FULL``. Read-only opening uses ``mode=ro`` (and ``immutable=1`` where the file's
  folder cannot be written, as for a user reading a ledger they do not own) and never creates,
  migrates or writes anything.
- Before the first write to a target, the schema is checked (:mod:`mlcost.ledger.migrate`): a file
  or database that is not a ledger is refused and left untouched, one from a newer mlcost is
  refused naming the fix, an older one is migrated once under the write lock.

Every message names the target by :attr:`Target.masked`: no password is ever printed.
"""

from __future__ import annotations

import functools
import logging
import os
import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from sqlalchemy import Connection, Engine, create_engine, event, func, select, text
from sqlalchemy.exc import DBAPIError, SQLAlchemyError
from sqlalchemy.pool import NullPool

from mlcost.errors import ConfigError
from mlcost.ledger import migrate
from mlcost.ledger.schema import TABLES, series, step_figures, step_records, synced
from mlcost.ledger.target import SQLITE, Target
from mlcost.step import STATUS_RUNNING

log = logging.getLogger(__name__)

CONNECT_TIMEOUT_S = 3  # libpq's connect_timeout (whole seconds, at least 2)
WRITE_STATEMENT_TIMEOUT_MS = 3000  # a step's write never waits on a lock longer than this
SQLITE_BUSY_TIMEOUT_S = 30.0
_ADVISORY_KEY = 0x6D6C636F7374  # "mlcost": serialises schema migrations on PostgreSQL
_SQLITE_MAGIC = b"SQLite format 3\x00"

_engines: dict[tuple[str, bool, bool, int], Engine] = {}
_engines_lock = threading.Lock()
_verified: set[tuple] = set()  # stores whose schema this process has checked (see Store.open)


class LedgerUnavailable(Exception):
    """The shared ledger could not be reached or written (connect, timeout, server gone). On the
    step path it is logged and the step stays in the outbox; a reader turns it into ConfigError."""


def engine(target: Target, *, readonly: bool = False, durable: bool = True) -> Engine:
    """The process's engine for ``target`` (made once per process: pools do not survive a fork).

    ``durable=False`` (SQLite only): commits without an fsync (``synchronous=NORMAL`` in WAL mode:
    they survive the process being killed, not the machine losing power). The outbox of a shared
    ledger writes so, and makes a row durable itself when its delivery fails."""
    key = (target.url, readonly, durable or target.backend != SQLITE, os.getpid())
    eng = _engines.get(key)
    if eng is None:
        with _engines_lock:
            eng = _engines.get(key)
            if eng is None:
                eng = _make_engine(target, readonly, durable)
                _engines[key] = eng
    return eng


def dispose_all() -> None:
    """Close every pooled connection of this process (tests that stop a server call it)."""
    with _engines_lock:
        for eng in _engines.values():
            eng.dispose()
        _engines.clear()
        _verified.clear()


def _make_engine(target: Target, readonly: bool, durable: bool = True) -> Engine:
    if target.backend == SQLITE:
        return _sqlite_engine(target, readonly, durable)
    try:
        import psycopg  # noqa: F401
    except ImportError:
        raise ConfigError(
            f"the ledger {target.masked} is PostgreSQL, which needs psycopg 3: pip install 'mlcost[postgres]'",
            field=target.field_name,
        ) from None
    options = "-c default_transaction_read_only=on" if readonly else (
        f"-c statement_timeout={WRITE_STATEMENT_TIMEOUT_MS} -c lock_timeout={WRITE_STATEMENT_TIMEOUT_MS}"
    )
    try:
        return create_engine(
            target.url,
            connect_args={"connect_timeout": CONNECT_TIMEOUT_S, "options": options, "application_name": "mlcost"},
            pool_pre_ping=True,
            pool_size=int(os.environ.get("MLCOST_LEDGER_POOL_SIZE", "2")),
            max_overflow=int(os.environ.get("MLCOST_LEDGER_POOL_OVERFLOW", "4")),
            pool_recycle=int(os.environ.get("MLCOST_LEDGER_POOL_RECYCLE_S", "1800")),
            hide_parameters=True,
        )
    except (SQLAlchemyError, ValueError) as e:
        msg = f"malformed ledger URL {target.masked}: {_clean(e, target)}"
        raise ConfigError(msg, field=target.field_name) from None


def _sqlite_engine(target: Target, readonly: bool, durable: bool = True) -> Engine:
    path = target.path
    assert path is not None
    if readonly:
        immutable = not os.access(path.parent, os.W_OK) or not os.access(path, os.W_OK)
        uri = f"file:{path}?mode=ro" + ("&immutable=1" if immutable else "")

        def creator() -> sqlite3.Connection:
            return sqlite3.connect(uri, uri=True, timeout=SQLITE_BUSY_TIMEOUT_S, check_same_thread=False)

        eng = create_engine("sqlite+pysqlite://", creator=creator, poolclass=NullPool)
    else:
        # pooled (one or two connections a process): closing the last connection to a WAL file
        # checkpoints and removes the WAL, which would cost every write an extra fsync
        eng = create_engine(
            target.url, connect_args={"timeout": SQLITE_BUSY_TIMEOUT_S, "check_same_thread": False},
            pool_size=2, max_overflow=8,
        )  # fmt: skip
        sync = "FULL" if durable else "NORMAL"

        @event.listens_for(eng, "connect")
        def _on_connect(dbapi_conn: Any, _record: Any) -> None:
            dbapi_conn.isolation_level = None  # we say BEGIN ourselves (below)
            dbapi_conn.execute(f"PRAGMA synchronous={sync}")

        @event.listens_for(eng, "begin")
        def _on_begin(conn: Connection) -> None:
            conn.exec_driver_sql("BEGIN IMMEDIATE")

    return eng


def _switch_to_wal(eng: Engine) -> None:
    """Put a new SQLite ledger in WAL mode, whoever else is making it at the same moment.

    The switch reads the file, then asks for its write lock while holding that read lock. When
    another process holds the write lock then (eight workers starting on one new file), SQLite
    answers SQLITE_BUSY at once rather than waiting out the busy timeout, since a reader waiting
    for a writer can deadlock. So the loser waits here and asks again, within the same
    :data:`SQLITE_BUSY_TIMEOUT_S`; once the winner has switched, the pragma is a no-op."""
    deadline = time.monotonic() + SQLITE_BUSY_TIMEOUT_S
    pause = 0.005
    while True:
        raw = eng.raw_connection()  # outside a transaction: WAL cannot be switched in one
        try:
            raw.driver_connection.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as e:
            if str(e) != "database is locked" or time.monotonic() + pause > deadline:  # SQLITE_BUSY's text
                raise
        finally:
            raw.close()
        _wait_for_peer(pause)
        pause = min(pause * 2, 0.25)


def _wait_for_peer(seconds: float) -> None:
    """A pause while another process holds the file's write lock (a test's seam for that process)."""
    time.sleep(seconds)


def _clean(e: BaseException, target: Target) -> str:
    """The driver's message, first line, with the password masked."""
    msg = str(getattr(e, "orig", None) or e).strip().splitlines()
    first = msg[0] if msg else type(e).__name__
    from mlcost.ledger.target import mask

    first = mask(first)
    pw = _password(target)
    return first.replace(pw, "***") if pw else first


def _password(target: Target) -> str | None:
    from urllib.parse import unquote, urlsplit

    try:
        pw = urlsplit(target.url).password
    except ValueError:
        return None
    return unquote(pw) if pw else None


def check_file(target: Target, *, must_exist: bool) -> None:
    """A SQLite target must be a SQLite file (or absent, for a writer): a directory, a text file,
    a truncated or random one get a ConfigError naming it, before SQLite ever opens it."""
    path = target.path
    assert path is not None
    if path.is_dir():
        raise ConfigError(f"{path} is a directory, not a ledger file", field=target.field_name)
    if not path.exists():
        if must_exist:
            raise ConfigError(f"no ledger at {path} (set MLCOST_LEDGER or pass --ledger)", field=target.field_name)
        return
    try:
        with path.open("rb") as fh:
            head = fh.read(100)
    except OSError as e:
        raise ConfigError(f"cannot read the ledger {path}: {e.strerror or e}", field=target.field_name) from None
    if not head and not must_exist:
        return  # an empty file: SQLite makes it a database
    if not head.startswith(_SQLITE_MAGIC) or len(head) < 100:
        kind = "an empty file" if not head else "not a SQLite database"
        raise ConfigError(f"{path} is {kind}, not an mlcost ledger", field=target.field_name)
    page_size = int.from_bytes(head[16:18], "big")
    page_size = 65536 if page_size == 1 else page_size
    pages = int.from_bytes(head[28:32], "big")
    if head[24:28] == head[92:96] and pages and path.stat().st_size < pages * page_size:
        raise ConfigError(
            f"{path} is damaged: truncated to {path.stat().st_size} bytes of {pages * page_size}",
            field=target.field_name,
        )


class Store:
    """One ledger database (a SQLite file or a PostgreSQL database) behind SQLAlchemy Core.

    ``readonly`` stores never create, migrate or write; a writable store checks the schema on its
    first use (creating or migrating an mlcost ledger, refusing anything else)."""

    def __init__(self, target: Target, *, readonly: bool = False, durable: bool = True) -> None:
        self.target = target
        self.readonly = readonly
        self.durable = durable
        self._ready = False

    def __repr__(self) -> str:
        return f"Store({self.target.masked!r}, readonly={self.readonly})"

    @property
    def engine(self) -> Engine:
        return engine(self.target, readonly=self.readonly, durable=self.durable)

    def _identity(self) -> tuple:
        """What the schema check of this process is valid for: the target, and for a file the
        file itself (deleted or replaced, it is checked again)."""
        if self.target.path is None:
            return (self.target.url, self.readonly, os.getpid())
        try:
            st = self.target.path.stat()
        except OSError:
            return (self.target.url, self.readonly, os.getpid(), None)
        return (self.target.url, self.readonly, os.getpid(), st.st_dev, st.st_ino)

    # opening ----------------------------------------------------------------------------------
    def open(self) -> migrate.SchemaState:
        """Check (and, for a writer, create or migrate) the schema once; returns the state found.

        Raises ConfigError for a file that is not a ledger, a newer schema, or (read-only) a
        missing or outdated one; LedgerUnavailable when a server cannot be reached."""
        identity = self._identity()
        if identity in _verified:
            self._ready = True
            return migrate.SchemaState("mlcost", migrate.HEAD)
        if self.target.backend == SQLITE:
            check_file(self.target, must_exist=self.readonly)
        with self._errors():
            if self.readonly:
                with self.engine.connect() as conn:
                    st = migrate.state(conn)
                if st.kind == "empty":
                    raise ConfigError(f"{self.target.masked} has no ledger tables yet", field=self.target.field_name)
                migrate.refuse(st, self.target.masked, self.target.field_name, readonly=True)
            else:
                st = self._prepare()
        self._ready = True
        _verified.add(self._identity())
        return st

    def _prepare(self) -> migrate.SchemaState:
        if self.target.backend == SQLITE:
            # decide on a read-only connection first: a foreign file must stay byte for byte as it
            # was, and even switching the journal to WAL rewrites its header
            assert self.target.path is not None
            if self.target.path.exists() and self.target.path.stat().st_size:
                with engine(self.target, readonly=True).connect() as conn:
                    st = migrate.state(conn)
                migrate.refuse(st, self.target.masked, self.target.field_name)
                if st.current:
                    return st
            else:
                self.target.path.parent.mkdir(parents=True, exist_ok=True)
        with self.engine.connect() as conn:
            st = migrate.state(conn)
            migrate.refuse(st, self.target.masked, self.target.field_name)
            if st.current:
                return st
        if self.target.backend == SQLITE:
            _switch_to_wal(self.engine)
        with self.engine.begin() as conn:  # the write lock (BEGIN IMMEDIATE / advisory lock)
            if self.target.backend != SQLITE:
                # a migration may build an index over millions of rows: no write-path timeouts here
                # (a step waiting on a peer's migration is still bounded by its delivery wait)
                conn.exec_driver_sql("SET LOCAL statement_timeout = 0")
                conn.exec_driver_sql("SET LOCAL lock_timeout = 0")
                conn.execute(select(func.pg_advisory_xact_lock(_ADVISORY_KEY)))
            st = migrate.state(conn)  # again, under the lock: another process may have done it
            migrate.refuse(st, self.target.masked, self.target.field_name)
            if not st.current:
                log.info("mlcost: ledger %s: %s; migrating to %s", self.target.masked, st.describe(), migrate.HEAD)
                migrate.upgrade(conn, st)
        return st

    def _ensure(self) -> None:
        if not self._ready:
            self.open()

    @contextmanager
    def _errors(self) -> Iterator[None]:
        """Driver errors -> LedgerUnavailable (server away) or ConfigError (a damaged file)."""
        try:
            yield
        except (ConfigError, LedgerUnavailable):
            raise
        except (DBAPIError, sqlite3.Error) as e:
            if self.target.backend == SQLITE:
                raise ConfigError(
                    f"cannot use the ledger {self.target.masked}: {_clean(e, self.target)}",
                    field=self.target.field_name,
                ) from None
            raise LedgerUnavailable(f"ledger {self.target.masked}: {_clean(e, self.target)}") from None

    @contextmanager
    def begin(self) -> Iterator[Connection]:
        """One transaction on the ledger (write lock on SQLite) with errors mapped as in :meth:`open`."""
        self._ensure()
        with self._errors(), self.engine.begin() as conn:
            yield conn

    @contextmanager
    def connect(self) -> Iterator[Connection]:
        """A connection for reading (each statement in its own implicit transaction)."""
        self._ensure()
        with self._errors(), self.engine.connect() as conn:
            yield conn

    # writing ----------------------------------------------------------------------------------
    def upsert(self, figures: dict[str, Any], record: str, series_blob: bytes | None = None) -> bool:
        """Insert or advance one step's row; False when the row was already sealed or newer.

        A sealed row (any status but running) never changes again; a running row is replaced by
        a sealed one, or by a checkpoint whose heartbeat is not older than its own. So a late
        checkpoint, a replay from an outbox or two writers racing can never move a row back."""
        with self.begin() as conn:
            return self.upsert_on(conn, figures, record, series_blob)

    def upsert_on(self, conn: Connection, figures: dict[str, Any], record: str, series_blob: bytes | None) -> bool:
        stmts = _upserts(conn.dialect.name, tuple(figures))
        if conn.execute(stmts["figures"], figures).first() is None:
            return False
        step_id = figures["step_id"]
        conn.execute(stmts["record"], {"step_id": step_id, "record": record})
        if series_blob is not None:
            conn.execute(stmts["series"], {"step_id": step_id, "data": series_blob})
        return True

    def mark_synced(self, step_id: str, sink: str, remote_id: str | None, at: str) -> None:
        with self.begin() as conn:
            conn.execute(
                _upserts(conn.dialect.name, ())["synced"],
                {"step_id": step_id, "sink": sink, "remote_id": remote_id, "synced_at": at},
            )

    def _insert(self, table: Any) -> Any:
        if self.engine.dialect.name == "postgresql":
            from sqlalchemy.dialects.postgresql import insert
        else:
            from sqlalchemy.dialects.sqlite import insert
        return insert(table)

    # reading ----------------------------------------------------------------------------------
    def counts(self) -> dict[str, int]:
        with self.connect() as conn:
            return {t: int(conn.execute(text(f"SELECT COUNT(*) FROM {t}")).scalar() or 0) for t in TABLES}

    def raw_sqlite(self) -> sqlite3.Connection:
        """A plain ``sqlite3`` connection to a SQLite ledger, for the readers written against it
        before the query layer (they use ``?`` parameters and ``rowid``)."""
        assert self.target.backend == SQLITE and self.target.path is not None
        self._ensure()
        if self.readonly:
            immutable = not os.access(self.target.path.parent, os.W_OK) or not os.access(self.target.path, os.W_OK)
            uri = f"file:{self.target.path}?mode=ro" + ("&immutable=1" if immutable else "")
            return sqlite3.connect(uri, uri=True, timeout=SQLITE_BUSY_TIMEOUT_S)
        return sqlite3.connect(self.target.path, timeout=SQLITE_BUSY_TIMEOUT_S)


@functools.cache
def _upserts(dialect: str, columns: tuple[str, ...]) -> dict[str, Any]:
    """The upserts of one dialect, built once (a step writes a few times; building the statement
    cost more than running it). Parameters come at execution."""
    if dialect == "postgresql":
        from sqlalchemy.dialects.postgresql import insert
    else:
        from sqlalchemy.dialects.sqlite import insert
    out: dict[str, Any] = {}
    if columns:
        ins = insert(step_figures)
        ex, cur = ins.excluded, step_figures.c
        newer = (ex.status != STATUS_RUNNING) | cur.heartbeat_at.is_(None) | (ex.heartbeat_at >= cur.heartbeat_at)
        out["figures"] = ins.on_conflict_do_update(
            index_elements=["step_id"],
            set_={c: ex[c] for c in columns if c != "step_id"},
            where=(cur.status == STATUS_RUNNING) & newer,
        ).returning(step_figures.c.step_id)  # psycopg's rowcount is -1 for an upsert: ask for the row
    rec = insert(step_records)
    out["record"] = rec.on_conflict_do_update(index_elements=["step_id"], set_={"record": rec.excluded.record})
    ser = insert(series)
    out["series"] = ser.on_conflict_do_update(index_elements=["step_id"], set_={"data": ser.excluded.data})
    syn = insert(synced)
    out["synced"] = syn.on_conflict_do_update(
        index_elements=["step_id", "sink"],
        set_={"remote_id": syn.excluded.remote_id, "synced_at": syn.excluded.synced_at},
    )
    return out
