"""The Cost view: what each DAG, task, team and model spent on GPUs, how much of it idled, and
what the policy stopped; as pictures and tables for people at ``/``, as JSON for scripts at ``/api``.

Served by the Airflow 3 API server as a plugin FastAPI app (``fastapi_apps``) and linked from the
UI's navigation (``external_views``). A plugin app gets no authentication from Airflow unless it
asks, so every route but ``/health`` takes :data:`FiltersDep`, which asks Airflow's auth manager
who the user is and which DAGs they may read (``plugins/auth.py``); the queries
(:mod:`mlcost.ledger.cost_view`, in the query layer) aggregate in the database and the pictures
(``plugins/charts.py``) are drawn on the server. It reads the ledger and writes nothing.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Annotated, Any

from fastapi import Depends, FastAPI, HTTPException, Query, Request
from fastapi.exception_handlers import http_exception_handler
from fastapi.responses import HTMLResponse, RedirectResponse
from mlcost.plugins.auth import DagScopeDep, login_url
from mlcost.plugins.page import render_page
from pydantic import BaseModel, Field
from sqlalchemy.engine import Connection, Engine

from mlcost.errors import ConfigError
from mlcost.ledger import cost_view as q

log = logging.getLogger(__name__)

API_DESCRIPTION = """GPU cost from the mlcost ledger, by DAG, task, team and model, for the user's
readable DAGs only. Authenticate as for Airflow's own REST API: a Bearer token from `POST /auth/token`,
or the UI's session cookie. Every endpoint takes the same filters: `period` (`24h`, `7d`, `30d`,
`all`; default `30d`) or a custom `since`/`until` (ISO 8601, `until` exclusive), and `dag_id`, `team`.
Steps of no DAG (plain Python, Kubeflow) are included only for users who may read every DAG. Figures
are US dollars; a `simulated` flag marks figures metered on a simulated GPU."""


def filters(
    scope: DagScopeDep,
    period: Annotated[str | None, Query(description="24h, 7d, 30d or all (default 30d)")] = None,
    since: Annotated[str | None, Query(description="custom period start, ISO 8601, inclusive")] = None,
    until: Annotated[str | None, Query(description="custom period end, ISO 8601, exclusive")] = None,
    dag_id: Annotated[str | None, Query(description="only this DAG")] = None,
    team: Annotated[str | None, Query(description="only this team (`(untagged)` for none)")] = None,
) -> q.Filters:
    try:
        return q.period_filters(scope, period=period, since=since, until=until, dag_id=dag_id, team=team)
    except ConfigError as e:  # names the parameter and what it takes
        raise HTTPException(status_code=400, detail=str(e)) from None


FiltersDep = Annotated[q.Filters, Depends(filters)]


class Sums(BaseModel):
    total_usd: float
    idle_usd: float
    idle_share: float | None = Field(description="idle_usd / total_usd; null when nothing was spent")
    gpu_hours: float
    steps: int
    runs: int
    metered_steps: int
    failed_steps: int = Field(description="failed, breached, killed or lost")
    refused_steps: int = Field(description="refused by a guardrail before they started (spent $0)")
    lost_steps: int = Field(description="stopped reporting (no heartbeat); counted with their last usage")
    simulated: bool = Field(description="some figures were metered on a simulated GPU")


class CostRow(Sums):
    dag_id: str | None = None
    task_id: str | None = None
    team: str | None = None
    model: str | None = None


class Period(BaseModel):
    period: str
    since: str | None
    until: str | None
    dag_id: str | None
    team: str | None


class CostsOut(BaseModel):
    group: str
    filters: Period
    rows: list[CostRow]
    total_usd: float


class TotalsOut(BaseModel):
    filters: Period
    totals: Sums


class Series(BaseModel):
    key: str = Field(description="the team or DAG id; `(other)` sums those past the top ones")
    usd: list[float] = Field(description="one figure per entry of `days`")
    total_usd: float


class DailyOut(BaseModel):
    by: str
    filters: Period
    days: list[str]
    series: list[Series]
    total_usd: float


class StepRow(BaseModel):
    step_id: str
    name: str
    status: str
    flag: str | None = Field(description="`refused` or `lost`, else null")
    started_at: str
    dag_id: str | None
    task_id: str | None
    run_id: str | None
    team: str
    total_usd: float
    idle_usd: float
    gpus: int | None
    job_id: str | None = Field(description="the multi-node job this step belongs to, else null")
    nodes: int = Field(description="in the top lists, a job is one row, the sum of its `nodes` nodes")
    simulated: bool
    mlflow_run_id: str | None
    breach: str | None
    links: dict[str, str] = Field(description="`airflow` (the task instance) and `mlflow` (the run), when known")


class StepsOut(BaseModel):
    filters: Period
    steps: list[StepRow]


class RunRow(BaseModel):
    run_key: str
    dag_id: str | None
    started_at: str
    total_usd: float
    idle_usd: float
    steps: int


class RunsOut(BaseModel):
    filters: Period
    runs: list[RunRow]


class Window(BaseModel):
    name: str
    scope: dict[str, str] = Field(description="team / project / model / workload; empty: everyone")
    period: str = Field(description="day, week or month (calendar, UTC)")
    period_start: str
    period_end: str
    spent_usd: float
    limit_usd: float
    share_pct: float | None
    forecast_usd: float = Field(description="spend by the period's end at the rate so far")
    state: str = Field(description="ok, warned or spent")
    warn_at_pct: list[float]
    stop_running: bool


class WindowsOut(BaseModel):
    windows: list[Window] = Field(
        description="empty when the policy has none, or for a user who may not read every DAG "
        "(a window's scope is a team, project, model or workload, whose spend crosses DAGs)"
    )


class Health(BaseModel):
    status: str


def _period(f: q.Filters) -> Period:
    return Period(period=f.name, since=f.since, until=f.until, dag_id=f.dag_id, team=f.team)


def mlflow_ui() -> str | None:
    """The MLflow UI a run links to: ``MLFLOW_TRACKING_URI`` when it is a server (http/https)."""
    uri = os.environ.get("MLFLOW_TRACKING_URI", "")
    return uri.rstrip("/") if uri.startswith(("http://", "https://")) else None


def step_links(row: dict[str, Any], airflow_root: str) -> dict[str, str]:
    """Links to the step's Airflow task instance and MLflow run, where the ledger knows them."""
    from urllib.parse import quote

    links = {}
    if row.get("dag_id") and row.get("run_id") and row.get("task_id"):
        dag, run, task = (quote(str(row[k]), safe="") for k in ("dag_id", "run_id", "task_id"))
        ti = f"{airflow_root}/dags/{dag}/runs/{run}/tasks/{task}"
        if str(row.get("map_index", "-1")) not in ("-1", ""):
            ti += f"/mapped/{quote(str(row['map_index']))}"
        links["airflow"] = ti
    ui = mlflow_ui()
    if ui and row.get("mlflow_run_id"):
        links["mlflow"] = f"{ui}/#/runs/{quote(str(row['mlflow_run_id']), safe='')}"
    return links


def airflow_root(request: Request) -> str:
    """The Airflow UI's root path, as seen from this mounted app (``/mlcost`` stripped)."""
    from mlcost.plugins.cost_plugin import URL_PREFIX

    root = request.scope.get("root_path", "")
    return root[: -len(URL_PREFIX)] if root.endswith(URL_PREFIX) else ""


def create_app(ledger: str | os.PathLike[str] | None = None) -> FastAPI:
    """The app the plugin mounts (built on its first request, see :class:`LazyApp`). ``ledger``
    defaults to ``$MLCOST_LEDGER``: a SQLite path or a SQLAlchemy URL."""
    from mlcost.plugins.version_compat import get_auth_manager

    # OpenAPI at /openapi.json; no /docs page, since FastAPI's Swagger UI loads from a CDN (air-gapped Airflows).
    app = FastAPI(title="mlcost Cost view", version="1", description=API_DESCRIPTION, docs_url=None, redoc_url=None)
    app.state.auth_manager = get_auth_manager()  # what Airflow's security dependencies read
    books: dict[str, Any] = {}
    empty: list[Engine] = []

    def opened() -> Any:
        """The ledger opened read-only and checked once (:func:`mlcost.ledger.book.open_ledger`;
        the shared one when ``MLCOST_LEDGER`` is a URL), or None for a file no step has written
        yet: the API server starts before the first step, and that is an empty view, not an error."""
        from mlcost.ledger.book import open_ledger
        from mlcost.ledger.target import resolve

        spec = ledger if ledger is not None else os.environ.get("MLCOST_LEDGER") or None
        book = books.get(str(spec))
        if book is None:
            target = resolve(spec)
            if target.path is not None and not target.path.exists():
                return None
            book = books[str(spec)] = open_ledger(spec)
        return book

    @contextmanager
    def reading() -> Iterator[Connection]:
        book = opened()
        with book.store.connect() if book is not None else empty_ledger().connect() as conn:
            yield conn

    def windows(scope: q.DagScope) -> list[dict[str, Any]]:
        """Budget windows of the policy (``MLCOST_POLICY``, else ./mlcost.toml, ...) and their burn."""
        from mlcost.policy import Policy

        try:
            policy = Policy.load()
        except ConfigError as e:  # the view still shows spend; the policy's owner sees why not windows
            log.warning("mlcost: the Cost view shows no budget windows: %s", e)
            return []
        book = opened()
        return q.budget_window_burn(book.store if book is not None else None, scope, policy)

    def empty_ledger() -> Engine:
        if not empty:
            from sqlalchemy import create_engine
            from sqlalchemy.pool import StaticPool

            from mlcost.ledger.schema import metadata

            engine = create_engine(  # one in-memory database for every connection and thread
                "sqlite://", poolclass=StaticPool, connect_args={"check_same_thread": False}
            )
            metadata.create_all(engine)
            empty.append(engine)
        return empty[0]

    @app.exception_handler(ConfigError)
    async def unavailable(request: Request, exc: ConfigError) -> Any:
        """The ledger is missing, damaged or unreachable (the message masks any password)."""
        from fastapi.responses import JSONResponse

        return JSONResponse(status_code=503, content={"detail": f"the ledger cannot be read: {exc}"})

    def steps_with_links(rows: list[dict[str, Any]], request: Request) -> list[dict[str, Any]]:
        root = airflow_root(request)
        return [{**r, "links": step_links(r, root)} for r in rows]

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    def page(
        request: Request,
        f: FiltersDep,
        stack: Annotated[str, Query(description="team or dag")] = "team",
    ) -> str:
        if stack not in ("team", "dag"):
            stack = "team"
        with reading() as conn:
            return render_page(
                conn, f, stack=stack, link=lambda r: step_links(r, airflow_root(request)), windows=windows(f.scope)
            )

    @app.exception_handler(HTTPException)
    async def to_login(request: Request, exc: HTTPException) -> Any:
        """The page sends a browser without a valid session to Airflow's login, and back after it;
        the API answers 401/403 as Airflow's own API does."""
        if request.scope.get("endpoint") is page and exc.status_code in (401, 403):
            return RedirectResponse(login_url(request), status_code=303)
        return await http_exception_handler(request, exc)

    @app.get("/api/totals", response_model=TotalsOut, summary="Sums over the filtered steps")
    def api_totals(f: FiltersDep) -> dict:
        with reading() as conn:
            return {"filters": _period(f), "totals": q.totals(conn, f)}

    @app.get("/api/costs", response_model=CostsOut, summary="Cost by DAG, task, team or model, costliest first")
    def api_costs(f: FiltersDep, group: Annotated[str, Query(description="dag, task, team or model")] = "dag") -> dict:
        if group not in q.GROUPS:
            raise HTTPException(status_code=400, detail=f"group must be one of {', '.join(q.GROUPS)}")
        with reading() as conn:
            rows = q.cost_by(conn, group, f)
        return {"group": group, "filters": _period(f), "rows": rows, "total_usd": sum(r["total_usd"] for r in rows)}

    @app.get("/api/daily", response_model=DailyOut, summary="Spend per UTC day, one series per team or DAG")
    def api_daily(f: FiltersDep, by: Annotated[str, Query(description="team or dag")] = "team") -> dict:
        if by not in ("team", "dag"):
            raise HTTPException(status_code=400, detail="by must be team or dag")
        with reading() as conn:
            return {"filters": _period(f), **q.spend_per_day(conn, by, f)}

    @app.get("/api/top-steps", response_model=StepsOut, summary="The costliest steps, or those that idled most")
    def api_top_steps(
        request: Request,
        f: FiltersDep,
        order: Annotated[str, Query(description="total or idle")] = "total",
        limit: Annotated[int, Query(ge=1, le=500)] = 10,
    ) -> dict:
        if order not in ("total", "idle"):
            raise HTTPException(status_code=400, detail="order must be total or idle")
        with reading() as conn:
            rows = q.top_steps(conn, f, order=order, limit=limit)
        return {"filters": _period(f), "steps": steps_with_links(rows, request)}

    @app.get("/api/flagged", response_model=StepsOut, summary="Steps refused before they started, and lost steps")
    def api_flagged(request: Request, f: FiltersDep, limit: Annotated[int, Query(ge=1, le=500)] = 50) -> dict:
        with reading() as conn:
            rows = q.flagged_steps(conn, f, limit=limit)
        return {"filters": _period(f), "steps": steps_with_links(rows, request)}

    @app.get("/api/runs", response_model=RunsOut, summary="The latest DAG runs with their cost")
    def api_runs(f: FiltersDep, limit: Annotated[int, Query(ge=1, le=1000)] = 50) -> dict:
        with reading() as conn:
            return {"filters": _period(f), "runs": q.dag_runs(conn, f, limit=limit)}

    @app.get(
        "/api/budget-windows",
        response_model=WindowsOut,
        summary="The policy's budget windows and their spend this period (users who may read every DAG)",
    )
    def api_windows(scope: DagScopeDep) -> dict:
        return {"windows": windows(scope)}

    @app.get("/health", response_model=Health, summary="Liveness: the view can read its ledger")
    def health() -> dict:
        """Public, like Airflow's own health endpoint, so it says nothing about where the ledger is."""
        try:
            with reading() as conn:
                q.totals(conn, q.Filters(scope=q.DagScope(all_dags=False)))
        except Exception:
            return {"status": "ledger unreachable"}
        return {"status": "ok"}

    return app
