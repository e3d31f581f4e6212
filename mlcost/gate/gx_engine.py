"""``mlcost gate --engine gx``: the policy as a Great Expectations checkpoint.

Each limit becomes an expectation over a table of the checked runs (one row per metered step, with
the cost of its pipeline run, of its model run and its model's change against the baseline beside
it), ``meta.policy`` naming the limit and ``severity="warning"`` for ``[warn.*]`` limits. GX decides
which rows break which limit and writes Data Docs; the findings then carry the same messages as the
Python engine, so the Markdown/JSON summary and the exit code do not depend on the engine.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable
from typing import Any

from mlcost.gate.policies import ERROR, WARNING, Finding, GateResult, evaluate, model_run_costs
from mlcost.gate.records import RunRecord
from mlcost.policy import Limits, Policy

SUITE = "mlcost_gate"


def runs_frame(records: list[RunRecord], change_pct: dict[str, float]) -> Any:
    import pandas as pd

    per_model = model_run_costs(records)
    run_cost: dict[str, float] = defaultdict(float)
    for r in records:
        if r.run_key:
            run_cost[r.run_key] += r.cost_usd
    return pd.DataFrame(
        [
            {
                "id": r.id,
                "name": r.name,
                "cost_usd": r.cost_usd,
                "gpus": r.gpus,
                "nodes": r.nodes,
                "gpu_type": (r.gpu_type or "").partition(":")[0] or None,
                "idle_fraction": r.idle_fraction,
                "model": r.model or "",
                "run_cost_usd": run_cost[r.run_key] if r.run_key else None,
                "model_run_cost_usd": per_model[r.model][r.group][0] if r.model else None,
                "model_change_pct": change_pct.get(r.model or ""),
            }
            for r in records
        ],
        columns=[
            "id",
            "name",
            "cost_usd",
            "gpus",
            "nodes",
            "gpu_type",
            "idle_fraction",
            "model",
            "run_cost_usd",
            "model_run_cost_usd",
            "model_change_pct",
        ],
    )


def _expectations(limits: Limits, prefix: str, severity: str) -> list[Any]:
    import great_expectations.expectations as gxe

    sev = "warning" if severity == WARNING else "critical"
    out: list[Any] = []

    def between(key: str, column: str, max_value: float, **kw: Any) -> None:
        out.append(gxe.ExpectColumnValuesToBeBetween(column=column, max_value=max_value, severity=sev,
                                                     meta={"policy": prefix + key}, **kw))  # fmt: skip

    b, c = limits.budgets, limits.cluster
    if b.job_usd is not None:
        between("budgets.job_usd", "cost_usd", b.job_usd)
    if b.run_usd is not None:
        between("budgets.run_usd", "run_cost_usd", b.run_usd)
    if c.max_gpus is not None:
        between("cluster.max_gpus", "gpus", c.max_gpus)
    if c.max_nodes is not None:
        between("cluster.max_nodes", "nodes", c.max_nodes)
    if limits.idle.max_fraction is not None:
        between("idle.max_fraction", "idle_fraction", limits.idle.max_fraction)
    if c.allowed_gpu_types is not None:
        key = prefix + "cluster.allowed_gpu_types"
        allowed = list(c.allowed_gpu_types)
        out.append(
            gxe.ExpectColumnValuesToBeInSet(column="gpu_type", value_set=allowed, severity=sev, meta={"policy": key})
        )
    for m in limits.models:
        if m.max_cost_per_run_usd is not None:
            between(f"models.{m.name}.max_cost_per_run_usd", "model_run_cost_usd", m.max_cost_per_run_usd,
                    row_condition=f'model=="{m.name}"', condition_parser="pandas")  # fmt: skip
    if limits.regression.max_increase_pct is not None and limits.regression.baseline:
        between("regression.max_increase_pct", "model_change_pct", limits.regression.max_increase_pct)
    return out


def evaluate_gx(
    policy: Policy,
    records: list[RunRecord],
    baseline: Callable[[str], list[RunRecord]] | None = None,
    *,
    docs_dir: str | None = None,
) -> GateResult:
    from mlcost.reports.validate import run_suite

    reference = evaluate(policy, records, baseline)  # messages, model table, regression figures
    change = {m.model: m.change_pct for m in reference.models if m.change_pct is not None}
    df = runs_frame(records, change)

    def make_suite() -> Any:
        import great_expectations as gx

        suite = gx.ExpectationSuite(name=SUITE)
        for severity, limits, prefix in ((ERROR, policy, ""), (WARNING, policy.warn, "warn.")):
            for e in _expectations(limits, prefix, severity):
                suite.add_expectation(e)
        return suite

    vr, index = run_suite(df, make_suite, docs_dir=docs_dir or "mlcost-gate-docs", name=SUITE)
    by_policy: dict[str, list[Finding]] = defaultdict(list)
    for f in reference.findings:
        by_policy[f.policy].append(f)
    findings: list[Finding] = []
    for r in vr.results:
        if r.success:
            continue
        key = (r.expectation_config.meta or {}).get("policy", "?")
        severity = WARNING if key.startswith("warn.") else ERROR
        found = by_policy.get(key) or [
            Finding(
                key,
                severity,
                "runs",
                (r.result or {}).get("partial_unexpected_list"),
                None,
                policy.origin(key),
                f"Great Expectations found runs breaking {key}",
            )
        ]
        findings += found
    result = GateResult(
        findings=findings,
        models=reference.models,
        runs_checked=reference.runs_checked,
        total_usd=reference.total_usd,
        policy_source=reference.policy_source,
        notes=[*reference.notes, f"Great Expectations checkpoint {SUITE}: Data Docs at {index}"],
    )
    return result
