"""The Cost view: cost by DAG, task, team and model, with the idle share, read from the ledger.

Served by the Airflow 3 API server as a plugin FastAPI app (``fastapi_apps``) and linked from the
UI's navigation (``external_views``). HTML for people at ``/``, JSON for scripts at ``/api/...``.
It reads the ledger with SQL (the ledger is built for that) and writes nothing.
"""

from __future__ import annotations

import html
import os
from collections.abc import Sequence
from typing import Any


def __getattr__(name: str) -> Any:
    """``GROUPS`` (dag, task, team, model -> key columns), from the query layer on first use: the
    plugin module loads in every Airflow process, which need not build SQL."""
    if name == "GROUPS":
        from mlcost.ledger.queries import COST_VIEW_GROUPS

        return COST_VIEW_GROUPS
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _period(since: str | None) -> Any:
    """``since`` as every reader parses it (an ISO time or a span such as ``7d``); a bad value is a
    ConfigError naming the parameter, which the app answers with 400."""
    from mlcost.period import Period

    return Period.parse(since, None, since_field="since")


class NotYetWritten:
    """A file ledger no step has written yet (a fresh install): the view shows no rows, not an error."""

    def __init__(self, where: str) -> None:
        self.where = where


def open_for_view(spec: str | os.PathLike[str] | None) -> Any:
    """The ledger at ``spec`` opened read-only, or :class:`NotYetWritten` for a file not made yet."""
    from mlcost.ledger.book import open_ledger
    from mlcost.ledger.target import resolve

    target = resolve(spec)
    if target.path is not None and not target.path.exists():
        return NotYetWritten(target.masked)
    return open_ledger(spec)


def cost_by(ledger: Any, group: str, *, since: str | None = None, dag_id: str | None = None) -> list[dict]:
    """Rows of ``{<keys>, total_usd, idle_usd, idle_share, gpu_hours, steps, runs, lost_steps, ...}``,
    costliest first: :func:`mlcost.ledger.queries.cost_by_group`, aggregated in the database."""
    from mlcost.ledger.queries import cost_by_group, reading

    period = _period(since)
    if isinstance(ledger, NotYetWritten):
        return []
    with reading(ledger) as conn:
        return cost_by_group(conn, group, period, dag_id=dag_id)


def dag_runs(ledger: Any, *, since: str | None = None, dag_id: str | None = None, limit: int = 50) -> list[dict]:
    """The latest DAG runs with their total and idle cost: :func:`mlcost.ledger.queries.dag_run_costs`."""
    from mlcost.ledger.queries import dag_run_costs, reading

    period = _period(since)
    if isinstance(ledger, NotYetWritten):
        return []
    with reading(ledger) as conn:
        return dag_run_costs(conn, period, dag_id=dag_id, limit=limit)


def _money(v: Any) -> str:
    return "" if v is None else f"${float(v):,.4f}"


def _table(title: str, rows: Sequence[dict], keys: Sequence[str]) -> str:
    head = "".join(f"<th>{html.escape(k)}</th>" for k in keys)
    head += "<th>cost</th><th>idle cost</th><th>idle share</th><th>GPU-hours</th><th>steps</th><th>runs</th>"
    body = []
    for r in rows:
        cells = "".join(f"<td>{html.escape(str(r[k]))}</td>" for k in keys)
        share = "" if r["idle_share"] is None else f"{r['idle_share']:.0%}"
        sim = " <small>(simulated GPU)</small>" if r.get("simulated") else ""
        cells += (
            f"<td class=n>{_money(r['total_usd'])}{sim}</td><td class=n>{_money(r['idle_usd'])}</td>"
            f"<td class=n>{share}</td><td class=n>{r['gpu_hours']:.4f}</td><td class=n>{r['steps']}</td>"
            f"<td class=n>{r['runs']}</td>"
        )
        body.append(f"<tr>{cells}</tr>")
    empty = f"<tr><td colspan={len(keys) + 6}>no steps recorded yet</td></tr>"
    return f"<h2>{html.escape(title)}</h2><table><tr>{head}</tr>{''.join(body) or empty}</table>"


_STYLE = (
    "body{font-family:system-ui,sans-serif;margin:1.5rem;color:#1b1f24}table{border-collapse:collapse;"
    "margin-bottom:1.5rem}th,td{border:1px solid #d0d7de;padding:.3rem .6rem;text-align:left}"
    "td.n{text-align:right;font-variant-numeric:tabular-nums}th{background:#f6f8fa}h1{margin-top:0}"
)


def render_page(ledger: Any, *, since: str | None = None, dag_id: str | None = None) -> str:
    from mlcost.ledger.queries import COST_VIEW_GROUPS as GROUPS

    parts = [
        f"<!doctype html><html><head><meta charset=utf-8><title>mlcost: cost</title><style>{_STYLE}</style></head>",
        "<body><h1>GPU cost</h1>",
        f"<p>Ledger: <code>{html.escape(str(ledger.where))}</code>"
        + (f" &middot; since {html.escape(since)}" if since else "")
        + (f" &middot; DAG {html.escape(dag_id)}" if dag_id else "")
        + " &middot; JSON: <a href='api/costs?group=dag'>api/costs</a></p>",
    ]
    for group, title in (("dag", "By DAG"), ("task", "By task"), ("team", "By team"), ("model", "By model")):
        parts.append(_table(title, cost_by(ledger, group, since=since, dag_id=dag_id), GROUPS[group]))
    runs = dag_runs(ledger, since=since, dag_id=dag_id, limit=20)
    rows = "".join(
        f"<tr><td>{html.escape(r['run_key'])}</td><td>{html.escape(str(r['started_at']))}</td>"
        f"<td class=n>{_money(r['total_usd'])}</td><td class=n>{_money(r['idle_usd'])}</td>"
        f"<td class=n>{r['steps']}</td></tr>"
        for r in runs
    )
    parts.append(
        "<h2>Latest DAG runs</h2><table><tr><th>run</th><th>started</th><th>cost</th><th>idle cost</th>"
        f"<th>steps</th></tr>{rows}</table></body></html>"
    )
    return "".join(parts)


def create_app(ledger_path: str | os.PathLike[str] | None = None) -> Any:
    """The FastAPI app (imported only here: workers that load the plugin for its listener never
    import FastAPI). ``ledger_path`` defaults to ``$MLCOST_LEDGER``, read per request."""
    from fastapi import FastAPI, HTTPException, Query
    from fastapi.responses import HTMLResponse, JSONResponse

    from mlcost.errors import ConfigError
    from mlcost.ledger.book import Ledger
    from mlcost.ledger.queries import COST_VIEW_GROUPS as GROUPS

    app = FastAPI(title="mlcost cost view", description="GPU cost by DAG, task, team and model, from the ledger")

    @app.exception_handler(ConfigError)
    def bad_input(_request: Any, exc: ConfigError) -> JSONResponse:  # a bad query parameter, no ledger
        return JSONResponse(status_code=400, content={"detail": str(exc)})

    def ledger() -> Ledger | NotYetWritten:
        return open_for_view(ledger_path)  # read-only; the shared one when the path is a URL

    @app.get("/", response_class=HTMLResponse)
    def page(since: str | None = None, dag_id: str | None = None) -> str:
        return render_page(ledger(), since=since, dag_id=dag_id)

    @app.get("/api/costs")
    def costs(
        group: str = Query("dag", description="dag, task, team or model"),
        since: str | None = None,
        dag_id: str | None = None,
    ) -> dict:
        if group not in GROUPS:
            raise HTTPException(status_code=400, detail=f"group must be one of {', '.join(GROUPS)}")
        rows = cost_by(ledger(), group, since=since, dag_id=dag_id)
        return {"group": group, "rows": rows, "total_usd": sum(r["total_usd"] for r in rows)}

    @app.get("/api/runs")
    def runs(since: str | None = None, dag_id: str | None = None, limit: int = 50) -> dict:
        return {"runs": dag_runs(ledger(), since=since, dag_id=dag_id, limit=limit)}

    @app.get("/health")
    def health() -> dict:
        return {"status": "ok", "ledger": ledger().where}

    return app


class LazyApp:
    """An ASGI app that builds :func:`create_app` on its first request.

    Airflow loads plugins in every component, task processes included (for the listener); this
    keeps the plugin module free of FastAPI there, and only the API server ever builds the app.
    """

    def __init__(self, ledger_path: str | os.PathLike[str] | None = None) -> None:
        self.ledger_path = ledger_path
        self._app: Any = None

    @property
    def app(self) -> Any:
        if self._app is None:
            self._app = create_app(self.ledger_path)
        return self._app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        await self.app(scope, receive, send)
