"""Provider metadata for Airflow's providers manager (the ``apache_airflow_provider`` entry point).

Registration is data, as in Airflow's own providers: this dict is how ``@task.metered`` becomes a
name on ``airflow.sdk.task`` and how the UI lists the provider. Airflow calls it while it is still
reading its configuration, so this module imports nothing from Airflow (or anything heavy at all).
"""

from __future__ import annotations

from typing import Any


def get_provider_info() -> dict[str, Any]:
    """What Airflow's providers manager needs: names, the task decorators, the modules per kind.

    ``package-name`` must equal the installed distribution's canonical name (``mlcost``), else
    discovery raises; ``class-name`` of a task decorator is the dotted path of its factory.
    """
    from mlcost import __version__

    return {
        "package-name": "mlcost",
        "name": "mlcost",
        "description": "GPU cost metering, budgets and guardrails for Airflow tasks (NVML, MLflow).",
        "versions": [__version__],
        "task-decorators": [
            {"name": "metered", "class-name": "mlcost.operators.decorators.metered.metered_task"},
        ],
        "operators": [
            {
                "integration-name": "mlcost",
                "python-modules": ["mlcost.operators.metered", "mlcost.operators.budget_gate"],
            }
        ],
        "hooks": [{"integration-name": "mlcost", "python-modules": ["mlcost.operators.hooks.mlflow_runs"]}],
        "integrations": [
            {
                "integration-name": "mlcost",
                "external-doc-url": "https://github.com/mlcost/mlcost",
                "tags": ["software"],
            }
        ],
    }
