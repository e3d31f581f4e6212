"""@task.metered and MeteredOperator run by Airflow's real task runner (dag.test() on SQLite)."""

from __future__ import annotations

import json
import os
import time

import pytest
from mlcost.operators import XCOM_COST_KEY
from mlcost.operators.local import run_dag, xcom

from mlcost import names
from mlcost.sinks.ledger import Ledger

FILE = "mlcost_test_dags.py"


@pytest.fixture
def markers(tmp_path, monkeypatch):
    folder = tmp_path / "markers"
    folder.mkdir()
    monkeypatch.setenv("MLCOST_TEST_MARKER_DIR", str(folder))
    return folder


def _metered(run_key: str) -> dict[str, object]:
    return {s.context["task_id"]: s for s in Ledger().steps(run_key=run_key) if s.source == "meter"}


def test_metered_task_cost_in_xcom_ledger_and_mlflow(dagfile, simulated_gpu, mlflow_uri, markers, capsys):
    simulated_gpu("busy", gpu="H100", devices=2)
    result = run_dag(dagfile(FILE), "mlcost_t_basic")
    assert result.state == "success", result.tasks
    assert set(result.tasks) == {"train", "plain", "wrapped_bash", "callable"}  # the inner BashOperator is not a task

    # XCom: the return value is untouched, the StepCost is beside it
    assert xcom(result, "train") == 42
    cost = xcom(result, "train", XCOM_COST_KEY)
    assert cost["name"] == "train" and cost["status"] == "succeeded"
    assert cost["gpus"] == 2 and cost["gpu_type"] == "H100" and cost["total_usd"] > 0
    assert cost["simulated"] is True and cost["tags"]["model"] == "ranker"
    assert xcom(result, "wrapped_bash") == "hello-from-bash"
    assert xcom(result, "callable") == 42 and (markers / "double-callable").exists()

    # ledger: one metered step per metered task, grouped by the DAG run
    steps = _metered(result.run_key)
    assert set(steps) == {"train", "wrapped_bash", "callable"}
    train = steps["train"]
    assert train.total_usd == pytest.approx(cost["total_usd"])
    assert train.context["dag_id"] == "mlcost_t_basic" and train.context["try_number"] == "1"
    assert train.team == "search" and train.status == "succeeded" and train.samples >= 3

    # MLflow: one run per task instance, nested under one run for the DAG run, with the documented names
    from mlflow.tracking import MlflowClient

    client = MlflowClient(mlflow_uri)
    exp = client.get_experiment_by_name("mlcost")
    runs = client.search_runs([exp.experiment_id], filter_string=f"tags.`mlcost.run_key` = '{result.run_key}'")
    parents = [r for r in runs if r.data.tags.get("mlcost.kind") == "dag_run"]
    assert len(parents) == 1
    parent = parents[0]
    children = {
        r.data.tags["mlcost.step"]: r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id
    }
    assert set(children) == {"train", "wrapped_bash", "callable"}
    child = children["train"]
    for metric in names.STEP_METRICS:
        assert metric in child.data.metrics, metric
    assert child.data.metrics[names.COST_USD] == pytest.approx(train.total_usd)
    for tag, value in {
        names.TAG_TEAM: "search",
        names.TAG_MODEL: "ranker",
        names.TAG_WORKLOAD: "training",
        names.TAG_GPU_TYPE: "H100",
        names.TAG_PRICING: "on_demand",
        names.TAG_TELEMETRY: "simulated",
    }.items():
        assert child.data.tags[tag] == value, tag
    assert any(k.startswith("gpu/0/") for k in child.data.metrics)
    assert cost["mlflow_run_id"] == child.info.run_id
    # the DAG run's parent carries the run total
    parent = client.get_run(parent.info.run_id)
    assert parent.data.metrics[names.COST_USD] == pytest.approx(sum(s.total_usd for s in steps.values()), rel=1e-6)

    # the gate checks each step against the per-job budget, never the DAG run's total as one more "job"
    import json

    from mlcost.cli import main as mlcost_cli

    costliest, total = max(s.total_usd for s in steps.values()), parent.data.metrics[names.COST_USD]
    assert total > costliest
    policy = markers / "gate.toml"
    policy.write_text(f"[budgets]\njob_usd = {(costliest + total) / 2!r}\n")  # over every step, under the total
    capsys.readouterr()  # what the DAG run printed
    rc = mlcost_cli(["gate", "--policy", str(policy), "--experiment", "mlcost", "--format", "json"])
    report = json.loads(capsys.readouterr().out)
    assert rc == 0 and report["findings"] == [], report["findings"]


def test_budget_breach_fails_at_first_try_despite_retries(dagfile, simulated_gpu, markers):
    simulated_gpu("busy", gpu="H100", devices=8)
    t0 = time.monotonic()
    result = run_dag(dagfile(FILE), "mlcost_t_budget")
    assert time.monotonic() - t0 < 30  # stopped long before the body's 60 s
    assert result.state == "failed"
    assert result.tasks["burn"] == "failed" and result.tries["burn"] == 1  # retries=3, yet no retry
    assert (markers / "burn-started").exists() and not (markers / "burn-finished").exists()
    (step,) = _metered(result.run_key).values()
    assert step.status == "breached" and step.breach.kind == "budget_usd"
    assert step.breach.policy == "budget_usd=0.002 on step 'burn'"
    assert step.total_usd >= 0.002
    cost = xcom(result, "burn", XCOM_COST_KEY)
    assert cost["status"] == "breached"


def test_idle_timeout_fails_without_retry(dagfile, simulated_gpu, markers):
    simulated_gpu("idle", gpu="L4")
    result = run_dag(dagfile(FILE), "mlcost_t_idle")
    assert result.tasks["wait_for_data"] == "failed" and result.tries["wait_for_data"] == 1
    (step,) = _metered(result.run_key).values()
    assert step.status == "breached" and step.breach.kind == "idle_timeout_s"


def test_preflight_refusal_spends_no_time_in_the_body(dagfile, simulated_gpu, markers, isolated_mlcost, monkeypatch):
    simulated_gpu("busy", gpu="H100", devices=8)
    policy = isolated_mlcost / "cluster.toml"
    policy.write_text("[cluster]\nmax_gpus = 8\n")
    monkeypatch.setenv("MLCOST_POLICY", str(policy))
    result = run_dag(dagfile(FILE), "mlcost_t_preflight")
    # projected cost 8 x H100 x 10 h >> $1, and 16 GPUs > cluster.max_gpus = 8: both refused, at try 1
    assert result.tasks == {"too_expensive": "failed", "too_big": "failed"}
    assert result.tries == {"too_expensive": 1, "too_big": 1}
    assert list(markers.iterdir()) == []  # neither body ran
    steps = _metered(result.run_key)  # the ledger shows both refusals, with nothing spent
    assert {t: (s.status, s.breach.kind, s.total_usd) for t, s in steps.items()} == {
        "too_expensive": ("breached", "budget_usd", 0.0),
        "too_big": ("breached", "max_gpus", 0.0),
    }


def test_budget_gate_fails_the_run_when_the_sum_is_over(dagfile, simulated_gpu, capsys):
    simulated_gpu("busy", gpu="H100", devices=8)
    result = run_dag(dagfile(FILE), "mlcost_t_gate")
    assert result.tasks["train_large"] == "success" and result.tasks["train_small"] == "success"
    assert result.tasks["budget_gate"] == "failed" and result.tries["budget_gate"] == 1
    assert result.state == "failed"
    out = capsys.readouterr()
    text = out.out + out.err
    assert "over the run budget $0.0010 (budget_usd=0.001 on task 'budget_gate')" in text
    assert "Costliest tasks: train_large $" in text  # the costliest task is named first


def test_execution_timeout_still_records_the_step(dagfile, simulated_gpu):
    simulated_gpu("busy", gpu="L4")
    result = run_dag(dagfile(FILE), "mlcost_t_timeout")
    assert result.tasks["hangs"] == "failed"
    (step,) = _metered(result.run_key).values()
    assert step.status in {"killed", "failed"} and step.ended_at is not None
    assert 1.5 < step.duration_s < 10


def test_mlflow_tracking_uri_from_an_airflow_connection(dagfile, simulated_gpu, tmp_path, monkeypatch):
    simulated_gpu("busy", gpu="L4")
    uri = f"sqlite:///{tmp_path / 'from-connection.db'}"
    monkeypatch.setenv(
        "AIRFLOW_CONN_MLCOST_MLFLOW", json.dumps({"conn_type": "mlflow", "extra": {"tracking_uri": uri}})
    )
    result = run_dag(dagfile(FILE), "mlcost_t_conn")
    assert result.state == "success", result.tasks
    assert "MLFLOW_TRACKING_URI" not in os.environ  # exported for the task only, then put back

    from mlflow.tracking import MlflowClient

    client = MlflowClient(uri)
    exp = client.get_experiment_by_name("mlcost")
    runs = client.search_runs([exp.experiment_id], filter_string=f"tags.`mlcost.run_key` = '{result.run_key}'")
    assert sorted(r.data.tags.get("mlcost.kind", "step") for r in runs) == ["dag_run", "step"]
