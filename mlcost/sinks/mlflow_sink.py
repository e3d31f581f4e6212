"""The MLflow sink: one batched write per step, with the names of docs/architecture.md.

Never a tracking-store call per sample: the step's run is made as it starts (on a thread,
:mod:`mlcost.sinks.mlflow_open`), and its figures are one ``log_batch`` (chunked at MLflow's
1,000-metric limit) at the end, plus a small periodic flush for long steps. The tracking server may
be down: the write runs on a thread the step waits for at most ``timeout_s``, and ``mlcost sync``
later replays whatever the ledger holds that MLflow does not (idempotently, by ``mlcost.step_id``).
"""

from __future__ import annotations

import logging
import os
import sys
import threading
import time
from datetime import datetime
from typing import Any

from mlcost import names
from mlcost.names import ENV_MLFLOW_TRACKING_URI
from mlcost.sinks.ledger import Ledger
from mlcost.step import STATUS_FAILED, STATUS_KILLED, STATUS_RUNNING, STATUS_SUCCEEDED, StepCost

log = logging.getLogger(__name__)

SINK = "mlflow"
DEFAULT_EXPERIMENT = "mlcost"
_MAX_BATCH = 1000
_RUN_STATUS = {STATUS_SUCCEEDED: "FINISHED", STATUS_FAILED: "FAILED", STATUS_KILLED: "KILLED"}


def step_metrics(step: StepCost) -> dict[str, float]:
    """The step-level metrics; a figure that was not measured is left out, never logged as 0."""
    values = {
        names.COST_USD: step.total_usd,
        names.IDLE_COST_USD: step.idle_usd,
        names.ENERGY_KWH: step.energy_kwh,
        names.GPU_HOURS: step.gpu_hours,
        names.GPU_UTIL_MEAN_PCT: step.util_mean_pct,
        names.GPU_MEM_PEAK_GB: step.mem_peak_gb,
        names.GPU_IDLE_FRACTION: step.idle_fraction,
        names.ENERGY_COST_USD: step.energy_usd if step.energy_kwh is not None else None,
        names.SPOT_COST_USD: step.spot_whatif_usd,
        names.DURATION_S: step.duration_s,
    }
    return {k: float(v) for k, v in values.items() if v is not None}


def step_tags(step: StepCost) -> dict[str, str]:
    tags = {f"{names.TAG_PREFIX}{k}": v for k, v in step.tags.items()}
    tags.update(
        {
            names.TAG_STEP_ID: step.step_id,
            names.TAG_STEP: step.name,
            names.TAG_STATUS: step.status,
            names.TAG_SOURCE: step.source,
            names.TAG_PRICING: step.pricing,
            names.TAG_TELEMETRY: step.telemetry,
            names.TAG_UTIL_SIGNAL: step.util_signal,
            names.TAG_ENERGY_METHOD: step.energy_method,
            "mlcost.gpus": str(step.gpus),
        }
    )
    if "nodes" in step.context:
        tags["mlcost.nodes"] = step.context["nodes"]
    if step.job_id is not None:
        tags[names.TAG_JOB_ID] = step.job_id
        tags[names.TAG_NODE_RANK] = str(step.node_rank)
    if step.gpu_type:
        tags[names.TAG_GPU_TYPE] = step.gpu_type
    if step.simulated:
        tags["mlcost.simulated"] = "true"
    if step.run_key:
        tags["mlcost.run_key"] = step.run_key
    if step.degraded_reasons:
        tags[names.TAG_DEGRADED_REASON] = "; ".join(step.degraded_reasons)[:5000]
    if step.breach is not None:
        tags["mlcost.breach"] = step.breach.message[:5000]
    return tags


def _epoch_ms(iso: str | None) -> int:
    return int(datetime.fromisoformat(iso).timestamp() * 1000) if iso else int(time.time() * 1000)


def all_experiment_ids(client: Any) -> list[str]:
    """Every active experiment's id: a step may have been logged to any of them (``experiment=``,
    ``$MLFLOW_EXPERIMENT_NAME``, the caller's run), so a replay must look for it in all."""
    ids: list[str] = []
    token = None
    while True:
        page = client.search_experiments(max_results=1000, page_token=token)
        ids += [e.experiment_id for e in page]
        token = getattr(page, "token", None)
        if not token:
            return ids


def tag_equals(tag: str, value: str) -> str:
    """MLflow's search filter for runs whose tag ``tag`` is ``value`` (its quotes escaped)."""
    escaped = value.replace("'", "\\'")
    return f"tags.`{tag}` = '{escaped}'"


def find_run(client: Any, experiment_ids: list[str] | None, step_id: str) -> Any | None:
    """The run holding step ``step_id`` (its ``mlcost.step_id`` tag), in ``experiment_ids`` or, when
    ``None``, in every experiment."""
    ids = experiment_ids if experiment_ids is not None else all_experiment_ids(client)
    flt = tag_equals(names.TAG_STEP_ID, step_id)
    for i in range(0, len(ids), 100):  # a server may cap the experiments of one search
        runs = client.search_runs(ids[i : i + 100], filter_string=flt, max_results=1)
        if runs:
            return runs[0]
    return None


DUPLICATE_OF = "mlcost.duplicate_of"
"""Tag on a DAG run's parent run that lost to another made at the same time: the run it lost to."""


def parent_order(run: Any) -> tuple[int, str]:
    """The order in which a DAG run's (or a job's) parent runs win: the oldest start, then the lowest run id.
    Every reader sorts by it in Python, because a store breaks ties of equal start times its own way."""
    return (run.info.start_time, run.info.run_id)


def dag_run_parents(client: Any, experiment_ids: list[str], run_key: str) -> list[Any]:
    """The runs of the DAG run / pipeline run ``run_key`` (tagged ``mlcost.kind=dag_run``) not
    marked :data:`DUPLICATE_OF`, in :func:`parent_order`: the first is the one its steps nest under."""
    runs = client.search_runs(
        experiment_ids,
        filter_string=f"{tag_equals('mlcost.run_key', run_key)} AND {tag_equals(names.TAG_KIND, names.KIND_DAG_RUN)}",
        max_results=1000,
    )
    return sorted((r for r in runs if DUPLICATE_OF not in r.data.tags), key=parent_order)


def find_dag_run_parent(client: Any, experiment_ids: list[str], run_key: str) -> str | None:
    """The run of the DAG run ``run_key`` that its steps nest under; None when there is none."""
    runs = dag_run_parents(client, experiment_ids, run_key)
    return runs[0].info.run_id if runs else None


def experiment_id_of(client: Any, name: str) -> str:
    """The id of experiment ``name``, created when there is none.

    The nodes of a job, or the tasks of a DAG run, end together: two may both find no experiment
    and both create it. The store refuses the second create (the name is unique), and that writer
    takes the first one's experiment instead of losing its run.

    The id is remembered for the process (per server): a task asks for it when it finds its DAG
    run's parent run and again when it logs its step, one call to the server instead of two."""
    key = (str(getattr(client, "tracking_uri", "")), name)
    if key in _experiment_ids:
        return _experiment_ids[key]
    exp = client.get_experiment_by_name(name)
    if exp is not None:
        found = str(exp.experiment_id)
    else:
        try:
            found = str(client.create_experiment(name))
        except Exception:
            exp = client.get_experiment_by_name(name)
            if exp is None:
                raise
            found = str(exp.experiment_id)
    _experiment_ids[key] = found
    return found


_experiment_ids: dict[tuple[str, str], str] = {}


def create_step_run(client: Any, step: StepCost, *, experiment: str | None, parent_run_id: str | None) -> str:
    """A new run for ``step`` (tagged with its id, so a replay finds it), nested under
    ``parent_run_id`` or, for a replay of a DAG run's step, under that DAG run's run."""
    name = experiment or os.environ.get("MLFLOW_EXPERIMENT_NAME") or DEFAULT_EXPERIMENT
    experiment_id = experiment_id_of(client, name)
    start_tags = {names.TAG_STEP_ID: step.step_id}
    if parent_run_id is None and step.run_key:  # a replay: nest it where the live write would have
        parent_run_id = find_dag_run_parent(client, [experiment_id], step.run_key)
    if parent_run_id:
        start_tags["mlflow.parentRunId"] = parent_run_id
    run = client.create_run(experiment_id, start_time=_epoch_ms(step.started_at), tags=start_tags, run_name=step.name)
    return str(run.info.run_id)


def log_step(
    step: StepCost,
    series: dict[str, list[tuple[int, float]]] | None = None,
    *,
    experiment: str | None = None,
    run_id: str | None = None,
    parent_run_id: str | None = None,
    tracking_uri: str | None = None,
    own_run_id: str | None = None,
) -> str:
    """Write ``step`` to MLflow and return the run id.

    Into ``run_id`` when given (the caller's run: it is left open), else into the run already
    holding this step (a replay), else into a new run of ``experiment`` (default
    ``$MLFLOW_EXPERIMENT_NAME`` or ``"mlcost"``), nested under ``parent_run_id``. ``own_run_id`` is
    the run made for this step when it started (:class:`mlcost.sinks.mlflow_open.RunOpener`): the
    figures go there and it is ended, with no search for it.
    """
    from mlflow.entities import Metric, RunTag
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=tracking_uri)
    own_run = run_id is None
    if own_run and own_run_id is not None:
        run_id = own_run_id
    elif own_run:
        existing = find_run(client, None, step.step_id)  # wherever an earlier attempt logged it
        if existing is not None:
            run_id = existing.info.run_id
            if names.COST_USD in existing.data.metrics and existing.info.status != "RUNNING":
                return run_id  # already complete: a replay adds nothing
        else:
            run_id = create_step_run(client, step, experiment=experiment, parent_run_id=parent_run_id)
    assert run_id is not None
    ts = _epoch_ms(step.ended_at)
    metrics = [Metric(k, v, ts, 0) for k, v in step_metrics(step).items()]
    for key, points in (series or {}).items():
        metrics += [Metric(key, float(v), int(t), i) for i, (t, v) in enumerate(points)]
    tags = [RunTag(k, v) for k, v in step_tags(step).items()]
    for i in range(0, max(len(metrics), 1), _MAX_BATCH):
        client.log_batch(run_id, metrics=metrics[i : i + _MAX_BATCH], tags=tags if i == 0 else [])
    if own_run and step.status != STATUS_RUNNING:
        client.set_terminated(run_id, status=_RUN_STATUS.get(step.status, "FAILED"), end_time=ts)
    return run_id


def reachable_uri(tracking_uri: str | None, *, timeout_s: float = 3.0) -> str:
    """:func:`target_uri`, once a TCP connect to it succeeds (a SQLite file or a folder needs
    none): a server that refuses connections raises ConnectionError at once, before MLflow's
    client would retry it for minutes. Every write of a running or ending step checks this first."""
    from mlcost.sinks.mlflow_reach import probe, redact

    uri = target_uri(tracking_uri)
    reason = probe(uri, timeout_s=timeout_s, http=False)
    if reason:
        raise ConnectionError(f"tracking server {redact(uri)}: {reason}")
    return uri


def target_uri(tracking_uri: str | None) -> str:
    """The server a step's MLflow write goes to: ``tracking_uri``, else MLflow's own choice
    (``mlflow.set_tracking_uri``, ``$MLFLOW_TRACKING_URI``)."""
    if tracking_uri:
        return tracking_uri
    mlflow = sys.modules.get("mlflow")
    if mlflow is None and os.environ.get(ENV_MLFLOW_TRACKING_URI):
        return os.environ[ENV_MLFLOW_TRACKING_URI]  # what MLflow would use; no import to find out
    import mlflow

    return mlflow.get_tracking_uri()


def log_step_with_timeout(
    step: StepCost,
    series: dict[str, list[tuple[int, float]]] | None,
    *,
    ledger: Ledger,
    timeout_s: float,
    **kwargs: Any,
) -> str | None:
    """:func:`log_step` on a daemon thread, waited for at most ``timeout_s``: an unreachable tracking
    server retries for minutes, and a step must not wait that long on its way out. A server that
    refuses the connection is known at once (a TCP probe first), so only one that accepts and then
    hangs costs the timeout. What did not make it stays unsynced in the ledger for ``mlcost sync``,
    which the ledger notes per server (:func:`mlcost.sinks.mlflow_reach.sink_key`)."""
    from mlcost.sinks.mlflow_reach import sink_key

    result: dict[str, Any] = {}
    done = threading.Event()

    def work() -> None:
        try:
            uri = reachable_uri(kwargs.get("tracking_uri"), timeout_s=min(timeout_s, 3.0))
            result["run_id"] = log_step(step, series, **kwargs)
            ledger.mark_synced(step.step_id, sink_key(uri), result["run_id"])
        except Exception as e:
            result["error"] = e
        finally:
            done.set()

    thread = threading.Thread(target=work, name="mlcost-mlflow", daemon=True)
    thread.start()
    done.wait(timeout_s)
    if not done.is_set():
        log.warning(
            "mlcost: MLflow did not answer within %.0fs; step %s is in the ledger %s, run `mlcost sync` later",
            timeout_s,
            step.step_id,
            ledger.path,
        )
        return None
    if "error" in result:
        log.warning(
            "mlcost: could not log step %s to MLflow (%s); it is in the ledger %s, run `mlcost sync` later",
            step.step_id,
            str(result["error"]).splitlines()[0] if str(result["error"]) else type(result["error"]).__name__,
            ledger.path,
        )
        return None
    return result.get("run_id")


def flush_running(step: StepCost, **kwargs: Any) -> None:
    """The periodic flush of a long step: its figures so far, on its own run (best effort; skipped
    at once when the server refuses connections, so the step's end never waits on a flush)."""
    try:
        reachable_uri(kwargs.get("tracking_uri"))
        log_step(step, None, **kwargs)
    except Exception as e:
        log.debug("mlcost: periodic MLflow flush failed: %s", e)
