"""The local ledger: every step, written first, before anything remote is tried.

A SQLite file (WAL journal, synchronous=FULL) rather than a log of lines, because reports and the CI
gate aggregate millions of steps with SQL, and many Airflow task processes write to it at once.
Each step's row is added when the step starts (status ``running``), refreshed by checkpoints while
it runs, and sealed when it ends; a sealed row is never changed again, rows are never deleted. So a
step killed half-way (even by SIGKILL) still leaves its record with the usage of its last checkpoint.
"""

from __future__ import annotations

import json
import logging
import os
import sqlite3
import zlib
from collections.abc import Iterator
from contextlib import closing, contextmanager
from pathlib import Path
from typing import Any

from mlcost.names import ENV_LEDGER
from mlcost.step import STATUS_RUNNING, StepCost

log = logging.getLogger(__name__)

DEFAULT_LEDGER = Path.home() / ".mlcost" / "ledger.db"

# Flat columns for SQL; the full record (devices, host, breach, context) is kept as JSON beside them.
COLUMNS: dict[str, str] = {
    "step_id": "TEXT PRIMARY KEY",
    "name": "TEXT NOT NULL",
    "status": "TEXT NOT NULL",
    "source": "TEXT NOT NULL",
    "started_at": "TEXT NOT NULL",
    "ended_at": "TEXT",
    "duration_s": "REAL",
    "gpus": "INTEGER",
    "gpu_type": "TEXT",
    "pricing": "TEXT",
    "team": "TEXT",
    "project": "TEXT",
    "model": "TEXT",
    "workload": "TEXT",
    "run_key": "TEXT",
    "total_usd": "REAL",
    "compute_usd": "REAL",
    "idle_usd": "REAL",
    "energy_usd": "REAL",
    "energy_kwh": "REAL",
    "spot_whatif_usd": "REAL",
    "gpu_hours": "REAL",
    "util_mean_pct": "REAL",
    "mem_peak_gb": "REAL",
    "idle_fraction": "REAL",
    "host_cpu_mean_pct": "REAL",
    "telemetry": "TEXT",
    "simulated": "INTEGER",
    "samples": "INTEGER",
    "record": "TEXT NOT NULL",  # in its own table (step_records); ``steps`` joins it back
}
_FIGURES = {c: t for c, t in COLUMNS.items() if c != "record"}
FIGURES_TABLE = "step_figures"  # every column but ``record``: what aggregations scan

# The flat figures and the JSON records live in two tables, joined back by the ``steps`` view. A
# record is ~2 KB (per-device usage, host, context); kept inline it made the table five times wider
# and every aggregation scan read all of it (1M steps: 10.4 s instead of under 5). Aggregations
# read FIGURES_TABLE; whatever needs the record reads ``steps``.
_SCHEMA = f"""
CREATE TABLE IF NOT EXISTS step_figures ({", ".join(f"{c} {t}" for c, t in _FIGURES.items())});
CREATE INDEX IF NOT EXISTS steps_started ON step_figures(started_at);
CREATE INDEX IF NOT EXISTS steps_run ON step_figures(run_key);
CREATE INDEX IF NOT EXISTS steps_name ON step_figures(name, started_at);
CREATE TABLE IF NOT EXISTS step_records (step_id TEXT PRIMARY KEY, record TEXT NOT NULL);
CREATE VIEW IF NOT EXISTS steps AS
    SELECT f.rowid AS rowid, f.*, r.record FROM step_figures f LEFT JOIN step_records r ON r.step_id = f.step_id;
CREATE TABLE IF NOT EXISTS series (step_id TEXT PRIMARY KEY, data BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS synced (
    step_id TEXT NOT NULL, sink TEXT NOT NULL, remote_id TEXT, synced_at TEXT NOT NULL,
    PRIMARY KEY (step_id, sink)
);
"""


def ledger_path(path: str | os.PathLike[str] | None = None) -> Path:
    """``path``, else ``$MLCOST_LEDGER``, else ``~/.mlcost/ledger.db``."""
    return Path(path or os.environ.get(ENV_LEDGER) or DEFAULT_LEDGER).expanduser()


def _row(step: StepCost) -> dict[str, Any]:
    record = step.model_dump(mode="json")
    return {
        **{k: record.get(k) for k in COLUMNS if k in record},
        "team": step.tags.get("team"),
        "project": step.tags.get("project"),
        "model": step.tags.get("model"),
        "workload": step.tags.get("workload"),
        "host_cpu_mean_pct": step.host.cpu_mean_pct,
        "simulated": int(step.simulated),
        "record": json.dumps(record, separators=(",", ":")),
    }


def _migrate_inline_records(conn: sqlite3.Connection, path: Path) -> None:
    """Ledgers written before the split kept ``record`` inline in a ``steps`` table: move the
    records out and keep the table as ``step_figures``. Once, atomically, under the write lock,
    so two processes opening an old ledger together migrate it once."""
    if conn.execute("SELECT 1 FROM sqlite_master WHERE name = 'steps' AND type = 'table'").fetchone() is None:
        return
    conn.execute("BEGIN IMMEDIATE")
    try:
        if conn.execute("SELECT 1 FROM sqlite_master WHERE name = 'steps' AND type = 'table'").fetchone():
            log.info("mlcost: moving the records of the ledger %s into their own table (once)", path)
            conn.execute("ALTER TABLE steps RENAME TO step_figures")
            conn.execute("CREATE TABLE step_records (step_id TEXT PRIMARY KEY, record TEXT NOT NULL)")
            conn.execute("INSERT INTO step_records (step_id, record) SELECT step_id, record FROM step_figures")
            conn.execute("ALTER TABLE step_figures DROP COLUMN record")
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise


class Ledger:
    """The ledger file at ``path`` (see :func:`ledger_path`); created on first write."""

    def __init__(self, path: str | os.PathLike[str] | None = None) -> None:
        self.path = ledger_path(path)
        self._ready = False

    @contextmanager
    def connect(self, *, bulk: bool = False) -> Iterator[sqlite3.Connection]:
        """A short-lived connection: steps are written from several threads and processes, and
        writes are rare (start, checkpoints, end), so one connection per operation is cheap enough.

        Rows are ``sqlite3.Row`` (by name), or plain tuples with ``bulk``: a report reading a million
        rows spends more making Row objects than SQLite spends reading them."""
        if not self._ready:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        with closing(sqlite3.connect(self.path, timeout=30.0)) as conn:
            conn.row_factory = None if bulk else sqlite3.Row
            if not self._ready:
                conn.execute("PRAGMA journal_mode=WAL")
                _migrate_inline_records(conn, self.path)
                conn.executescript(_SCHEMA)
                self._ready = True
            conn.execute("PRAGMA synchronous=FULL")
            with conn:  # one transaction
                yield conn

    # writing ----------------------------------------------------------------------------------
    def write(self, step: StepCost, *, series: dict[str, list[tuple[int, float]]] | None = None) -> None:
        """Insert or refresh ``step`` unless its row is already sealed (a final status)."""
        row = _row(step)
        record = row.pop("record")
        cols = ", ".join(row)
        marks = ", ".join(f":{c}" for c in row)
        updates = ", ".join(f"{c}=excluded.{c}" for c in row if c != "step_id")
        with self.connect() as conn:
            written = conn.execute(
                f"INSERT INTO step_figures ({cols}) VALUES ({marks}) ON CONFLICT(step_id) DO UPDATE SET {updates} "
                f"WHERE step_figures.status = '{STATUS_RUNNING}'",
                row,
            ).rowcount
            if not written:  # sealed already: the record stays as sealed too
                return
            conn.execute(
                "INSERT OR REPLACE INTO step_records (step_id, record) VALUES (?, ?)", (step.step_id, record)
            )
            if series:
                blob = zlib.compress(json.dumps(series, separators=(",", ":")).encode())
                conn.execute("INSERT OR REPLACE INTO series (step_id, data) VALUES (?, ?)", (step.step_id, blob))

    def mark_synced(self, step_id: str, sink: str, remote_id: str | None) -> None:
        from datetime import datetime, timezone

        with self.connect() as conn:
            conn.execute(
                "INSERT OR REPLACE INTO synced (step_id, sink, remote_id, synced_at) VALUES (?, ?, ?, ?)",
                (step_id, sink, remote_id, datetime.now(timezone.utc).isoformat()),
            )

    # reading ----------------------------------------------------------------------------------
    def get(self, step_id: str) -> StepCost | None:
        with self.connect() as conn:
            row = conn.execute("SELECT record FROM steps WHERE step_id = ?", (step_id,)).fetchone()
        return StepCost.model_validate_json(row["record"]) if row else None

    def steps(
        self,
        *,
        run_key: str | None = None,
        since: str | None = None,
        until: str | None = None,
        include_running: bool = True,
    ) -> list[StepCost]:
        """Steps in start order, optionally of one run and/or started in [since, until)."""
        where, args = self._where(run_key=run_key, since=since, until=until, include_running=include_running)
        with self.connect() as conn:
            rows = conn.execute(f"SELECT record FROM steps {where} ORDER BY started_at, step_id", args).fetchall()
        return [StepCost.model_validate_json(r["record"]) for r in rows]

    def rows(self, sql: str, args: tuple[Any, ...] | dict[str, Any] = ()) -> list[sqlite3.Row]:
        """Run a read-only query over the ``steps`` view (reports aggregate in SQL): the columns of
        :data:`COLUMNS`, ``record`` (JSON) included."""
        with self.connect() as conn:
            return conn.execute(sql, args).fetchall()

    def series(self, step_id: str) -> dict[str, list[tuple[int, float]]]:
        with self.connect() as conn:
            row = conn.execute("SELECT data FROM series WHERE step_id = ?", (step_id,)).fetchone()
        if row is None:
            return {}
        return {k: [tuple(p) for p in v] for k, v in json.loads(zlib.decompress(row["data"])).items()}

    def remote_id(self, step_id: str, sink: str) -> str | None:
        with self.connect() as conn:
            row = conn.execute(
                "SELECT remote_id FROM synced WHERE step_id = ? AND sink = ?", (step_id, sink)
            ).fetchone()
        return row["remote_id"] if row else None

    def unsynced(self, sink: str) -> list[StepCost]:
        """Sealed steps the sink ``sink`` has not acknowledged yet, oldest first."""
        with self.connect() as conn:
            rows = conn.execute(
                "SELECT record FROM steps WHERE status != ? AND step_id NOT IN "
                "(SELECT step_id FROM synced WHERE sink = ?) ORDER BY started_at",
                (STATUS_RUNNING, sink),
            ).fetchall()
        return [StepCost.model_validate_json(r["record"]) for r in rows]

    @staticmethod
    def _where(*, run_key, since, until, include_running) -> tuple[str, list[Any]]:
        clauses, args = [], []
        if run_key is not None:
            clauses.append("run_key = ?")
            args.append(run_key)
        if since is not None:
            clauses.append("started_at >= ?")
            args.append(since)
        if until is not None:
            clauses.append("started_at < ?")
            args.append(until)
        if not include_running:
            clauses.append(f"status != '{STATUS_RUNNING}'")
        return ("WHERE " + " AND ".join(clauses)) if clauses else "", args
