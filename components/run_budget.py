"""The budget-gate component: fails the pipeline run when its metered tasks spent over a budget.

It reads the upstream tasks' ``mlcost_metrics`` artifacts (what the KFP UI shows), so it needs no
ledger or MLflow server inside the cluster.
"""

from __future__ import annotations

import functools
from typing import Any

from mlcost.components.metered import METRICS_OUTPUT, pod_packages

from mlcost.errors import ConfigError


def budget_gate(budget_usd: Any, *tasks: Any, packages_to_install: list[str] | None = None, **component_kwargs: Any):
    """Add a gate task after ``tasks`` (metered component tasks) inside a pipeline::

        small = train(size="small")
        large = train(size="large")
        budget_gate(run_budget_usd, small, large)

    ``budget_usd`` may be a pipeline parameter. The gate fails, naming the costliest tasks, when the
    tasks' summed ``cost_usd`` is over it.
    """
    if not tasks:
        raise ConfigError("budget_gate needs at least one metered task to sum")
    for task in tasks:
        if METRICS_OUTPUT not in getattr(task, "outputs", {}):
            raise ConfigError(f"task {getattr(task, 'name', task)!r} is not a metered_component task")
    packages = tuple(pod_packages() if packages_to_install is None else packages_to_install)
    component = _gate_component(len(tasks), packages, tuple(sorted(component_kwargs.items())))
    inputs = {f"metrics_{i}": task.outputs[METRICS_OUTPUT] for i, task in enumerate(tasks)}
    return component(budget_usd=budget_usd, task_names=[t.name for t in tasks], **inputs)


@functools.cache
def _gate_component(n: int, packages: tuple[str, ...], component_kwargs: tuple[tuple[str, Any], ...]):
    """A component with ``n`` Metrics inputs (KFP components have fixed inputs), built once per n."""
    from kfp.dsl import component_factory
    from mlcost.components.metered import load_generated

    params = ", ".join(f"metrics_{i}: Input[Metrics]" for i in range(n))
    names = ", ".join(f"metrics_{i}" for i in range(n))
    source = (
        f"def mlcost_budget_gate(budget_usd: float, task_names: list, {params}, total: Output[Metrics]) -> float:\n"
        f"    from mlcost.components.runtime import check_run_budget\n\n"
        f"    return check_run_budget(budget_usd, task_names, [{names}], total)\n"
    )
    fn = load_generated(f"mlcost_budget_gate_{n}", source, "mlcost_budget_gate")
    return component_factory.create_component_from_func(
        fn, packages_to_install=list(packages), **dict(component_kwargs)
    )
