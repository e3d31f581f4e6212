"""The cost listener: record every task instance's wall time and outcome in the ledger.

Metered tasks record their own step (with GPU usage and money); this listener records the others,
so that reports also see the un-metered tasks of a DAG (``source="listener"``, no cost). Airflow
swallows exceptions raised by listeners, so a listener can never fail a task: enforcement stays in
the operators, and this module only records, and never raises.
"""

from __future__ import annotations

import logging
import uuid
from datetime import datetime, timezone
from typing import Any

from mlcost.operators.version_compat import listener_hookimpl

log = logging.getLogger(__name__)
hookimpl = listener_hookimpl()

_NAMESPACE = uuid.UUID("6f1c1d5e-7d0b-4c55-9a57-0c9b4a1e2f10")
_STARTED: dict[str, float] = {}  # step id -> monotonic start, for the wall time in this process


def _step_id(ti: Any) -> str:
    """The same id for every event of one try of one task instance, so events are idempotent."""
    key = f"{ti.dag_id}/{ti.run_id}/{ti.task_id}/{getattr(ti, 'map_index', -1)}/{ti.try_number}"
    return uuid.uuid5(_NAMESPACE, key).hex


def _is_metered(ti: Any) -> bool:
    return bool(getattr(getattr(ti, "task", None), "mlcost_metered", False))


def _iso(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, datetime):
        return (value if value.tzinfo else value.replace(tzinfo=timezone.utc)).isoformat()
    return str(value)


def record(ti: Any, status: str, error: Any = None) -> None:
    """Write (or seal) the listener's row for ``ti``; never raises."""
    try:
        if _is_metered(ti):
            return
        import time

        from mlcost.operators.metered import run_key_for

        from mlcost.ledger import Ledger  # the local outbox first, then the shared ledger when one is set
        from mlcost.step import STATUS_RUNNING, StepCost

        step_id = _step_id(ti)
        now = datetime.now(timezone.utc)
        started = _iso(getattr(ti, "start_date", None)) or now.isoformat()
        if status == STATUS_RUNNING:
            _STARTED[step_id] = time.monotonic()
            duration = 0.0
        elif step_id in _STARTED:
            duration = time.monotonic() - _STARTED.pop(step_id)
        else:
            duration = max(0.0, (now - datetime.fromisoformat(started)).total_seconds())
        task = getattr(ti, "task", None)
        tags = {k: str(v) for k, v in (getattr(task, "params", None) or {}).items() if k.startswith("mlcost_")}
        step = StepCost(
            step_id=step_id,
            name=ti.task_id,
            status=status,
            source="listener",
            started_at=started,
            ended_at=None if status == STATUS_RUNNING else now.isoformat(),
            duration_s=duration,
            run_key=run_key_for(ti.dag_id, ti.run_id),
            tags={k.removeprefix("mlcost_"): v for k, v in tags.items()},
            context={
                "orchestrator": "airflow",
                "dag_id": ti.dag_id,
                "task_id": ti.task_id,
                "run_id": ti.run_id,
                "try_number": str(ti.try_number),
                "map_index": str(getattr(ti, "map_index", -1)),
                "operator": type(task).__name__ if task is not None else "",
            },
            error=None if error is None else str(error)[:2000],
        )
        Ledger().write(step)
    except Exception as e:  # a listener must not disturb the task; say why once in the log
        log.warning("mlcost listener: could not record %s: %s", getattr(ti, "task_id", ti), e)


@hookimpl
def on_task_instance_running(previous_state: Any, task_instance: Any) -> None:
    record(task_instance, "running")


@hookimpl
def on_task_instance_success(previous_state: Any, task_instance: Any) -> None:
    record(task_instance, "succeeded")


@hookimpl
def on_task_instance_failed(previous_state: Any, task_instance: Any, error: Any = None) -> None:
    record(task_instance, "failed", error)
