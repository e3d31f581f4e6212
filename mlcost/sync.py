"""``mlcost sync``: replay into MLflow what the ledger holds and MLflow missed.

Idempotent: a step already in MLflow (found by its ``mlcost.step_id`` tag, in any experiment) is
not logged again, and the ledger remembers what each server acknowledged (the ``synced`` mark's
sink is ``mlflow:<server>``, see :func:`mlcost.sinks.mlflow_reach.sink_key`), so running sync twice
adds nothing and a sync to another server still sends everything.

An unreachable server is given up on once: a short probe before the first step, and the first
step that fails for want of an answer ends the run. Every step not sent stays for the next sync.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field

from mlcost.sinks.ledger import Ledger
from mlcost.sinks.mlflow_reach import bounded_http, probe, redact, sink_key, unreachable_from
from mlcost.sinks.mlflow_sink import log_step
from mlcost.step import StepCost

log = logging.getLogger(__name__)


@dataclass
class SyncResult:
    server: str = ""  # the tracking URI, password removed
    pending: int = 0  # steps the server had not acknowledged when the sync began
    synced: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)
    unreachable: str | None = None  # why the sync gave up on the server
    left: int = 0  # steps not tried because the server was given up on

    @property
    def kept(self) -> int:
        """Steps still unsynced after this run (failed or not tried): the next sync sends them."""
        return len(self.failed) + self.left


def _is_missing_run(error: Exception) -> bool:
    return getattr(error, "error_code", "") == "RESOURCE_DOES_NOT_EXIST"


def _update_job(step: StepCost, tracking_uri: str) -> None:
    """A replayed node of a job across nodes: nest it under the job's parent run and recompute the
    job's totals, as the live write would have (node 0's replay makes the parent when none exists).
    Best effort: the node's own run is synced either way."""
    from mlcost.sinks.mlflow_jobs import update_job_run

    try:
        update_job_run(step, tracking_uri=tracking_uri)
    except Exception as e:
        log.warning("mlcost sync: job %s: its MLflow parent run was not updated: %s", step.job_id, e)


def sync(
    ledger: Ledger,
    *,
    tracking_uri: str,
    experiment: str | None = None,
    on_step: Callable[[int, int], None] | None = None,
) -> SyncResult:
    """Send every step the server at ``tracking_uri`` has not acknowledged; ``on_step(done, total)``
    after each (a progress bar)."""
    result = SyncResult(server=redact(tracking_uri))
    sink = sink_key(tracking_uri)
    pending = ledger.unsynced(sink)
    result.pending = len(pending)
    if not pending:
        return result
    reason = probe(tracking_uri)
    if reason:
        result.unreachable, result.left = reason, len(pending)
        return result
    with bounded_http():
        for i, step in enumerate(pending):
            kwargs = {"experiment": experiment, "tracking_uri": tracking_uri}
            try:
                try:
                    # the caller's run when the step was meant for one (recorded before the first try)
                    run_id = log_step(step, ledger.series(step.step_id), run_id=step.mlflow_run_id, **kwargs)
                except Exception as e:
                    if not (step.mlflow_run_id and _is_missing_run(e)):
                        raise
                    log.warning("mlcost sync: run %s of step %s is not on %s; logging it to its own run",
                                step.mlflow_run_id, step.step_id, result.server)  # fmt: skip
                    run_id = log_step(step, ledger.series(step.step_id), **kwargs)
            except Exception as e:
                outage = unreachable_from(e, tracking_uri)
                if outage is not None:
                    result.unreachable, result.left = outage.reason, len(pending) - i
                    break
                result.failed[step.step_id] = f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
                log.warning("mlcost sync: step %s (%s) failed: %s", step.step_id, step.name, e)
            else:
                ledger.mark_synced(step.step_id, sink, run_id)
                result.synced.append(step.step_id)
                if step.job_id is not None and (step.nodes or 0) > 1:
                    _update_job(step.model_copy(update={"mlflow_run_id": run_id}), tracking_uri)
            if on_step is not None:
                on_step(i + 1, len(pending))
    return result
