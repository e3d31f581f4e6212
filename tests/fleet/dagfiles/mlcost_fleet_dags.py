"""DAGs the deployment tests trigger through Airflow's REST API; copied into every worker's dags folder.

Each task returns where it ran (``MLCOST_FLEET_WORKER``, set per worker by the deployment) so that a
test can tell the two workers apart: both run on one host, so Airflow's hostname is the same.
"""

from __future__ import annotations

import os
import time
import urllib.request
from datetime import datetime

from airflow.sdk import DAG, task
from mlcost.operators import BudgetGateOperator, MeteredOperator

START = datetime(2025, 1, 1)
TAGS = {"team": "search", "model": "ranker", "workload": "training"}


def work(seconds: float = 0.5) -> dict:
    """A GPU step's stand-in: a short busy wait on the simulated GPU; says where it ran."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        time.sleep(0.05)
    return {"worker": os.environ.get("MLCOST_FLEET_WORKER"), "home": os.environ.get("HOME")}


def until_mlflow_is_down(limit_s: float = 120.0) -> dict:
    """Returns once the tracking server stops answering (the outage test stops it while this runs),
    with the time the body ended, so the test can measure how long the step's exit waited."""
    url = os.environ["MLFLOW_TRACKING_URI"].rstrip("/") + "/health"
    deadline = time.monotonic() + limit_s
    while time.monotonic() < deadline:
        try:
            urllib.request.urlopen(url, timeout=1).close()
        except Exception:
            return {"worker": os.environ.get("MLCOST_FLEET_WORKER"), "body_end": time.time()}
        time.sleep(0.1)
    raise RuntimeError("the tracking server was never stopped")


with DAG("mlcost_fleet_e2e", schedule=None, start_date=START, catchup=False, tags=["mlcost-fleet"]) as e2e:
    trains = [
        MeteredOperator(
            task_id=f"train_{i}",
            python_callable=work,
            gpus=1 + i % 2,
            gpu_type="H100",
            interval=0.1,
            tags=TAGS,
            queue=worker,
        )
        for i, worker in enumerate(("w1", "w1", "w2"))
    ]

    @task.metered(gpus=2, gpu_type="A100-80GB", interval=0.1, tags={**TAGS, "model": "embedder"}, queue="w2")
    def embed() -> dict:
        return work(0.5)

    # 8 H100s at about $0.01 a second: over its $0.002 budget at the first samples; fails, no retry
    over_budget = MeteredOperator(
        task_id="over_budget",
        python_callable=work,
        op_kwargs={"seconds": 60},
        gpus=8,
        gpu_type="H100",
        budget_usd=0.002,
        interval=0.1,
        retries=3,
        tags=TAGS,
        queue="w2",
    )
    gate = BudgetGateOperator(task_id="budget_gate", budget_usd=1000, trigger_rule="all_done", queue="w1")
    [*trains, embed(), over_budget] >> gate


with DAG("mlcost_fleet_outage", schedule=None, start_date=START, catchup=False, tags=["mlcost-fleet"]) as outage:
    for i, worker in enumerate(("w1", "w1", "w2", "w2")):
        MeteredOperator(
            task_id=f"step_{i}",
            python_callable=until_mlflow_is_down,
            gpus=1,
            gpu_type="L4",
            interval=0.1,
            tags=TAGS,
            queue=worker,
        )
