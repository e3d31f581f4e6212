"""How a gate result is shown: a Markdown summary (for people and $GITHUB_STEP_SUMMARY), JSON (for
machines, no prose) and one summary line with a hint (ruff's habit)."""

from __future__ import annotations

import json
from typing import Any

from mlcost.durations import format_duration
from mlcost.exit_status import ExitStatus
from mlcost.figures import usd
from mlcost.gate.policies import ERROR, Finding, GateResult, PipelineProjection, exit_status


def _fmt(value: Any, policy: str) -> str:
    if isinstance(value, float) and ("usd" in policy or "cost" in policy):
        return _usd(value)
    if isinstance(value, float) and policy.endswith("max_fraction"):
        return f"{value:.0%}"
    if isinstance(value, float) and policy.endswith("increase_pct"):
        return f"{value:g}%"
    if isinstance(value, list):
        return ", ".join(map(str, value))
    return f"{value}"


def _usd(v: float) -> str:
    return usd(v)


def _plural(n: int, word: str) -> str:
    return f"{n} {word}{'s' * (n != 1)}"


def summary_line(result: GateResult) -> str:
    errors, warnings = len(result.errors), len(result.warnings)
    if errors:
        line = f"Found {_plural(errors, 'policy breach')}".replace("breachs", "breaches")
        line += f" and {_plural(warnings, 'warning')}." if warnings else "."
        return line
    if warnings:
        return f"Within policy, with {_plural(warnings, 'warning')}."
    return "All policies passed!"


def hint(result: GateResult) -> str | None:
    if result.errors:
        return (
            f"hint: fix what is named above, or change the limit where it is set ({result.errors[0].origin}); "
            "a limit under [warn.*] reports without failing."
        )
    if result.runs_checked == 0 and not result.pipelines_checked:
        return "hint: no metered runs matched; check --experiment / --filter / --ledger."
    return None


def _finding_row(f: Finding) -> str:
    mark = "❌" if f.severity == ERROR else "⚠️"
    runs = ", ".join(f"`{r[:12]}`" for r in f.runs[:5]) + (f" +{len(f.runs) - 5}" if len(f.runs) > 5 else "")
    cells = [mark, f"`{f.policy}`", f.subject, _fmt(f.observed, f.policy), _fmt(f.limit, f.policy), runs, f.origin]
    return "| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |"


def _seconds(s: float | None) -> str:
    if s is None:
        return "–"
    return f"{s:.3g}s" if s < 60 else format_duration(s)


def _projection(p: PipelineProjection) -> list[str]:
    """A priced pipeline, task by task: GPUs, the duration it was priced for, and where that came from."""
    total = "unknown" if p.projected_usd is None else _usd(p.projected_usd)
    lines = [
        f"### Pipeline {p.pipeline}: projected {total}",
        "",
        f"Durations: the median of each step's recent succeeded runs in {p.history}, at most the step's "
        "limit (its own `max_duration`, else `budgets.max_duration`), which is the duration without runs."
        if p.history
        else f"Durations: each step's limit, its own `max_duration` else `budgets.max_duration` ({p.history_off}).",
        "",
        "| task | step | GPUs | duration | from | projected |",
        "|---|---|---|---:|---|---:|",
    ]
    for t in p.tasks:
        gpus = f"{t.gpus_per_instance} × {t.gpu_type or 'unknown'}"
        if t.instances > 1:
            gpus += f" × {t.instances} instances"
        cost = "–" if t.projected_usd is None else _usd(t.projected_usd)
        cells = [f"`{t.task}`", t.step or "–", gpus, _seconds(t.duration_s), t.basis, cost]
        lines.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
    return [*lines, ""]


def _checked(result: GateResult) -> str:
    """The "Checked … from … against …" sentence."""
    checked = []
    if result.runs_checked or not result.pipelines_checked:
        checked.append(f"{_plural(result.runs_checked, 'metered run')} (total {_usd(result.total_usd)})")
    if result.pipelines_checked:
        checked.append(_plural(result.pipelines_checked, "compiled pipeline"))
    return (f"Checked {' and '.join(checked)} from {'; '.join(result.sources) or 'no source'} "
            f"against {result.policy_source}.")  # fmt: skip


def to_markdown(result: GateResult) -> str:
    status = exit_status(result)
    head = {
        ExitStatus.OK: "✅ within policy" if not result.warnings else "⚠️ within policy, with warnings",
        ExitStatus.BREACHED: "❌ policy breached",
    }[status]
    lines = [f"## mlcost gate: {head}", ""]
    lines.append(_checked(result))
    lines.append("")
    if result.findings:
        lines += [
            "| | policy | subject | observed | limit | runs | set in |",
            "|---|---|---|---|---|---|---|",
            *(_finding_row(f) for f in result.findings),
            "",
        ]
        for f in result.findings[:20]:
            lines.append(f"- {'**breach**' if f.severity == ERROR else 'warning'}: {f.message}")
        lines.append("")
    if result.models:
        lines += [
            "### Cost per model",
            "",
            "| model | runs | median $/run | baseline $/run | change |",
            "|---|---|---|---|---|",
        ]
        for m in result.models:
            base = "–" if m.baseline_median_usd is None else f"{_usd(m.baseline_median_usd)} ({m.baseline_runs} runs)"
            change = "–" if m.change_pct is None else f"{m.change_pct:+.1f}%"
            lines.append(f"| {m.model} | {m.runs} | {_usd(m.median_usd)} | {base} | {change} |")
        lines.append("")
    for p in result.pipelines:
        if p.projected_usd is not None:  # priced only when a run_usd budget needs it
            lines += _projection(p)
    for note in result.notes:
        lines.append(f"> note: {note}")
    if result.notes:
        lines.append("")
    lines.append(summary_line(result))
    return "\n".join(lines) + "\n"


def to_json(result: GateResult) -> str:
    status = exit_status(result)
    data = {
        "status": {ExitStatus.OK: "pass", ExitStatus.BREACHED: "fail"}[status],
        "exit_code": int(status),
        "runs_checked": result.runs_checked,
        "pipelines_checked": result.pipelines_checked,
        "total_usd": result.total_usd,
        "sources": result.sources,
        "policy": result.policy_source,
        "errors": len(result.errors),
        "warnings": len(result.warnings),
        "findings": [f.to_json() for f in result.findings],
        "models": [m.to_json() for m in result.models],
        "pipelines": [p.to_json() for p in result.pipelines],
        "notes": result.notes,
    }
    return json.dumps(data, indent=2, default=str)


def to_terminal(result: GateResult, console: Any) -> None:
    """The Markdown summary's content for a terminal, readable at 80 columns: compact tables whose key
    column (policy, model, task) is never cut, prose and paths on lines of their own."""
    from rich import box
    from rich.table import Table

    def table(title: str, key: str, *others: str) -> Table:
        t = Table(title=title, title_justify="left", box=box.SIMPLE_HEAD, show_edge=False, padding=(0, 1, 0, 0))
        t.add_column(key, no_wrap=True)
        for col in others:
            t.add_column(col, overflow="fold")
        return t

    status = exit_status(result)
    head = {
        ExitStatus.OK: "within policy" if not result.warnings else "within policy, with warnings",
        ExitStatus.BREACHED: "POLICY BREACHED",
    }[status]
    console.print(f"[bold]mlcost gate: {head}[/bold]")
    console.print(_checked(result), highlight=False)
    if result.findings:
        t = table("", "policy", "", "subject", "observed", "limit")
        for f in result.findings:
            mark = "[red]breach[/red]" if f.severity == ERROR else "[yellow]warning[/yellow]"
            t.add_row(f.policy, mark, f.subject, _fmt(f.observed, f.policy), _fmt(f.limit, f.policy))
        console.print(t)
        for f in result.findings[:20]:
            console.print(f"- {f.message}", highlight=False)
            console.print(f"  set in {f.origin}", highlight=False, soft_wrap=True)
    if result.models:
        t = table("Cost per model", "model", "runs", "median $/run", "baseline $/run", "change")
        for m in result.models:
            base = "–" if m.baseline_median_usd is None else f"{_usd(m.baseline_median_usd)} ({m.baseline_runs})"
            change = "–" if m.change_pct is None else f"{m.change_pct:+.1f}%"
            t.add_row(m.model, str(m.runs), _usd(m.median_usd), base, change)
        console.print(t)
    for p in result.pipelines:
        if p.projected_usd is None:
            continue
        t = table(f"Pipeline {p.pipeline}: projected {_usd(p.projected_usd)}", "task", "GPUs", "duration", "projected")
        for task in p.tasks:
            gpus = f"{task.gpus_per_instance} × {task.gpu_type or 'unknown'}"
            if task.instances > 1:
                gpus += f" × {task.instances}"
            cost = "–" if task.projected_usd is None else _usd(task.projected_usd)
            t.add_row(task.task, gpus, _seconds(task.duration_s), cost)
        console.print(t)
        for task in p.tasks:
            console.print(f"  {task.task}: {task.basis}", highlight=False)
    for note in result.notes:
        console.print(f"note: {note}", highlight=False)
    console.print(summary_line(result), highlight=False)
