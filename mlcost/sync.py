"""``mlcost sync``: replay into MLflow what the ledger holds and MLflow missed.

Idempotent: a step already in MLflow (found by its ``mlcost.step_id`` tag) is not logged again, and
the ledger remembers what each sink acknowledged, so running sync twice adds nothing.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from mlcost.sinks.ledger import Ledger
from mlcost.sinks.mlflow_sink import SINK, log_step

log = logging.getLogger(__name__)


@dataclass
class SyncResult:
    synced: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)


def sync(ledger: Ledger, *, tracking_uri: str | None = None, experiment: str | None = None) -> SyncResult:
    result = SyncResult()
    for step in ledger.unsynced(SINK):
        try:
            run_id = log_step(
                step,
                ledger.series(step.step_id),
                experiment=experiment,
                run_id=step.mlflow_run_id,  # the caller's run when the step logged into one
                tracking_uri=tracking_uri,
            )
        except Exception as e:
            result.failed[step.step_id] = f"{type(e).__name__}: {e}"
            log.warning("mlcost sync: step %s (%s) failed: %s", step.step_id, step.name, e)
            continue
        ledger.mark_synced(step.step_id, SINK, run_id)
        result.synced.append(step.step_id)
    return result
