"""The mlcost demo DAG: check the data, train two model sizes on metered GPUs, evaluate, gate the run.

Run it with ``mlcost demo`` (a throwaway Airflow home, SQLite, simulated GPU when there is none),
or drop it into your own dags folder. What it shows:

- ``validate_training_data``: a Great Expectations check. Bad data (``corrupt_data=True``) fails here,
  before a single GPU-second is paid for. Not metered: the cost listener records its wall time.
- ``train_small`` / ``train_large``: ``@task.metered`` tasks on 1x L4 and 4x H100, each with a budget,
  a maximum duration and an idle timeout; a breach fails the task without retry.
- ``evaluate``: a metered evaluation that compares the two models by quality and by cost.
- ``budget_gate``: fails the DAG run when the whole run spent more than ``run_budget_usd``.

Only ``airflow.sdk`` and ``mlcost.operators`` are imported at the top: parsing this file stays cheap.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from airflow.sdk import Param, dag, task
from mlcost.operators import BudgetGateOperator

TEAM = "search"


def make_training_data(rows: int = 2_000, *, corrupt: bool = False) -> Any:
    """A small, deterministic click-through table; ``corrupt`` plants the faults a real feed has."""
    import numpy as np
    import pandas as pd

    rng = np.random.default_rng(7)
    df = pd.DataFrame(
        {
            "query_len": rng.integers(1, 12, rows),
            "doc_score": rng.normal(0.0, 1.0, rows).round(4),
            "label": rng.integers(0, 2, rows),
        }
    )
    if corrupt:
        df.loc[::50, "doc_score"] = None  # missing features
        df.loc[::97, "label"] = 3  # a label outside {0, 1}
    return df


def simulate_training(seconds: float) -> None:
    """Stands in for a training loop (the GPU is metered, simulated or not, while it runs)."""
    import time

    deadline = time.monotonic() + float(seconds)
    while time.monotonic() < deadline:
        time.sleep(0.05)


@dag(
    dag_id="mlcost_demo",
    schedule=None,
    start_date=datetime(2025, 1, 1),
    catchup=False,
    tags=["mlcost", "demo"],
    params={
        "corrupt_data": Param(False, type="boolean", description="plant bad rows: the data check must stop the run"),
        "train_seconds": Param(3.0, type="number", description="how long each training step runs"),
        "run_budget_usd": Param(5.0, type="number", description="the budget gate's limit for the whole run"),
    },
    default_args={"retries": 2},
)
def mlcost_demo() -> None:
    @task(retries=0)
    def validate_training_data(params: dict[str, Any] | None = None) -> dict[str, Any]:
        import great_expectations as gx
        from airflow.sdk.exceptions import AirflowFailException

        df = make_training_data(corrupt=bool(params and params["corrupt_data"]))
        ctx = gx.get_context(mode="ephemeral")
        batch = (
            ctx.data_sources.add_pandas("training")
            .add_dataframe_asset("clicks")
            .add_batch_definition_whole_dataframe("all")
        )
        suite = ctx.suites.add(
            gx.ExpectationSuite(
                name="training_data",
                expectations=[
                    gx.expectations.ExpectTableRowCountToBeBetween(min_value=1_000),
                    gx.expectations.ExpectColumnValuesToNotBeNull(column="doc_score"),
                    gx.expectations.ExpectColumnValuesToBeInSet(column="label", value_set=[0, 1]),
                    gx.expectations.ExpectColumnValuesToBeBetween(column="query_len", min_value=1, max_value=64),
                ],
            )
        )
        result = ctx.validation_definitions.add(
            gx.ValidationDefinition(name="training_data", data=batch, suite=suite)
        ).run(batch_parameters={"dataframe": df})
        failed = [r.expectation_config.type for r in result.results if not r.success]
        if failed:  # bad data will not get better on retry, and no GPU has been paid for yet
            raise AirflowFailException(f"training data failed {len(failed)} checks: {', '.join(failed)}")
        return {"rows": len(df), "checks": len(result.results)}

    @task.metered(
        gpus=1,
        gpu_type="L4",
        budget_usd=2.0,
        max_duration="30m",
        idle_timeout="10m",
        interval=0.25,
        tags={"team": TEAM, "model": "ranker-small", "workload": "training"},
    )
    def train_small(data: dict[str, Any], params: dict[str, Any] | None = None) -> dict[str, Any]:
        simulate_training(params["train_seconds"] if params else 3.0)
        return {"model": "ranker-small", "ndcg": 0.861, "rows": data["rows"]}

    @task.metered(
        gpus=4,
        gpu_type="H100",
        budget_usd=60.0,  # 4 x H100 x 1 h at list price is ~$49: preflight lets it start
        max_duration="1h",
        idle_timeout="10m",
        interval=0.25,
        tags={"team": TEAM, "model": "ranker-large", "workload": "training"},
    )
    def train_large(data: dict[str, Any], params: dict[str, Any] | None = None) -> dict[str, Any]:
        simulate_training(params["train_seconds"] if params else 3.0)
        return {"model": "ranker-large", "ndcg": 0.874, "rows": data["rows"]}

    @task.metered(
        gpus=1,
        gpu_type="L4",
        budget_usd=1.0,
        max_duration="15m",
        interval=0.25,
        tags={"team": TEAM, "model": "ranker", "workload": "evaluation"},
    )
    def evaluate(small: dict[str, Any], large: dict[str, Any], ti: Any = None) -> dict[str, Any]:
        """Quality per dollar: the cost of each training step is in XCom under ``mlcost_cost``."""
        simulate_training(0.5)
        report = {}
        for result, task_id in ((small, "train_small"), (large, "train_large")):
            cost = ti.xcom_pull(task_ids=task_id, key="mlcost_cost") or {}
            usd = float(cost.get("total_usd") or 0.0)
            report[result["model"]] = {"ndcg": result["ndcg"], "cost_usd": usd, "idle_usd": cost.get("idle_usd")}
        return report

    data = validate_training_data()
    small, large = train_small(data), train_large(data)
    gate = BudgetGateOperator(task_id="budget_gate", budget_usd="{{ params.run_budget_usd }}")
    evaluate(small, large) >> gate


demo_dag = mlcost_demo()
