"""A step's MLflow run, opened while the step runs.

A metered step used to make every MLflow call at its end: the DAG run's parent run, the experiment,
the run, then the figures. On a fleet that end is on the task's critical path, once per task. The
opener makes the run on a thread as the step starts, so those calls overlap the body, and the end
only writes the figures into it and ends it. The run shows as RUNNING in MLflow meanwhile, nested
where it belongs.

Best effort, like every MLflow write of the meter: a refused connection is known at once (a TCP
probe), and whatever fails here is done again at the step's end, or later by ``mlcost sync``.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from mlcost.step import StepCost

log = logging.getLogger(__name__)


class RunOpener:
    """Creates ``step``'s run on a daemon thread; ``parent()`` names the run to nest it under (it
    may itself ask the server: the DAG run's run)."""

    def __init__(
        self, step: StepCost, *, parent: Callable[[], str | None], experiment: str | None, tracking_uri: str | None
    ) -> None:
        self.run_id: str | None = None
        self.error: Exception | None = None
        self._thread = threading.Thread(
            target=self._open, args=(step, parent, experiment, tracking_uri), name="mlcost-mlflow-open", daemon=True
        )
        self._thread.start()

    def _open(
        self, step: StepCost, parent: Callable[[], str | None], experiment: str | None, tracking_uri: str | None
    ) -> None:
        from mlcost.sinks.mlflow_sink import create_step_run, reachable_uri

        try:
            reachable_uri(tracking_uri)
            from mlflow.tracking import MlflowClient

            client = MlflowClient(tracking_uri=tracking_uri)
            self.run_id = create_step_run(client, step, experiment=experiment, parent_run_id=parent())
        except Exception as e:  # the step's end tries again
            self.error = e
            log.debug("mlcost: the MLflow run of step %s was not opened at its start: %s", step.step_id, e)

    def wait(self, timeout_s: float) -> str | None:
        """The run's id once the thread is done (within ``timeout_s``); None when it failed or hangs."""
        self._thread.join(timeout_s)
        return self.run_id

    def discard(self, *, tracking_uri: str | None) -> None:
        """Delete the opened run (best effort): the step's cost went to another run."""
        if self.run_id is None:
            return
        try:
            from mlflow.tracking import MlflowClient

            MlflowClient(tracking_uri=tracking_uri).delete_run(self.run_id)
        except Exception as e:
            log.debug("mlcost: the unused MLflow run %s was not deleted: %s", self.run_id, e)
        self.run_id = None

    @property
    def hung(self) -> bool:
        """Still waiting for the server after :meth:`wait`: the step's end does not wait again."""
        return self._thread.is_alive()
