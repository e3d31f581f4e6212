"""Where a DAG run's cost goes in MLflow: the tracking URI, and one parent run per DAG run.

A metered task logs one MLflow run per task instance (the meter does that); this hook finds or
creates the run of the DAG run those task runs are nested under, so that the MLflow UI shows a
DAG run as one row with its tasks beneath it. ``mlflow`` is imported inside the methods only: a
DAG file that imports the provider must not pay for it at parse time.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable
from typing import Any, TypeVar

from mlcost.operators.version_compat import BaseHook

from mlcost.names import ENV_MLFLOW_TRACKING_URI, KIND_DAG_RUN, TAG_KIND

log = logging.getLogger(__name__)

TAG_RUN_KEY = "mlcost.run_key"
DEFAULT_EXPERIMENT = "mlcost"
_experiment_of_run: dict[str, str] = {}  # DAG-run parent run id -> its experiment (run ids are unique)
CONFIG_SECTION = "mlcost"
CALL_TIMEOUT_S = 15.0
"""How long a task waits for one MLflow call of the operators (the meter's own bound is the same)."""

T = TypeVar("T")


def bounded(call: Callable[[], T], what: str, timeout_s: float = CALL_TIMEOUT_S) -> T | None:
    """``call()`` on a daemon thread, waited for at most ``timeout_s``; None when it raised or did not
    finish. An unreachable tracking server makes MLflow's client retry for minutes; a task must not
    wait that long before or after its step (the ledger has the step; ``mlcost sync`` replays it)."""
    result: dict[str, Any] = {}

    def work() -> None:
        try:
            result["value"] = call()
        except Exception as e:
            result["error"] = e

    thread = threading.Thread(target=work, name="mlcost-mlflow-call", daemon=True)
    thread.start()
    thread.join(timeout_s)
    if thread.is_alive():
        log.warning("mlcost: MLflow did not answer within %.0fs (%s); going on without it", timeout_s, what)
        return None
    if "error" in result:
        log.warning("mlcost: MLflow call failed (%s): %s", what, result["error"])
        return None
    return result.get("value")


class MlflowRunsHook(BaseHook):
    """MLflow access for mlcost's operators.

    The tracking URI is, in order: ``tracking_uri`` given to the hook, the Airflow connection
    ``mlflow_conn_id`` (its extra ``tracking_uri``, else ``schema://host:port``; a host that already
    holds a URI is used as it is), ``$MLFLOW_TRACKING_URI``, then Airflow's config
    ``[mlcost] mlflow_tracking_uri`` (``AIRFLOW__MLCOST__MLFLOW_TRACKING_URI``). None means MLflow is
    not configured and nothing is logged there (the ledger still has every step).

    :param mlflow_conn_id: an Airflow connection to the tracking server (optional)
    :param tracking_uri: a tracking URI, used as it is (optional)
    """

    conn_name_attr = "mlflow_conn_id"
    default_conn_name = "mlflow_default"
    conn_type = "mlflow"
    hook_name = "MLflow (mlcost)"

    def __init__(self, mlflow_conn_id: str | None = None, tracking_uri: str | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.mlflow_conn_id = mlflow_conn_id
        self._tracking_uri = tracking_uri

    def get_conn(self) -> Any:
        """An ``MlflowClient`` on :meth:`tracking_uri`."""
        from mlflow.tracking import MlflowClient

        return MlflowClient(tracking_uri=self.tracking_uri())

    def tracking_uri(self) -> str | None:
        if self._tracking_uri:
            return self._tracking_uri
        if self.mlflow_conn_id:
            conn = self.get_connection(self.mlflow_conn_id)
            extra = conn.extra_dejson or {}
            if extra.get("tracking_uri"):
                return str(extra["tracking_uri"])
            host = conn.host or ""
            if "://" in host:
                return host
            scheme = conn.schema or "http"
            return f"{scheme}://{host}" + (f":{conn.port}" if conn.port else "")
        if os.environ.get(ENV_MLFLOW_TRACKING_URI):
            return os.environ[ENV_MLFLOW_TRACKING_URI]
        try:
            from airflow.sdk.configuration import conf

            value = conf.get(CONFIG_SECTION, "mlflow_tracking_uri", fallback=None)
        except Exception:  # a worker without that section: not configured
            value = None
        return value or None

    @staticmethod
    def experiment_name(experiment: str | None) -> str:
        """The experiment the step runs go to; the same rule as the meter's MLflow sink."""
        return experiment or os.environ.get("MLFLOW_EXPERIMENT_NAME") or DEFAULT_EXPERIMENT

    def dag_run_parent(self, run_key: str, *, experiment: str | None, run_name: str, tags: dict[str, str]) -> str:
        """The id of the MLflow run of the DAG run ``run_key``, created by the first task that asks.

        Two tasks starting at once may both create one. Each then picks the oldest it sees, and marks
        its own as a duplicate when that is another. A task can still pick differently from its peer
        (its search ran before the peer's create landed, a create stamped earlier on the peer's clock);
        :meth:`update_parent_totals` settles that as the tasks end.
        """
        from mlcost.sinks.mlflow_sink import DUPLICATE_OF, experiment_id_of

        client = self.get_conn()
        name = self.experiment_name(experiment)
        experiment_id = experiment_id_of(client, name)
        found = self._parents(client, experiment_id, run_key)
        if not found:
            created = client.create_run(
                experiment_id, run_name=run_name, tags={TAG_RUN_KEY: run_key, TAG_KIND: KIND_DAG_RUN, **tags}
            )
            found = self._parents(client, experiment_id, run_key)
            if found and found[0].info.run_id != created.info.run_id:
                client.set_tag(created.info.run_id, DUPLICATE_OF, found[0].info.run_id)
                client.set_terminated(created.info.run_id, status="KILLED")
            if not found:  # a store that does not see its own write yet
                _experiment_of_run[created.info.run_id] = experiment_id
                return created.info.run_id
        _experiment_of_run[found[0].info.run_id] = experiment_id
        return found[0].info.run_id

    def find_dag_run_parent(self, run_key: str, *, experiment: str | None) -> str | None:
        """The run id of the DAG run's parent run, without creating one (None: there is none)."""
        client = self.get_conn()
        exp = client.get_experiment_by_name(self.experiment_name(experiment))
        found = self._parents(client, exp.experiment_id, run_key) if exp else []
        if found:
            _experiment_of_run[found[0].info.run_id] = exp.experiment_id
        return found[0].info.run_id if found else None

    @staticmethod
    def _parents(client: Any, experiment_id: str, run_key: str) -> list[Any]:
        from mlcost.sinks.mlflow_sink import dag_run_parents

        return dag_run_parents(client, [experiment_id], run_key)

    def update_parent_totals(
        self,
        parent_run_id: str,
        run_key: str,
        *,
        final_status: str | None = None,
        tags: dict[str, str] | None = None,
    ) -> dict:
        """Sum the step runs of ``run_key`` onto the DAG run's parent run (``cost_usd``,
        ``idle_cost_usd``, ``gpu_hours``, ``energy_kwh``, ``steps``), with ``tags``, and end it with
        ``final_status`` when given; returns the sums.

        ``parent_run_id`` is the parent this task started under, but the sums go to the *settled* one:
        of every parent the DAG run has, the oldest (start time, then run id). Two tasks that each made
        a parent as they started may have picked different ones. Here every other parent is marked
        ``mlcost.duplicate_of`` the settled one and ended, and the step runs nested under it move to
        the settled one. Each task does this as it ends, after its own run is written, and the budget
        gate does it last, so the DAG run ends with one parent holding every step, whatever the
        interleaving. It costs no call more: the one search that finds the steps finds the parents.
        """
        from mlflow.entities import Metric, RunTag

        from mlcost import names
        from mlcost.sinks.mlflow_sink import DUPLICATE_OF, parent_order, tag_equals

        client = self.get_conn()
        # the parent's experiment, known when this process found the parent (one call fewer)
        experiment_id = _experiment_of_run.get(parent_run_id) or client.get_run(parent_run_id).info.experiment_id
        runs = client.search_runs([experiment_id], tag_equals(TAG_RUN_KEY, run_key), max_results=5000)
        parents = sorted((r for r in runs if r.data.tags.get(TAG_KIND) == KIND_DAG_RUN), key=parent_order)
        settled = parents[0].info.run_id if parents else parent_run_id
        for loser in parents[1:]:
            if loser.data.tags.get(DUPLICATE_OF) != settled:
                client.set_tag(loser.info.run_id, DUPLICATE_OF, settled)
            if loser.info.status == "RUNNING":
                client.set_terminated(loser.info.run_id, status="KILLED")
        losers = {p.info.run_id for p in parents[1:]}
        children = []
        for run in runs:
            nested_under = run.data.tags.get("mlflow.parentRunId")
            if nested_under in losers:
                client.set_tag(run.info.run_id, "mlflow.parentRunId", settled)
            if nested_under == settled or nested_under in losers:
                children.append(run)
        keys = (names.COST_USD, names.IDLE_COST_USD, names.GPU_HOURS, names.ENERGY_KWH)
        sums = {k: sum(float(r.data.metrics.get(k, 0.0)) for r in children) for k in keys}
        now = int(time.time() * 1000)
        metrics = [Metric(k, v, now, 0) for k, v in {**sums, "steps": float(len(children))}.items()]
        # one tracking-store call, not one per figure
        client.log_batch(settled, metrics=metrics, tags=[RunTag(k, v) for k, v in (tags or {}).items()])
        if final_status:
            client.set_terminated(settled, status=final_status)
        return sums
