"""DAGs the Airflow tests run with dag.test(); copied into the session's dags folder."""

from __future__ import annotations

import os
import time
from datetime import datetime, timedelta
from pathlib import Path

from airflow.providers.standard.operators.bash import BashOperator
from airflow.sdk import DAG, task
from mlcost.operators import BudgetGateOperator, MeteredOperator

START = datetime(2025, 1, 1)
TAGS = {"team": "search", "model": "ranker", "workload": "training"}


def _touch(name: str) -> None:
    marker = os.environ.get("MLCOST_TEST_MARKER_DIR")
    if marker:
        Path(marker, name).write_text(str(time.time()))


def _spin(seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        time.sleep(0.05)


def double(x: int, ti=None) -> int:
    _touch(f"double-{ti.task_id}")
    return 2 * x


with DAG("mlcost_t_basic", schedule=None, start_date=START, catchup=False) as basic:

    @task.metered(gpus=2, gpu_type="H100", interval=0.1, tags=TAGS)
    def train() -> int:
        _spin(0.6)
        return 42

    @task
    def plain() -> str:
        return "not metered"

    wrapped = MeteredOperator(
        task_id="wrapped_bash",
        operator=BashOperator(task_id="wrapped_bash", bash_command="echo hello-from-bash"),
        gpus=1,
        gpu_type="L4",
        interval=0.1,
        tags={"team": "search", "model": "ranker", "workload": "data"},
    )
    called = MeteredOperator(task_id="callable", python_callable=double, op_kwargs={"x": 21}, gpu_type="L4", gpus=1)
    train() >> plain() >> [wrapped, called]


with DAG("mlcost_t_budget", schedule=None, start_date=START, catchup=False) as budget:

    @task.metered(gpus=8, gpu_type="H100", budget_usd=0.002, interval=0.1, retries=3, tags=TAGS)
    def burn() -> None:
        _touch("burn-started")
        _spin(60)
        _touch("burn-finished")

    burn()


with DAG("mlcost_t_idle", schedule=None, start_date=START, catchup=False) as idle:

    @task.metered(gpus=1, gpu_type="L4", idle_timeout=0.5, interval=0.1, retries=3, tags=TAGS)
    def wait_for_data() -> None:
        _spin(60)

    wait_for_data()


with DAG("mlcost_t_preflight", schedule=None, start_date=START, catchup=False) as preflight:

    @task.metered(gpus=8, gpu_type="H100", budget_usd=1.0, max_duration="10h", retries=3, tags=TAGS)
    def too_expensive() -> None:
        _touch("too_expensive-body")

    @task.metered(gpus=16, gpu_type="H100", retries=3, tags=TAGS)
    def too_big() -> None:
        _touch("too_big-body")

    too_expensive()
    too_big()


with DAG("mlcost_t_gate", schedule=None, start_date=START, catchup=False) as gate:

    @task.metered(gpus=8, gpu_type="H100", interval=0.1, tags={**TAGS, "model": "ranker-large"})
    def train_large() -> None:
        _spin(0.8)

    @task.metered(gpus=1, gpu_type="L4", interval=0.1, tags={**TAGS, "model": "ranker-small"})
    def train_small() -> None:
        _spin(0.3)

    [train_large(), train_small()] >> BudgetGateOperator(task_id="budget_gate", budget_usd=0.001, retries=2)


with DAG("mlcost_t_timeout", schedule=None, start_date=START, catchup=False) as timeout:

    @task.metered(gpus=1, gpu_type="L4", interval=0.1, execution_timeout=timedelta(seconds=2), tags=TAGS)
    def hangs() -> None:
        _spin(60)

    hangs()


with DAG("mlcost_t_conn", schedule=None, start_date=START, catchup=False) as conn:

    @task.metered(gpus=1, gpu_type="L4", interval=0.1, mlflow_conn_id="mlcost_mlflow", tags=TAGS)
    def logged_via_connection() -> None:
        _spin(0.2)

    logged_via_connection()
