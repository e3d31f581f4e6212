"""metered_component and budget_gate run for real under kfp.local (SubprocessRunner, no venv)."""

import importlib.util
from pathlib import Path

import pytest

from mlcost.sinks.ledger import Ledger

PIPELINE = Path(__file__).resolve().parents[2] / "pipelines" / "training_pipeline.py"


@pytest.fixture
def example(tmp_path, monkeypatch, simulated_gpu):
    import kfp.local

    kfp.local.init(runner=kfp.local.SubprocessRunner(use_venv=False), pipeline_root=str(tmp_path / "root"))
    spec = importlib.util.spec_from_file_location("training_pipeline", PIPELINE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_example_pipeline_runs_and_the_meter_ran_inside_each_component(example):
    task = example.training_pipeline(train_seconds=0.5)
    assert task.outputs["Output"] == "large"
    steps = {s.name: s for s in Ledger().steps()}  # written by the component processes
    assert set(steps) == {"train_small", "train_large"}
    assert steps["train_large"].gpus == 2 and steps["train_large"].gpu_type == "H100"
    assert steps["train_small"].simulated and steps["train_small"].status == "succeeded"


def test_a_metered_component_returns_its_value_and_metrics(example):
    task = example.train_small(rows=5000, seconds=0.2)
    metrics = task.outputs["mlcost_metrics"].metadata
    assert task.outputs["Output"] == pytest.approx(0.81)
    (step,) = Ledger().steps()
    assert metrics["cost_usd"] == pytest.approx(step.total_usd)
    assert metrics["gpu_hours"] == pytest.approx(step.gpu_hours)


def test_the_gate_fails_a_pipeline_over_budget(example):
    with pytest.raises(RuntimeError, match="mlcost-budget-gate"):
        example.training_pipeline(train_seconds=0.2, run_budget_usd=1e-9)



def test_a_component_over_its_live_budget_fails_the_run_naming_the_budget(example, capfd):
    from mlcost.components import metered_component

    @metered_component(gpus=8, gpu_type="H100", budget_usd=0.001, interval=0.05, base_image="python:3.11")
    def burn(seconds: float) -> str:
        import time

        time.sleep(seconds)
        return "finished"

    with pytest.raises(RuntimeError, match="burn"):
        burn(seconds=30.0)
    output = capfd.readouterr()
    assert "BudgetExceeded" in output.out + output.err and "budget of $0.0010" in output.out + output.err
    (step,) = Ledger().steps()
    assert step.status == "breached" and step.duration_s < 5


@pytest.mark.parametrize(
    ("arguments", "field"),
    [
        ({"gpu_type": "H1000"}, "H100"),  # the known types are listed
        ({"pricing": "cheap"}, "on_demand"),
        ({"budget_usd": -1}, "budget_usd"),
        ({"interval": 0}, "interval"),
        ({"tags": {"workload": "gaming"}}, "training"),
        ({"gpus": 1.5}, "gpus"),
    ],
)
def test_a_bad_meter_argument_fails_where_the_component_is_defined(arguments, field):
    from mlcost.components import metered_component

    from mlcost.errors import ConfigError

    with pytest.raises(ConfigError, match=field):
        metered_component(base_image="python:3.11", **arguments)
