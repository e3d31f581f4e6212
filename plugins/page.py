"""The Cost view's HTML: one server-rendered page, no script, no request to anywhere else.

Built from the same query functions and the same :class:`~mlcost.ledger.cost_view.Filters` as
the JSON API, so the page and ``/api`` always agree. The form is a plain GET form (period, custom
dates, DAG, team, stacking), so every view is a link that can be shared or bookmarked.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from html import escape
from typing import Any
from urllib.parse import urlencode

from mlcost.plugins import charts
from sqlalchemy.engine import Connection

from mlcost.ledger import cost_view as q

STYLE = """
body{font-family:system-ui,sans-serif;margin:1.2rem;color:#1b1f24;background:#fff}
h1{margin:0 0 .3rem}h2{margin:1.4rem 0 .5rem;font-size:1.15rem}
table{border-collapse:collapse;margin-bottom:1rem}th,td{border:1px solid #d0d7de;padding:.25rem .55rem;text-align:left}
td.n{text-align:right;font-variant-numeric:tabular-nums}th{background:#f6f8fa}
form{display:flex;gap:.6rem;flex-wrap:wrap;align-items:end;margin:.6rem 0;padding:.6rem;background:#f6f8fa}
form label{display:flex;flex-direction:column;font-size:.8rem;color:#57606a}
.cards{display:flex;gap:.8rem;flex-wrap:wrap}.card{border:1px solid #d0d7de;border-radius:6px;padding:.5rem .8rem}
.card b{display:block;font-size:1.25rem}.muted,.axis{fill:#57606a;color:#57606a;font-size:11px}
.grid{stroke:#d0d7de}.forecast{stroke:#1b1f24;stroke-width:2}.track{fill:#f0f2f4}.row{display:flex;gap:2rem;flex-wrap:wrap}
.sim{background:#fff8c5;border:1px solid #d4a72c;padding:.4rem .7rem;border-radius:6px}
.flag{font-weight:600;color:#d62728}.flag.lost{color:#7f3fbf}
.legend{list-style:none;padding:0;display:flex;flex-wrap:wrap;gap:.3rem 1rem;font-size:.85rem}
.swatch{display:inline-block;width:.8rem;height:.8rem;margin-right:.3rem;vertical-align:-1px}
"""

Link = Callable[[dict[str, Any]], dict[str, str]]


def _qs(f: q.Filters, **over: Any) -> str:
    custom = f.name == "custom"
    args = {"period": f.name, "since": f.since if custom else None, "until": f.until if custom else None}
    args.update(dag_id=f.dag_id, team=f.team)
    args.update(over)
    return "?" + urlencode({k: v for k, v in args.items() if v})


def _form(f: q.Filters, stack: str, dags: Sequence[str], teams: Sequence[str]) -> str:
    def options(values: Sequence[str], chosen: str | None, blank: str) -> str:
        opts = [f'<option value="">{blank}</option>']
        opts += [
            f'<option value="{escape(v)}"{" selected" if v == chosen else ""}>{escape(v)}</option>'
            for v in values
            if v != q.NO_DAG
        ]
        return "".join(opts)

    periods = "".join(
        f'<option value="{p}"{" selected" if p == f.name else ""}>{label}</option>'
        for p, label in (
            ("24h", "last 24 h"),
            ("7d", "last 7 days"),
            ("30d", "last 30 days"),
            ("all", "all time"),
            ("custom", "custom"),
        )
    )
    since = (f.since or "")[:10] if f.name == "custom" else ""
    until = (f.until or "")[:10] if f.name == "custom" else ""
    return (
        '<form method="get" action="">'
        f'<label>Period<select name="period">{periods}</select></label>'
        f'<label>From (custom)<input type="date" name="since" value="{escape(since)}"></label>'
        f'<label>Until, exclusive (custom)<input type="date" name="until" value="{escape(until)}"></label>'
        f'<label>DAG<select name="dag_id">{options(dags, f.dag_id, "all DAGs")}</select></label>'
        f'<label>Team<select name="team">{options(teams, f.team, "all teams")}</select></label>'
        f'<input type="hidden" name="stack" value="{escape(stack)}">'
        '<button type="submit">Show</button></form>'
    )


def _cards(t: dict[str, Any]) -> str:
    share = "n/a" if t["idle_share"] is None else f"{t['idle_share']:.0%}"
    items = [
        ("Spend", charts.money(t["total_usd"])),
        ("Idle", charts.money(t["idle_usd"])),
        ("Idle share", share),
        ("GPU-hours", f"{t['gpu_hours']:,.2f}"),
        ("Steps", f"{t['steps']:,}"),
        ("Refused", f"{t['refused_steps']:,}"),
        ("Lost", f"{t['lost_steps']:,}"),
    ]
    cells = "".join(f'<div class="card">{k}<b data-total="{k.lower()}">{v}</b></div>' for k, v in items)
    return f'<div class="cards" id="totals" data-total-usd="{t["total_usd"]!r}">{cells}</div>'


def _table(title: str, rows: Sequence[dict[str, Any]], keys: Sequence[str], *, table_id: str) -> str:
    head = "".join(f"<th>{escape(k)}</th>" for k in keys)
    runs = bool(rows) and rows[0].get("runs") is not None
    head += "<th>cost</th><th>idle cost</th><th>idle share</th><th>GPU-hours</th><th>steps</th>"
    head += "<th>runs</th>" if runs else ""
    body = []
    for r in rows:
        cells = "".join(f"<td>{escape(str(r[k]))}</td>" for k in keys)
        share = "" if r["idle_share"] is None else f"{r['idle_share']:.0%}"
        sim = " <small>(simulated GPU)</small>" if r.get("simulated") else ""
        cells += (
            f"<td class=n>{charts.money(r['total_usd'])}{sim}</td><td class=n>{charts.money(r['idle_usd'])}</td>"
            f"<td class=n>{share}</td><td class=n>{r['gpu_hours']:.4f}</td><td class=n>{r['steps']}</td>"
        )
        cells += f"<td class=n>{r['runs']}</td>" if runs else ""
        body.append(f"<tr>{cells}</tr>")
    empty = f"<tr><td colspan={len(keys) + 6}>no steps in this period</td></tr>"
    return f'<h2>{escape(title)}</h2><table id="{table_id}"><tr>{head}</tr>{"".join(body) or empty}</table>'


def _steps_table(rows: Sequence[dict[str, Any]], link: Link, *, table_id: str) -> str:
    body = []
    for r in rows:
        links = link(r)
        where = escape(f"{r['dag_id'] or q.NO_DAG}.{r['task_id'] or r['name']}")
        if "airflow" in links:
            where = f'<a href="{escape(links["airflow"])}" target="_top">{where}</a>'
        if r.get("nodes", 1) > 1:
            where += f" <small>(job of {r['nodes']} nodes)</small>"
        mlflow = (
            f'<a href="{escape(links["mlflow"])}" target="_blank" rel="noopener">run</a>' if "mlflow" in links else ""
        )
        flag = f'<span class="flag {r["flag"]}">{r["flag"]}</span>' if r.get("flag") else escape(r["status"])
        why = f"<br><small>{escape(r['breach'])}</small>" if r.get("breach") else ""
        sim = " <small>(simulated GPU)</small>" if r.get("simulated") else ""
        body.append(
            f"<tr><td>{where}</td><td>{escape(str(r['started_at'])[:19])}</td><td>{escape(r['team'])}</td>"
            f"<td>{flag}{why}</td><td class=n>{charts.money(r['total_usd'])}{sim}</td>"
            f"<td class=n>{charts.money(r['idle_usd'])}</td><td>{mlflow}</td></tr>"
        )
    head = "".join(f"<th>{h}</th>" for h in ("step", "started (UTC)", "team", "status", "cost", "idle", "MLflow"))
    head = f"<tr>{head}</tr>"
    empty = "<tr><td colspan=7>none in this period</td></tr>"
    return f'<table id="{table_id}">{head}{"".join(body) or empty}</table>'


def _windows(rows: Sequence[dict[str, Any]]) -> str:
    """Budget windows and their burn: nothing at all while the policy has none (or the user may
    not read every DAG; see :func:`mlcost.ledger.cost_view.budget_window_burn`)."""
    if not rows:
        return ""
    body = "".join(
        f"<tr><td>{escape(str(w['name']))}</td><td>{escape(str(w['period']))} from "
        f"{escape(str(w['period_start'])[:10])}</td><td class=n>{charts.money(w['spent_usd'])}</td>"
        f"<td class=n>{charts.money(w['limit_usd'])}</td><td class=n>{charts.money(w['forecast_usd'])}</td>"
        f"<td>{escape(str(w['state']))}</td></tr>"
        for w in rows
    )
    head = "<tr><th>window</th><th>period</th><th>spent</th><th>limit</th><th>forecast</th><th>state</th></tr>"
    return "<h2>Budget windows</h2>" + charts.burn_bars(rows) + f'<table id="budget-windows">{head}{body}</table>'


def render_page(
    conn: Connection,
    f: q.Filters,
    *,
    stack: str = "team",
    link: Link = lambda r: {},
    windows: Sequence[dict[str, Any]] = (),
) -> str:
    """The whole page for one user's :class:`Filters` (their DAG scope included)."""
    cells = q.overview(conn, f)  # one scan: totals, by DAG, by team and both stacked charts
    (totals,) = q.fold(cells, None)
    by_dag, by_team = q.fold(cells, "dag_id"), q.fold(cells, "team")
    if f.dag_id or f.team:  # the choices of the form stay those of the whole period
        wide = q.overview(conn, f.widened())
        dags, teams = [r["dag_id"] for r in q.fold(wide, "dag_id")], [r["team"] for r in q.fold(wide, "team")]
    else:
        dags, teams = [r["dag_id"] for r in by_dag], [r["team"] for r in by_team]
    key = "team" if stack == "team" else "dag_id"
    daily = q.daily_series(stack, [(c["day"], c[key], float(c["total_usd"] or 0)) for c in cells], f)
    parts_cells = q.breakdown(conn, f)  # the second scan: by task and by model
    top_cost = q.top_steps(conn, f, order="total", limit=10)
    top_idle = q.top_steps(conn, f, order="idle", limit=10)
    flagged = q.flagged_steps(conn, f, limit=20)
    scope = "every DAG" if f.scope.all_dags else f"the {len(f.scope.dag_ids)} DAG(s) you may read"
    period = f"{f.name}" if f.name != "custom" else f"{(f.since or '…')[:10]} to {(f.until or 'now')[:10]}"
    other = "dag" if stack == "team" else "team"
    parts = [
        "<!doctype html><html lang=en><head><meta charset=utf-8><title>mlcost: Cost view</title>",
        f'<link rel="icon" href="data:,"><style>{STYLE}</style></head><body>',
        "<h1>GPU cost</h1>",
        f'<p class="muted" id="scope">Signed in as <b>{escape(f.scope.user)}</b>: showing {scope}, '
        f'period <b>{escape(period)}</b>. JSON: <a href="api/costs{_qs(f)}">api/costs</a> · '
        '<a href="openapi.json">OpenAPI</a></p>',
        _form(f, stack, dags, teams),
    ]
    if totals["simulated"]:
        parts.append(
            '<p class="sim" id="simulated"><b>Simulated data.</b> Some of these steps ran on a simulated GPU '
            "(<code>MLCOST_GPU_BACKEND=simulated</code>): their usage and cost come from a trace, not hardware.</p>"
        )
    parts += [
        _cards(totals),
        f'<h2>Spend per day, by {stack} <small><a href="{escape(_qs(f, stack=other))}">by {other}</a></small></h2>',
        charts.stacked_days(daily),
        '<div class="row"><div><h2>Idle share by DAG</h2>',
        charts.share_bars("idle-by-dag", by_dag, "dag_id", label="Idle share by DAG"),
        "</div><div><h2>Idle share by team</h2>",
        charts.share_bars("idle-by-team", by_team, "team", label="Idle share by team"),
        '</div></div><div class="row"><div><h2>Top steps by cost</h2>',
        charts.step_bars("top-cost", top_cost, "total_usd", label="Top steps by cost"),
        "</div><div><h2>Top steps by idle $</h2>",
        charts.step_bars("top-idle", top_idle, "idle_usd", label="Top steps by idle cost"),
        "</div></div><h2>Top steps</h2>",
        _steps_table(top_cost, link, table_id="top-steps"),
        "<h2>Refused and lost steps</h2>",
        _steps_table(flagged, link, table_id="flagged"),
        _windows(windows),
        _table("By DAG", by_dag, ("dag_id",), table_id="by-dag"),
        _table("By task", q.fold(parts_cells, ("dag_id", "task_id"))[:50], ("dag_id", "task_id"), table_id="by-task"),
        _table("By team", by_team, ("team",), table_id="by-team"),
        _table("By model", q.fold(parts_cells, "model")[:50], ("model",), table_id="by-model"),
    ]
    runs = q.dag_runs(conn, f, limit=10)
    rows = "".join(
        f"<tr><td>{escape(r['run_key'])}</td><td>{escape(str(r['started_at'])[:19])}</td>"
        f"<td class=n>{charts.money(r['total_usd'])}</td><td class=n>{charts.money(r['idle_usd'])}</td>"
        f"<td class=n>{r['steps']}</td></tr>"
        for r in runs
    )
    parts.append(
        '<h2>Latest DAG runs</h2><table id="runs"><tr><th>run</th><th>started (UTC)</th><th>cost</th>'
        f"<th>idle cost</th><th>steps</th></tr>{rows}</table></body></html>"
    )
    return "".join(parts)
