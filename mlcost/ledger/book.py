"""``Ledger``: the one object steps write to and older readers read from.

Where ``MLCOST_LEDGER`` is a path, the ledger is that SQLite file, as it always was. Where it is a
database URL, the ledger is that shared database, and the machine's local file
(``$MLCOST_OUTBOX``, else ``~/.mlcost/ledger.db``) is its outbox:

1. every write goes to the local file first (a step is never lost because a server is away);
2. then to the shared database, waiting at most :data:`SHARED_WAIT_S` seconds (connect included);
   what was delivered is marked in the outbox's ``synced`` table (sink :data:`SHARED_SINK`, with
   the row's version), what was not stays pending;
3. ``mlcost sync`` (and, in the background, a later step on the same machine) drains what is
   pending (:mod:`mlcost.ledger.outbox`).

No exception from the shared database reaches a step: it is logged once per failure and the step
goes on. The write is an upsert on ``step_id`` that never moves a row back (see
:meth:`mlcost.ledger.store.Store.upsert`), so delivering twice, or late, changes nothing.

Importing this module is cheap (no SQLAlchemy): the store is made on first use.
"""

from __future__ import annotations

import json
import logging
import os
import sqlite3
import threading
import zlib
from collections.abc import Iterator
from contextlib import closing, contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mlcost.errors import ConfigError
from mlcost.ledger import target as targets
from mlcost.step import STATUS_RUNNING, StepCost

if TYPE_CHECKING:  # pragma: no cover
    from mlcost.ledger.store import Store

log = logging.getLogger(__name__)

SHARED_SINK = "ledger"  # the outbox's ``synced`` rows for deliveries to the shared ledger
SHARED_WAIT_S = 4.0
"""The longest a step's start, checkpoint or end waits for the shared ledger (connect included;
``$MLCOST_LEDGER_WAIT_S`` overrides it). Past it, the row stays in the outbox."""

USER_TAG_COLUMNS = ("team", "project", "model", "workload")
_stuck: dict[str, threading.Thread] = {}  # a delivery past its wait, per target: no second one piles up


def ledger_path(path: str | os.PathLike[str] | None = None) -> Path:
    """The local SQLite file of the ledger named by ``path`` / ``$MLCOST_LEDGER``: the file itself,
    or, for a database URL, the outbox."""
    t = targets.resolve(path)
    return t.path if t.path is not None else targets.outbox_path()


def figures_row(step: StepCost, heartbeat_at: str) -> tuple[dict[str, Any], str]:
    """The flat figures of ``step`` (for SQL) and its JSON record."""
    from mlcost.ledger.schema import FIGURE_COLUMNS, history_key

    record = step.model_dump(mode="json")
    row = {k: record.get(k) for k in FIGURE_COLUMNS if k in record}
    row.update({k: step.tags.get(k) for k in USER_TAG_COLUMNS})
    row["host_cpu_mean_pct"] = step.host.cpu_mean_pct
    row["simulated"] = int(step.simulated)
    row["heartbeat_at"] = heartbeat_at
    row["history_key"] = history_key(row)
    return row, json.dumps(record, separators=(",", ":"))


def version(status: str, heartbeat_at: str | None) -> str:
    """What the outbox remembers of a delivered row: a newer state of it is pending again."""
    return f"{status}@{heartbeat_at}"


def _wait_s() -> float:
    raw = os.environ.get("MLCOST_LEDGER_WAIT_S")
    try:
        return float(raw) if raw else SHARED_WAIT_S
    except ValueError:
        return SHARED_WAIT_S


class Ledger:
    """The ledger named by ``path`` (a path or URL; default ``$MLCOST_LEDGER``, else
    ``~/.mlcost/ledger.db``).

    ``readonly``: for reports and gates; nothing is created, migrated or written, and a URL is
    read from the shared database itself. Otherwise the local file is created on first write."""

    def __init__(
        self, path: str | os.PathLike[str] | None = None, *, readonly: bool = False, field_name: str = "--ledger"
    ) -> None:
        self.target = targets.resolve(path, field_name=field_name)
        self.readonly = readonly
        self.path: Path = self.target.path if self.target.path is not None else targets.outbox_path()
        self._local: Store | None = None
        self._shared: Store | None = None

    def __repr__(self) -> str:
        return f"Ledger({self.where!r})"

    @property
    def where(self) -> str:
        """The ledger for messages: its path, or its URL with the password masked."""
        return self.target.masked

    @property
    def shared(self) -> bool:
        return self.target.shared

    # stores -----------------------------------------------------------------------------------
    @property
    def local(self) -> Store:
        """The local SQLite file: the ledger itself, or the outbox of a shared one."""
        if self._local is None:
            from mlcost.ledger.store import Store

            t = self.target if not self.target.shared else targets.resolve(self.path, field_name=targets.ENV_OUTBOX)
            # an outbox commits without an fsync: what reached the shared database is durable there,
            # and what did not is made durable here when its delivery fails (see _deliver)
            self._local = Store(t, readonly=self.readonly, durable=not self.target.shared)
        return self._local

    @property
    def remote(self) -> Store | None:
        """The shared database, or None for a file ledger."""
        if self._shared is None and self.target.shared:
            from mlcost.ledger.store import Store

            self._shared = Store(self.target, readonly=self.readonly)
        return self._shared

    @property
    def store(self) -> Store:
        """Where readers read: the shared database when there is one, else the file."""
        return self.remote or self.local

    def open(self) -> Ledger:
        """Check the store now (readers: before printing anything); ConfigError when it is not a
        usable ledger or cannot be reached, naming the flag or variable that named it."""
        from mlcost.ledger.store import LedgerUnavailable

        try:
            self.store.open()
        except LedgerUnavailable as e:
            raise ConfigError(f"cannot reach the ledger: {e}", field=self.target.field_name) from None
        return self

    # writing ----------------------------------------------------------------------------------
    def write(self, step: StepCost, *, series: dict[str, list[tuple[int, float]]] | None = None) -> None:
        """Insert or refresh ``step`` unless its row is already sealed (a final status): in the
        local file first, then (bounded) in the shared database."""
        from mlcost.ledger.schema import now_iso

        if self.readonly:
            raise ConfigError(f"the ledger {self.where} was opened read-only", field=self.target.field_name)
        row, record = figures_row(step, now_iso())
        blob = zlib.compress(json.dumps(series, separators=(",", ":")).encode()) if series else None
        if self.remote is None:
            self.local.upsert(row, record, blob)
            return
        try:
            written = self.local.upsert(row, record, blob)
        except Exception as e:  # a full disk, a refused outbox file: the shared database may still take it
            if not self._deliver(row, record, blob, mark=False):
                raise
            log.error("mlcost: step %s reached the ledger %s but not the outbox %s: %s",
                      row["step_id"], self.where, self.path, e)  # fmt: skip
            return
        if written and not self._deliver(row, record, blob):
            self._make_durable(row, record, blob)

    def _make_durable(self, row: dict[str, Any], record: str, blob: bytes | None) -> None:
        """The same row again through a synchronous=FULL connection: its commit fsyncs the WAL,
        and with it every earlier commit of the outbox."""
        from mlcost.ledger.store import Store

        Store(self.local.target, durable=True).upsert(row, record, blob)

    def _deliver(self, row: dict[str, Any], record: str, blob: bytes | None, *, mark: bool = True) -> bool:
        """Write one row to the shared ledger within the wait; True when it got there (and, with
        ``mark``, note that in the outbox)."""
        key = self.target.url
        stuck = _stuck.get(key)
        if stuck is not None and stuck.is_alive():
            log.warning("mlcost: ledger %s still not answering; step %s waits in the outbox %s",
                        self.where, row["step_id"], self.path)  # fmt: skip
            return False
        outcome: dict[str, Any] = {}
        thread = threading.Thread(
            target=self._deliver_now, args=(row, record, blob, outcome, mark), name="mlcost-ledger", daemon=True
        )
        thread.start()
        thread.join(_wait_s())
        if thread.is_alive():
            _stuck[key] = thread
            log.warning("mlcost: ledger %s did not answer within %.0fs; step %s waits in the outbox %s "
                        "(`mlcost sync` delivers it)", self.where, _wait_s(), row["step_id"], self.path)  # fmt: skip
            return False
        if "error" in outcome:
            log.warning(
                "mlcost: could not write step %s to the ledger %s (%s); it waits in the outbox %s "
                "(`mlcost sync` delivers it)",
                row["step_id"], self.where, outcome["error"], self.path,
            )  # fmt: skip
            return False
        if mark:
            from mlcost.ledger.outbox import drain_in_background

            drain_in_background(self)  # the database answers: deliver what an outage left behind
        return True

    def _deliver_now(
        self, row: dict[str, Any], record: str, blob: bytes | None, outcome: dict[str, Any], mark: bool
    ) -> None:
        from mlcost.ledger.schema import now_iso

        assert self.remote is not None
        try:
            self.remote.upsert(row, record, blob)
        except Exception as e:
            outcome["error"] = str(e) or type(e).__name__
            return
        if mark:
            try:
                delivered = version(row["status"], row["heartbeat_at"])
                self.local.mark_synced(row["step_id"], SHARED_SINK, delivered, now_iso())
            except Exception as e:  # delivered all the same: a later drain resends it, which changes nothing
                log.warning("mlcost: step %s is in the ledger %s; the outbox %s could not note it: %s",
                            row["step_id"], self.where, self.path, e)  # fmt: skip

    # alerts (the ledger is :class:`mlcost.alerts.AlertBook`) ------------------------------------
    def claim_alert(self, alert: Any) -> bool:
        """Claim ``alert`` where every machine sees it (the shared database, within the wait), else
        in the local file: de-duplicated per machine while the shared ledger is away."""
        from mlcost.ledger import runtime

        return self.on_shared(lambda store: runtime.claim_alert(store, alert.key, alert.kind, alert.body()))

    def record_alert_delivery(self, key: str, *, delivered: bool, error: str | None) -> None:
        from mlcost.ledger import runtime

        self.on_shared(lambda store: runtime.record_alert_delivery(store, key, delivered=delivered, error=error))

    def undelivered_alerts(self) -> list[tuple[str, str, dict[str, Any]]]:
        from mlcost.ledger import runtime

        return self.on_shared(runtime.undelivered_alerts)

    def on_shared(self, work: Any) -> Any:
        """``work(store)`` on the ledger every machine shares: the shared database within the wait
        (skipped at once while a delivery to it is stuck), else the local file. For the small reads
        and claims of a running step (a job's peers, a window's spend, an alert's key)."""
        remote = self.remote
        stuck = _stuck.get(self.target.url) if remote is not None else None
        if remote is not None and not (stuck is not None and stuck.is_alive()):
            outcome: dict[str, Any] = {}

            def run() -> None:
                try:
                    outcome["value"] = work(remote)
                except Exception as e:
                    outcome["error"] = e

            thread = threading.Thread(target=run, name="mlcost-ledger-alert", daemon=True)
            thread.start()
            thread.join(_wait_s())
            if "value" in outcome:
                return outcome["value"]
            log.warning("mlcost: ledger %s unavailable for alerts (%s); using the outbox %s",
                        self.where, outcome.get("error", "no answer"), self.path)  # fmt: skip
        return work(self.local)

    def mark_synced(self, step_id: str, sink: str, remote_id: str | None) -> None:
        from mlcost.ledger.schema import now_iso

        self.local.mark_synced(step_id, sink, remote_id, now_iso())

    # reading (the readers' query layer replaces these) ---------------------------------------
    @contextmanager
    def connect(self, *, bulk: bool = False) -> Iterator[Any]:
        """A DBAPI connection to the store readers read (``sqlite3`` for a file: ``?`` parameters,
        ``sqlite3.Row`` rows unless ``bulk``)."""
        store = self.store
        if store.target.backend == targets.SQLITE:
            with closing(store.raw_sqlite()) as conn:
                conn.row_factory = None if bulk else sqlite3.Row
                with conn:
                    yield conn
            return
        store._ensure()
        raw = store.engine.raw_connection()
        try:
            yield raw.driver_connection
            raw.commit()
        finally:
            raw.close()

    def rows(self, sql: str, args: tuple[Any, ...] | dict[str, Any] = ()) -> list[Any]:
        """A read-only query over the ``steps`` view (``?`` parameters); rows by name."""
        if self.store.target.backend == targets.SQLITE:
            with self.connect() as conn:
                return conn.execute(sql, args).fetchall()
        from sqlalchemy import text

        params = args
        if isinstance(args, tuple):
            parts = sql.split("?")
            sql = "".join(p + (f":p{i}" if i < len(parts) - 1 else "") for i, p in enumerate(parts))
            params = {f"p{i}": a for i, a in enumerate(args)}
        with self.store.connect() as conn:
            return [r._mapping for r in conn.execute(text(sql), params)]

    def get(self, step_id: str) -> StepCost | None:
        rows = self.rows("SELECT record FROM steps WHERE step_id = ?", (step_id,))
        return StepCost.model_validate_json(rows[0]["record"]) if rows else None

    def steps(
        self,
        *,
        run_key: str | None = None,
        since: str | None = None,
        until: str | None = None,
        include_running: bool = True,
    ) -> list[StepCost]:
        """Steps in start order, optionally of one run and/or started in [since, until) (the query
        layer's one period filter), as recorded; ``include_running=False`` keeps the counted ones
        (sealed, and lost)."""
        from sqlalchemy import select

        from mlcost.ledger.queries import counted, figures, in_period, records
        from mlcost.period import Period

        stmt = (
            select(records.c.record)
            .select_from(figures.join(records, records.c.step_id == figures.c.step_id))
            .where(in_period(Period(since, until)))
            .order_by(figures.c.started_at, figures.c.step_id)
        )
        if run_key is not None:
            stmt = stmt.where(figures.c.run_key == run_key)
        if not include_running:
            stmt = stmt.where(counted())
        with self.store.connect() as conn:
            return [StepCost.model_validate_json(r) for r in conn.execute(stmt).scalars()]

    def series(self, step_id: str) -> dict[str, list[tuple[int, float]]]:
        """A step's time series, from the local file (where every step of this machine is)."""
        with self.local.connect() as conn:
            from sqlalchemy import select

            from mlcost.ledger.schema import series

            data = conn.execute(select(series.c.data).where(series.c.step_id == step_id)).scalar()
        if data is None:
            return {}
        return {k: [tuple(p) for p in v] for k, v in json.loads(zlib.decompress(data)).items()}

    def remote_id(self, step_id: str, sink: str) -> str | None:
        from sqlalchemy import select

        from mlcost.ledger.schema import synced

        with self.local.connect() as conn:
            return conn.execute(
                select(synced.c.remote_id).where(synced.c.step_id == step_id, synced.c.sink == sink)
            ).scalar()

    def unsynced(self, sink: str) -> list[StepCost]:
        """Sealed steps of the local file that ``sink`` has not acknowledged yet, oldest first."""
        from sqlalchemy import select

        from mlcost.ledger.schema import step_figures, step_records, synced

        done = select(synced.c.step_id).where(synced.c.sink == sink)
        q = (
            select(step_records.c.record)
            .join(step_figures, step_figures.c.step_id == step_records.c.step_id)
            .where(step_figures.c.status != STATUS_RUNNING, step_figures.c.step_id.not_in(done))
            .order_by(step_figures.c.started_at)
        )
        with self.local.connect() as conn:
            return [StepCost.model_validate_json(r) for r in conn.execute(q).scalars()]


def open_ledger(path: str | os.PathLike[str] | None = None, *, field_name: str = "--ledger") -> Ledger:
    """A ledger opened for reading and checked: ConfigError (exit 2 from the CLI) when it is missing,
    not a ledger, damaged, newer than this mlcost, or unreachable; never creates or writes."""
    return Ledger(path, readonly=True, field_name=field_name).open()
