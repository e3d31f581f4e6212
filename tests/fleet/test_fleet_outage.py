"""The MLflow server goes away in the middle of a DAG run on the two-worker deployment.

The steps must not notice beyond a bounded wait: every task succeeds, its step is in the ledger, and
once the server is back, ``mlcost sync`` on each worker puts every step into MLflow exactly once,
nested under the DAG run's run as a live write would have been.
"""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import datetime

from mlcost import names

DAG = "mlcost_fleet_outage"
TASKS = {"step_0", "step_1", "step_2", "step_3"}
BOUND_S = 15.0  # the meter's and the operators' wait for MLflow (mlflow_timeout_s, CALL_TIMEOUT_S)
EXIT_SLACK_S = 10.0  # the task runner reporting the end to the API server, on a busy 2-core machine


def steps_of(fleet, run_key: str) -> list:
    from mlcost.sinks.ledger import Ledger

    if fleet.shared_ledger:
        steps = Ledger(fleet.ledger_url).steps(run_key=run_key)
    else:
        steps = [s for w in fleet.workers for s in Ledger(w.home / ".mlcost" / "ledger.db").steps(run_key=run_key)]
    return [s for s in steps if s.source == "meter"]


def sync_on(fleet, worker) -> subprocess.CompletedProcess:
    """``mlcost sync`` as an operator would run it on the worker's machine: its HOME, its env."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLCOST_", "MLFLOW_", "AIRFLOW"))}
    env.update(fleet.mlcost_env(worker.home))
    return subprocess.run(
        [sys.executable, "-m", "mlcost.cli", "sync"], env=env, cwd=worker.workdir, capture_output=True, text=True,
        timeout=120,
    )  # fmt: skip


def test_mlflow_outage_mid_run(fleet):
    from mlcost.operators.metered import run_key_for
    from mlflow.tracking import MlflowClient

    fleet.wait_for_dag(DAG)
    run_id = fleet.trigger(DAG)
    run_key = run_key_for(DAG, run_id)
    # every step has started (its row is in the ledger) and opened its MLflow run under the DAG run's
    # run (on the meter's opener thread, while the body runs): then the server goes away
    fleet.wait(lambda: len(steps_of(fleet, run_key)) == len(TASKS), timeout=180, what="all four steps to start")
    client = MlflowClient(tracking_uri=fleet.mlflow_url)

    def opened() -> bool:
        exp = client.get_experiment_by_name("mlcost")
        if exp is None:
            return False
        runs = client.search_runs([exp.experiment_id], filter_string=f"tags.`mlcost.run_key` = '{run_key}'")
        parents = {r.info.run_id for r in runs if r.data.tags.get(names.TAG_KIND) == names.KIND_DAG_RUN}
        step_runs = client.search_runs([exp.experiment_id], filter_string="attributes.status = 'RUNNING'")
        return len([r for r in step_runs if r.data.tags.get("mlflow.parentRunId") in parents]) == len(TASKS)

    fleet.wait(opened, timeout=120, what="all four steps' MLflow runs to be opened")
    fleet.stop_mlflow()
    try:
        run = fleet.wait_for_run(DAG, run_id)
    finally:
        fleet.start_mlflow()
    tis = fleet.task_instances(DAG, run_id)
    assert run["state"] == "success", fleet.logs()
    assert {t: ti["state"] for t, ti in tis.items()} == dict.fromkeys(TASKS, "success")
    assert {fleet.xcom(DAG, run_id, t)["worker"] for t in TASKS} == {"w1", "w2"}

    # each step waited for the dead server at most the bound, not MLflow's minutes of retries
    for task_id, ti in tis.items():
        body_end = fleet.xcom(DAG, run_id, task_id)["body_end"]
        end = datetime.fromisoformat(ti["end_date"].replace("Z", "+00:00")).timestamp()
        assert end - body_end < BOUND_S + EXIT_SLACK_S, (task_id, end - body_end)

    steps = {s.step_id: s for s in steps_of(fleet, run_key)}
    assert sorted(s.name for s in steps.values()) == sorted(TASKS)
    assert all(s.status == "succeeded" and s.mlflow_run_id is None for s in steps.values())

    for w in fleet.workers:  # each worker's outbox is replayed from its own machine
        out = sync_on(fleet, w)
        assert out.returncode == 0, out.stdout + out.stderr
        assert "Synced " in out.stdout and "failed" not in out.stdout, out.stdout
        again = sync_on(fleet, w)
        assert again.returncode == 0 and "Synced 0 steps" in again.stdout, again.stdout

    exp = client.get_experiment_by_name("mlcost")
    runs = client.search_runs([exp.experiment_id], filter_string=f"tags.`mlcost.run_key` = '{run_key}'")
    parents = [r for r in runs if r.data.tags.get(names.TAG_KIND) == names.KIND_DAG_RUN]
    live = [p for p in parents if "mlcost.duplicate_of" not in p.data.tags]
    assert len(live) == 1
    step_runs = [r for r in runs if names.TAG_STEP_ID in r.data.tags]
    assert sorted(r.data.tags[names.TAG_STEP_ID] for r in step_runs) == sorted(steps)  # each exactly once
    assert {r.data.tags.get("mlflow.parentRunId") for r in step_runs} == {live[0].info.run_id}
    for r in step_runs:
        assert r.info.status == "FINISHED"
        assert r.data.metrics[names.COST_USD] == steps[r.data.tags[names.TAG_STEP_ID]].total_usd
