"""One MLflow parent run per DAG run, however two tasks that start together interleave.

CI once caught two live parents for one DAG run on the Celery fleet: task A made its parent and
found only that one; task B's search had run before A's create landed, and B's own create, stamped
a few milliseconds earlier on B's clock, landed after A's search. Each task then picked its own. The
test below replays that interleaving on a real MLflow store, then ends the tasks.
"""

from __future__ import annotations

import pytest
from mlcost.operators.hooks.mlflow_runs import MlflowRunsHook

from mlcost import names

KEY = "airflow:train/manual__2026-11-30"


def step_run(client, parent_id: str, step: str, cost: float) -> str:
    """A task's step run as the meter leaves it: nested under its parent, tagged, costed, ended."""
    exp = client.get_run(parent_id).info.experiment_id
    run = client.create_run(exp, tags={"mlflow.parentRunId": parent_id}, run_name=step)
    client.set_tag(run.info.run_id, "mlcost.run_key", KEY)
    client.set_tag(run.info.run_id, names.TAG_STEP, step)
    client.log_metric(run.info.run_id, names.COST_USD, cost)
    client.set_terminated(run.info.run_id)
    return run.info.run_id


def racing_parent(hook: MlflowRunsHook, monkeypatch, earlier_ms: int) -> str:
    """Task B's ``dag_run_parent``: its first search sees nothing (it ran before A's create landed)
    and its create carries the start time its clock read then."""
    searches = {"n": 0}
    real = MlflowRunsHook._parents

    def parents(client, experiment_id, run_key):
        searches["n"] += 1
        return [] if searches["n"] == 1 else real(client, experiment_id, run_key)

    with monkeypatch.context() as m:
        m.setattr(MlflowRunsHook, "_parents", staticmethod(parents))
        m.setattr("mlflow.tracking._tracking_service.client.get_current_time_millis", lambda: earlier_ms)
        return hook.dag_run_parent(KEY, experiment=None, run_name="train/r", tags={})


def live_parents(client) -> list:
    exp = client.get_experiment_by_name("mlcost")
    runs = client.search_runs([exp.experiment_id], filter_string=f"tags.`{names.TAG_KIND}` = 'dag_run'")
    return [r for r in runs if "mlcost.duplicate_of" not in r.data.tags]


def test_two_tasks_that_picked_different_parents_end_under_one(mlflow_uri, monkeypatch):
    hook = MlflowRunsHook(tracking_uri=mlflow_uri)
    client = hook.get_conn()
    parent_a = hook.dag_run_parent(KEY, experiment=None, run_name="train/r", tags={})
    parent_b = racing_parent(hook, monkeypatch, client.get_run(parent_a).info.start_time - 5)
    assert parent_a != parent_b and len(live_parents(client)) == 2  # the state CI caught

    run_a = step_run(client, parent_a, "prepare", 1.25)
    hook.update_parent_totals(parent_a, KEY)  # task A ends first, under the parent it picked
    run_b = step_run(client, parent_b, "train", 2.5)
    hook.update_parent_totals(parent_b, KEY)

    (settled,) = live_parents(client)
    assert settled.info.run_id == parent_b  # the oldest, as every reader sorts
    loser = client.get_run(parent_a)
    assert loser.data.tags["mlcost.duplicate_of"] == parent_b and loser.info.status == "KILLED"
    for run_id in (run_a, run_b):
        assert client.get_run(run_id).data.tags["mlflow.parentRunId"] == parent_b
    assert settled.data.metrics[names.COST_USD] == pytest.approx(3.75)
    assert settled.data.metrics["steps"] == 2
    assert hook.find_dag_run_parent(KEY, experiment=None) == parent_b


def test_the_gate_closes_the_settled_parent_with_its_verdict(mlflow_uri, monkeypatch):
    hook = MlflowRunsHook(tracking_uri=mlflow_uri)
    client = hook.get_conn()
    parent_a = hook.dag_run_parent(KEY, experiment=None, run_name="train/r", tags={})
    parent_b = racing_parent(hook, monkeypatch, client.get_run(parent_a).info.start_time - 5)
    step_run(client, parent_a, "prepare", 1.0)
    step_run(client, parent_b, "train", 2.0)

    # neither task reached its end-of-step settling (MLflow timed out): the gate settles it
    hook.update_parent_totals(parent_a, KEY, final_status="FINISHED", tags={"mlcost.gate": "passed"})

    (settled,) = live_parents(client)
    assert settled.info.run_id == parent_b and settled.info.status == "FINISHED"
    assert settled.data.tags["mlcost.gate"] == "passed"
    assert settled.data.metrics[names.COST_USD] == pytest.approx(3.0)
