"""Policy over recorded runs: the decisions of ``mlcost gate``, as plain data.

Every policy of ``mlcost.toml`` is checked at two levels: the top-level tables fail the gate
(severity ``error``), the same tables under ``[warn]`` only report (severity ``warning``).
"""

from __future__ import annotations

import statistics
from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from typing import Any

from mlcost.exit_status import ExitStatus
from mlcost.gate.records import RunRecord
from mlcost.policy import Limits, Policy

ERROR, WARNING = "error", "warning"


@dataclass(frozen=True, slots=True)
class Finding:
    """One policy a run (or a model, or a pipeline) did not keep."""

    policy: str  # dotted key, e.g. "budgets.job_usd" or "models.ranker.max_cost_per_run_usd"
    severity: str  # "error" (fails the gate) or "warning"
    subject: str  # what broke it: a step, a run, a model, a pipeline
    observed: Any
    limit: Any
    origin: str  # where the limit was set
    message: str
    runs: tuple[str, ...] = ()  # MLflow run ids / ledger step ids involved

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["runs"] = list(self.runs)
        return data


@dataclass(frozen=True, slots=True)
class ModelCost:
    """Median cost per run of one model, now and in the baseline (the Infracost-style diff)."""

    model: str
    runs: int
    median_usd: float
    baseline_runs: int = 0
    baseline_median_usd: float | None = None

    @property
    def change_pct(self) -> float | None:
        if not self.baseline_median_usd:
            return None
        return (self.median_usd - self.baseline_median_usd) / self.baseline_median_usd * 100.0

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "change_pct": self.change_pct}


@dataclass(frozen=True, slots=True)
class TaskProjection:
    """One GPU task of a compiled pipeline as ``--pipeline`` priced it, and why for that long."""

    task: str  # task path in the pipeline, e.g. "for-loop-2/train-3"
    step: str | None  # the meter's step name (a metered_component's function), else None
    gpu_type: str | None
    gpus_per_instance: int
    instances: int
    duration_s: float | None
    duration_source: str  # "history", "history_capped", "meter_max_duration", "default" (budgets.max_duration),
    # "max_duration_s", "none"
    basis: str  # where the duration came from, in words (which runs, or why no history was used)
    price_per_gpu_hour: float | None
    projected_usd: float | None

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True, slots=True)
class PipelineProjection:
    """A compiled pipeline's projected cost, task by task (``mlcost gate --pipeline``)."""

    pipeline: str
    source: str  # the YAML file
    projected_usd: float | None  # None when tasks were not priced (no run_usd budget)
    history: str | None  # the sources past durations were looked up in; None when none was used
    history_off: str = ""  # why no history was used (--no-history, no source)
    tasks: list[TaskProjection] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {
            "pipeline": self.pipeline,
            "source": self.source,
            "projected_usd": self.projected_usd,
            "history": self.history,
            "history_off": self.history_off or None,
            "tasks": [t.to_json() for t in self.tasks],
        }


@dataclass(slots=True)
class GateResult:
    findings: list[Finding] = field(default_factory=list)
    models: list[ModelCost] = field(default_factory=list)
    runs_checked: int = 0
    pipelines_checked: int = 0  # compiled KFP pipelines preflighted (``--pipeline``)
    total_usd: float = 0.0
    sources: list[str] = field(default_factory=list)
    policy_source: str = ""
    notes: list[str] = field(default_factory=list)
    pipelines: list[PipelineProjection] = field(default_factory=list)  # what --pipeline projected

    @property
    def errors(self) -> list[Finding]:
        return [f for f in self.findings if f.severity == ERROR]

    @property
    def warnings(self) -> list[Finding]:
        return [f for f in self.findings if f.severity == WARNING]


def exit_status(result: GateResult) -> ExitStatus:
    """The one place the gate's exit code is decided (bad input is raised earlier, as ConfigError)."""
    return ExitStatus.BREACHED if result.errors else ExitStatus.OK


def _usd(v: float) -> str:
    return f"${v:,.2f}" if abs(v) >= 1 else f"${v:.4f}"


def model_run_costs(records: Iterable[RunRecord]) -> dict[str, dict[str, tuple[float, list[str]]]]:
    """model -> run group -> (cost of that run of the model, the records' ids)."""
    out: dict[str, dict[str, tuple[float, list[str]]]] = defaultdict(dict)
    for r in records:
        if not r.model:
            continue
        cost, ids = out[r.model].get(r.group, (0.0, []))
        out[r.model][r.group] = (cost + r.cost_usd, [*ids, r.id])
    return out


def evaluate(
    policy: Policy,
    records: list[RunRecord],
    baseline: Callable[[str], list[RunRecord]] | None = None,
) -> GateResult:
    """Check ``records`` against ``policy``. ``baseline(filter)`` returns the baseline runs for the
    regression policy (called once per distinct baseline filter)."""
    result = GateResult(
        runs_checked=len(records), total_usd=sum(r.cost_usd for r in records), policy_source=policy.source
    )
    cache: dict[str, list[RunRecord]] = {}

    def baseline_runs(flt: str) -> list[RunRecord]:
        if flt not in cache:
            cache[flt] = baseline(flt) if baseline else []
        return cache[flt]

    for severity, limits, prefix in ((ERROR, policy, ""), (WARNING, policy.warn, "warn.")):
        result.findings += _check_level(policy, limits, prefix, severity, records, baseline_runs, result)
    result.findings.sort(key=lambda f: (f.severity != ERROR, f.policy, f.subject))
    if not result.models:
        result.models = _model_table(records, [])
    return result


def _check_level(
    policy: Policy,
    limits: Limits,
    prefix: str,
    severity: str,
    records: list[RunRecord],
    baseline_runs: Callable[[str], list[RunRecord]],
    result: GateResult,
) -> list[Finding]:
    out: list[Finding] = []

    def finding(key: str, subject: str, observed: Any, limit: Any, message: str, runs: Iterable[str]) -> None:
        dotted = prefix + key
        out.append(Finding(dotted, severity, subject, observed, limit, policy.origin(dotted), message, tuple(runs)))

    b, c, idle = limits.budgets, limits.cluster, limits.idle
    for r in records:
        if b.job_usd is not None and r.cost_usd > b.job_usd:
            finding(
                "budgets.job_usd", r.label, r.cost_usd, b.job_usd,
                f"step {r.name} cost {_usd(r.cost_usd)}, over the per-job budget of {_usd(b.job_usd)}", [r.id],
            )  # fmt: skip
        if c.max_gpus is not None and r.gpus > c.max_gpus:
            finding(
                "cluster.max_gpus", r.label, r.gpus, c.max_gpus,
                f"step {r.name} used {r.gpus} GPUs, more than the {c.max_gpus} allowed", [r.id],
            )  # fmt: skip
        if c.max_nodes is not None and r.nodes > c.max_nodes:
            finding(
                "cluster.max_nodes", r.label, r.nodes, c.max_nodes,
                f"step {r.name} ran on {r.nodes} nodes, more than the {c.max_nodes} allowed", [r.id],
            )  # fmt: skip
        if c.allowed_gpu_types is not None and r.gpu_type:
            parent = r.gpu_type.partition(":")[0]
            allowed = {t.upper() for t in c.allowed_gpu_types}
            if r.gpu_type.upper() not in allowed and parent.upper() not in allowed:
                finding(
                    "cluster.allowed_gpu_types", r.label, r.gpu_type, list(c.allowed_gpu_types),
                    f"step {r.name} ran on {r.gpu_type}, not one of {', '.join(c.allowed_gpu_types)}", [r.id],
                )  # fmt: skip
        if idle.max_fraction is not None and r.idle_fraction is not None and r.idle_fraction > idle.max_fraction:
            finding(
                "idle.max_fraction", r.label, r.idle_fraction, idle.max_fraction,
                f"step {r.name} was idle {r.idle_fraction:.0%} of its GPU time, over {idle.max_fraction:.0%}", [r.id],
            )  # fmt: skip

    if b.run_usd is not None:
        runs: dict[str, list[RunRecord]] = defaultdict(list)
        for r in records:
            if r.run_key:
                runs[r.run_key].append(r)
        for key, steps in sorted(runs.items()):
            total = sum(s.cost_usd for s in steps)
            if total > b.run_usd:
                finding(
                    "budgets.run_usd", f"run {key}", total, b.run_usd,
                    f"run {key} ({len(steps)} steps) cost {_usd(total)}, over the per-run budget of {_usd(b.run_usd)}",
                    [s.id for s in steps],
                )  # fmt: skip

    per_model = model_run_costs(records)
    for ceiling in limits.models:
        if ceiling.max_cost_per_run_usd is None:
            continue
        for group, (cost, ids) in sorted(per_model.get(ceiling.name, {}).items()):
            if cost > ceiling.max_cost_per_run_usd:
                subject = f"model {ceiling.name}, run {group[:12]}"
                finding(
                    f"models.{ceiling.name}.max_cost_per_run_usd", subject, cost,
                    ceiling.max_cost_per_run_usd,
                    f"a run of model {ceiling.name} cost {_usd(cost)}, over its ceiling of "
                    f"{_usd(ceiling.max_cost_per_run_usd)}",
                    ids,
                )  # fmt: skip

    reg = limits.regression
    if reg.max_increase_pct is not None:
        if not reg.baseline:
            result.notes.append(f"{prefix}regression.max_increase_pct is set but {prefix}regression.baseline is not")
        else:
            base = baseline_runs(reg.baseline)
            base_ids = {r.id for r in base}
            current = [r for r in records if r.id not in base_ids]
            table = _model_table(current, base)
            if severity == ERROR or not result.models:
                result.models = table
            for row in table:
                change = row.change_pct
                if change is None:
                    if row.baseline_runs == 0:
                        result.notes.append(f"model {row.model}: no baseline runs match {reg.baseline!r}")
                    continue
                if change > reg.max_increase_pct:
                    ids = [i for _cost, grp in per_model_ids(current, row.model) for i in grp]
                    finding(
                        "regression.max_increase_pct", f"model {row.model}", change, reg.max_increase_pct,
                        f"median cost per run of model {row.model} rose {change:+.1f}% "
                        f"({_usd(row.baseline_median_usd or 0)} → {_usd(row.median_usd)}) against the baseline "
                        f"{reg.baseline!r}, over the {reg.max_increase_pct:g}% allowed",
                        ids,
                    )  # fmt: skip
    return out


def per_model_ids(records: list[RunRecord], model: str) -> list[tuple[float, list[str]]]:
    return list(model_run_costs(records).get(model, {}).values())


def _model_table(current: list[RunRecord], base: list[RunRecord]) -> list[ModelCost]:
    now, before = model_run_costs(current), model_run_costs(base)
    rows = []
    for model in sorted(now):
        costs = [c for c, _ in now[model].values()]
        base_costs = [c for c, _ in before.get(model, {}).values()]
        rows.append(
            ModelCost(
                model=model,
                runs=len(costs),
                median_usd=statistics.median(costs),
                baseline_runs=len(base_costs),
                baseline_median_usd=statistics.median(base_costs) if base_costs else None,
            )
        )
    return rows
