"""``mlcost gate``: the CI budget gate.

    mlcost gate [--policy FILE] [--experiment NAME ...] [--filter "MLflow filter"] [--ledger PATH]
                [--pipeline FILE ...] [--no-history] [--format markdown|json] [--engine python|gx]

Exit codes (one enum for every command, :class:`mlcost.exit_status.ExitStatus`): 0 within policy, 1 a policy is
breached, 2 bad input (file, policy, experiment, query). Cheap to import: MLflow, pandas and Great
Expectations are imported inside the command.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys
from collections.abc import Sequence
from typing import Any

from mlcost.errors import ConfigError, MissingExtra

log = logging.getLogger(__name__)


def register(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "gate",
        help="check recorded runs (MLflow or the ledger) and compiled pipelines against the policy",
        description="Evaluate the policy (mlcost.toml) over metered runs and compiled pipelines. "
        "Exit 0 within policy, 1 breached, 2 bad input.",
    )
    add_arguments(p)
    p.set_defaults(func=run)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--policy", help="policy file (default: $MLCOST_POLICY, ./mlcost.toml, [tool.mlcost])")
    p.add_argument("--experiment", action="append", default=[], metavar="NAME", help="MLflow experiment (repeatable)")
    p.add_argument(
        "--filter",
        dest="filter_string",
        metavar="FILTER",
        help="MLflow search filter selecting the runs to check, e.g. \"tags.`mlcost.git_sha` = 'abc123'\"",
    )
    p.add_argument("--tracking-uri", help="MLflow tracking URI (default: $MLFLOW_TRACKING_URI)")
    p.add_argument(
        "--ledger",
        nargs="?",
        const="",
        metavar="PATH",
        help="check the ledger's steps (default path: $MLCOST_LEDGER or ~/.mlcost/ledger.db)",
    )
    p.add_argument("--since", help="ledger: steps started at or after this ISO date/time, or a span back (7d)")
    p.add_argument("--until", help="ledger: steps started before this time (exclusive), same forms")
    p.add_argument("--pipeline", action="append", default=[], metavar="FILE", help="compiled KFP pipeline YAML")
    p.add_argument(
        "--no-history",
        action="store_true",
        help="--pipeline: project every GPU task at budgets.max_duration, not at the median of its past "
        "succeeded runs in the ledger (--ledger) / MLflow (--experiment, --tracking-uri)",
    )
    p.add_argument("--format", choices=("markdown", "json"), default="markdown")
    p.add_argument(
        "--engine",
        choices=("python", "gx"),
        default="python",
        help="gx: run the policy as a Great Expectations checkpoint and build Data Docs",
    )
    p.add_argument("--docs-dir", help="gx engine: folder for the Data Docs site (default: ./mlcost-gate-docs)")


def main(argv: Sequence[str] | None = None) -> int:
    """Run the gate as its own program (``python -m mlcost.gate.command``)."""
    parser = argparse.ArgumentParser(prog="mlcost gate")
    add_arguments(parser)
    args = parser.parse_args(argv)
    from mlcost.error_boundary import run_command

    return run_command("mlcost gate", lambda: run(args))


def run(args: argparse.Namespace) -> int:
    from mlcost.exit_status import ExitStatus
    from mlcost.gate.policies import exit_status

    try:
        with _mlflow_scope(args):
            result = gate(args)
    except (ConfigError, MissingExtra) as e:
        print(f"mlcost gate: {e}", file=sys.stderr)
        return int(ExitStatus.BAD_INPUT)
    _emit(result, args)
    return int(exit_status(result))


def _mlflow_scope(args: argparse.Namespace) -> Any:
    """When the gate reads MLflow (``--experiment``, or a pipeline's history on ``--tracking-uri``):
    a tracking server is required, probed first and its retries bounded, so an outage is one line
    and exit 2 within seconds, never minutes of retries and a "policy breached" exit 1."""
    from contextlib import nullcontext

    from mlcost.sinks.mlflow_reach import reading_mlflow

    history_on_mlflow = bool(args.pipeline) and not args.no_history and bool(args.tracking_uri)
    if args.experiment or history_on_mlflow:
        return reading_mlflow(args.tracking_uri)
    return nullcontext()


def gate(args: argparse.Namespace) -> Any:
    """Load the policy and the runs, evaluate; raises ConfigError on bad input."""
    from mlcost.gate import records as rec
    from mlcost.gate.policies import ERROR, evaluate
    from mlcost.period import Period
    from mlcost.policy import Policy

    if args.engine == "gx":
        from mlcost.extras import require_extra

        require_extra("gx", what="mlcost gate --engine gx")
    Period.parse(args.since, args.until)  # a bad --since/--until is bad input (exit 2), never "no steps"
    policy = Policy.load(args.policy) if args.policy else Policy.load()
    tracking_uri = args.tracking_uri or None
    experiments: list[str] = list(args.experiment or [])
    use_ledger = args.ledger is not None or (not experiments and not args.pipeline)
    ledger_path = args.ledger or None

    runs: list[rec.RunRecord] = []
    sources: list[str] = []
    if experiments:
        runs += rec.from_mlflow(experiments, args.filter_string, tracking_uri=tracking_uri)
        sources.append(
            f"MLflow experiment{'s' * (len(experiments) > 1)} {', '.join(experiments)}"
            + (f" where {args.filter_string}" if args.filter_string else "")
        )
    if use_ledger:
        from mlcost.ledger.target import resolve

        runs += rec.from_ledger(ledger_path, args.filter_string, since=args.since, until=args.until)
        sources.append(
            f"ledger {resolve(ledger_path).masked}" + (f" where {args.filter_string}" if args.filter_string else "")
        )

    def baseline(flt: str) -> list[rec.RunRecord]:
        out: list[rec.RunRecord] = []
        if experiments:
            out += rec.from_mlflow(experiments, flt, tracking_uri=tracking_uri)
        if use_ledger:
            out += rec.from_ledger(ledger_path, flt)
        return out

    if args.engine == "gx":
        from mlcost.gate.gx_engine import evaluate_gx

        result = evaluate_gx(policy, runs, baseline, docs_dir=args.docs_dir)
    else:
        result = evaluate(policy, runs, baseline)
    result.sources = sources
    lost = [r for r in runs if r.status == "lost"]
    if lost:  # counted like any step (money spent is spent), and said: they may be still-running work
        result.notes.append(
            f"{len(lost)} lost step{'s' * (len(lost) != 1)} (no heartbeat for the lost limit: killed, or its "
            f"node gone) counted with the cost of the last checkpoint: {', '.join(r.label for r in lost[:10])}"
        )
    history, history_off = (None, "") if not args.pipeline else pipeline_history(args, experiments, tracking_uri)
    for path in args.pipeline:
        projection, findings = check_pipeline_file(path, policy, history=history, history_off=history_off)
        result.findings += findings
        result.pipelines.append(projection)
        result.sources.append(f"pipeline {projection.pipeline} ({path})")
        result.pipelines_checked += 1
    result.findings.sort(key=lambda f: (f.severity != ERROR, f.policy, f.subject))
    return result


# The rules of mlcost.components.inspect.check_pipeline, as the policy keys that set their limits.
_PIPELINE_RULES = {
    "max_gpus_per_task": "cluster.max_gpus",  # one task instance asks for more
    "max_gpus": "cluster.max_gpus",  # peak concurrent GPUs of the run
    "budget_usd": "budgets.run_usd",
    "allowed_gpu_types": "cluster.allowed_gpu_types",
}
_PER_TASK_RULES = {"max_gpus_per_task", "allowed_gpu_types"}


def pipeline_history(args: argparse.Namespace, experiments: list[str], tracking_uri: str | None) -> tuple[Any, str]:
    """The past runs a pipeline's tasks are projected by: the ledger when ``--ledger`` is given, MLflow
    when ``--experiment`` (those experiments) or ``--tracking-uri`` (the meter's default experiment)
    is. Returns ``(StepHistory or None, why there is none)``."""
    from mlcost.gate.history import LedgerHistory, MlflowHistory, StepHistory

    if args.no_history:
        return None, "history off (--no-history)"
    sources: list[Any] = []
    if args.ledger is not None:
        sources.append(LedgerHistory(args.ledger or None))
    if experiments:
        sources.append(MlflowHistory(experiments, tracking_uri=tracking_uri))
    elif tracking_uri:
        default = MlflowHistory.default_experiment(tracking_uri=tracking_uri)
        if default is not None:
            sources.append(default)
    if not sources:
        return None, "no history source (--ledger, --experiment or --tracking-uri)"
    return StepHistory(sources), ""


def _basis(task: Any, history: Any, history_off: str) -> str:
    """Where a task's projected duration came from, in words, for the report."""
    if task.duration_source == "history":
        found = history.estimate(task.history_name, task.step_tags)
        return f"history: {found.describe()}" if found is not None else "history"
    if task.duration_source == "max_duration_s":
        return "per-task duration"
    if task.duration_source == "history_capped":
        found = history.estimate(task.history_name, task.step_tags)
        seen = found.describe() if found is not None else "past runs"
        return f"history ({seen}) capped at the step's max duration: the meter stops it there"
    if task.duration_source == "meter_max_duration":
        return "the step's own max_duration (metered_component(max_duration=...))"
    if task.duration_source == "none":
        return "no duration (budgets.max_duration is not set)"
    if history is None:
        return f"budgets.max_duration; {history_off}"
    from mlcost.gate.history import lookup_names, narrowing_tags

    tried = " or ".join(lookup_names(task.history_name))
    tags = narrowing_tags(task.step_tags)
    tagged = f" tagged {', '.join(f'{k}={v}' for k, v in sorted(tags.items()))}" if tags else ""
    return f"budgets.max_duration; no succeeded run of step {tried}{tagged} in {history.where}"


def check_pipeline_file(
    path: str, policy: Any, *, history: Any = None, history_off: str = "history off"
) -> tuple[Any, list[Any]]:
    """Preflight a compiled KFP pipeline with the Kubeflow adapter's inspector (imported lazily:
    the core never imports an adapter at module level). Returns the pipeline's projection (task by
    task, with where each duration came from) and the findings.

    Tasks are priced only when a ``run_usd`` budget (enforced or under ``[warn]``) needs it, so the
    GPU-count and GPU-type policies work on pipelines whose GPU model the spec does not name. A GPU
    task is projected for the median of its past succeeded runs when ``history``
    (:class:`mlcost.gate.history.StepHistory`) has any, else for ``budgets.max_duration``.
    """
    from mlcost.gate.policies import ERROR, WARNING, Finding, PipelineProjection, TaskProjection

    try:
        inspect = importlib.import_module("mlcost.components.inspect")
    except ImportError as e:
        raise ConfigError(
            f"checking a pipeline needs the Kubeflow adapter (pip install 'mlcost[kfp]'): {e}", field="--pipeline"
        ) from e
    price = None
    if policy.budgets.run_usd is not None or policy.warn.budgets.run_usd is not None:
        if policy.budgets.max_duration is None:
            raise ConfigError(
                "a compiled pipeline's cost is projected as GPUs × duration × price, the duration being the "
                "median of a step's past runs or, without any, budgets.max_duration; so budgets.run_usd needs "
                'budgets.max_duration (e.g. max_duration = "2h")',
                source=policy.source,
                field="budgets.max_duration",
            )
        from mlcost.pricing.catalog import PriceCatalog

        catalog = PriceCatalog.load()
        price = catalog.gpu_hour_usd
    report = inspect.inspect_pipeline(
        path, price_per_gpu_hour=price, default_max_duration_s=policy.budgets.max_duration, history=history
    )
    projection = PipelineProjection(
        pipeline=report.pipeline_name,
        source=str(path),
        projected_usd=report.projected_cost_usd if price is not None else None,
        history=history.where if history is not None else None,
        history_off="" if history is not None else history_off,
        tasks=[
            TaskProjection(
                task=t.path,
                step=t.step_name,
                gpu_type=t.gpu_type,
                gpus_per_instance=t.gpus_per_instance,
                instances=t.instances,
                duration_s=t.duration_s,
                duration_source=t.duration_source,
                basis=_basis(t, history, history_off),
                price_per_gpu_hour=t.price_per_gpu_hour,
                projected_usd=t.projected_cost_usd if price is not None else None,
            )
            for t in report.gpu_tasks
        ],
    )
    subject = f"pipeline {report.pipeline_name}"
    findings: list[Finding] = []
    for severity, limits, prefix in ((ERROR, policy, ""), (WARNING, policy.warn, "warn.")):
        violations = inspect.check_pipeline(
            report,
            max_gpus=limits.cluster.max_gpus,
            budget_usd=limits.budgets.run_usd,
            allowed_gpu_types=limits.cluster.allowed_gpu_types,
        )
        for v in violations:
            key = prefix + _PIPELINE_RULES[v.rule]
            per_task = v.rule in _PER_TASK_RULES
            findings.append(
                Finding(
                    policy=key,
                    severity=severity,
                    subject=f"{subject}, task {v.tasks[0]}" if per_task else subject,
                    observed=v.observed,
                    limit=v.limit,
                    origin=policy.origin(key),
                    message=v.message,
                )
            )
    return projection, findings


def _emit(result: Any, args: argparse.Namespace) -> None:
    from mlcost.gate.render import hint, to_json, to_markdown

    markdown = to_markdown(result)
    summary_file = os.environ.get("GITHUB_STEP_SUMMARY")
    if summary_file:
        try:
            with open(summary_file, "a", encoding="utf-8") as fh:
                fh.write(markdown + "\n")
        except OSError as e:
            log.warning("mlcost gate: cannot write $GITHUB_STEP_SUMMARY (%s): %s", summary_file, e)
    if args.format == "json":
        print(to_json(result))
        return
    from rich.console import Console

    console = Console()
    if console.is_terminal:  # a person at a terminal: tables that fit it; a pipe or CI log gets Markdown
        from mlcost.gate.render import to_terminal

        to_terminal(result, console)
    else:
        print(markdown, end="")
    tip = hint(result)
    if tip:
        print(tip, file=sys.stderr)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
