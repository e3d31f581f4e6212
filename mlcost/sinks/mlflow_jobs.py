"""A job across nodes in MLflow: one parent run per job (``mlcost.kind=job``) holding the sum of
its nodes, each node's run a child of it (``mlcost.job_id``, ``mlcost.node_rank``).

No node waits for another. Each node, after logging its own run, looks for the job's parent; node
0 creates it when there is none. Then the node nests every node run it finds under the parent and
writes the parent's totals from them. Every node's run exists before it looks for the parent, so
whichever node looks last sees every run, and the parent ends with the whole job's sum; the parent
is closed once all ``nodes`` node runs have ended.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

from mlcost import names
from mlcost.step import StepCost

log = logging.getLogger(__name__)

_SUMMED = (names.COST_USD, names.IDLE_COST_USD, names.ENERGY_KWH, names.GPU_HOURS, names.ENERGY_COST_USD,
           names.SPOT_COST_USD)  # fmt: skip
_WEIGHTED = (names.GPU_UTIL_MEAN_PCT, names.GPU_IDLE_FRACTION)  # time-weighted over all GPUs: by GPU-hours
_MAXED = (names.GPU_MEM_PEAK_GB, names.DURATION_S)


def job_totals(node_metrics: list[dict[str, float]]) -> dict[str, float]:
    """The job's figures from its nodes': sums, GPU-hour-weighted means, and maxima."""
    out: dict[str, float] = {}
    for key in _SUMMED:
        values = [m[key] for m in node_metrics if key in m]
        if values:
            out[key] = sum(values)
    hours = [m.get(names.GPU_HOURS, 0.0) for m in node_metrics]
    for key in _WEIGHTED:
        pairs = [(m[key], h) for m, h in zip(node_metrics, hours, strict=True) if key in m]
        weight = sum(h for _, h in pairs)
        if pairs and weight > 0:
            out[key] = sum(v * h for v, h in pairs) / weight
    for key in _MAXED:
        values = [m[key] for m in node_metrics if key in m]
        if values:
            out[key] = max(values)
    return out


def update_job_run(step: StepCost, *, tracking_uri: str | None = None, **_: Any) -> str | None:
    """Nest this node's run under the job's parent (made by node 0) and refresh the job's totals;
    the parent's run id, or None while node 0 has not made it yet."""
    from mlflow.entities import Metric, RunTag
    from mlflow.tracking import MlflowClient

    from mlcost.sinks.mlflow_sink import parent_order, tag_equals

    assert step.job_id is not None and step.mlflow_run_id is not None
    client = MlflowClient(tracking_uri=tracking_uri)
    experiment_id = client.get_run(step.mlflow_run_id).info.experiment_id
    runs = client.search_runs([experiment_id], tag_equals(names.TAG_JOB_ID, step.job_id), max_results=1000)
    parents = sorted((r for r in runs if r.data.tags.get(names.TAG_KIND) == names.KIND_JOB), key=parent_order)
    nodes = [r for r in runs if r.data.tags.get(names.TAG_KIND) != names.KIND_JOB]
    if parents:
        parent_id = parents[0].info.run_id
    elif step.node_rank == 0:
        parent = client.create_run(
            experiment_id,
            start_time=min(r.info.start_time for r in nodes) if nodes else int(time.time() * 1000),
            tags={names.TAG_JOB_ID: step.job_id, names.TAG_KIND: names.KIND_JOB},
            run_name=f"{step.name} (job {step.job_id})",
        )
        parent_id = parent.info.run_id
    else:
        return None  # node 0 makes the parent and nests this run when it gets there
    for run in nodes:
        if run.data.tags.get("mlflow.parentRunId") != parent_id:
            client.set_tag(run.info.run_id, "mlflow.parentRunId", parent_id)
    totals = job_totals([r.data.metrics for r in nodes])
    now = int(time.time() * 1000)
    tags = {names.TAG_JOB_ID: step.job_id, names.TAG_KIND: names.KIND_JOB, names.TAG_STEP: step.name,
            "mlcost.nodes": str(step.nodes or len(nodes)), "mlcost.node_runs": str(len(nodes))}  # fmt: skip
    tags.update({f"{names.TAG_PREFIX}{k}": v for k, v in step.tags.items()})
    client.log_batch(
        parent_id,
        metrics=[Metric(k, v, now, 0) for k, v in totals.items()],
        tags=[RunTag(k, v) for k, v in tags.items()],
    )
    ended = [r for r in nodes if r.info.status != "RUNNING"]
    if step.nodes and len(ended) >= step.nodes:
        failed = any(r.info.status != "FINISHED" for r in ended)
        client.set_terminated(parent_id, status="FAILED" if failed else "FINISHED", end_time=now)
    return parent_id


def log_job_with_timeout(step: StepCost, *, timeout_s: float, **kwargs: Any) -> str | None:
    """:func:`update_job_run` waited for at most ``timeout_s`` (a tracking server may hang)."""
    result: dict[str, Any] = {}

    def work() -> None:
        try:
            result["run_id"] = update_job_run(step, **kwargs)
        except Exception as e:
            result["error"] = e

    thread = threading.Thread(target=work, name="mlcost-mlflow-job", daemon=True)
    thread.start()
    thread.join(timeout_s)
    if "error" in result or thread.is_alive():
        log.warning("mlcost: job %s: its MLflow parent run was not updated (%s)", step.job_id,
                    result.get("error", f"no answer within {timeout_s:.0f}s"))  # fmt: skip
    return result.get("run_id")
