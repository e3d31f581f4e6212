"""The Cost view's pictures, drawn on the server as inline SVG: no JavaScript, no CDN, no library,
so they work in an air-gapped Airflow and in a screenshot alike.

Each chart is one ``<svg class="chart" data-chart=NAME data-total-usd=...>``; each series or bar is
one ``<path>`` carrying its figure in ``data-usd`` (or ``data-share``), so a test (or a person with
the inspector) can check the picture against the JSON API. Pure functions from plain data to text.
"""

from __future__ import annotations

from collections.abc import Sequence
from html import escape
from typing import Any

PALETTE = ("#4e79a7", "#f28e2b", "#59a14f", "#e15759", "#76b7b2", "#edc948", "#b07aa1", "#9c755f")
OTHER_COLOUR = "#bab0ac"
FLAG_COLOUR = {"refused": "#d62728", "lost": "#7f3fbf"}


def _n(v: float) -> str:
    return f"{v:.2f}".rstrip("0").rstrip(".") or "0"


def money(v: float | None) -> str:
    if v is None:
        return ""
    return f"${v:,.2f}" if abs(v) >= 100 else f"${v:,.4f}"


def _svg(name: str, width: int, height: int, body: str, *, label: str, total: float | None = None) -> str:
    total_attr = f' data-total-usd="{total!r}"' if total is not None else ""
    return (
        f'<svg class="chart" data-chart="{name}"{total_attr} role="img" aria-label="{escape(label)}" '
        f'viewBox="0 0 {width} {height}" width="{width}" height="{height}" xmlns="http://www.w3.org/2000/svg">'
        f"<title>{escape(label)}</title>{body}</svg>"
    )


def _empty(name: str, label: str, width: int = 640, height: int = 60) -> str:
    body = '<text x="8" y="34" class="muted">no spend in this period</text>'
    return _svg(name, width, height, body, label=label, total=0.0)


def _axis(v: float) -> str:
    return f"${v:,.0f}" if v >= 10 else f"${v:,.2f}".rstrip("0").rstrip(".")


def _colour(key: str, i: int) -> str:
    return OTHER_COLOUR if key == "(other)" else PALETTE[i % len(PALETTE)]


def _nice_max(v: float) -> float:
    if v <= 0:
        return 1.0
    exp = 10 ** len(str(int(v))) / 10 if v >= 1 else 1.0
    for step in (1, 2, 2.5, 5, 10):
        if v <= step * exp:
            return step * exp
    return 10 * exp


def stacked_days(data: dict[str, Any], *, width: int = 760, height: int = 260) -> str:
    """Spend per day, one colour per team or DAG, stacked; a legend with each series' total."""
    days: Sequence[str] = data["days"]
    series: Sequence[dict[str, Any]] = data["series"]
    label = f"Spend per day by {data['by']}"
    if not days or not series:
        return _empty("spend-per-day", label)
    left, right, top = 64, 8, 10
    bottom = 28
    plot_h = height - top - bottom
    plot_w = width - left - right
    day_totals = [sum(s["usd"][i] for s in series) for i in range(len(days))]
    ymax = _nice_max(max(day_totals))
    slot = plot_w / len(days)
    bar_w = max(1.0, slot * 0.8)
    parts = []
    for frac in (0, 0.5, 1):  # gridlines and their labels
        y = top + plot_h * (1 - frac)
        parts.append(f'<line x1="{left}" x2="{width - right}" y1="{_n(y)}" y2="{_n(y)}" class="grid"/>')
        parts.append(f'<text x="{left - 6}" y="{_n(y + 4)}" text-anchor="end" class="axis">{_axis(ymax * frac)}</text>')
    base = [0.0] * len(days)
    for si, s in enumerate(series):
        d = []
        for i, usd in enumerate(s["usd"]):
            if usd <= 0:
                continue
            h = plot_h * usd / ymax
            x = left + i * slot + (slot - bar_w) / 2
            y = top + plot_h - plot_h * base[i] / ymax - h
            d.append(f"M{_n(x)} {_n(y)}h{_n(bar_w)}v{_n(max(h, 0.5))}h{_n(-bar_w)}Z")
            base[i] += usd
        title = f"{s['key']}: {money(s['total_usd'])}"
        parts.append(
            f'<path d="{" ".join(d)}" fill="{_colour(s["key"], si)}" data-key="{escape(s["key"])}" '
            f'data-usd="{s["total_usd"]!r}"><title>{escape(title)}</title></path>'
        )
    step = max(1, len(days) // 8)
    for i in range(0, len(days), step):
        x = left + i * slot + slot / 2
        parts.append(f'<text x="{_n(x)}" y="{height - 10}" text-anchor="middle" class="axis">{days[i][5:]}</text>')
    chart = _svg("spend-per-day", width, height, "".join(parts), label=label, total=data["total_usd"])
    return chart + _legend(series)


def _legend(series: Sequence[dict[str, Any]]) -> str:
    items = "".join(
        f'<li><span class="swatch" style="background:{_colour(s["key"], i)}"></span>'
        f"{escape(s['key'])} <b>{money(s['total_usd'])}</b></li>"
        for i, s in enumerate(series)
    )
    return f'<ul class="legend">{items}</ul>'


def share_bars(name: str, rows: Sequence[dict[str, Any]], key: str, *, width: int = 370, label: str) -> str:
    """Idle share per DAG or team: one bar each (0–100 %), its idle $ of its total beside it."""
    rows = [r for r in rows if r["total_usd"] > 0][:10]
    if not rows:
        return _empty(name, label, width)
    left, bar_h, gap = 120, 16, 8
    plot_w = width - left - 110
    height = len(rows) * (bar_h + gap) + 8
    parts = []
    for i, r in enumerate(rows):
        y = 4 + i * (bar_h + gap)
        share = r["idle_usd"] / r["total_usd"]
        w = max(0.5, plot_w * share)
        parts.append(_label(left, y, _short(r[key])))
        parts.append(f'<rect x="{left}" y="{y}" width="{plot_w}" height="{bar_h}" class="track"/>')
        parts.append(
            f'<path d="M{left} {y}h{_n(w)}v{bar_h}h{_n(-w)}Z" fill="{PALETTE[3]}" data-key="{escape(str(r[key]))}" '
            f'data-share="{share!r}" data-usd="{r["idle_usd"]!r}"><title>{escape(str(r[key]))}: '
            f"{share:.0%} idle, {money(r['idle_usd'])} of {money(r['total_usd'])}</title></path>"
        )
        parts.append(
            f'<text x="{left + plot_w + 6}" y="{y + 12}" class="axis">{share:.0%} · {money(r["idle_usd"])}</text>'
        )
    total = sum(r["idle_usd"] for r in rows)
    return _svg(name, width, height, "".join(parts), label=label, total=total)


def step_bars(name: str, rows: Sequence[dict[str, Any]], measure: str, *, width: int = 370, label: str) -> str:
    """The top steps by ``measure`` (``total_usd`` or ``idle_usd``); refused and lost steps marked."""
    if not rows:
        return _empty(name, label, width)
    left, bar_h, gap = 150, 16, 8
    plot_w = width - left - 80
    height = len(rows) * (bar_h + gap) + 8
    vmax = max(r[measure] for r in rows) or 1.0
    parts = []
    for i, r in enumerate(rows):
        y = 4 + i * (bar_h + gap)
        w = max(0.5, plot_w * r[measure] / vmax)
        who = f"{r['dag_id'] or '(no DAG)'}.{r['task_id'] or r['name']}"
        who += f" ×{r['nodes']}" if r.get("nodes", 1) > 1 else ""
        mark = f" [{r['flag']}]" if r.get("flag") else ""
        colour = FLAG_COLOUR.get(r.get("flag") or "", PALETTE[0] if measure == "total_usd" else PALETTE[3])
        parts.append(_label(left, y, _short(who, 24)))
        parts.append(
            f'<path d="M{left} {y}h{_n(w)}v{bar_h}h{_n(-w)}Z" fill="{colour}" data-key="{escape(r["step_id"])}" '
            f'data-usd="{r[measure]!r}"><title>{escape(who + mark)}: {money(r[measure])}</title></path>'
        )
        parts.append(f'<text x="{_n(left + w + 4)}" y="{y + 12}" class="axis">{money(r[measure])}{escape(mark)}</text>')
    return _svg(name, width, height, "".join(parts), label=label, total=sum(r[measure] for r in rows))


def _label(left: int, y: float, text: str) -> str:
    return f'<text x="{left - 6}" y="{_n(y + 12)}" text-anchor="end" class="axis">{escape(text)}</text>'


def _short(text: Any, n: int = 18) -> str:
    text = str(text)
    return text if len(text) <= n else text[: n - 1] + "…"


def burn_bars(rows: Sequence[dict[str, Any]], *, width: int = 700) -> str:
    """Budget windows: spent against the limit this period (the bar), the forecast (a tick)."""
    left, bar_h, gap = 150, 16, 8
    plot_w = width - left - 220
    height = len(rows) * (bar_h + gap) + 8
    parts = []
    for i, r in enumerate(rows):
        y = 4 + i * (bar_h + gap)
        limit = r["limit_usd"] or 0.0
        share = min(r["spent_usd"] / limit, 1.0) if limit > 0 else 1.0
        w = max(0.5, plot_w * share)
        colour = {"ok": PALETTE[2], "warned": PALETTE[5], "spent": PALETTE[3]}.get(r["state"], PALETTE[0])
        parts.append(_label(left, y, _short(r["name"], 22)))
        parts.append(f'<rect x="{left}" y="{y}" width="{plot_w}" height="{bar_h}" class="track"/>')
        parts.append(
            f'<path d="M{left} {y}h{_n(w)}v{bar_h}h{_n(-w)}Z" fill="{colour}" data-key="{escape(r["name"])}" '
            f'data-usd="{r["spent_usd"]!r}"><title>{escape(r["name"])}: {money(r["spent_usd"])} of '
            f"{money(limit)} this {escape(r['period'])}, {escape(r['state'])}</title></path>"
        )
        if limit > 0:
            fx = left + plot_w * min(r["forecast_usd"] / limit, 1.0)
            parts.append(f'<line x1="{_n(fx)}" x2="{_n(fx)}" y1="{y - 2}" y2="{y + bar_h + 2}" class="forecast"/>')
        pct = "" if r["share_pct"] is None else f" ({r['share_pct']:.0f}%)"
        parts.append(
            f'<text x="{left + plot_w + 6}" y="{y + 12}" class="axis">{money(r["spent_usd"])} of '
            f"{money(limit)}{pct}</text>"
        )
    total = sum(r["spent_usd"] for r in rows)
    return _svg("budget-windows", width, height, "".join(parts), label="Budget windows and their burn", total=total)
