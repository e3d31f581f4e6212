"""The Cost view's queries (part of the query layer, beside :mod:`mlcost.ledger.queries`): every
table, chart and total of the Airflow plugin's view, aggregated in the database.

One :class:`Filters` (the one :class:`~mlcost.period.Period`, a DAG, a team and the user's
:class:`DagScope`) narrows every query the same way, so the page, the charts and the JSON API cannot
disagree. SQLAlchemy Core, so the same query runs on the SQLite ledger and on PostgreSQL; only the DAG
id, which the ledger keeps inside ``run_key`` (``airflow:<dag_id>/<run_id>``; a DAG id holds no
``/``), needs a per-dialect expression. Reads ``step_figures`` and touches the JSON records only for
the few rows a top list shows. Framework-free: the scope comes from the plugin (``plugins/auth.py``).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta, timezone
from typing import Any

from sqlalchemy import String, and_, case, false, func, or_, select, true
from sqlalchemy.engine import Connection
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.expression import ColumnElement, FunctionElement

from mlcost.errors import ConfigError
from mlcost.ledger import queries
from mlcost.ledger.schema import STATUS_LOST
from mlcost.period import Period, parse_when
from mlcost.step import STATUS_SUCCEEDED

STEPS = queries.figures
RECORDS = queries.records

PERIODS: dict[str, timedelta | None] = {
    "24h": timedelta(hours=24),
    "7d": timedelta(days=7),
    "30d": timedelta(days=30),
    "all": None,
}
GROUPS = ("dag", "task", "team", "model")
NO_DAG = "(no DAG)"
UNTAGGED = queries.UNTAGGED
OTHER = "(other)"


class DagIdOf(FunctionElement):
    """The DAG id inside an Airflow ``run_key``, NULL for steps that belong to no DAG."""

    type = String()
    inherit_cache = True
    name = "mlcost_dag_id"


@compiles(DagIdOf)
def _dag_id_sqlite(element: DagIdOf, compiler: Any, **kw: Any) -> str:
    key = compiler.process(element.clauses, **kw)
    return f"(CASE WHEN substr({key}, 1, 8) = 'airflow:' THEN substr({key}, 9, instr({key}, '/') - 9) END)"


@compiles(DagIdOf, "postgresql")
def _dag_id_postgres(element: DagIdOf, compiler: Any, **kw: Any) -> str:
    key = compiler.process(element.clauses, **kw)
    return f"(CASE WHEN substr({key}, 1, 8) = 'airflow:' THEN split_part(substr({key}, 9), '/', 1) END)"


DAG_ID: ColumnElement = DagIdOf(STEPS.c.run_key)  # a dag_id column, if the ledger grows one, goes here
TEAM: ColumnElement = func.coalesce(STEPS.c.team, UNTAGGED)
DAY: ColumnElement = func.substr(STEPS.c.started_at, 1, 10)
REFUSED: ColumnElement = queries.refused()  # breached before it ran: no GPU time, $0


def _lost() -> ColumnElement:
    """A running row whose heartbeat is stale (the ledger's one rule), as of this query."""
    return queries.status_of() == STATUS_LOST


@dataclass(frozen=True)
class DagScope:
    """What one user may see: every row (``all_dags``), else only the rows of ``dag_ids``; a step
    of no DAG only with ``all_dags``. Built from Airflow's auth manager by ``plugins/auth.py``."""

    all_dags: bool
    dag_ids: frozenset[str] = frozenset()
    user: str = ""

    def allows(self, dag_id: str | None) -> bool:
        return self.all_dags or (dag_id is not None and dag_id in self.dag_ids)


EVERYTHING = DagScope(all_dags=True, user="(local)")


@dataclass(frozen=True)
class Filters:
    """The one filter of every query: the user's scope, the period, a DAG, a team."""

    scope: DagScope = EVERYTHING
    period: Period = field(default_factory=Period)
    dag_id: str | None = None
    team: str | None = None
    name: str = "all"  # the period as chosen: 24h, 7d, 30d, all or custom

    @property
    def since(self) -> str | None:
        return self.period.since_iso

    @property
    def until(self) -> str | None:
        return self.period.until_iso

    def widened(self) -> Filters:
        """The same user and period, every DAG and team (the choices a filter form offers)."""
        return Filters(self.scope, self.period, None, None, self.name)

    def where(self) -> ColumnElement:
        clauses: list[ColumnElement] = [queries.in_period(self.period)]
        if not self.scope.all_dags:
            allowed = sorted(self.scope.dag_ids)
            clauses.append(DAG_ID.in_(allowed) if allowed else false())
        if self.dag_id:
            clauses.append(self.dag_id == DAG_ID)
        if self.team:
            clauses.append(self.team == TEAM)
        return and_(true(), *clauses)


def period_filters(
    scope: DagScope,
    *,
    period: str | None = None,
    since: str | None = None,
    until: str | None = None,
    dag_id: str | None = None,
    team: str | None = None,
    now: datetime | None = None,
) -> Filters:
    """A period name (``24h``/``7d``/``30d``/``all``; default ``30d``), or ``custom`` (or no name)
    with ``since``/``until`` (an ISO date/time or a span back from now, as every ``--since``). A
    named period wins over dates, so a form that still holds old dates does what its selector says.
    A bad value is a ConfigError naming the parameter; the routes answer it with 400."""
    now = now or datetime.now(timezone.utc)
    if period in (None, "", "custom") and (since or until):
        start, end = parse_when(since, field="since", now=now), parse_when(until, field="until", now=now)
        if start is not None and end is not None and end <= start:
            raise ConfigError(f"the period is empty: until ({end}) is not after since ({start})", field="until")
        return Filters(scope, Period(start, end), dag_id or None, team or None, "custom")
    if period == "custom":
        raise ConfigError("period=custom needs since and/or until", field="period")
    period = period or "30d"
    if period not in PERIODS:
        raise ConfigError(f"must be one of {', '.join(PERIODS)} or custom, got {period!r}", field="period")
    span = PERIODS[period]
    return Filters(scope, Period(None if span is None else now - span), dag_id or None, team or None, period)


def _sums() -> list[ColumnElement]:
    return [
        func.sum(func.coalesce(STEPS.c.total_usd, 0)).label("total_usd"),
        func.sum(func.coalesce(STEPS.c.idle_usd, 0)).label("idle_usd"),
        func.sum(func.coalesce(STEPS.c.gpu_hours, 0)).label("gpu_hours"),
        func.count().label("steps"),
        func.count(func.distinct(STEPS.c.run_key)).label("runs"),
        func.sum(case((STEPS.c.source == "meter", 1), else_=0)).label("metered_steps"),
        func.sum(case((queries.status_of().in_(queries.FAILED_STATUSES), 1), else_=0)).label("failed_steps"),
        func.sum(case((REFUSED, 1), else_=0)).label("refused_steps"),
        func.sum(case((_lost(), 1), else_=0)).label("lost_steps"),
        func.max(func.coalesce(STEPS.c.simulated, 0)).label("simulated"),
    ]


def _finish(d: dict[str, Any]) -> dict[str, Any]:
    for k in ("total_usd", "idle_usd", "gpu_hours"):
        d[k] = float(d.get(k) or 0.0)
    for k in ("steps", "runs", "metered_steps", "failed_steps", "refused_steps", "lost_steps"):
        if k in d:
            d[k] = int(d[k] or 0)
    d["idle_share"] = (d["idle_usd"] / d["total_usd"]) if d["total_usd"] else None
    if "simulated" in d:
        d["simulated"] = bool(d["simulated"])
    return d


def totals(conn: Connection, f: Filters) -> dict[str, Any]:
    """One row: the sums over everything the filters let through."""
    row = conn.execute(select(*_sums()).select_from(STEPS).where(f.where())).mappings().one()
    return _finish(dict(row))


def _keys(group: str) -> list[ColumnElement]:
    if group == "dag":
        return [func.coalesce(DAG_ID, NO_DAG).label("dag_id")]
    if group == "task":
        return [func.coalesce(DAG_ID, NO_DAG).label("dag_id"), STEPS.c.name.label("task_id")]
    if group == "team":
        return [TEAM.label("team")]
    if group == "model":
        return [func.coalesce(STEPS.c.model, UNTAGGED).label("model")]
    raise ValueError(f"group must be one of {', '.join(GROUPS)}, not {group!r}")


def cost_by(conn: Connection, group: str, f: Filters, *, limit: int | None = None) -> list[dict[str, Any]]:
    """Rows of ``{<keys>, total_usd, idle_usd, idle_share, gpu_hours, steps, runs, ...}``, costliest first."""
    keys = _keys(group)
    q = (
        select(*keys, *_sums())
        .select_from(STEPS)
        .where(f.where())
        .group_by(*keys)
        .order_by(func.sum(func.coalesce(STEPS.c.total_usd, 0)).desc(), *keys)
    )
    if limit:
        q = q.limit(limit)
    return [_finish(dict(r)) for r in conn.execute(q).mappings()]


def spend_per_day(conn: Connection, by: str, f: Filters, *, top: int = 6) -> dict[str, Any]:
    """Spend per UTC day, one series per team or DAG (the ``top`` costliest; the rest as
    ``(other)``), every day of the period present, so the stacked chart has no gaps."""
    if by not in ("team", "dag"):
        raise ValueError(f"by must be team or dag, not {by!r}")
    key = (TEAM if by == "team" else func.coalesce(DAG_ID, NO_DAG)).label("key")
    q = (
        select(DAY.label("day"), key, func.sum(func.coalesce(STEPS.c.total_usd, 0)).label("usd"))
        .select_from(STEPS)
        .where(f.where())
        .group_by(DAY, key)
    )
    return daily_series(by, [(r.day, r.key, float(r.usd or 0)) for r in conn.execute(q)], f, top=top)


def daily_series(by: str, cells: Sequence[tuple[str, str, float]], f: Filters, *, top: int = 6) -> dict[str, Any]:
    """``(day, key, usd)`` cells into the stacked chart's series (see :func:`spend_per_day`)."""
    per_key: dict[str, float] = {}
    for _, k, usd in cells:
        per_key[k] = per_key.get(k, 0.0) + usd
    ranked = sorted(per_key, key=lambda k: (-per_key[k], k))
    kept = ranked if len(ranked) <= top + 1 else ranked[:top]  # never an (other) of one key
    days = _days(f, [d for d, _, _ in cells])
    index = {d: i for i, d in enumerate(days)}
    series: dict[str, list[float]] = {k: [0.0] * len(days) for k in kept}
    for d, k, usd in cells:
        name = k if k in series else OTHER
        series.setdefault(name, [0.0] * len(days))
        if d in index:
            series[name][index[d]] += usd
    return {
        "by": by,
        "days": days,
        "series": [{"key": k, "usd": vals, "total_usd": sum(vals)} for k, vals in series.items()],
        "total_usd": sum(sum(vals) for vals in series.values()),
    }


_ADDITIVE = (
    "total_usd", "idle_usd", "gpu_hours", "steps", "metered_steps", "failed_steps", "refused_steps", "lost_steps",
)  # fmt: skip


def overview(conn: Connection, f: Filters) -> list[dict[str, Any]]:
    """One scan for most of the page: sums per (UTC day, DAG, team). The page folds these cells
    into its totals, its by-DAG and by-team rows and both stacked charts (a few thousand cells at
    most), instead of scanning the ledger once for each. Every figure is additive except ``runs``
    (a run can span cells), which the cells do not carry."""
    keys = [DAY.label("day"), func.coalesce(DAG_ID, NO_DAG).label("dag_id"), TEAM.label("team")]
    sums = [c for c in _sums() if c.name != "runs"]
    q = select(*keys, *sums).select_from(STEPS).where(f.where()).group_by(*keys)
    return [dict(r) for r in conn.execute(q).mappings()]


def breakdown(conn: Connection, f: Filters) -> list[dict[str, Any]]:
    """The page's second scan: sums per (DAG, task, model), folded into its by-task and by-model
    tables (a task mostly trains one model, so this stays near the number of tasks)."""
    keys = [
        func.coalesce(DAG_ID, NO_DAG).label("dag_id"),
        STEPS.c.name.label("task_id"),
        func.coalesce(STEPS.c.model, UNTAGGED).label("model"),
    ]
    sums = [c for c in _sums() if c.name != "runs"]
    q = select(*keys, *sums).select_from(STEPS).where(f.where()).group_by(*keys)
    return [dict(r) for r in conn.execute(q).mappings()]


def fold(cells: Sequence[dict[str, Any]], key: str | tuple[str, ...] | None) -> list[dict[str, Any]]:
    """Sum cells of :func:`overview` or :func:`breakdown` by one key or a tuple of keys (all of
    them with ``key=None``), costliest first, in the shape of :func:`cost_by` rows without ``runs``."""
    names = () if key is None else (key,) if isinstance(key, str) else key
    out: dict[Any, dict[str, Any]] = {}
    for c in cells:
        k = tuple(c[n] for n in names)
        row = out.setdefault(k, {**{n: c[n] for n in names}, **dict.fromkeys(_ADDITIVE, 0), "simulated": 0})
        for name in _ADDITIVE:
            row[name] += c[name] or 0
        row["simulated"] = max(row["simulated"], c["simulated"] or 0)
    rows = [_finish(r) for r in out.values()]
    if not names:
        return rows or [_finish({**dict.fromkeys(_ADDITIVE, 0), "simulated": 0})]
    return sorted(rows, key=lambda r: (-r["total_usd"], *(str(r[n]) for n in names)))


def _days(f: Filters, seen: Iterable[str]) -> list[str]:
    seen = sorted(set(seen))
    first = f.since[:10] if f.since else (seen[0] if seen else None)
    last = f.until[:10] if f.until else (seen[-1] if seen else None)
    if f.until and f.until[10:].strip("T0:+Z") == "" and first and f.until[:10] > first:
        last = (date.fromisoformat(f.until[:10]) - timedelta(days=1)).isoformat()  # exclusive midnight
    if not f.until and f.since:
        last = max(seen[-1] if seen else first, datetime.now(timezone.utc).date().isoformat())
    if first is None or last is None:
        return []
    start, end = date.fromisoformat(first), date.fromisoformat(last)
    if (end - start).days > 400:  # a custom period of years: keep the chart readable
        start = end - timedelta(days=400)
    return [(start + timedelta(days=i)).isoformat() for i in range((end - start).days + 1)]


def _step_columns() -> list[ColumnElement]:
    """What a listed step shows (top steps, flagged steps): its figures and what its links need."""
    return [
        STEPS.c.step_id, STEPS.c.name, queries.status_of().label("status"), STEPS.c.started_at, STEPS.c.run_key,
        DAG_ID.label("dag_id"), TEAM.label("team"), STEPS.c.total_usd, STEPS.c.idle_usd, STEPS.c.gpus,
        STEPS.c.simulated, REFUSED.label("refused"), STEPS.c.job_id,
    ]  # fmt: skip


def top_steps(conn: Connection, f: Filters, *, order: str = "total", limit: int = 10) -> list[dict[str, Any]]:
    """The costliest steps (``order="total"``) or those that wasted most (``"idle"``), with what a
    link to their MLflow run and Airflow task instance needs (read from the few records shown).

    A job across nodes is one entry, the sum of its nodes (``nodes`` says how many), shown as its
    lowest-ranked node: listed node by node, a 4-node job would rank below a 1-node step that cost
    half as much, and fill the list four times over."""
    if order not in ("total", "idle"):
        raise ValueError(f"order must be total or idle, not {order!r}")
    measure = func.coalesce(STEPS.c.total_usd if order == "total" else STEPS.c.idle_usd, 0)
    single = (
        select(*_step_columns())
        .select_from(STEPS)
        .where(f.where(), STEPS.c.job_id.is_(None), measure > 0)
        .order_by(measure.desc(), STEPS.c.step_id)
        .limit(limit)
    )
    rows = [dict(r) for r in conn.execute(single).mappings()]
    job_sum = func.sum(measure)
    jobs = (
        select(STEPS.c.job_id)
        .where(f.where(), STEPS.c.job_id.is_not(None))
        .group_by(STEPS.c.job_id)
        .having(job_sum > 0)
        .order_by(job_sum.desc(), STEPS.c.job_id)
        .limit(limit)
    )
    job_ids = list(conn.execute(jobs).scalars())
    if job_ids:
        nodes = (
            select(*_step_columns())
            .where(f.where(), STEPS.c.job_id.in_(job_ids))
            .order_by(STEPS.c.job_id, STEPS.c.node_rank, STEPS.c.step_id)
        )
        rows += _jobs_folded(conn.execute(nodes).mappings())
    key = "total_usd" if order == "total" else "idle_usd"
    rows.sort(key=lambda r: (-float(r[key] or 0), r["step_id"]))
    return _with_records(conn, rows[:limit])


def _jobs_folded(node_rows: Iterable[Any]) -> list[dict[str, Any]]:
    """One row per job from its node rows (lowest rank first): the figures summed, the status the
    first node's unless another node did not succeed (a job is as well as its worst node)."""
    jobs: dict[str, dict[str, Any]] = {}
    for r in node_rows:
        job = jobs.get(r["job_id"])
        if job is None:
            jobs[r["job_id"]] = {**r, "nodes": 1}
            continue
        job["nodes"] += 1
        for name in ("total_usd", "idle_usd", "gpus"):
            job[name] = (job[name] or 0) + (r[name] or 0)
        job["simulated"] = max(job["simulated"] or 0, r["simulated"] or 0)
        if job["status"] == STATUS_SUCCEEDED and r["status"] != STATUS_SUCCEEDED:
            job["status"] = r["status"]
    return list(jobs.values())


def flagged_steps(conn: Connection, f: Filters, *, limit: int = 20) -> list[dict[str, Any]]:
    """Steps the policy refused before they started and steps that were lost (no heartbeat):
    money the tables would otherwise hide, newest first."""
    q = (
        select(*_step_columns())
        .select_from(STEPS)
        .where(f.where(), or_(REFUSED, _lost()))
        .order_by(STEPS.c.started_at.desc(), STEPS.c.step_id)
        .limit(limit)
    )
    return _with_records(conn, [dict(r) for r in conn.execute(q).mappings()])


def _with_records(conn: Connection, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    ids = [r["step_id"] for r in rows]
    records: dict[str, dict[str, Any]] = {}
    if ids:
        for sid, text in conn.execute(select(RECORDS.c.step_id, RECORDS.c.record).where(RECORDS.c.step_id.in_(ids))):
            try:
                records[sid] = json.loads(text)
            except (TypeError, ValueError):
                records[sid] = {}
    for r in rows:
        rec = records.get(r["step_id"], {})
        ctx = rec.get("context") or {}
        run_id = ctx.get("run_id")
        if run_id is None and r["dag_id"] and r["run_key"]:
            run_id = r["run_key"].split("/", 1)[1] if "/" in r["run_key"] else None
        r.update(
            total_usd=float(r["total_usd"] or 0),
            idle_usd=float(r["idle_usd"] or 0),
            simulated=bool(r["simulated"]),
            refused=bool(r["refused"]),
            flag="refused" if r["refused"] else ("lost" if r["status"] == STATUS_LOST else None),
            task_id=ctx.get("task_id") or (r["name"] if r["dag_id"] else None),
            run_id=run_id,
            map_index=ctx.get("map_index", "-1"),
            nodes=r.get("nodes", 1),
            mlflow_run_id=rec.get("mlflow_run_id"),
            breach=(rec.get("breach") or {}).get("message"),
        )
    return rows


def dag_runs(conn: Connection, f: Filters, *, limit: int = 20) -> list[dict[str, Any]]:
    """The latest DAG runs with their total and idle cost. The latest runs are found by walking
    the newest steps (the ``started_at`` index), not by grouping the whole ledger by run; only the
    runs shown are summed. (A run is placed by its first step.)"""
    newest = (
        select(STEPS.c.run_key)
        .where(f.where(), STEPS.c.run_key.like("airflow:%"))
        .order_by(STEPS.c.started_at.desc())
        .limit(max(200, 50 * limit))
    )
    keys: list[str] = []
    for (key,) in conn.execute(newest):
        if key not in keys:
            keys.append(key)
            if len(keys) == limit:
                break
    if not keys:
        return []
    q = (
        select(
            STEPS.c.run_key,
            DAG_ID.label("dag_id"),
            func.min(STEPS.c.started_at).label("started_at"),
            func.sum(func.coalesce(STEPS.c.total_usd, 0)).label("total_usd"),
            func.sum(func.coalesce(STEPS.c.idle_usd, 0)).label("idle_usd"),
            func.count().label("steps"),
        )
        .select_from(STEPS)
        .where(f.where(), STEPS.c.run_key.in_(keys))
        .group_by(STEPS.c.run_key)
        .order_by(func.min(STEPS.c.started_at).desc())
    )
    rows = [dict(r) for r in conn.execute(q).mappings()]
    return [{**r, "total_usd": float(r["total_usd"] or 0), "idle_usd": float(r["idle_usd"] or 0)} for r in rows]


def budget_window_burn(store: Any, scope: DagScope, policy: Any, now: datetime | None = None) -> list[dict[str, Any]]:
    """The policy's budget windows (``[[budgets.windows]]``) with their spend this calendar period,
    as ``mlcost budgets`` computes them (:func:`mlcost.windows.window_status`, so both agree to the
    cent). Only for a user who may read every DAG: a window's scope is a team, project, model or
    workload, whose spend crosses DAGs. Empty, and no query, while the policy has no windows.
    ``store`` is None for a ledger no step has written yet (every window at $0)."""
    windows = getattr(getattr(policy, "budgets", None), "windows", None) or []
    if not windows or not scope.all_dags:
        return []
    from mlcost.windows import WindowStatus, period_bounds, window_status

    now = now or datetime.now(timezone.utc)
    out = []
    for w in windows:
        if store is None:
            start, end = period_bounds(w.period, now)
            status = WindowStatus(w, start, end, 0.0, now)
        else:
            status = window_status(store, w, now)
        out.append(status.to_json())
    return out
