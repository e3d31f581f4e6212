"""The ledger's tables as SQLAlchemy Core objects: the one description of the schema at head.

The Alembic migrations in ``mlcost/ledger/migrations`` build exactly this; a test compares them.

- ``step_figures``: one row per step, flat figures for SQL aggregation (what reports scan).
- ``step_records``: the full JSON record of a step (~2 KB: devices, host, breach, context), apart so
  an aggregation over a million steps does not read gigabytes it does not use.
- ``steps``: a view joining the two (``SELECT f.*, r.record``); whatever needs the record reads it.
- ``series``: the per-device time series of a step, zlib-compressed JSON.
- ``synced``: what each sink (MLflow, the shared ledger) has acknowledged, per step.
- ``alerts``: each alert sent (or still to send), keyed so several machines never send it twice.

Times are ISO-8601 UTC strings (``2026-11-30T07:20:00.123456+00:00``) on both backends: they sort
as they compare, and the readers' period filters are the same SQL everywhere.

A ``running`` row carries ``heartbeat_at``, the time of its last checkpoint. When that is older
than :data:`LOST_AFTER_S`, the step died without sealing its row (SIGKILL, a node gone): its
*effective* status is ``lost``, with the usage of its last checkpoint. ``lost`` is never stored;
:func:`effective_status` computes it at read time, the one definition every reader uses.
"""

from __future__ import annotations

import hashlib
import os
from datetime import datetime, timedelta, timezone

from sqlalchemy import (
    BigInteger,
    Column,
    Float,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    PrimaryKeyConstraint,
    String,
    Table,
    Text,
    case,
    literal,
)
from sqlalchemy.sql.elements import ColumnElement

from mlcost.step import STATUS_RUNNING

STATUS_LOST = "lost"
ENV_LOST_AFTER = "MLCOST_LOST_AFTER_S"
LOST_AFTER_S = 600.0
"""A running row whose heartbeat is older than this (seconds) is ``lost``. A step checkpoints every
30 s (``mlcost.checkpoints.CHECKPOINT_EVERY_S``, on a thread of its own, whatever the sampling
interval); ten minutes is twenty missed checkpoints. ``$MLCOST_LOST_AFTER_S`` overrides it."""

metadata = MetaData()

FIGURE_COLUMNS: dict[str, type] = {  # name -> SQL type, in the order of the table
    "step_id": String,
    "name": Text,
    "status": String,
    "source": String,
    "started_at": String,
    "ended_at": String,
    "duration_s": Float,
    "gpus": Integer,
    "gpu_type": String,
    "pricing": String,
    "team": Text,
    "project": Text,
    "model": Text,
    "workload": String,
    "run_key": Text,
    "total_usd": Float,
    "compute_usd": Float,
    "idle_usd": Float,
    "energy_usd": Float,
    "energy_kwh": Float,
    "spot_whatif_usd": Float,
    "gpu_hours": Float,
    "util_mean_pct": Float,
    "mem_peak_gb": Float,
    "idle_fraction": Float,
    "host_cpu_mean_pct": Float,
    "telemetry": String,
    "simulated": Integer,
    "samples": Integer,
    "heartbeat_at": String,
    # a job across nodes: one row per node, the job is their sum (revision 0003)
    "job_id": String,
    "node_rank": Integer,
    "gpu_hour_usd": Float,  # the unit price: a peer node's allocation is computable from its row alone
    "history_key": BigInteger,  # the step's history: its name and tags as one number (revision 0004)
}
HISTORY_DIMENSIONS = ("name", "team", "project", "model", "workload")
"""What makes two runs the same step's history: its name and tags (two teams' ``train`` steps are
two histories)."""
HISTORY_INDEX = ("history_key", "started_at", "step_id", "total_usd", "gpu_hours", "status", "heartbeat_at")
"""The anomaly scan's index: a step's history in start order, and every column the scan reads, so
a million rows are read from the index alone, already grouped and ordered (no table, no sort)."""
_NOT_NULL = {"step_id", "name", "status", "source", "started_at"}

step_figures = Table(
    "step_figures",
    metadata,
    *(
        Column(c, t(), primary_key=(c == "step_id"), nullable=c not in _NOT_NULL)
        for c, t in FIGURE_COLUMNS.items()
    ),
    Index("steps_started", "started_at"),
    Index("steps_run", "run_key"),
    Index("steps_name", "name", "started_at"),
    Index("steps_heartbeat", "status", "heartbeat_at"),
    Index("steps_job", "job_id"),
    Index("steps_history", *HISTORY_INDEX),
)

step_records = Table(
    "step_records",
    metadata,
    Column("step_id", String, primary_key=True),
    Column("record", Text, nullable=False),
)

series = Table(
    "series",
    metadata,
    Column("step_id", String, primary_key=True),
    Column("data", LargeBinary, nullable=False),
)

synced = Table(
    "synced",
    metadata,
    Column("step_id", String, nullable=False),
    Column("sink", String, nullable=False),
    Column("remote_id", Text),
    Column("synced_at", String, nullable=False),
    PrimaryKeyConstraint("step_id", "sink"),
)

alerts = Table(
    "alerts",
    metadata,
    Column("key", String, primary_key=True),  # one alert per key, whichever machine claims it first
    Column("kind", String, nullable=False),
    Column("created_at", String, nullable=False),
    Column("body", Text, nullable=False),  # the JSON the webhooks receive
    Column("delivered_at", String),
    Column("attempts", Integer, nullable=False, server_default="0"),
    Column("last_error", Text),
)

STEPS_VIEW = "steps"
TABLES = ("step_figures", "step_records", "series", "synced", "alerts")


def steps_view_sql(backend: str) -> str:
    """The ``steps`` view. SQLite has ``rowid``; the view keeps exposing it there for readers that
    used it. On PostgreSQL ``f.*`` is expanded when the view is made, so a migration that adds a
    column to step_figures recreates the view."""
    rowid = "f.rowid AS rowid, " if backend == "sqlite" else ""
    return (
        f"CREATE VIEW {STEPS_VIEW} AS SELECT {rowid}f.*, r.record FROM step_figures f "
        "LEFT JOIN step_records r ON r.step_id = f.step_id"
    )


def history_key(figures: dict[str, object]) -> int:
    """The ``history_key`` of a row of figures: a 63-bit hash of its :data:`HISTORY_DIMENSIONS`,
    the same in every process and on every backend (a signed BIGINT on PostgreSQL)."""
    text = "\x1f".join(str(figures.get(d) or "") for d in HISTORY_DIMENSIONS)
    return int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "big") >> 1


def lost_after_s() -> float:
    """:data:`LOST_AFTER_S`, or ``$MLCOST_LOST_AFTER_S`` when set to a positive number."""
    raw = os.environ.get(ENV_LOST_AFTER)
    if raw:
        try:
            value = float(raw)
        except ValueError:
            value = -1.0
        if value > 0 and value == value:
            return value
        from mlcost.errors import ConfigError

        raise ConfigError(f"must be a positive number of seconds, got {raw!r}", field=ENV_LOST_AFTER)
    return LOST_AFTER_S


def now_iso() -> str:
    """The ledger's clock: ISO-8601 UTC with microseconds always written, so strings compare as times."""
    return datetime.now(timezone.utc).isoformat(timespec="microseconds")


def lost_cutoff(now: datetime | None = None, after_s: float | None = None) -> str:
    """Heartbeats before this ISO time are lost."""
    now = now or datetime.now(timezone.utc)
    return (now - timedelta(seconds=lost_after_s() if after_s is None else after_s)).isoformat(
        timespec="microseconds"
    )


def effective_status(
    table: Table = step_figures, *, now: datetime | None = None, after_s: float | None = None
) -> ColumnElement[str]:
    """``status``, except ``lost`` for a ``running`` row whose heartbeat (or, for a row written
    before heartbeats existed, its start) is older than the lost limit. Use it wherever a reader
    filters or groups by status: ``select(effective_status().label("status"), ...)``."""
    beat = table.c.heartbeat_at
    cutoff = literal(lost_cutoff(now, after_s))
    return case(
        (
            (table.c.status == STATUS_RUNNING) & (beat.is_(None) | (beat < cutoff)),
            literal(STATUS_LOST),
        ),
        else_=table.c.status,
    )


def effective_status_sql(alias: str = "", *, now: datetime | None = None, after_s: float | None = None) -> str:
    """The same rule as :func:`effective_status` as SQL text (the cutoff inlined as an ISO literal,
    which is safe: it is made here, not taken from input), for readers still writing SQL strings."""
    p = f"{alias}." if alias else ""
    cutoff = lost_cutoff(now, after_s)
    return (
        f"CASE WHEN {p}status = '{STATUS_RUNNING}' AND ({p}heartbeat_at IS NULL OR {p}heartbeat_at < '{cutoff}') "
        f"THEN '{STATUS_LOST}' ELSE {p}status END"
    )
