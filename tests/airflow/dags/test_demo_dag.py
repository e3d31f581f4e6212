"""The example DAG, run as a new user runs it: dag.test() on SQLite with a simulated GPU."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from mlcost.operators import XCOM_COST_KEY
from mlcost.operators.local import install_dag, run_dag, xcom

from mlcost.demo import demo_dag_file
from mlcost.sinks.ledger import Ledger


@pytest.fixture
def demo_dag(airflow_db) -> Path:
    return install_dag(demo_dag_file(), airflow_db)


def test_demo_dag_runs_and_every_task_is_recorded(demo_dag, simulated_gpu, mlflow_uri):
    simulated_gpu("bursty", gpu="H100")
    result = run_dag(demo_dag, "mlcost_demo", conf={"train_seconds": 1.0})
    assert result.state == "success", result.tasks
    assert set(result.tasks.values()) == {"success"}
    steps = {s.context["task_id"]: s for s in Ledger().steps(run_key=result.run_key)}
    metered = {t for t, s in steps.items() if s.source == "meter"}
    assert metered == {"train_small", "train_large", "evaluate"}
    # the un-metered tasks are recorded by the plugin's listener, with their outcome and wall time
    assert steps["validate_training_data"].source == "listener"
    assert steps["validate_training_data"].status == "succeeded"
    assert steps["validate_training_data"].duration_s > 0
    assert steps["train_large"].gpus == 4 and steps["train_large"].total_usd > steps["train_small"].total_usd
    report = xcom(result, "evaluate")
    assert report["ranker-large"]["cost_usd"] == pytest.approx(steps["train_large"].total_usd)
    gate = xcom(result, "budget_gate")
    assert gate["total_usd"] == pytest.approx(sum(steps[t].total_usd for t in metered), abs=1e-6)
    assert xcom(result, "train_small", XCOM_COST_KEY)["tags"]["model"] == "ranker-small"
    # MLflow: the gate closed the DAG run's run with the run total
    from mlflow.tracking import MlflowClient

    client = MlflowClient(mlflow_uri)
    exp = client.get_experiment_by_name("mlcost")
    (parent,) = client.search_runs([exp.experiment_id], filter_string="tags.`mlcost.kind` = 'dag_run'")
    assert parent.info.status == "FINISHED" and parent.data.tags["mlcost.gate"] == "passed"
    assert parent.data.metrics["cost_usd"] == pytest.approx(gate["total_usd"], abs=1e-6)


def test_bad_data_fails_before_any_gpu_money_is_spent(demo_dag, simulated_gpu):
    simulated_gpu("busy", gpu="H100")
    result = run_dag(demo_dag, "mlcost_demo", conf={"corrupt_data": True})
    assert result.state == "failed"
    assert result.tasks["validate_training_data"] == "failed"
    assert result.tries["validate_training_data"] == 1
    assert {result.tasks[t] for t in ("train_small", "train_large", "evaluate")} == {"upstream_failed"}
    assert [s for s in Ledger().steps(run_key=result.run_key) if s.source == "meter"] == []


def test_mlcost_demo_command_end_to_end(tmp_path):
    """``mlcost demo`` as a user types it, in a fresh process (its own Airflow home, MLflow, ledger)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW", "MLCOST_", "MLFLOW_"))}
    env["MLCOST_GPU_BACKEND"] = "simulated"  # the same output on a machine with a GPU
    out = subprocess.run(
        [sys.executable, "-m", "mlcost.cli", "demo", "--home", str(tmp_path / "demo")],
        capture_output=True,
        text=True,
        timeout=240,
        env=env,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    assert "SIMULATED" in out.stdout
    for task_id in ("validate_training_data", "train_small", "train_large", "evaluate", "budget_gate"):
        assert task_id in out.stdout
    assert "mlflow ui --backend-store-uri sqlite:///" in out.stdout
    assert (tmp_path / "demo" / "mlflow.db").exists() and (tmp_path / "demo" / "ledger.db").exists()
