"""`mlcost gate --pipeline`: a compiled Kubeflow pipeline checked against the policy, end to end.

Pipelines are built with ``metered_component`` and compiled by the real kfp compiler into tmp_path;
the command line runs in-process (``mlcost.cli.main``) with a policy file a team would write. The
tests check the exit code, the task / rule / limit named in the output, and that bad input is
refused with the file's name and exit 2 rather than a traceback.
"""

# kfp reads annotations at definition time: no `from __future__ import annotations` in this file.
import importlib.util
import json
from pathlib import Path

import pytest

from mlcost.cli import main
from mlcost.exit_status import ExitStatus
from mlcost.pricing.catalog import PriceCatalog

pytest.importorskip("kfp")

IMAGE = "python:3.11"
EXAMPLE = Path(__file__).resolve().parents[2] / "pipelines" / "training_pipeline.py"


def _compile_ranker(path: Path) -> Path:
    """prepare (1 x L4) -> train (4 x H100): sequential, so at most 4 GPUs at once."""
    from kfp import compiler, dsl
    from mlcost.components import metered_component

    # accelerator_type names the model (Vertex AI style), so the compiled spec says which GPU it is
    @metered_component(gpus=1, gpu_type="L4", accelerator_type="NVIDIA_L4", base_image=IMAGE)
    def prepare(rows: int) -> int:
        return rows

    @metered_component(gpus=4, gpu_type="H100", accelerator_type="NVIDIA_H100_80GB", base_image=IMAGE)
    def train(rows: int) -> float:
        return 0.9

    @dsl.pipeline(name="ranker-training")
    def ranker_training(rows: int = 1000) -> None:
        prepared = prepare(rows=rows)
        train(rows=prepared.outputs["Output"])

    compiler.Compiler().compile(ranker_training, str(path))
    return path


@pytest.fixture(scope="module")
def ranker(tmp_path_factory) -> Path:
    return _compile_ranker(tmp_path_factory.mktemp("compiled") / "ranker.yaml")


@pytest.fixture(scope="module")
def example(tmp_path_factory) -> Path:
    """The README's example pipeline (pipelines/training_pipeline.py), compiled."""
    from kfp import compiler

    spec = importlib.util.spec_from_file_location("training_pipeline_for_gate", EXAMPLE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    path = tmp_path_factory.mktemp("example") / "training_pipeline.yaml"
    compiler.Compiler().compile(module.training_pipeline, str(path))
    return path


def _policy(tmp_path: Path, text: str) -> str:
    path = tmp_path / "mlcost.toml"
    path.write_text(text)
    return str(path)


def _gate(capsys, policy: str, pipeline: Path | str, fmt: str = "json") -> tuple[int, object, str]:
    """Run `mlcost gate --pipeline ... --policy ...`; returns (exit code, JSON or text output, stderr)."""
    capsys.readouterr()  # drop anything printed before
    rc = main(["gate", "--pipeline", str(pipeline), "--policy", policy, "--format", fmt])
    out, err = capsys.readouterr()
    return rc, (json.loads(out) if fmt == "json" and out.strip() else out), err


def _projected_usd(hours: float) -> float:
    """The ranker pipeline priced by hand: 1 L4 and 4 H100s, each for `hours`, on-demand list price."""
    catalog = PriceCatalog.load()
    return hours * (1 * catalog.gpu_hour_usd("L4") + 4 * catalog.gpu_hour_usd("H100"))


def test_a_pipeline_within_policy_exits_0_and_names_the_pipeline(ranker, tmp_path, capsys):
    budget = _projected_usd(1.0) * 1.05
    policy = _policy(
        tmp_path,
        f"""
[budgets]
run_usd = {budget}
max_duration = "1h"
[cluster]
max_gpus = 4
allowed_gpu_types = ["H100", "L4"]
""",
    )
    rc, report, err = _gate(capsys, policy, ranker)
    assert rc == ExitStatus.OK == 0
    assert report["status"] == "pass" and report["exit_code"] == 0
    assert report["findings"] == [] and report["pipelines_checked"] == 1
    assert report["sources"] == [f"pipeline ranker-training ({ranker})"]

    rc, text, err = _gate(capsys, policy, ranker, fmt="markdown")
    assert rc == 0
    assert text.startswith("## mlcost gate: ✅ within policy")
    assert f"Checked 1 compiled pipeline from pipeline ranker-training ({ranker}) against {policy}." in text
    assert text.rstrip().endswith("All policies passed!")
    assert err == ""  # no "no metered runs matched" hint: a pipeline was checked


def test_more_gpus_per_task_than_allowed_fails_naming_the_task_rule_and_limit(ranker, tmp_path, capsys):
    policy = _policy(tmp_path, "[cluster]\nmax_gpus = 2\n")
    rc, report, _ = _gate(capsys, policy, ranker)
    assert rc == ExitStatus.BREACHED == 1
    assert report["status"] == "fail" and report["errors"] == 2
    by_subject = {f["subject"]: f for f in report["findings"]}
    # train asks for 4 (prepare's 1 is within the limit), and so the run may hold 4 at once
    assert set(by_subject) == {"pipeline ranker-training, task train", "pipeline ranker-training"}
    task = by_subject["pipeline ranker-training, task train"]
    assert (task["policy"], task["severity"], task["observed"], task["limit"]) == ("cluster.max_gpus", "error", 4, 2)
    assert task["origin"] == f"cluster.max_gpus in {policy}"
    assert task["message"] == "task 'train' asks for 4 GPUs per instance; the limit is 2"
    peak = by_subject["pipeline ranker-training"]
    assert (peak["policy"], peak["observed"], peak["limit"]) == ("cluster.max_gpus", 4, 2)

    rc, text, err = _gate(capsys, policy, ranker, fmt="markdown")
    assert rc == 1
    assert text.startswith("## mlcost gate: ❌ policy breached")
    row = "| ❌ | `cluster.max_gpus` | pipeline ranker-training, task train | 4 | 2 |  | "
    row += f"cluster.max_gpus in {policy} |"
    assert row in text
    assert "- **breach**: task 'train' asks for 4 GPUs per instance; the limit is 2" in text
    assert f"cluster.max_gpus in {policy}" in err  # the hint says where to change the limit


def test_a_disallowed_gpu_type_fails_naming_the_task_rule_and_allowed_types(ranker, tmp_path, capsys):
    policy = _policy(tmp_path, '[cluster]\nallowed_gpu_types = ["H100", "A100-80GB"]\n')
    rc, report, _ = _gate(capsys, policy, ranker)
    assert rc == ExitStatus.BREACHED
    (finding,) = report["findings"]  # train's H100 is allowed; prepare's L4 is not
    assert finding["policy"] == "cluster.allowed_gpu_types"
    assert finding["subject"] == "pipeline ranker-training, task prepare"
    assert finding["observed"] == "L4" and finding["limit"] == ["A100-80GB", "H100"]
    assert finding["origin"] == f"cluster.allowed_gpu_types in {policy}"

    rc, text, _ = _gate(capsys, policy, ranker, fmt="markdown")
    assert rc == 1
    assert "`cluster.allowed_gpu_types` | pipeline ranker-training, task prepare | L4 | A100-80GB, H100 |" in text
    assert "task 'prepare' uses GPU type L4; allowed: A100-80GB, H100" in text


def test_the_run_budget_is_checked_against_gpus_times_max_duration_times_price(ranker, tmp_path, capsys):
    projected = _projected_usd(0.5)  # max_duration 30m for every task
    over = _policy(tmp_path, f'[budgets]\nrun_usd = {projected * 0.99}\nmax_duration = "30m"\n')
    rc, report, _ = _gate(capsys, over, ranker)
    assert rc == ExitStatus.BREACHED
    (finding,) = report["findings"]
    assert finding["policy"] == "budgets.run_usd" and finding["subject"] == "pipeline ranker-training"
    assert finding["observed"] == pytest.approx(projected) and finding["limit"] == pytest.approx(projected * 0.99)
    assert "pipeline 'ranker-training' projects" in finding["message"] and "largest: train" in finding["message"]

    within = _policy(tmp_path, f'[budgets]\nrun_usd = {projected * 1.01}\nmax_duration = "30m"\n')
    rc, report, _ = _gate(capsys, within, ranker)
    assert rc == ExitStatus.OK and report["findings"] == []


def test_a_run_budget_without_max_duration_is_bad_input_naming_the_key(ranker, tmp_path, capsys):
    policy = _policy(tmp_path, "[budgets]\nrun_usd = 100\n")
    rc, out, err = _gate(capsys, policy, ranker, fmt="markdown")
    assert rc == ExitStatus.BAD_INPUT == 2
    assert out == ""
    assert policy in err and "budgets.max_duration" in err


def test_warn_level_limits_report_without_failing(ranker, tmp_path, capsys):
    policy = _policy(tmp_path, '[warn.cluster]\nmax_gpus = 2\nallowed_gpu_types = ["H100"]\n')
    rc, report, _ = _gate(capsys, policy, ranker)
    assert rc == ExitStatus.OK and report["status"] == "pass"
    assert {(f["policy"], f["subject"]) for f in report["findings"]} == {
        ("warn.cluster.max_gpus", "pipeline ranker-training, task train"),
        ("warn.cluster.max_gpus", "pipeline ranker-training"),
        ("warn.cluster.allowed_gpu_types", "pipeline ranker-training, task prepare"),
    }
    assert {f["severity"] for f in report["findings"]} == {"warning"}


def test_the_readme_example_pipeline_counts_its_two_trainings_as_concurrent(example, tmp_path, capsys):
    # train_small (1 GPU) and train_large (2 GPUs) both wait only on check_data: they may overlap
    rc, report, _ = _gate(capsys, _policy(tmp_path, "[cluster]\nmax_gpus = 3\n"), example)
    assert rc == ExitStatus.OK and report["findings"] == []
    rc, report, _ = _gate(capsys, _policy(tmp_path, "[cluster]\nmax_gpus = 2\n"), example)
    assert rc == ExitStatus.BREACHED
    (finding,) = report["findings"]  # no single task is over 2; together they are
    assert finding["subject"] == "pipeline mlcost-training" and finding["observed"] == 3
    assert "may hold 3 GPUs at once; the limit is 2" in finding["message"]


@pytest.mark.parametrize(
    ("name", "content", "says"),
    [
        ("missing.yaml", None, "compiled pipeline file not found"),
        ("broken.yaml", "pipelineInfo:\n  name: [unclosed\nroot: {\n", "not valid YAML at line"),
        ("policy.yaml", "cluster:\n  max_gpus: 4\n", "not a compiled KFP pipeline spec"),
        ("truncated.yaml", "first half of a compiled pipeline", "not a compiled KFP pipeline spec"),
    ],
)
def test_a_missing_or_malformed_pipeline_file_is_bad_input_naming_the_file(
    ranker, tmp_path, capsys, name, content, says
):
    path = tmp_path / name
    if content == "first half of a compiled pipeline":
        lines = ranker.read_text().splitlines(keepends=True)
        content = "".join(lines[: len(lines) // 2])
    if content is not None:
        path.write_text(content)
    policy = _policy(tmp_path, "[cluster]\nmax_gpus = 8\n")
    rc, out, err = _gate(capsys, policy, path, fmt="markdown")
    assert rc == ExitStatus.BAD_INPUT == 2
    assert out == ""  # no summary claiming anything was checked
    assert err.startswith(f"mlcost gate: {path}: ") and says in err
    assert "Traceback" not in err
