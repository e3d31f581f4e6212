"""Example Kubeflow pipeline: check the data, train two model sizes on metered GPUs, evaluate, and
stop the run if it went over budget.

    python pipelines/training_pipeline.py compile training_pipeline.yaml   # IR YAML for a KFP cluster
    python pipelines/training_pipeline.py run [-v]                         # locally, no cluster needed
    mlcost gate --pipeline training_pipeline.yaml --policy mlcost.toml     # static guardrails

Locally it runs with ``kfp.local.SubprocessRunner(use_venv=False)`` in this interpreter; without an
NVIDIA driver, set ``MLCOST_GPU_BACKEND=simulated`` (``run`` does it for you) and the steps say so.
"""

import argparse
import contextlib
import os
import sys
from datetime import datetime, timezone

from kfp import compiler, dsl
from kfp.dsl import Input, Metrics, Model, Output
from mlcost.components import budget_gate, metered_component

# kfp reads annotations at definition time: no `from __future__ import annotations` in this file.
BASE_IMAGE = "python:3.11"
TAGS = {"team": "search", "project": "ranking", "model": "ranker", "workload": "training"}


@dsl.component(base_image=BASE_IMAGE)
def check_data(rows: int, null_fraction: float) -> int:
    """Refuse bad data before any GPU money is spent on it."""
    if rows < 1000:
        raise ValueError(f"only {rows} training rows; at least 1000 are needed")
    if null_fraction > 0.05:
        raise ValueError(f"{null_fraction:.0%} of labels are null; at most 5% are allowed")
    return rows


@metered_component(
    gpus=1,
    gpu_type="L4",
    budget_usd=1.0,
    max_duration="30m",
    idle_timeout="10m",
    tags={**TAGS, "model": "ranker-small"},
    interval=0.05,
    base_image=BASE_IMAGE,
)
def train_small(rows: int, seconds: float, model: Output[Model]) -> float:
    import time

    time.sleep(seconds)  # stands in for the training loop
    with open(model.path, "w") as f:
        f.write(f"small model trained on {rows} rows")
    return 0.81


@metered_component(
    gpus=2,
    gpu_type="H100",
    budget_usd=5.0,
    max_duration="10m",
    idle_timeout="10m",
    tags={**TAGS, "model": "ranker-large"},
    interval=0.05,
    base_image=BASE_IMAGE,
)
def train_large(rows: int, seconds: float, model: Output[Model]) -> float:
    import time

    time.sleep(seconds)
    with open(model.path, "w") as f:
        f.write(f"large model trained on {rows} rows")
    return 0.86


@dsl.component(base_image=BASE_IMAGE)
def evaluate(
    small: Input[Model], small_auc: float, large: Input[Model], large_auc: float, report: Output[Metrics]
) -> str:
    report.log_metric("small_auc", small_auc)
    report.log_metric("large_auc", large_auc)
    return "large" if large_auc > small_auc else "small"


@dsl.pipeline(name="mlcost-training", description="Two model sizes trained on metered GPUs, under one budget.")
def training_pipeline(
    rows: int = 50_000, null_fraction: float = 0.01, train_seconds: float = 1.0, run_budget_usd: float = 5.0
) -> str:
    checked = check_data(rows=rows, null_fraction=null_fraction)
    small = train_small(rows=checked.output, seconds=train_seconds)
    large = train_large(rows=checked.output, seconds=train_seconds)
    best = evaluate(
        small=small.outputs["model"],
        small_auc=small.outputs["Output"],
        large=large.outputs["model"],
        large_auc=large.outputs["Output"],
    )
    gate = budget_gate(run_budget_usd, small, large, base_image=BASE_IMAGE)
    gate.after(best)
    return best.outputs["Output"]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("compile").add_argument("output", help="where to write the IR YAML")
    run = sub.add_parser("run")
    run.add_argument("--pipeline-root", default=os.path.join(os.getcwd(), "kfp-local-outputs"))
    run.add_argument("-v", "--verbose", action="store_true", help="show kfp.local's executor log here")
    args = parser.parse_args(argv)
    if args.command == "compile":
        compiler.Compiler().compile(training_pipeline, args.output)
        print(f"wrote {args.output}")
        return 0
    import kfp.local

    from mlcost.demo import output_to, print_run_costs

    os.environ.setdefault("MLCOST_GPU_BACKEND", "simulated")
    kfp.local.init(runner=kfp.local.SubprocessRunner(use_venv=False), pipeline_root=args.pipeline_root)
    started = datetime.now(timezone.utc).isoformat()
    log_path = os.path.join(args.pipeline_root, "executor.log")
    outcome, failure = "", None
    try:
        with contextlib.nullcontext() if args.verbose else output_to(log_path):
            task = training_pipeline()
        outcome = f"best model: {task.outputs['Output']}"
    except Exception as e:  # a refused step or the budget gate: the cost so far is still worth seeing
        failure = f"the pipeline failed: {str(e).splitlines()[0] if str(e) else type(e).__name__}"
    print_run_costs(started, title="Cost of pipeline mlcost-training")
    print(failure or outcome)
    if not args.verbose:
        print(f"executor log: {log_path} (-v shows it here)")
    return 1 if failure else 0


if __name__ == "__main__":
    sys.exit(main())
