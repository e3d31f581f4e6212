"""Kubeflow: a metered component writes to the shared ledger when its task has MLCOST_LEDGER in its
environment (the pod's own file dies with the pod). Run for real under kfp.local.

No ``from __future__ import annotations`` here: kfp reads the pipeline's annotations as types."""

import importlib.util
from pathlib import Path

import pytest

from mlcost.ledger import Ledger

PIPELINE = Path(__file__).resolve().parents[2] / "pipelines" / "training_pipeline.py"


@pytest.fixture
def example(tmp_path, simulated_gpu):
    kfp_local = pytest.importorskip("kfp.local")
    kfp_local.init(runner=kfp_local.SubprocessRunner(use_venv=False), pipeline_root=str(tmp_path / "root"))
    spec = importlib.util.spec_from_file_location("training_pipeline", PIPELINE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _shared_steps(url: str) -> dict:
    return {s.name: s for s in Ledger(url, readonly=True).open().steps()}


def test_the_example_pipeline_puts_every_components_step_in_the_shared_ledger(
    example, pg_url, tmp_path, monkeypatch
):
    monkeypatch.setenv("MLCOST_LEDGER", pg_url)  # what a pod gets from its task's environment
    monkeypatch.setenv("MLCOST_OUTBOX", str(tmp_path / "pod-outbox.db"))
    task = example.training_pipeline(train_seconds=0.3)
    assert task.outputs["Output"] == "large"
    steps = _shared_steps(pg_url)
    assert set(steps) == {"train_small", "train_large"}
    assert all(s.status == "succeeded" and s.total_usd > 0 for s in steps.values())
    assert steps["train_large"].gpus == 2 and steps["train_large"].tags["model"] == "ranker-large"


def test_set_env_variable_on_the_task_is_enough(example, pg_url, tmp_path, monkeypatch):
    """The driver's own environment points elsewhere; only the task's env names the database."""
    from kfp import dsl

    local = tmp_path / "driver-ledger.db"
    monkeypatch.setenv("MLCOST_LEDGER", str(local))
    monkeypatch.setenv("MLCOST_OUTBOX", str(tmp_path / "pod-outbox.db"))

    @dsl.pipeline(name="shared-ledger")
    def pipeline() -> float:
        task = example.train_small(rows=5000, seconds=0.2)
        task.set_env_variable("MLCOST_LEDGER", pg_url)
        return task.outputs["Output"]

    assert pipeline().outputs["Output"] == pytest.approx(0.81)
    assert set(_shared_steps(pg_url)) == {"train_small"}
    assert not local.exists()  # the step went to the task's ledger, not the driver's
