"""Registration and import cost of the provider."""

from __future__ import annotations

import subprocess
import sys

import pytest
from mlcost.operators.provider_info import get_provider_info


def test_provider_info_registers_the_decorator():
    info = get_provider_info()
    assert info["package-name"] == "mlcost"
    (decorator,) = info["task-decorators"]
    assert decorator["name"] == "metered"
    module, _, name = decorator["class-name"].rpartition(".")
    assert callable(getattr(__import__(module, fromlist=[name]), name))


def test_task_metered_is_found_through_the_providers_manager(airflow_db):
    from airflow.sdk import task
    from mlcost.operators.decorators.metered import metered_task

    assert task.metered is metered_task


def test_importing_the_provider_does_not_import_heavy_packages():
    code = (
        "import sys, mlcost.operators\n"
        "from mlcost.operators import MeteredOperator, BudgetGateOperator, metered_task\n"
        "heavy = [m for m in ('mlflow', 'pandas', 'great_expectations', 'kfp', 'fastapi_users', 'pynvml') "
        "if m in sys.modules]\n"
        "print(heavy)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().splitlines()[-1] == "[]"


def test_operator_needs_exactly_one_body():
    from mlcost.operators import MeteredOperator

    with pytest.raises(ValueError, match="exactly one"):
        MeteredOperator(task_id="x")
