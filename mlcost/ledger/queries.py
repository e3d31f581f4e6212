"""Every read of the ledger, in one place: the one period filter, and SQL that runs the same on
SQLite and PostgreSQL (SQLAlchemy Core).

Readers (reports, FOCUS export, GX validation, ``gate --ledger``, the pipeline gate's history,
``BudgetGateOperator``) call these functions and never write SQL of their own; the Cost view's own
aggregations (:mod:`mlcost.ledger.cost_view`) are built from this module's period filter, effective
status and refusal rule.
Aggregations are ``GROUP BY`` in the database: a report over a million steps moves a few rows to
Python, not a million. The only wide read is the anomaly scan, which needs every step's figures for
a robust statistic that neither database has (a median over each step's past runs): it reads five
narrow columns from one index, grouped by history and in start order. The JSON record is read only
for the rows that need it.

A ``running`` row whose heartbeat is too old is ``lost`` (:func:`status_of`): it is counted
wherever money is summed, with the usage of its last checkpoint, and shown as ``lost``. Rows that
are really still running are left out of the reports until they end (the budget gate and the Cost
view count their cost so far).

Functions return plain rows (dicts or tuples): pandas is the caller's business, so the Cost view
and the budget gate never import it. The JSON record (devices, context, breach) is read with the
dialect's own JSON functions (:func:`json_text`).
"""

from __future__ import annotations

import gc
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

import sqlalchemy as sa

from mlcost.ledger import schema
from mlcost.names import USER_TAG_KEYS
from mlcost.period import Period
from mlcost.step import STATUS_BREACHED, STATUS_RUNNING, STATUS_SUCCEEDED

DIMENSIONS = USER_TAG_KEYS  # team, project, model, workload: ledger columns
UNTAGGED = "(untagged)"
STATUS_LOST = schema.STATUS_LOST
FAILED_STATUSES = ("failed", "breached", "killed", STATUS_LOST)

figures = schema.step_figures
records = schema.step_records


# the building blocks -------------------------------------------------------------------------------
def status_of(t: Any = None) -> sa.ColumnElement[str]:
    """A row's effective status: its status, or ``lost`` for a running row with a stale heartbeat
    (the ledger's one definition, :func:`mlcost.ledger.schema.effective_status`)."""
    return schema.effective_status(figures if t is None else t)


def counted(t: Any = None) -> sa.ColumnElement[bool]:
    """Rows whose money is counted: sealed ones and lost ones, not those still running. The same
    rule as ``status_of(t) != 'running'``, written as a plain predicate: a CASE per row costs a
    quarter of a million-row aggregation on SQLite."""
    t = figures if t is None else t
    beat = t.c.heartbeat_at
    return sa.or_(t.c.status != STATUS_RUNNING, beat.is_(None), beat < sa.literal(schema.lost_cutoff()))


def lost(t: Any = None) -> sa.ColumnElement[bool]:
    """Among :func:`counted` rows, the lost ones (still ``running`` in the table)."""
    return (figures if t is None else t).c.status == STATUS_RUNNING


def in_period(period: Period | None, t: Any = None) -> sa.ColumnElement[bool]:
    """The one period filter: started in [since, until). ``true()`` for an open period."""
    col = (figures if t is None else t).c.started_at
    clauses = []
    if period is not None and period.since is not None:
        clauses.append(col >= _when(col, period.since))
    if period is not None and period.until is not None:
        clauses.append(col < _when(col, period.until))
    return sa.and_(sa.true(), *clauses)


def _when(col: Any, value: Any) -> Any:
    """A period end as the column stores it: a datetime for a timestamp column, else ISO text."""
    # ``isoformat()`` writes microseconds only when there are some: a bound on a whole second then
    # compares right with rows stored either way ("...:00+00:00" and "...:00.000000+00:00")
    return value if isinstance(col.type, sa.DateTime) else value.isoformat()


def refused(t: Any = None) -> sa.ColumnElement[bool]:
    """A step refused at preflight: ``breached`` before it ran (no GPU time, $0). It is a record of
    what a policy stopped, not a run: unit economics and right-sizing leave it out."""
    t = figures if t is None else t
    return sa.and_(t.c.status == STATUS_BREACHED, sa.func.coalesce(t.c.total_usd, 0) == 0)


def json_text(conn: sa.Connection, col: Any, *path: str) -> sa.ColumnElement[str]:
    """The text at ``path`` in the JSON ``col`` (the step record), or NULL."""
    if conn.dialect.name == "postgresql":
        from sqlalchemy.dialects.postgresql import JSONB

        return sa.func.jsonb_extract_path_text(sa.cast(col, JSONB), *path)
    return sa.func.json_extract(col, "$." + ".".join(path))


def record_text(conn: sa.Connection, *path: str) -> Any:
    """The text at ``path`` in the row's JSON record, as a correlated subquery: an aggregation that
    needs the record for a few rows (inference steps) does not join a million 2 KB records."""
    r = records.alias("rec")
    return sa.select(json_text(conn, r.c.record, *path)).where(r.c.step_id == figures.c.step_id).scalar_subquery()


def untagged(col: Any, label: str | None = None) -> sa.ColumnElement[str]:
    return sa.func.coalesce(col, UNTAGGED).label(label or col.key)


def _check_dims(by: Sequence[str], allowed: Sequence[str] = DIMENSIONS) -> None:
    from mlcost.errors import ConfigError

    for dim in by:
        if dim not in allowed:
            raise ConfigError(f"cannot group by {dim!r}; allowed: {', '.join(allowed)}", field="--by")


def _dicts(conn: sa.Connection, stmt: Any) -> list[dict[str, Any]]:
    return [dict(r) for r in conn.execute(stmt).mappings()]


def _sum0(col: Any) -> Any:
    return sa.func.coalesce(sa.func.sum(col), 0.0)


def _count_if(cond: Any) -> Any:
    return sa.func.coalesce(sa.func.sum(sa.case((cond, 1), else_=0)), 0)


# chargeback, idle, spot ------------------------------------------------------------------------------
def chargeback(conn: sa.Connection, period: Period, by: Sequence[str] = ("team",)) -> list[dict[str, Any]]:
    """Per ``by``: steps (lost ones included, and how many were lost), GPU-hours, $ and idle $."""
    _check_dims(by)
    f = figures
    keys = [untagged(f.c[d]) for d in by]
    stmt = (
        sa.select(
            *keys,
            sa.func.count().label("steps"),
            _count_if(lost()).label("lost_steps"),
            _sum0(f.c.gpu_hours).label("gpu_hours"),
            _sum0(f.c.total_usd).label("total_usd"),
            _sum0(f.c.idle_usd).label("idle_usd"),
        )
        .where(counted(), in_period(period))
        .group_by(*keys)
        .order_by(sa.desc("total_usd"), *[sa.literal_column(d) for d in by])
    )
    return _dicts(conn, stmt)


def total_usd(conn: sa.Connection, period: Period) -> float:
    """The period's whole cost."""
    stmt = sa.select(_sum0(figures.c.total_usd)).where(counted(), in_period(period))
    return float(conn.execute(stmt).scalar_one())


def simulated_steps(conn: sa.Connection, period: Period) -> tuple[int, int]:
    """(steps, of which metered on a simulated GPU) in ``period``: a report says so."""
    f = figures
    stmt = sa.select(sa.func.count(), _count_if(f.c.simulated == 1)).where(counted(), in_period(period))
    n, sim = conn.execute(stmt).one()
    return int(n or 0), int(sim or 0)


def idle_waste(conn: sa.Connection, period: Period, by: str = "team") -> list[dict[str, Any]]:
    """Idle GPU-hours and idle $ per dimension, or per step ``name``."""
    _check_dims([by], (*DIMENSIONS, "name"))
    f = figures
    key = f.c.name if by == "name" else untagged(f.c[by])
    stmt = (
        sa.select(
            key,
            _sum0(f.c.gpu_hours * sa.func.coalesce(f.c.idle_fraction, 0)).label("idle_gpu_hours"),
            _sum0(f.c.idle_usd).label("idle_usd"),
            _sum0(f.c.total_usd).label("total_usd"),
        )
        .where(counted(), in_period(period))
        .group_by(key)
        .order_by(sa.desc("idle_usd"), sa.literal_column(by))
    )
    return _dicts(conn, stmt)


def spot_whatif(conn: sa.Connection, period: Period, workloads: Sequence[str]) -> list[dict[str, Any]]:
    """On-demand interruptible work (``workloads``) with what it would have cost on spot."""
    f = figures
    team = untagged(f.c.team)
    stmt = (
        sa.select(
            f.c.workload,
            team,
            sa.func.count().label("steps"),
            _sum0(f.c.total_usd).label("on_demand_usd"),
            _sum0(f.c.spot_whatif_usd).label("spot_usd"),
        )
        .where(
            counted(), in_period(period), f.c.pricing == "on_demand", f.c.workload.in_(list(workloads)),
            f.c.spot_whatif_usd.is_not(None),
        )
        .group_by(f.c.workload, team)
        .order_by(sa.desc("on_demand_usd"), f.c.workload)
    )
    return _dicts(conn, stmt)


# unit economics --------------------------------------------------------------------------------------
def unit_economics(conn: sa.Connection, period: Period) -> list[dict[str, Any]]:
    """Per model: total $, retrains (distinct training runs: steps sharing a run key or a job, or one step)
    and their $, inferences counted by inference steps (an ``inferences`` tag or context value) and
    their $. Steps refused at preflight are not runs: they cost $0 and never trained anything."""
    f = figures
    counts = sa.func.coalesce(record_text(conn, "tags", "inferences"), record_text(conn, "context", "inferences"))
    inferences = sa.case((f.c.workload == "inference", sa.cast(counts, sa.Float)))  # records of inference only
    training = sa.and_(f.c.workload == "training", sa.not_(refused()))
    counted_inference = sa.and_(f.c.workload == "inference", inferences > 0)
    stmt = (
        sa.select(
            f.c.model,
            _sum0(f.c.total_usd).label("total_usd"),
            # a run: its steps share a run key; a job across nodes is one run of its node rows
            sa.func.count(
                sa.distinct(sa.case((training, sa.func.coalesce(f.c.run_key, f.c.job_id, f.c.step_id))))
            ).label("retrains"),
            sa.func.sum(sa.case((training, f.c.total_usd))).label("training_usd"),
            sa.func.sum(sa.case((counted_inference, inferences))).label("inferences"),
            sa.func.sum(sa.case((counted_inference, f.c.total_usd))).label("inference_usd"),
        )
        .where(counted(), in_period(period), f.c.model.is_not(None))
        .group_by(f.c.model)
        .order_by(f.c.model)
    )
    return _dicts(conn, stmt)


# right-sizing ----------------------------------------------------------------------------------------
def busy_devices(conn: sa.Connection, idle_pct: float) -> Any:
    """How many devices of the row's record were busy: mean util at or above ``idle_pct``, or no
    util signal at all (MIG on A100/A30: unknown is not idle). A correlated subquery over the JSON
    ``devices`` array (``json_each`` on SQLite, ``jsonb_array_elements`` on PostgreSQL)."""
    r = records.alias("rec")
    if conn.dialect.name == "postgresql":
        from sqlalchemy.dialects.postgresql import JSONB

        d = sa.func.jsonb_array_elements(sa.func.jsonb_extract_path(sa.cast(r.c.record, JSONB), "devices"))
        d = d.table_valued("value").alias("d")
        util = sa.cast(sa.func.jsonb_extract_path_text(d.c.value, "util_mean_pct"), sa.Float)
    else:
        d = sa.func.json_each(r.c.record, "$.devices").table_valued("value").alias("d")
        util = sa.func.json_extract(d.c.value, "$.util_mean_pct")
    return (
        sa.select(sa.func.count())
        .select_from(r.join(d, sa.true()))
        .where(r.c.step_id == figures.c.step_id, sa.or_(util.is_(None), util >= idle_pct))
        .scalar_subquery()
    )


def rightsizing_groups(conn: sa.Connection, period: Period, idle_pct: float) -> list[dict[str, Any]]:
    """Per recurring step (name, GPU type, GPU count) that ran: runs, $, peak memory, GPU-hour
    weighted util, host CPU, and ``busy``: the most devices any of its runs kept busy. Steps
    refused at preflight are not runs."""
    f = figures
    weighted = sa.func.sum(f.c.util_mean_pct * f.c.gpu_hours) / sa.func.nullif(
        sa.func.sum(sa.case((f.c.util_mean_pct.is_not(None), f.c.gpu_hours))), 0
    )
    stmt = (
        sa.select(
            f.c.name,
            f.c.gpu_type,
            f.c.gpus,
            sa.func.count().label("runs"),
            _sum0(f.c.total_usd).label("cost_usd"),
            sa.func.max(f.c.mem_peak_gb).label("mem_peak_gb"),
            weighted.label("util_pct"),
            sa.func.avg(f.c.host_cpu_mean_pct).label("host_cpu_pct"),
            sa.func.max(sa.case((f.c.gpus > 1, busy_devices(conn, idle_pct)))).label("busy"),  # only multi-GPU
        )
        .where(counted(), in_period(period), f.c.gpu_type.is_not(None), f.c.gpus > 0, sa.not_(refused()))
        .group_by(f.c.name, f.c.gpu_type, f.c.gpus)
        .order_by(sa.desc("cost_usd"), f.c.name)
    )
    return _dicts(conn, stmt)


# anomalies -------------------------------------------------------------------------------------------
ANOMALY_KEYS = schema.HISTORY_DIMENSIONS  # name, team, project, model, workload


History = tuple[str, str, str, str | None]  # step ids, total_usd, gpu_hours, in-period flags
ID_SEP = "\x1f"  # between step ids in a history's text (an id may hold a comma; never this)


def anomaly_scan(conn: sa.Connection, history: Period, period: Period) -> list[History]:
    """Every counted step in ``history``, one row per history (the step's name and tags: two teams'
    ``train`` steps are two histories), each column the history's runs in start order (ties by
    step id) as text: step ids joined by :data:`ID_SEP`; ``total_usd``, ``gpu_hours`` and, for a
    bounded ``period``, 1/0 for "in the period" joined by commas, NULL written ``nan``.

    A million runs come back as a few hundred rows of text that numpy parses in one call each,
    instead of a million tuples. The database reads the index ``steps_history`` alone (it holds
    every column used, in this order) and sorts nothing. PostgreSQL orders each aggregate itself;
    SQLite before 3.44 cannot, so there the order is the index's, and the plan is checked to be
    that scan (:func:`_sqlite_in_index_order`) before it is relied on."""
    f = figures
    order = (f.c.started_at, f.c.step_id)
    parts: list[Any] = [
        (f.c.step_id, ID_SEP),
        (sa.func.coalesce(sa.cast(f.c.total_usd, sa.Text), "nan"), ","),
        (sa.func.coalesce(sa.cast(f.c.gpu_hours, sa.Text), "nan"), ","),
    ]
    if period.bounded:
        parts.append((sa.case((in_period(period), "1"), else_="0"), ","))
    if conn.dialect.name == "postgresql":
        from sqlalchemy.dialects.postgresql import aggregate_order_by

        cols = [sa.func.string_agg(e, aggregate_order_by(sa.literal(sep), *order)) for e, sep in parts]
    else:
        # SQLite casts a REAL to text with 15 significant digits: far finer than a z-score needs
        cols = [sa.func.group_concat(e, sep) for e, sep in parts]
    stmt = sa.select(*cols).where(counted(), in_period(history)).group_by(f.c.history_key)
    if conn.dialect.name != "postgresql" and not _sqlite_in_index_order(conn, stmt):
        return _histories_from_rows(conn, history, period)
    rows = conn.execute(stmt).all()
    return [(r[0], r[1], r[2], r[3] if period.bounded else None) for r in rows]


def _sqlite_in_index_order(conn: sa.Connection, stmt: Any) -> bool:
    """Whether SQLite runs ``stmt`` as one scan of ``steps_history`` with nothing sorted: then each
    group's rows are aggregated in the index's order (start time, step id)."""
    sql = str(stmt.compile(conn, compile_kwargs={"literal_binds": True}))
    plan = " ".join(str(r[-1]) for r in conn.exec_driver_sql("EXPLAIN QUERY PLAN " + sql.replace("%", "%%")))
    return "COVERING INDEX steps_history" in plan and "TEMP B-TREE" not in plan


def _histories_from_rows(conn: sa.Connection, history: Period, period: Period) -> list[History]:
    """:func:`anomaly_scan`'s answer built from ordered rows, for a SQLite whose plan is not the
    index scan (slower: a million tuples)."""
    import itertools

    f = figures
    flag = sa.case((in_period(period), 1), else_=0)
    stmt = (
        sa.select(f.c.history_key, f.c.step_id, f.c.total_usd, f.c.gpu_hours, flag)
        .where(counted(), in_period(history))
        .order_by(f.c.history_key, f.c.started_at, f.c.step_id)
    )

    def joined(rows: list[Any], i: int) -> str:
        return ",".join("nan" if r[i] is None else repr(float(r[i])) for r in rows)

    out: list[History] = []
    with paused_gc():
        for _, group in itertools.groupby(conn.execute(stmt).all(), key=lambda r: r[0]):
            rows = list(group)
            flags = ",".join(str(r[4]) for r in rows) if period.bounded else None
            out.append((ID_SEP.join(r[1] for r in rows), joined(rows, 2), joined(rows, 3), flags))
    return out


@contextmanager
def paused_gc() -> Iterator[None]:
    """No garbage collection while a million tuples are made: each collection would walk all of
    them again (half the time of a million-row read). They hold no cycles to collect."""
    was_on = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_on:
            gc.enable()


def step_details(conn: sa.Connection, step_ids: Sequence[str]) -> list[dict[str, Any]]:
    """The figures of the steps ``step_ids`` (the anomaly report's causes)."""
    f = figures
    out: list[dict[str, Any]] = []
    cols = [f.c[c] for c in ("step_id", *ANOMALY_KEYS, "started_at", "gpus", "duration_s", "gpu_type", "pricing",
                             "idle_fraction")]  # fmt: skip
    ids = list(step_ids)
    stmt = sa.select(*cols).where(f.c.step_id.in_(sa.bindparam("ids", expanding=True)))  # compiled once
    names = [c.name for c in cols]
    for i in range(0, len(ids), 900):  # under every driver's limit of bound parameters
        result = conn.execute(stmt, {"ids": ids[i : i + 900]})
        out += [dict(zip(names, row, strict=True)) for row in result.cursor.fetchall()]
        result.close()
    return out


def gpu_type_mismatches(conn: sa.Connection, period: Period) -> list[dict[str, Any]]:
    """Steps priced as a declared GPU type other than the one they ran on (the record's
    ``detected_gpu_type``), per step name and pair of types."""
    f, r = figures, records
    detected = json_text(conn, r.c.record, "detected_gpu_type")
    stmt = (
        sa.select(f.c.name, f.c.gpu_type, detected.label("detected"), sa.func.count().label("steps"))
        .select_from(f.join(r, r.c.step_id == f.c.step_id))
        .where(counted(), in_period(period), f.c.gpu_type.is_not(None), detected.is_not(None), detected != f.c.gpu_type)
        .group_by(f.c.name, f.c.gpu_type, detected)
        .order_by(sa.desc("steps"), f.c.name)
    )
    return _dicts(conn, stmt)


# whole records: FOCUS export, gate --ledger, the budget gate -----------------------------------------
def step_records(
    conn: sa.Connection, period: Period | None = None, *, run_key: str | None = None, source: str | None = None
) -> Iterator[dict[str, Any]]:
    """The JSON records of the counted steps in ``period`` (of one run, of one source), in start
    order, with ``status`` as reported (``lost`` for a lost step)."""
    import json

    f, r = figures, records
    stmt = (
        sa.select(r.c.record, status_of().label("effective"))
        .select_from(f.join(r, r.c.step_id == f.c.step_id))
        .where(counted(), in_period(period))
        .order_by(f.c.started_at, f.c.step_id)
    )
    if run_key is not None:
        stmt = stmt.where(f.c.run_key == run_key)
    if source is not None:
        stmt = stmt.where(f.c.source == source)
    for record, effective in conn.execute(stmt):
        rec = json.loads(record) if isinstance(record, str) else dict(record)
        rec["status"] = effective
        yield rec


def run_spend(conn: sa.Connection, run_key: str) -> list[dict[str, Any]]:
    """What one DAG/pipeline run's metered steps spent, per task and model: every try counts, a
    lost or still running one too, with its last checkpoint's cost (money spent is spent)."""
    f, r = figures, records
    task = sa.func.coalesce(json_text(conn, r.c.record, "context", "task_id"), f.c.name).label("task")
    stmt = (
        sa.select(
            task,
            f.c.model,
            sa.func.count().label("steps"),
            _sum0(f.c.total_usd).label("total_usd"),
            _sum0(f.c.idle_usd).label("idle_usd"),
        )
        .select_from(f.outerjoin(r, r.c.step_id == f.c.step_id))
        .where(f.c.run_key == run_key, f.c.source == "meter")
        .group_by(task, f.c.model)
    )
    return _dicts(conn, stmt)


# validation ------------------------------------------------------------------------------------------
VALIDATION_COLUMNS = (
    "step_id", "name", "run_key", "status", "started_at", "ended_at", "duration_s", "gpus", "gpu_type",
    "total_usd", "idle_usd", "compute_usd", "energy_usd", "gpu_hours", "util_mean_pct", "idle_fraction",
)  # fmt: skip


def validation_rows(conn: sa.Connection, columns: Sequence[str] = VALIDATION_COLUMNS) -> list[tuple[Any, ...]]:
    """The flat figures of every counted step, for the Great Expectations suite."""
    f = figures
    cols = [status_of().label("status") if c == "status" else f.c[c] for c in columns]
    return [tuple(r) for r in conn.execute(sa.select(*cols).where(counted()).order_by(f.c.started_at))]


# the pipeline gate's history -------------------------------------------------------------------------
def succeeded_runs(
    conn: sa.Connection, step_names: Sequence[str], window: int, tags: Mapping[str, str] | None = None,
    *, source: str = "meter",
) -> list[dict[str, Any]]:  # fmt: skip
    """The ``window`` newest succeeded steps of each name (written by ``source``), carrying
    ``tags`` (ledger columns: team, project, model, workload): step_id, name, duration_s,
    started_at. One indexed query (the ledger indexes name, started_at)."""
    f = figures
    rank = (
        sa.func.row_number()
        .over(partition_by=f.c.name, order_by=(f.c.started_at.desc(), f.c.step_id.desc()))
        .label("k")
    )
    inner = sa.select(f.c.name, f.c.step_id, f.c.duration_s, f.c.started_at, rank).where(
        f.c.name.in_(list(step_names)), f.c.status == STATUS_SUCCEEDED, f.c.source == source,
        f.c.duration_s.is_not(None), *[f.c[k] == v for k, v in (tags or {}).items()],
    ).subquery()  # fmt: skip
    stmt = sa.select(inner.c.name, inner.c.step_id, inner.c.duration_s, inner.c.started_at).where(
        inner.c.k <= window
    )
    return _dicts(conn, stmt)


# connections -----------------------------------------------------------------------------------------
@contextmanager
def reading(ledger: Any = None) -> Iterator[sa.Connection]:
    """A connection to read ``ledger``: a ``Ledger``, or a path or URL (``None``: the default),
    opened read-only and checked (:func:`mlcost.ledger.book.open_ledger`: a ConfigError naming
    ``--ledger`` when it is missing, not a ledger, or unreachable)."""
    from mlcost.ledger.book import Ledger, open_ledger

    book = ledger if isinstance(ledger, Ledger) else open_ledger(ledger)
    with book.store.connect() as conn:
        yield conn
