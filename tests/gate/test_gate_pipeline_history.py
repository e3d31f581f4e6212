"""`mlcost gate --pipeline` projecting each GPU task at what its step really took: past runs.

The pipeline is built with ``metered_component`` and compiled by the real kfp compiler; past runs are
real records in a real SQLite ledger (``Ledger.write`` of ``StepCost`` objects, or ``mlcost.meter()``
on the simulated GPU) and a real MLflow SQLite store (written by the MLflow sink). The command line runs
in-process. Expected costs are worked out by hand from the catalog's list prices.
"""

# kfp reads annotations at definition time: no `from __future__ import annotations` in this file.
import json
import statistics
import time
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from mlcost.cli import main
from mlcost.errors import ConfigError
from mlcost.exit_status import ExitStatus
from mlcost.gate.history import LedgerHistory, MlflowHistory, StepHistory, lookup_names
from mlcost.pricing.catalog import PriceCatalog
from mlcost.sinks.ledger import Ledger
from mlcost.sinks.mlflow_sink import log_step
from mlcost.step import StepCost

pytest.importorskip("kfp")

IMAGE = "python:3.11"
MAX_DURATION_S = 7200.0  # the policy's max_duration = "2h"
EPOCH = datetime(2025, 6, 2, tzinfo=timezone.utc)

# Past runs (seconds) per step; only the succeeded ones may count.
PREPARE_OK = [300.0, 420.0, 360.0]  # median 360
TRAIN_OK = [1800.0, 2400.0, 2100.0, 3000.0]  # median (2100 + 2400) / 2 = 2250


def _compile(path: Path) -> Path:
    """prepare_data (1 x L4) -> train (4 x H100) -> evaluate (1 x L4), and a second train (4 x H100)
    shown as "train again": kfp names the tasks prepare-data, train, evaluate and train-2."""
    from kfp import compiler, dsl
    from mlcost.components import metered_component

    @metered_component(gpus=1, gpu_type="L4", accelerator_type="NVIDIA_L4", base_image=IMAGE)
    def prepare_data(rows: int) -> int:
        return rows

    @metered_component(gpus=4, gpu_type="H100", accelerator_type="NVIDIA_H100_80GB", base_image=IMAGE)
    def train(rows: int) -> float:
        return 0.9

    @metered_component(gpus=1, gpu_type="L4", accelerator_type="NVIDIA_L4", base_image=IMAGE)
    def evaluate(score: float) -> float:
        return score

    @dsl.pipeline(name="ranker-history")
    def ranker_history(rows: int = 1000) -> None:
        prepared = prepare_data(rows=rows)
        trained = train(rows=prepared.outputs["Output"])
        evaluate(score=trained.outputs["Output"])
        train(rows=rows).set_display_name("train again")

    compiler.Compiler().compile(ranker_history, str(path))
    return path


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory) -> Path:
    return _compile(tmp_path_factory.mktemp("compiled") / "ranker-history.yaml")


def _price(gpu_type: str) -> float:
    return PriceCatalog.load().gpu_hour_usd(gpu_type)


def _step(name: str, duration_s: float, *, gpus: int, gpu_type: str, hour: int, status: str = "succeeded",
          source: str = "meter") -> StepCost:  # fmt: skip
    """A sealed (or, for status running, open) step record as the meter writes it."""
    start = EPOCH + timedelta(hours=hour)
    gpu_hours = gpus * duration_s / 3600.0
    cost = gpu_hours * _price(gpu_type)
    return StepCost(
        step_id=uuid.uuid4().hex,
        name=name,
        status=status,
        started_at=start.isoformat(),
        ended_at=None if status == "running" else (start + timedelta(seconds=duration_s)).isoformat(),
        duration_s=duration_s,
        gpus=gpus,
        gpu_type=gpu_type,
        gpu_hour_usd=_price(gpu_type),
        total_usd=cost,
        compute_usd=cost,
        gpu_hours=gpu_hours,
        telemetry="simulated",
        simulated=True,
        source=source,
    )


def _history_steps() -> list[StepCost]:
    """What prepare_data, train and evaluate did before, including runs that must not count."""
    steps = [_step("prepare_data", s, gpus=1, gpu_type="L4", hour=i) for i, s in enumerate(PREPARE_OK)]
    steps += [_step("train", s, gpus=4, gpu_type="H100", hour=10 + i) for i, s in enumerate(TRAIN_OK)]
    steps += [
        _step("prepare_data", 5000.0, gpus=1, gpu_type="L4", hour=20, status="failed"),
        _step("train", 7000.0, gpus=4, gpu_type="H100", hour=21, status="failed"),
        _step("train", 7100.0, gpus=4, gpu_type="H100", hour=22, status="breached"),  # stopped by a guardrail
        _step("train", 10.0, gpus=4, gpu_type="H100", hour=23, status="killed"),
        _step("train", 600.0, gpus=4, gpu_type="H100", hour=24, status="running"),  # never sealed
        _step("prepare_data", 9000.0, gpus=1, gpu_type="L4", hour=25, source="listener"),  # whole Airflow task
        _step("evaluate", 60.0, gpus=1, gpu_type="L4", hour=26, status="failed"),  # evaluate never succeeded
    ]
    return steps


@pytest.fixture
def ledger(tmp_path) -> str:
    path = tmp_path / "history-ledger.db"
    book = Ledger(path)
    for step in _history_steps():
        book.write(step)
    return str(path)


def _projected(prepare_s: float, train_s: float, evaluate_s: float) -> float:
    """The pipeline priced by hand: 1 L4 for prepare_data and evaluate, 4 H100 for each of the 2 trains."""
    return (1 * prepare_s * _price("L4") + 2 * 4 * train_s * _price("H100") + 1 * evaluate_s * _price("L4")) / 3600


WITH_HISTORY = _projected(statistics.median(PREPARE_OK), statistics.median(TRAIN_OK), MAX_DURATION_S)
WORST_CASE = _projected(MAX_DURATION_S, MAX_DURATION_S, MAX_DURATION_S)


def _policy(tmp_path: Path, run_usd: float) -> str:
    path = tmp_path / "mlcost.toml"
    path.write_text(f'[budgets]\nrun_usd = {run_usd}\nmax_duration = "2h"\n')
    return str(path)


def _gate(capsys, *args: str, fmt: str = "json"):
    capsys.readouterr()
    rc = main(["gate", *args, "--format", fmt])
    out, err = capsys.readouterr()
    return rc, (json.loads(out) if fmt == "json" and out.strip() else out), err


def _tasks(report: dict) -> dict[str, dict]:
    (pipeline,) = report["pipelines"]
    return {t["task"]: t for t in pipeline["tasks"]}


def test_with_ledger_history_each_task_is_priced_at_its_median_succeeded_run(pipeline, ledger, tmp_path, capsys):
    budget = (WITH_HISTORY + WORST_CASE) / 2
    policy = _policy(tmp_path, budget)
    rc, report, _ = _gate(capsys, "--pipeline", str(pipeline), "--ledger", ledger, "--policy", policy)
    assert rc == ExitStatus.OK, report["findings"]
    assert [f["policy"] for f in report["findings"]] == []
    (projection,) = report["pipelines"]
    assert projection["pipeline"] == "ranker-history"
    assert projection["projected_usd"] == pytest.approx(WITH_HISTORY)
    assert projection["history"] == f"ledger {ledger}" and projection["history_off"] is None

    tasks = _tasks(report)
    # kfp's task names are not the step names; the meter's step name comes from the compiled spec
    assert {t: (v["step"], v["duration_source"]) for t, v in tasks.items()} == {
        "prepare-data": ("prepare_data", "history"),
        "train": ("train", "history"),
        "train-2": ("train", "history"),  # a second call of train, shown as "train again"
        "evaluate": ("evaluate", "default"),  # only a failed run: the policy's max_duration
    }
    assert tasks["prepare-data"]["duration_s"] == 360.0
    assert tasks["train"]["duration_s"] == tasks["train-2"]["duration_s"] == 2250.0
    assert tasks["evaluate"]["duration_s"] == MAX_DURATION_S
    # GPUs x median past duration x price, task by task
    assert tasks["prepare-data"]["projected_usd"] == pytest.approx(1 * 360 / 3600 * _price("L4"))
    assert tasks["train"]["projected_usd"] == pytest.approx(4 * 2250 / 3600 * _price("H100"))
    assert tasks["evaluate"]["projected_usd"] == pytest.approx(1 * 2.0 * _price("L4"))
    # failed, breached, killed, running and listener records are not among the runs counted
    assert tasks["prepare-data"]["basis"] == "history: median of 3 succeeded runs of step prepare_data (ledger 3)"
    assert tasks["train"]["basis"] == "history: median of 4 succeeded runs of step train (ledger 4)"
    assert tasks["evaluate"]["basis"] == f"budgets.max_duration; no succeeded run of step evaluate in ledger {ledger}"


def test_a_budget_between_the_two_projections_passes_with_history_and_fails_without(pipeline, ledger, tmp_path, capsys):
    # the hand-computed figures are far enough apart for a budget between them to tell them apart
    assert statistics.median(PREPARE_OK) == 360.0 and statistics.median(TRAIN_OK) == 2250.0
    assert WITH_HISTORY < 0.5 * WORST_CASE
    budget = (WITH_HISTORY + WORST_CASE) / 2
    policy = _policy(tmp_path, budget)
    args = ["--pipeline", str(pipeline), "--ledger", ledger, "--policy", policy]

    rc, report, _ = _gate(capsys, *args)
    assert rc == ExitStatus.OK and report["status"] == "pass"

    rc, report, _ = _gate(capsys, *args, "--no-history")
    assert rc == ExitStatus.BREACHED and report["status"] == "fail"
    (finding,) = report["findings"]
    assert finding["policy"] == "budgets.run_usd" and finding["subject"] == "pipeline ranker-history"
    assert finding["observed"] == pytest.approx(WORST_CASE) and finding["limit"] == pytest.approx(budget)
    (projection,) = report["pipelines"]
    assert projection["history"] is None and projection["history_off"] == "history off (--no-history)"
    assert {t["duration_source"] for t in projection["tasks"]} == {"default"}
    assert {t["basis"] for t in projection["tasks"]} == {"budgets.max_duration; history off (--no-history)"}

    # without a history source the gate projects the worst case, as it always did
    rc, report, _ = _gate(capsys, "--pipeline", str(pipeline), "--policy", policy)
    assert rc == ExitStatus.BREACHED
    assert report["findings"][0]["observed"] == pytest.approx(WORST_CASE)
    assert report["pipelines"][0]["history_off"] == "no history source (--ledger, --experiment or --tracking-uri)"


def test_the_markdown_summary_says_where_each_duration_came_from(pipeline, ledger, tmp_path, capsys):
    policy = _policy(tmp_path, (WITH_HISTORY + WORST_CASE) / 2)
    rc, text, _ = _gate(capsys, "--pipeline", str(pipeline), "--ledger", ledger, "--policy", policy, fmt="markdown")
    assert rc == ExitStatus.OK
    assert f"### Pipeline ranker-history: projected ${WITH_HISTORY:,.2f}" in text
    assert f"Durations: the median of each step's recent succeeded runs in ledger {ledger}, at most" in text
    row = "| `train-2` | train | 4 × H100 | 37m30s | history: median of 4 succeeded runs of step train (ledger 4) |"
    assert row in text
    assert "| `prepare-data` | prepare_data | 1 × L4 | 6m | history: median of 3 succeeded runs" in text
    no_runs = f"budgets.max_duration; no succeeded run of step evaluate in ledger {ledger}"
    assert f"| `evaluate` | evaluate | 1 × L4 | 2h | {no_runs} |" in text
    assert text.rstrip().endswith("All policies passed!")

    rc, text, _ = _gate(
        capsys, "--pipeline", str(pipeline), "--ledger", ledger, "--policy", policy, "--no-history", fmt="markdown"
    )
    assert rc == ExitStatus.BREACHED
    assert f"### Pipeline ranker-history: projected ${WORST_CASE:,.2f}" in text
    assert "else `budgets.max_duration` (history off (--no-history))." in text


def test_mlflow_runs_of_the_experiment_are_history_too(pipeline, mlflow_uri, tmp_path, capsys):
    for step in _history_steps():  # the real MLflow sink writes them: tags mlcost.step / mlcost.status
        log_step(step, experiment="ranker-ci", tracking_uri=mlflow_uri)
    policy = _policy(tmp_path, (WITH_HISTORY + WORST_CASE) / 2)
    args = ["--pipeline", str(pipeline), "--experiment", "ranker-ci", "--tracking-uri", mlflow_uri, "--policy", policy]

    rc, report, _ = _gate(capsys, *args)
    assert rc == ExitStatus.OK, report["findings"]
    assert report["pipelines"][0]["projected_usd"] == pytest.approx(WITH_HISTORY)
    tasks = _tasks(report)
    assert tasks["train"]["basis"] == "history: median of 4 succeeded runs of step train (MLflow 4)"
    # the listener record, replayed to MLflow, is tagged mlcost.source = listener and left out
    assert tasks["prepare-data"]["basis"] == "history: median of 3 succeeded runs of step prepare_data (MLflow 3)"
    assert tasks["evaluate"]["duration_source"] == "default"
    assert "MLflow experiment ranker-ci" in tasks["evaluate"]["basis"]

    rc, report, _ = _gate(capsys, *args, "--no-history")
    assert rc == ExitStatus.BREACHED
    assert report["pipelines"][0]["projected_usd"] == pytest.approx(WORST_CASE)

    # --tracking-uri alone: the experiment a meter logs to by default ("mlcost") — empty here
    rc, report, _ = _gate(capsys, "--pipeline", str(pipeline), "--tracking-uri", mlflow_uri, "--policy", policy)
    assert rc == ExitStatus.BREACHED
    assert report["pipelines"][0]["history_off"].startswith("no history source")

    with pytest.raises(ConfigError, match="unknown MLflow experiment 'nope'"):
        MlflowHistory(["nope"], tracking_uri=mlflow_uri)


def test_steps_metered_on_the_simulated_gpu_count_once_from_the_ledger_and_mlflow(
    pipeline, simulated_gpu, mlflow_uri, tmp_path, capsys
):
    """Real meter() steps: each is in the ledger and in MLflow under the same step id; a failed one
    is in both too, and counts in neither."""
    from mlcost import meter
    from mlcost.policy import Policy

    path = str(tmp_path / "metered.db")
    common = dict(gpus=4, gpu_type="H100", interval=0.05, policy=Policy(), ledger=path, experiment="ranker-ci")
    durations = []
    for pause in (0.2, 0.5, 0.3):
        with meter("train", **common) as m:
            time.sleep(pause)
        assert m.cost.status == "succeeded" and m.cost.mlflow_run_id
        durations.append(m.cost.duration_s)
    with pytest.raises(RuntimeError), meter("train", **common) as m:
        time.sleep(1.5)
        raise RuntimeError("out of memory")
    assert m.cost.status == "failed" and m.cost.mlflow_run_id

    policy = _policy(tmp_path, 1e6)
    both = ["--pipeline", str(pipeline), "--ledger", path, "--experiment", "ranker-ci", "--tracking-uri", mlflow_uri]
    rc, report, _ = _gate(capsys, *both, "--policy", policy)
    assert rc == ExitStatus.OK
    tasks = _tasks(report)
    assert tasks["train"]["duration_s"] == pytest.approx(statistics.median(durations))
    assert tasks["train"]["basis"] == "history: median of 3 succeeded runs of step train (ledger 3)"
    assert tasks["train"]["projected_usd"] == pytest.approx(4 * statistics.median(durations) / 3600 * _price("H100"))
    assert tasks["prepare-data"]["duration_source"] == "default"  # never ran

    rc, report, _ = _gate(capsys, "--pipeline", str(pipeline), "--experiment", "ranker-ci", "--policy", policy)
    assert _tasks(report)["train"]["duration_s"] == pytest.approx(statistics.median(durations))
    assert _tasks(report)["train"]["basis"] == "history: median of 3 succeeded runs of step train (MLflow 3)"


def test_the_median_is_over_the_most_recent_runs_of_the_step(tmp_path):
    path = tmp_path / "window.db"
    book = Ledger(path)
    for hour, seconds in enumerate([9000.0, 9000.0, 9000.0, 100.0, 200.0, 300.0]):  # it got faster
        book.write(_step("train", seconds, gpus=1, gpu_type="H100", hour=hour))
    history = StepHistory([LedgerHistory(path)], window=3)
    found = history.estimate("train")
    assert (found.median_s, found.runs, found.by_source) == (200.0, 3, {"ledger": 3})
    assert StepHistory([LedgerHistory(path)])("train") == statistics.median([9000.0] * 3 + [100.0, 200.0, 300.0])


def test_a_task_name_is_tried_as_written_then_as_a_python_name(tmp_path):
    """A plain @dsl.component has no meter config in the spec: its task name (prepare-data) is tried,
    then the function's name (prepare_data); kfp's repeat suffix is never stripped."""
    path = tmp_path / "names.db"
    book = Ledger(path)
    book.write(_step("prepare_data", 120.0, gpus=1, gpu_type="L4", hour=0))
    book.write(_step("train", 600.0, gpus=1, gpu_type="L4", hour=1))
    history = StepHistory([LedgerHistory(path)])
    assert lookup_names("prepare-data") == ["prepare-data", "prepare_data"]
    assert history("prepare-data") == 120.0 and history.estimate("prepare-data").step == "prepare_data"
    assert history("train-2") is None  # train-2 may be a function train_2: no guess
    assert history("evaluate") is None


def test_a_components_tags_narrow_its_history_to_runs_of_the_same_team_and_model(tmp_path, capsys):
    """A shared ledger holds every team's ``train``: a component tagged team=search, model=ranker is
    projected from search's ranker runs only; another team's slower train does not count."""
    from kfp import compiler, dsl
    from mlcost.components import metered_component

    @metered_component(gpus=4, gpu_type="H100", accelerator_type="NVIDIA_H100_80GB", base_image=IMAGE,
                       tags={"team": "search", "model": "ranker"})  # fmt: skip
    def train(rows: int) -> float:
        return 0.9

    @dsl.pipeline(name="ranker-tagged")
    def ranker_tagged(rows: int = 1000) -> None:
        train(rows=rows)

    pipeline = tmp_path / "tagged.yaml"
    compiler.Compiler().compile(ranker_tagged, str(pipeline))
    path = tmp_path / "shared.db"
    book = Ledger(path)
    for i, (seconds, team, model) in enumerate([(600.0, "search", "ranker"), (900.0, "search", "ranker"),
                                                (6000.0, "ads", "ranker"), (6000.0, "search", "bert"),
                                                (6000.0, "ads", "ctr"), (6000.0, "ads", "ctr")]):  # fmt: skip
        step = _step("train", seconds, gpus=4, gpu_type="H100", hour=i)
        book.write(step.model_copy(update={"tags": {"team": team, "model": model}}))

    rc, report, _ = _gate(capsys, "--pipeline", str(pipeline), "--ledger", str(path), "--policy",
                          _policy(tmp_path, 1e6))  # fmt: skip
    (task,) = _tasks(report).values()
    assert rc == ExitStatus.OK and (task["duration_s"], task["duration_source"]) == (750.0, "history")
    assert task["basis"] == (
        "history: median of 2 succeeded runs of step train tagged model=ranker, team=search (ledger 2)"
    )
    assert report["pipelines"][0]["projected_usd"] == pytest.approx(4 * 750 / 3600 * _price("H100"))


def test_mlflow_history_is_narrowed_by_the_same_tags(mlflow_uri):
    from mlflow.entities import Metric, RunTag
    from mlflow.tracking import MlflowClient

    client = MlflowClient(mlflow_uri)
    exp = client.create_experiment("shared")
    for team, seconds in (("search", 600.0), ("ads", 6000.0)):
        run = client.create_run(exp)
        client.log_batch(run.info.run_id, metrics=[Metric("duration_s", seconds, 0, 0)],
                         tags=[RunTag("mlcost.step", "train"), RunTag("mlcost.status", "succeeded"),
                               RunTag("mlcost.team", team)])  # fmt: skip
    source = MlflowHistory(["shared"], tracking_uri=mlflow_uri)
    assert [r.duration_s for r in source.runs(["train"], 20, {"team": "search"})["train"]] == [600.0]
    assert sorted(r.duration_s for r in source.runs(["train"], 20)["train"]) == [600.0, 6000.0]
