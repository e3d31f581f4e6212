"""Every Airflow version check and version-dependent import of the adapter, in one place.

Airflow's own providers keep such checks in one ``version_compat.py`` so that the day an API
moves, one file changes. We target Airflow 3.x's task SDK (``airflow.sdk``); the fallbacks are the
paths Airflow 3.0 still had, not Airflow 2.
"""

from __future__ import annotations

from typing import Any


def get_base_airflow_version_tuple() -> tuple[int, int, int]:
    from airflow import __version__

    parts = [int("".join(c for c in p if c.isdigit()) or 0) for p in __version__.split(".")[:3]]
    while len(parts) < 3:
        parts.append(0)
    return parts[0], parts[1], parts[2]


AIRFLOW_V_3_0_PLUS: bool = get_base_airflow_version_tuple() >= (3, 0, 0)
AIRFLOW_V_3_1_PLUS: bool = get_base_airflow_version_tuple() >= (3, 1, 0)

from airflow.sdk import BaseHook, BaseOperator, Context  # noqa: E402
from airflow.sdk.bases.decorator import DecoratedOperator, task_decorator_factory  # noqa: E402

try:  # the task-SDK path; ``airflow.exceptions.AirflowFailException`` warns in 3.x
    from airflow.sdk.exceptions import AirflowFailException
except ImportError:  # pragma: no cover - Airflow 3.0
    from airflow.exceptions import AirflowFailException  # type: ignore[no-redef]

try:
    from airflow.sdk.bases.decorator import determine_kwargs
except ImportError:  # pragma: no cover
    from airflow.providers.standard.operators.python import determine_kwargs  # type: ignore[no-redef]


def listener_hookimpl() -> Any:
    """The pluggy marker listeners are declared with (``airflow.listeners.hookimpl``). The task SDK
    carries its own copy for workers that have no airflow-core; both are ``HookimplMarker("airflow")``."""
    try:
        from airflow.listeners import hookimpl
    except ImportError:  # pragma: no cover - a worker with the task SDK only
        from airflow.sdk._shared.listeners import hookimpl  # type: ignore[no-redef]
    return hookimpl


def detach_from_dag(task: Any) -> None:
    """Take ``task`` out of the DAG it was added to when it was created inside ``with DAG(...)``.

    ``MeteredOperator(operator=BashOperator(...))`` runs the inner operator itself; left in the DAG
    it would also run as a task of its own (and its task id would clash with the wrapper's).
    ``DAG._remove_task`` is private, so the call lives here, next to the version checks.
    """
    dag = getattr(task, "dag", None) if getattr(task, "has_dag", lambda: False)() else None
    if dag is None:
        return
    task_id = task.task_id
    if dag.task_dict.get(task_id) is task:
        dag._remove_task(task_id)
        dag.task_group.used_group_ids.discard(task_id)
    for up in list(getattr(task, "upstream_list", [])):
        up.downstream_task_ids.discard(task_id)
    for down in list(getattr(task, "downstream_list", [])):
        down.upstream_task_ids.discard(task_id)


__all__ = [
    "AIRFLOW_V_3_0_PLUS",
    "AIRFLOW_V_3_1_PLUS",
    "AirflowFailException",
    "BaseHook",
    "BaseOperator",
    "Context",
    "DecoratedOperator",
    "detach_from_dag",
    "determine_kwargs",
    "listener_hookimpl",
    "task_decorator_factory",
]
