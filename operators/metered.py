"""``MeteredOperator``: run a python callable, or another operator, inside mlcost's meter.

The meter (``mlcost.meter()``, in ``mlcost.metering``) does the measuring, pricing, stopping and
recording; this operator only maps it onto Airflow: the step is named after the task, grouped by
DAG run (``run_key``), logged to MLflow as one run per task instance nested under one run per DAG
run, its ``StepCost`` pushed to XCom, and a guardrail breach turned into ``AirflowFailException``
so the task fails *without retry* (a retry would only spend the same money again).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Collection, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from mlcost.operators.version_compat import (
    AirflowFailException,
    BaseOperator,
    Context,
    detach_from_dag,
    determine_kwargs,
)

from mlcost.errors import ConfigError, GuardrailBreached, PreflightRefused
from mlcost.meter_options import MeterOptions, split_keywords
from mlcost.names import ENV_MLFLOW_TRACKING_URI

if TYPE_CHECKING:
    from mlcost.metering import Meter
    from mlcost.step import StepCost

log = logging.getLogger(__name__)

XCOM_COST_KEY = "mlcost_cost"
"""XCom key of the task's ``StepCost`` (a JSON dict, ``StepCost.model_dump(mode="json")``)."""

def run_key_for(dag_id: str, run_id: str) -> str:
    """The ledger's and MLflow's key for one DAG run: every step of the run carries it."""
    return f"airflow:{dag_id}/{run_id}"


def breach_message(task_id: str, e: GuardrailBreached) -> str:
    """What the task log and the UI show: which limit, what was spent or observed, who set it."""
    spent = e.spent_usd
    if isinstance(e, PreflightRefused):
        observed = f"requested {e.observed}, refused before start, nothing spent"
    elif spent is not None:
        observed = f"${spent:.4f} spent"
    else:
        observed = f"observed {e.observed}"
    return f"mlcost guardrail {e.limit_name} on task {task_id!r}: {e} [limit {e.limit}, {observed}, policy: {e.policy}]"


def _templated(name: str, value: Any, template_fields: Sequence[str]) -> bool:
    """A templated keyword whose value Airflow renders at run time: checked then, not at parse time."""
    if name not in template_fields:
        return False
    if isinstance(value, str):
        return "{{" in value or "{%" in value
    return isinstance(value, Mapping) and any(isinstance(v, str) and "{{" in v for v in value.values())


class MeteredOperator(BaseOperator):
    """Meter a python callable, or wrap an existing operator so it gains a meter unchanged.

    ::

        MeteredOperator(task_id="train", python_callable=train, gpus=2, gpu_type="H100", budget_usd=40)
        MeteredOperator(task_id="train", operator=BashOperator(task_id="train_sh", bash_command="..."),
                        gpus=1, gpu_type="L4", max_duration="1h")

    :param python_callable: the function to run (exclusive with ``operator``); it receives
        ``op_args``, ``op_kwargs`` and any context keys its signature names, as with ``@task``
    :param operator: an operator to run inside the meter; its templates are rendered first and its
        ``on_kill`` is forwarded. Created inside ``with DAG(...)`` it is taken out of the DAG again.
    :param gpus: GPUs billed (the allocation); default: the devices the task can see
    :param gpu_type: the GPU type priced, e.g. ``"H100"``, ``"A100-80GB"``, ``"H100:1g.10gb"``
    :param pricing: ``on_demand``, ``spot`` or ``reserved``
    :param budget_usd: stop and fail (no retry) once the step has spent this much (templated)
    :param max_duration: stop and fail once the step ran this long (``"2h"``, seconds)
    :param idle_timeout: stop and fail once the GPUs were idle this long (``"15m"``)
    :param tags: ``team``, ``project``, ``model``, ``workload``... (templated)
    :param interval: seconds between samples
    :param nodes: nodes requested (checked against ``cluster.max_nodes`` before the step starts)
    :param policy: a policy file; default ``$MLCOST_POLICY`` / ``./mlcost.toml``
    :param step_name: the step's name in the ledger and MLflow (default: the task id)
    :param experiment: the MLflow experiment (default ``$MLFLOW_EXPERIMENT_NAME`` or ``mlcost``)
    :param mlflow_conn_id: an Airflow connection to the MLflow tracking server (optional)
    :param mlflow_tracking_uri: a tracking URI, used as it is (optional)
    """

    template_fields: Sequence[str] = ("op_args", "op_kwargs", "budget_usd", "tags", "gpus", "gpu_type")
    template_fields_renderers = {"op_args": "py", "op_kwargs": "py", "tags": "json"}
    ui_color = "#e8f4ea"
    mlcost_metered = True  # the cost listener skips tasks that record their own step

    def __init__(
        self,
        *,
        python_callable: Callable[..., Any] | None = None,
        operator: BaseOperator | None = None,
        op_args: Collection[Any] | None = None,
        op_kwargs: Mapping[str, Any] | None = None,
        policy: str | None = None,
        step_name: str | None = None,
        mlflow_conn_id: str | None = None,
        mlflow_tracking_uri: str | None = None,
        **kwargs: Any,
    ) -> None:
        if (python_callable is None) == (operator is None):
            raise ValueError("MeteredOperator needs exactly one of python_callable= or operator=")
        if python_callable is not None and not callable(python_callable):
            raise TypeError(f"python_callable must be callable, got {python_callable!r}")
        if operator is not None:
            if not isinstance(operator, BaseOperator):
                raise TypeError(f"operator must be an Airflow operator, got {type(operator).__name__}")
            detach_from_dag(operator)
        meter_keywords = split_keywords(kwargs)  # the meter's keywords, one definition: MeterOptions
        # checked now, where the DAG is parsed; a templated value ("{{ ... }}") once it is rendered
        MeterOptions.parse(
            {k: v for k, v in meter_keywords.items() if not _templated(k, v, self.template_fields)},
            where=f"{type(self).__name__}",
        )
        super().__init__(**kwargs)
        self.python_callable = python_callable
        self.operator = operator
        self.op_args = list(op_args or [])
        self.op_kwargs = dict(op_kwargs or {})
        for name, field in MeterOptions.model_fields.items():  # template fields must be attributes
            setattr(self, name, meter_keywords.get(name, field.get_default(call_default_factory=True)))
        self.policy, self.step_name = policy, step_name
        self.mlflow_conn_id, self.mlflow_tracking_uri = mlflow_conn_id, mlflow_tracking_uri
        self._meter: Meter | None = None

    # Airflow entry points ---------------------------------------------------------------------
    def execute(self, context: Context) -> Any:
        m = self._build_meter(context)
        self._meter = m
        restore_uri = self._export_tracking_uri()
        try:
            try:
                with m:
                    result = self._run_body(context)
            except GuardrailBreached as e:
                self._push_cost(context, m.cost)
                log.error("mlcost: %s", e)
                raise AirflowFailException(breach_message(self.task_id, e)) from e
            except BaseException:
                self._push_cost(context, m.cost)
                raise
            self._push_cost(context, m.cost)
            self._update_parent(m)
            return result
        finally:
            restore_uri()

    def on_kill(self) -> None:
        """SIGTERM / ``execution_timeout``: stop the sampler and seal the step as killed."""
        if self.operator is not None:
            try:
                self.operator.on_kill()
            except Exception:
                log.exception("mlcost: on_kill of the wrapped operator %s failed", self.operator.task_id)
        if self._meter is not None and (step := self._meter.stop("on_kill")) is not None:
            log.warning("mlcost: task killed; recorded %s", step.summary())

    # internals --------------------------------------------------------------------------------
    def _run_body(self, context: Context) -> Any:
        if self.operator is not None:
            self.operator.render_template_fields(context)
            return self.operator.execute(context)
        assert self.python_callable is not None
        kwargs = determine_kwargs(self.python_callable, self.op_args, {**context, **self.op_kwargs})
        return self.python_callable(*self.op_args, **kwargs)

    def _build_meter(self, context: Context) -> Meter:
        from mlcost.metering import Meter

        ti = context["ti"]
        dag_id, run_id = ti.dag_id, ti.run_id
        run_key = run_key_for(dag_id, run_id)
        step_context = {
            "orchestrator": "airflow",
            "dag_id": dag_id,
            "task_id": ti.task_id,
            "run_id": run_id,
            "try_number": str(ti.try_number),
            "map_index": str(getattr(ti, "map_index", -1)),
        }
        # the DAG run's MLflow run, looked up on the meter's opener thread while the body runs
        parent = (lambda: self._mlflow_parent(run_key, dag_id, run_id)) if self._tracking_uri() else None
        try:
            # rendered templates are text ("40"); the rest was checked in __init__
            options = MeterOptions.parse(
                {name: getattr(self, name) for name in MeterOptions.model_fields}, text=True, where=ti.task_id
            )
            if parent is not None:
                options = options.model_copy(update={"experiment": self._experiment_name()})
            return Meter(
                self.step_name or ti.task_id,
                options=options,
                policy=self.policy,
                run_key=run_key,
                context=step_context,
                mlflow_parent_run_id=parent,
                tracking_uri=self._tracking_uri(),
            )
        except ConfigError as e:  # a bad argument or policy file does not get better on retry
            raise AirflowFailException(f"mlcost: task {ti.task_id!r} is misconfigured: {e}") from e

    def _hook(self) -> Any:
        from mlcost.operators.hooks.mlflow_runs import MlflowRunsHook

        return MlflowRunsHook(mlflow_conn_id=self.mlflow_conn_id, tracking_uri=self.mlflow_tracking_uri)

    def _experiment_name(self) -> str:
        from mlcost.operators.hooks.mlflow_runs import MlflowRunsHook

        return MlflowRunsHook.experiment_name(self.experiment)

    def _tracking_uri(self) -> str | None:
        if not hasattr(self, "_resolved_uri"):
            try:
                self._resolved_uri = self._hook().tracking_uri()
            except Exception as e:  # a missing connection must not fail the job: telemetry never does
                log.warning("mlcost: MLflow tracking URI unavailable (%s); logging to the ledger only", e)
                self._resolved_uri = None
        return self._resolved_uri

    def _export_tracking_uri(self) -> Callable[[], None]:
        """The meter gets the URI as ``tracking_uri``; it is also exported as ``MLFLOW_TRACKING_URI``
        for the duration of the task (the old value put back), so the task's own ``mlflow`` calls
        reach the same server as its cost."""
        uri = self._tracking_uri()
        previous = os.environ.get(ENV_MLFLOW_TRACKING_URI)
        if not uri or uri == previous:
            return lambda: None
        os.environ[ENV_MLFLOW_TRACKING_URI] = uri

        def restore() -> None:
            if previous is None:
                os.environ.pop(ENV_MLFLOW_TRACKING_URI, None)
            else:
                os.environ[ENV_MLFLOW_TRACKING_URI] = previous

        return restore

    def _mlflow_parent(self, run_key: str, dag_id: str, run_id: str) -> str | None:
        if not self._tracking_uri():
            return None
        from mlcost.operators.hooks.mlflow_runs import bounded

        # MLflow down: the step still runs; `mlcost sync` later nests it under the DAG run's run
        parent = bounded(
            lambda: self._hook().dag_run_parent(
                run_key,
                experiment=self.experiment,
                run_name=f"{dag_id}/{run_id}",
                tags={"mlcost.dag_id": dag_id, "mlcost.run_id": run_id},
            ),
            f"the MLflow run of DAG run {run_key}",
        )
        self._parent_run_id = parent
        return parent

    def _update_parent(self, m: Meter) -> None:
        parent = getattr(self, "_parent_run_id", None)
        if not parent or m.run_key is None or m.cost is None or not m.cost.mlflow_run_id:
            return  # no parent, or the step itself did not reach MLflow: do not wait on it twice
        from mlcost.operators.hooks.mlflow_runs import bounded

        run_key = m.run_key
        bounded(lambda: self._hook().update_parent_totals(parent, run_key), "the DAG run's MLflow totals")

    def _push_cost(self, context: Context, step: StepCost | None) -> None:
        if step is None:
            return
        try:
            context["ti"].xcom_push(key=XCOM_COST_KEY, value=step.model_dump(mode="json"))
        except Exception as e:
            log.warning("mlcost: could not push the step's cost to XCom: %s", e)
