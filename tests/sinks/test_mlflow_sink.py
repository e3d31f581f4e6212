"""The MLflow sink against a real MLflow tracking store (SQLite file)."""

import os
import socket

import pytest

from mlcost import meter, names
from mlcost.sinks.ledger import Ledger
from mlcost.sinks.mlflow_reach import sink_key
from mlcost.sync import sync

STEP_METRICS = {"cost_usd", "idle_cost_usd", "energy_kwh", "gpu_hours", "gpu_util_mean_pct",
                "gpu_mem_peak_gb", "gpu_idle_fraction"}


def _client(uri):
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=uri)


def _runs(uri, experiment="mlcost"):
    client = _client(uri)
    exp = client.get_experiment_by_name(experiment)
    return client.search_runs([exp.experiment_id]) if exp else []


def test_step_logs_documented_metrics_tags_and_series(mlflow_uri, simulated_gpu):
    simulated_gpu("busy", gpu="H100", devices=2)
    with meter("train", gpu_type="H100", interval=0.02,
               tags={"team": "search", "project": "p1", "model": "ranker", "workload": "training"}) as m:
        import time

        time.sleep(0.3)
    (run,) = _runs(mlflow_uri)
    assert run.info.run_id == m.cost.mlflow_run_id and run.info.status == "FINISHED"
    assert set(run.data.metrics) >= STEP_METRICS
    assert run.data.metrics["cost_usd"] == pytest.approx(m.cost.total_usd)
    tags = run.data.tags
    for key, value in {"mlcost.team": "search", "mlcost.project": "p1", "mlcost.model": "ranker",
                       "mlcost.workload": "training", "mlcost.gpu_type": "H100", "mlcost.pricing": "on_demand",
                       "mlcost.telemetry": "simulated", "mlcost.step_id": m.cost.step_id}.items():
        assert tags[key] == value
    client = _client(mlflow_uri)
    for device in (0, 1):
        for quantity in names.SERIES_QUANTITIES:
            history = client.get_metric_history(run.info.run_id, f"gpu/{device}/{quantity}")
            assert 2 <= len(history) <= names.MAX_SERIES_POINTS


def test_logging_into_the_callers_active_run(mlflow_uri, monkeypatch):
    import mlflow

    monkeypatch.setenv("MLCOST_GPU_BACKEND", "none")
    mlflow.set_tracking_uri(mlflow_uri)
    with mlflow.start_run() as run, meter("train", gpus=1, gpu_type="L4", interval=0.02):
        pass
    data = _client(mlflow_uri).get_run(run.info.run_id).data
    assert "cost_usd" in data.metrics and data.tags["mlcost.telemetry"] == "none"


def test_the_steps_run_is_opened_while_it_runs_and_completed_at_its_end(mlflow_uri, monkeypatch):
    """The run is made on a thread as the step starts (its calls overlap the body instead of adding
    to the end): it is there, RUNNING and nested under its parent, before the body ends; the end
    fills that same run and ends it."""
    import time

    monkeypatch.setenv("MLCOST_GPU_BACKEND", "none")
    client = _client(mlflow_uri)
    parent = client.create_run(client.create_experiment("mlcost")).info.run_id
    with meter("train", gpus=1, gpu_type="L4", interval=0.05, mlflow_parent_run_id=lambda: parent) as m:
        deadline = time.monotonic() + 30
        while not (during := [r for r in _runs(mlflow_uri) if r.info.run_id != parent]):
            assert time.monotonic() < deadline, "the step's run was not opened while it ran"
            time.sleep(0.05)
        (opened,) = during
        assert opened.info.status == "RUNNING" and opened.data.tags["mlflow.parentRunId"] == parent
        assert opened.data.tags["mlcost.step_id"] == m.step_id and "cost_usd" not in opened.data.metrics
    (done,) = [r for r in _runs(mlflow_uri) if r.info.run_id != parent]
    assert done.info.run_id == opened.info.run_id == m.cost.mlflow_run_id
    assert done.info.status == "FINISHED" and done.data.metrics["cost_usd"] == pytest.approx(m.cost.total_usd)
    assert m.mlflow_parent_run_id == parent  # the lazy parent was looked up once


def test_a_run_the_body_starts_and_leaves_active_gets_the_cost_and_no_empty_run_is_left(mlflow_uri, monkeypatch):
    """The step's own run was opened as it started; then the body started a training run and left it
    active. The cost goes to the training run, as before, and the opened run does not stay behind."""
    import mlflow

    monkeypatch.setenv("MLCOST_GPU_BACKEND", "none")
    mlflow.set_tracking_uri(mlflow_uri)
    try:
        with meter("train", gpus=1, gpu_type="L4", interval=0.05) as m:
            m._opener.wait(30)  # the step's own run exists before the body's
            training = mlflow.start_run()
    finally:
        mlflow.end_run()
    assert m.cost.mlflow_run_id == training.info.run_id
    assert "cost_usd" in _client(mlflow_uri).get_run(training.info.run_id).data.metrics
    assert _runs(mlflow_uri) == []  # the opened run in "mlcost" was removed


def test_a_step_that_loses_the_race_to_create_the_experiment_logs_into_the_winners(mlflow_uri, monkeypatch):
    """Two nodes of a job end together: both find no ``mlcost`` experiment, both create it, and the
    store refuses the second. That step's run must still be logged, into the first one's experiment."""
    from mlflow.tracking import MlflowClient

    monkeypatch.setenv("MLCOST_GPU_BACKEND", "none")
    real_lookup = MlflowClient.get_experiment_by_name
    lookups = []

    def lookup_while_another_node_creates_it(self, name):
        lookups.append(name)
        found = real_lookup(self, name)
        if len(lookups) == 1:  # this node finds none, then the other node creates it
            assert found is None
            _client(mlflow_uri).create_experiment(name)
        return found

    monkeypatch.setattr(MlflowClient, "get_experiment_by_name", lookup_while_another_node_creates_it)
    with meter("train", gpus=1, gpu_type="L4", interval=0.02) as m:
        pass
    monkeypatch.undo()
    (run,) = _runs(mlflow_uri)
    assert m.cost.mlflow_run_id == run.info.run_id and "cost_usd" in run.data.metrics


def test_periodic_flushes_and_the_final_log_share_one_run_on_the_given_server(tmp_path, simulated_gpu, monkeypatch):
    """A long step is flushed to MLflow while it runs; flushes and the end must land on the same
    run, in the step's experiment, on the server passed as ``tracking_uri`` (no env variable)."""
    import importlib
    import time

    # the flush cadence lives in mlcost.checkpoints
    monkeypatch.setattr(importlib.import_module("mlcost.checkpoints"), "MLFLOW_FLUSH_EVERY_S", 0.1)
    uri = f"sqlite:///{tmp_path / 'elsewhere.db'}"
    with meter("train", gpu_type="H100", interval=0.02, experiment="ranker", tracking_uri=uri) as m:
        deadline = time.monotonic() + 30
        # a flush wrote the run: created first, then its figures and tags in one batch, so wait for
        # the batch (the run alone can be seen between the two calls)
        while not any("mlcost.status" in r.data.tags for r in _runs(uri, "ranker")) and time.monotonic() < deadline:
            time.sleep(0.05)
        (flushed,) = _runs(uri, "ranker")
        assert flushed.info.status == "RUNNING" and flushed.data.tags["mlcost.status"] == "running"
        time.sleep(0.3)
    (run,) = _runs(uri, "ranker")
    assert run.info.run_id == flushed.info.run_id == m.cost.mlflow_run_id
    assert run.info.status == "FINISHED" and run.data.metrics["cost_usd"] == pytest.approx(m.cost.total_usd)
    assert _runs(uri) == []  # nothing strayed into the default experiment


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_tracking_server_down_then_sync_logs_each_step_exactly_once(tmp_path, monkeypatch):
    monkeypatch.setenv("MLCOST_GPU_BACKEND", "none")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"http://127.0.0.1:{_closed_port()}")
    costs = []
    for i in range(3):
        with meter(f"step-{i}", gpus=1, gpu_type="T4", interval=0.02, mlflow_timeout_s=0.5) as m:
            pass
        costs.append(m.cost)
    assert all(c.status == "succeeded" and c.mlflow_run_id is None for c in costs)  # the steps still succeeded
    ledger = Ledger()
    assert len(ledger.unsynced(sink_key(os.environ["MLFLOW_TRACKING_URI"]))) == 3

    uri = f"sqlite:///{tmp_path / 'recovered.db'}"
    first = sync(ledger, tracking_uri=uri)
    second = sync(ledger, tracking_uri=uri)
    assert len(first.synced) == 3 and not first.failed and second.synced == []
    runs = _runs(uri)
    assert sorted(r.data.tags["mlcost.step_id"] for r in runs) == sorted(c.step_id for c in costs)
    for run in runs:  # each metric once, not twice
        assert len(_client(uri).get_metric_history(run.info.run_id, "cost_usd")) == 1


def test_sync_is_idempotent_even_when_the_ledger_forgot_what_it_synced(tmp_path, monkeypatch):
    """A crash between the MLflow write and the ledger's note must not double-count."""
    monkeypatch.setenv("MLCOST_GPU_BACKEND", "none")
    uri = f"sqlite:///{tmp_path / 'm.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    with meter("once", gpus=1, gpu_type="T4", interval=0.02) as m:
        pass
    ledger = Ledger()
    with ledger.connect() as conn:
        conn.execute("DELETE FROM synced")
    result = sync(ledger, tracking_uri=uri)
    assert result.synced == [m.cost.step_id]
    (run,) = _runs(uri)
    assert len(_client(uri).get_metric_history(run.info.run_id, "cost_usd")) == 1
