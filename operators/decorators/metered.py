"""``@task.metered``: a TaskFlow task whose body runs inside mlcost's meter.

Thin on purpose, like Airflow's own decorators: a private operator that only forwards arguments,
and a public factory that calls ``task_decorator_factory``. All the behaviour is in
``MeteredOperator``; the providers manager finds this factory through ``get_provider_info``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from mlcost.operators.metered import MeteredOperator
from mlcost.operators.version_compat import DecoratedOperator, task_decorator_factory


class _MeteredDecoratedOperator(DecoratedOperator, MeteredOperator):
    """Captures the decorated function's arguments and runs it as a ``MeteredOperator``."""

    template_fields: Sequence[str] = MeteredOperator.template_fields
    custom_operator_name: str = "@task.metered"

    def __init__(self, *, python_callable: Callable[..., Any], op_args: Any, op_kwargs: Any, **kwargs: Any) -> None:
        super().__init__(
            kwargs_to_upstream={"python_callable": python_callable, "op_args": op_args, "op_kwargs": op_kwargs},
            python_callable=python_callable,
            op_args=op_args,
            op_kwargs=op_kwargs,
            **kwargs,
        )


def metered_task(
    python_callable: Callable[..., Any] | None = None, multiple_outputs: bool | None = None, **kwargs: Any
):
    """``@task.metered(gpus=2, gpu_type="H100", budget_usd=40, max_duration="2h", idle_timeout="15m",
    tags={"team": "search", "model": "ranker"})``: the keywords of ``mlcost.meter()`` plus any operator
    argument. The return value is the task's XCom; the step's cost is under the XCom key ``mlcost_cost``.
    """
    return task_decorator_factory(
        python_callable=python_callable,
        multiple_outputs=multiple_outputs,
        decorated_operator_class=_MeteredDecoratedOperator,
        **kwargs,
    )
