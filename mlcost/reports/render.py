"""One report, three faces: terminal tables (rich), Markdown, and a self-contained HTML page whose
plots are PNGs embedded as data URIs (no files beside it, no JavaScript, opens anywhere)."""

from __future__ import annotations

import base64
import html
import io
from dataclasses import dataclass, field
from typing import Any

from mlcost.figures import num, usd  # noqa: F401  (re-exported: reports format with them)
from mlcost.reports.analysis import Recommendation


@dataclass
class Section:
    title: str
    columns: list[str]
    rows: list[list[str]]
    note: str = ""


@dataclass
class Report:
    title: str
    subtitle: str
    sections: list[Section] = field(default_factory=list)
    plots: list[tuple[str, bytes]] = field(default_factory=list)  # (caption, PNG)
    data: dict[str, Any] = field(default_factory=dict)  # the raw frames, for plots and JSON


def pct(v: Any) -> str:
    return "–" if v is None or v != v else f"{v:.0%}"


def frame_section(title: str, df: Any, spec: list[tuple[str, str, Any]], note: str = "") -> Section:
    """``spec``: (column in df, header, formatter)."""
    rows = [[fmt(getattr(r, col)) for col, _h, fmt in spec] for r in df.itertuples(index=False)]
    return Section(title, [h for _c, h, _f in spec], rows, note)


def recommendations_section(recs: list[Recommendation]) -> Section:
    rows = [[r.step, r.kind.replace("_", " "), r.current, r.suggested, str(r.runs), usd(r.cost_usd),
             usd(r.saving_usd), r.why] for r in recs]  # fmt: skip
    return Section(
        "Right-sizing",
        ["step", "finding", "now", "suggested", "runs", "cost", "est. saving", "why"],
        rows,
        "" if rows else "No step fits a smaller GPU or MIG profile, and none looks starved by its input pipeline.",
    )


# terminal ---------------------------------------------------------------------------------------
def to_terminal(report: Report, console: Any = None) -> None:
    from rich import box
    from rich.console import Console
    from rich.table import Table

    console = console or Console()
    console.print(f"[bold]{report.title}[/bold]  {report.subtitle}", highlight=False)
    for s in report.sections:
        # compact (fits 80 columns): the first column is the key and is never cut; the others fold
        table = Table(title=s.title, title_justify="left", show_lines=False, box=box.SIMPLE_HEAD, show_edge=False,
                      padding=(0, 1, 0, 0))  # fmt: skip
        key_width = max([len(s.columns[0]), *(len(r[0]) for r in s.rows)]) if s.columns else 0
        # prose ("why") reads better under the table than folded into a 10-character column
        prose = s.columns.index("why") if "why" in s.columns else None
        columns = [c for i, c in enumerate(s.columns) if i != prose]
        rows = [[v for i, v in enumerate(r) if i != prose] for r in s.rows]
        for i, c in enumerate(columns):
            if i == 0:
                table.add_column(c, no_wrap=True, min_width=key_width)
            else:
                table.add_column(c, overflow="fold")
        for row in rows:
            table.add_row(*row)
        if s.rows:
            console.print(table)
        if prose is not None:
            for r in s.rows:
                console.print(f"  {r[0]}: {r[prose]}", highlight=False)
        if s.note:
            console.print(f"[dim]{s.title}: {s.note}[/dim]")


# markdown ---------------------------------------------------------------------------------------
def _md_cell(v: str) -> str:
    return v.replace("|", "\\|").replace("\n", " ")


def to_markdown(report: Report) -> str:
    lines = [f"# {report.title}", "", report.subtitle, ""]
    for s in report.sections:
        lines += [f"## {s.title}", ""]
        if s.rows:
            lines.append("| " + " | ".join(s.columns) + " |")
            lines.append("|" + "---|" * len(s.columns))
            lines += ["| " + " | ".join(_md_cell(c) for c in row) + " |" for row in s.rows]
            lines.append("")
        if s.note:
            lines += [s.note, ""]
    return "\n".join(lines)


# html -------------------------------------------------------------------------------------------
_CSS = """body{font-family:system-ui,sans-serif;margin:2rem auto;max-width:1100px;color:#222}
table{border-collapse:collapse;margin:.5rem 0 1.5rem}td,th{border:1px solid #ccc;padding:.25rem .5rem;
text-align:left;font-size:.9rem}th{background:#f3f3f3}img{max-width:100%}.note{color:#666}"""


def to_html(report: Report) -> str:
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'>",
        f"<title>{html.escape(report.title)}</title><style>{_CSS}</style></head><body>",
        f"<h1>{html.escape(report.title)}</h1><p>{html.escape(report.subtitle)}</p>",
    ]
    for caption, png in report.plots:
        data = base64.b64encode(png).decode()
        parts.append(f"<figure><img alt='{html.escape(caption)}' src='data:image/png;base64,{data}'>"
                     f"<figcaption>{html.escape(caption)}</figcaption></figure>")  # fmt: skip
    for s in report.sections:
        parts.append(f"<h2>{html.escape(s.title)}</h2>")
        if s.rows:
            parts.append("<table><tr>" + "".join(f"<th>{html.escape(c)}</th>" for c in s.columns) + "</tr>")
            for row in s.rows:
                parts.append("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>")
            parts.append("</table>")
        if s.note:
            parts.append(f"<p class='note'>{html.escape(s.note)}</p>")
    parts.append("</body></html>")
    return "\n".join(parts)


def bar_png(labels: list[str], values: list[float], title: str, xlabel: str = "USD") -> bytes:
    """A horizontal bar chart as PNG bytes (matplotlib, Agg backend: no display needed)."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    fig = Figure(figsize=(7, max(2.0, 0.35 * len(labels) + 1)))
    ax = fig.add_subplot()
    ax.barh(labels[::-1], values[::-1], color="#4c72b0")
    ax.set_title(title)
    ax.set_xlabel(xlabel)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90)
    return buf.getvalue()
