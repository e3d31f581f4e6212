"""End to end on the two-worker deployment: a DAG of metered tasks, triggered through the REST API.

What a dag.test() run cannot show: the steps run in separate worker processes with their own HOME,
the budget gate sums steps it did not run, and every reader (the shared ledger, the MLflow server,
``mlcost report``, the Cost view) sees the whole DAG run.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from mlcost import names

DAG = "mlcost_fleet_e2e"
STEPS = {"train_0", "train_1", "train_2", "embed", "over_budget"}
GPU_STEPS = STEPS - {"over_budget"}


def ledger_steps(fleet, run_key: str, source: str = "meter") -> list:
    """The DAG run's metered steps in the shared ledger (the listener also records the gate's task)."""
    from mlcost.sinks.ledger import Ledger

    if fleet.shared_ledger:
        steps = Ledger(fleet.ledger_url).steps(run_key=run_key)
    else:
        steps = [s for w in fleet.workers for s in Ledger(w.home / ".mlcost" / "ledger.db").steps(run_key=run_key)]
    return [s for s in steps if s.source == source]


@pytest.fixture(scope="module")
def e2e(fleet):
    """One run of the e2e DAG: (run id, task instances by task id)."""
    fleet.wait_for_dag(DAG)
    run_id = fleet.trigger(DAG)
    run = fleet.wait_for_run(DAG, run_id)
    return run_id, run, fleet.task_instances(DAG, run_id)


def test_tasks_ran_on_both_workers(fleet, e2e):
    run_id, _run, tis = e2e
    states = {t: ti["state"] for t, ti in tis.items()}
    assert states == {**dict.fromkeys(GPU_STEPS, "success"), "over_budget": "failed", "budget_gate": "success"}, (
        fleet.logs()
    )
    where = {t: fleet.xcom(DAG, run_id, t)["worker"] for t in GPU_STEPS}
    assert where == {"train_0": "w1", "train_1": "w1", "train_2": "w2", "embed": "w2"}
    for task_id, worker in where.items():
        assert tis[task_id]["queue"] == worker
    # each worker's own outbox (a local file under its HOME) holds the steps it ran, and only those
    from mlcost.operators.metered import run_key_for

    from mlcost.ledger import Ledger

    ran = {
        w.name: sorted(s.name for s in Ledger(w.home / ".mlcost" / "ledger.db").steps(run_key=run_key_for(DAG, run_id)))
        for w in fleet.workers
    }
    assert ran == {"w1": ["budget_gate", "train_0", "train_1"], "w2": ["embed", "over_budget", "train_2"]}


def test_over_budget_failed_at_first_try_without_retry(fleet, e2e):
    run_id, _, tis = e2e
    ti = tis["over_budget"]
    assert ti["state"] == "failed"
    assert ti["try_number"] == 1 and ti["max_tries"] == 3  # retries=3 were allowed, none was taken
    cost = fleet.xcom(DAG, run_id, "over_budget", "mlcost_cost")
    assert cost["status"] == "breached" and cost["total_usd"] > 0.002
    assert cost["breach"]["kind"] == "budget_usd"


def test_every_step_in_the_shared_ledger_once(fleet, e2e):
    run_id, _, _ = e2e
    from mlcost.operators.metered import run_key_for

    steps = ledger_steps(fleet, run_key_for(DAG, run_id))
    assert sorted(s.name for s in steps) == sorted(STEPS)
    assert len({s.step_id for s in steps}) == len(STEPS)
    assert {s.context["try_number"] for s in steps} == {"1"}


def test_budget_gate_summed_both_workers(fleet, e2e):
    run_id, _, _ = e2e
    from mlcost.operators.metered import run_key_for

    steps = ledger_steps(fleet, run_key_for(DAG, run_id))
    gate = fleet.xcom(DAG, run_id, "budget_gate")
    assert gate["steps"] == len(STEPS)  # the gate ran on w1 and saw w2's steps too
    assert set(gate["by_task"]) == STEPS
    assert gate["total_usd"] == pytest.approx(sum(s.total_usd for s in steps), abs=1e-5)
    assert gate["breaches"] == []


def test_every_step_on_the_mlflow_server_under_the_dag_run(fleet, e2e):
    run_id, _, _ = e2e
    from mlcost.operators.metered import run_key_for
    from mlflow.tracking import MlflowClient

    run_key = run_key_for(DAG, run_id)
    client = MlflowClient(tracking_uri=fleet.mlflow_url)
    exp = client.get_experiment_by_name("mlcost")
    runs = client.search_runs([exp.experiment_id], filter_string=f"tags.`mlcost.run_key` = '{run_key}'")
    parents = [r for r in runs if r.data.tags.get(names.TAG_KIND) == names.KIND_DAG_RUN]
    live = [p for p in parents if "mlcost.duplicate_of" not in p.data.tags]
    assert len(live) == 1, [p.data.tags for p in parents]
    parent = live[0]
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
    assert sorted(r.data.tags[names.TAG_STEP] for r in children) == sorted(STEPS)
    assert len(children) + len(parents) == len(runs)  # no step outside the hierarchy, none twice
    ledger = {s.step_id: s for s in ledger_steps(fleet, run_key)}
    assert {r.data.tags[names.TAG_STEP_ID] for r in children} == set(ledger)
    for r in children:
        assert r.data.metrics[names.COST_USD] == pytest.approx(ledger[r.data.tags[names.TAG_STEP_ID]].total_usd)
    # the gate closed the DAG run's run with the total of both workers' steps
    parent = client.get_run(parent.info.run_id)
    assert parent.info.status == "FINISHED" and parent.data.tags["mlcost.gate"] == "passed"
    assert parent.data.metrics[names.COST_USD] == pytest.approx(sum(s.total_usd for s in ledger.values()))
    assert parent.data.metrics["steps"] == len(STEPS)


def test_report_and_cost_view_show_the_whole_run(fleet, e2e):
    run_id, _, _ = e2e
    from mlcost.operators.metered import run_key_for

    run_key = run_key_for(DAG, run_id)
    total = sum(s.total_usd for s in ledger_steps(fleet, run_key))
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLCOST_LEDGER")}
    argv = ["report", "--ledger", fleet.ledger_url, "--by", "model", "--format", "markdown"]
    cmd = [sys.executable, "-m", "mlcost.cli", *argv]
    out = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "ranker" in out.stdout and "embedder" in out.stdout
    status, body = fleet.api("GET", f"/mlcost/api/runs?dag_id={DAG}")
    assert status == 200, body
    run = next(r for r in body["runs"] if r["run_key"] == run_key)
    recorded = ledger_steps(fleet, run_key) + ledger_steps(fleet, run_key, source="listener")  # + the gate's task
    assert run["steps"] == len(recorded) == len(STEPS) + 1
    assert run["total_usd"] == pytest.approx(total + sum(s.total_usd for s in recorded[len(STEPS):]), abs=1e-6)
    status, body = fleet.api("GET", f"/mlcost/api/costs?group=task&dag_id={DAG}")
    assert status == 200, body
    assert {r["task_id"] for r in body["rows"]} >= STEPS
    json.dumps(body)  # plain JSON for scripts
