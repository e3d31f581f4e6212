"""mlcost's Airflow provider: ``@task.metered``, ``MeteredOperator``, ``BudgetGateOperator``.

Names are imported on first use: a DAG file that imports this package pays for ``airflow.sdk`` and
almost nothing else (no mlflow, pandas, kfp or great_expectations), because Airflow parses DAG files
often and with a timeout. ``python -X importtime -c "import mlcost.operators"`` shows it.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

_EXPORTS = {
    "MeteredOperator": "mlcost.operators.metered",
    "XCOM_COST_KEY": "mlcost.operators.metered",
    "run_key_for": "mlcost.operators.metered",
    "BudgetGateOperator": "mlcost.operators.budget_gate",
    "metered_task": "mlcost.operators.decorators.metered",
    "MlflowRunsHook": "mlcost.operators.hooks.mlflow_runs",
    "get_provider_info": "mlcost.operators.provider_info",
}

__all__ = [
    "XCOM_COST_KEY",
    "BudgetGateOperator",
    "MeteredOperator",
    "MlflowRunsHook",
    "get_provider_info",
    "metered_task",
    "run_key_for",
]

if TYPE_CHECKING:  # pragma: no cover
    from mlcost.operators.budget_gate import BudgetGateOperator
    from mlcost.operators.decorators.metered import metered_task
    from mlcost.operators.hooks.mlflow_runs import MlflowRunsHook
    from mlcost.operators.metered import XCOM_COST_KEY, MeteredOperator, run_key_for
    from mlcost.operators.provider_info import get_provider_info


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'mlcost.operators' has no attribute {name!r}")
    value = getattr(import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])
