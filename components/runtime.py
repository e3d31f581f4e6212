"""What runs inside the component's pod: the user's function inside the core meter.

Kept apart from ``metered.py`` (which builds the component at pipeline-definition time and imports
kfp) so the pod only needs ``mlcost`` itself; the generated component calls :func:`run_metered`.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

# The metrics the KFP UI shows for a metered component (names shared with MLflow).
KFP_METRICS = ("cost_usd", "idle_cost_usd", "gpu_hours", "gpu_util_mean_pct", "energy_kwh")


def run_metered(body: Callable[..., Any], config: dict[str, Any], metrics: Any, kwargs: dict[str, Any]) -> Any:
    """Run ``body(**kwargs)`` under ``meter(**config)`` and write the step's cost to ``metrics``.

    The Metrics artifact is written even when the body fails or a guardrail stops it, so the KFP UI
    shows what a failed step spent. Inside a KFP run with MLflow enabled, ``MLFLOW_RUN_ID`` is the
    run the step logs into.
    """
    from mlcost.metering import Meter

    config = dict(config)
    config.setdefault("run_key", os.environ.get("MLCOST_RUN_KEY") or _kfp_run_key())
    if os.environ.get("MLFLOW_RUN_ID") and "mlflow_run_id" not in config:
        config["mlflow_run_id"] = os.environ["MLFLOW_RUN_ID"]
    m = Meter(config.pop("name"), **config)
    try:
        with m:
            return body(**kwargs)
    finally:
        if m.cost is not None:
            write_metrics(metrics, m.cost)


def write_metrics(metrics: Any, step: Any) -> None:
    values = {
        "cost_usd": step.total_usd,
        "idle_cost_usd": step.idle_usd,
        "gpu_hours": step.gpu_hours,
        "gpu_util_mean_pct": step.util_mean_pct,
        "energy_kwh": step.energy_kwh,
    }
    for key, value in values.items():
        if value is not None:  # an unmeasured figure is left out, not shown as 0
            metrics.log_metric(key, float(value))
    metrics.metadata["mlcost_status"] = step.status
    # "simulated" says it already; only another kind on the simulated GPU (e.g. degraded) needs the mark
    simulated = step.simulated and step.telemetry != "simulated"
    metrics.metadata["mlcost_telemetry"] = step.telemetry + (" (simulated)" if simulated else "")


def _kfp_run_key() -> str | None:
    """KFP labels its pods with the run id; the launcher exposes it as KFP_RUN_ID in recent releases."""
    run_id = os.environ.get("KFP_RUN_ID") or os.environ.get("PIPELINE_RUN_ID")
    return f"kfp:{run_id}" if run_id else None


def check_run_budget(budget_usd: float, task_names: list[str], inputs: list[Any], total: Any) -> float:
    """The budget gate's body: sum the upstream tasks' ``cost_usd`` and fail over ``budget_usd``.

    The message lists the costliest tasks first, because that is where the money went.
    """
    from mlcost.errors import BudgetExceeded

    costs = [(name, float(m.metadata.get("cost_usd", 0.0))) for name, m in zip(task_names, inputs, strict=True)]
    spent = sum(cost for _name, cost in costs)
    total.log_metric("cost_usd", spent)
    total.log_metric("budget_usd", float(budget_usd))
    if spent > budget_usd:
        ranked = ", ".join(f"{name} ${cost:.4f}" for name, cost in sorted(costs, key=lambda c: -c[1]))
        raise BudgetExceeded(
            f"pipeline run spent ${spent:.4f}, over its budget of ${budget_usd:.4f} (budget_usd of the budget "
            f"gate); costliest tasks: {ranked}",
            limit_name="run_budget_usd",
            limit=budget_usd,
            observed=spent,
            policy="budget_usd of the budget gate",
        )
    return spent
