"""The Cost view answers over HTTP with the figures of a demo run (FastAPI's test client)."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient
from mlcost.operators.local import install_dag, run_dag
from mlcost.plugins.cost_view import LazyApp, create_app

from mlcost.demo import demo_dag_file
from mlcost.sinks.ledger import Ledger
from mlcost.step import StepCost


def _step(step_id: str, dag: str, task: str, team: str, model: str, total: float, idle: float) -> StepCost:
    return StepCost(
        step_id=step_id,
        name=task,
        status="succeeded",
        started_at=f"2025-01-0{step_id[-1]}T00:00:00+00:00",
        tags={"team": team, "model": model},
        run_key=f"airflow:{dag}/r1",
        context={"dag_id": dag, "task_id": task},
        total_usd=total,
        idle_usd=idle,
        gpus=1,
        gpu_hours=1.0,
    )


def test_groups_and_idle_share_are_exact():
    ledger = Ledger()
    ledger.write(_step("s1", "d1", "train", "search", "ranker", 10.0, 2.5))
    ledger.write(_step("s2", "d1", "eval", "search", "ranker", 2.0, 0.0))
    ledger.write(_step("s3", "d2", "train", "ads", "ctr", 4.0, 3.0))
    client = TestClient(create_app())
    by_team = client.get("/api/costs", params={"group": "team"}).json()
    assert [(r["team"], r["total_usd"], r["idle_share"]) for r in by_team["rows"]] == [
        ("search", 12.0, pytest.approx(2.5 / 12.0)),
        ("ads", 4.0, 0.75),
    ]
    by_task = client.get("/api/costs", params={"group": "task", "dag_id": "d1"}).json()["rows"]
    assert [(r["dag_id"], r["task_id"], r["total_usd"]) for r in by_task] == [
        ("d1", "train", 10.0),
        ("d1", "eval", 2.0),
    ]
    assert client.get("/api/costs", params={"since": "2025-01-03"}).json()["total_usd"] == 4.0
    assert client.get("/api/costs", params={"group": "nope"}).status_code == 400
    assert client.get("/api/runs").json()["runs"][0]["run_key"] == "airflow:d2/r1"


def test_cost_view_shows_the_demo_run(airflow_db, simulated_gpu):
    simulated_gpu("bursty", gpu="H100")
    result = run_dag(install_dag(demo_dag_file(), airflow_db), "mlcost_demo", conf={"train_seconds": 0.5})
    assert result.state == "success", result.tasks
    steps = {s.context["task_id"]: s for s in Ledger().steps(run_key=result.run_key) if s.source == "meter"}
    client = TestClient(LazyApp())  # the object the plugin mounts, built on its first request

    tasks = client.get("/api/costs", params={"group": "task", "dag_id": "mlcost_demo"}).json()
    got = {r["task_id"]: r for r in tasks["rows"]}
    for task_id, step in steps.items():
        assert got[task_id]["total_usd"] == pytest.approx(step.total_usd)
        assert got[task_id]["idle_usd"] == pytest.approx(step.idle_usd)
    assert got["validate_training_data"]["total_usd"] == 0 and got["validate_training_data"]["metered_steps"] == 0
    assert tasks["total_usd"] == pytest.approx(sum(s.total_usd for s in steps.values()))

    models = {r["model"]: r for r in client.get("/api/costs", params={"group": "model"}).json()["rows"]}
    assert models["ranker-large"]["total_usd"] == pytest.approx(steps["train_large"].total_usd)
    assert models["ranker-large"]["idle_share"] == pytest.approx(
        steps["train_large"].idle_usd / steps["train_large"].total_usd
    )
    (dag_row,) = client.get("/api/costs", params={"group": "dag"}).json()["rows"]
    assert dag_row["dag_id"] == "mlcost_demo" and dag_row["runs"] == 1 and dag_row["simulated"] is True

    page = client.get("/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    for text in ("By DAG", "By task", "By team", "By model", "train_large", "ranker-small", "search", "simulated GPU"):
        assert text in page.text
    assert f"${steps['train_large'].total_usd:,.4f}" in page.text
    assert client.get("/health").json()["status"] == "ok"
