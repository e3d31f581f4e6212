"""What a running step leaves behind while it runs, apart from its live checks: a ledger row every
:data:`CHECKPOINT_EVERY_S` (the usage a SIGKILLed step is billed by, and its heartbeat), and for a
long step an MLflow flush every :data:`MLFLOW_FLUSH_EVERY_S` on its own thread (a tracking server
may be slow; the sampler must not wait for it).

The checkpoints have their own thread, not the sampler's: a step sampled once every ten minutes
(``interval=600``) must still beat more often than the ledger's lost limit, or it would read as
``lost`` while it runs.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any

from mlcost.step import StepCost

log = logging.getLogger(__name__)

CHECKPOINT_EVERY_S = 30.0  # ledger refresh while running: what a SIGKILLed step leaves behind
MLFLOW_FLUSH_EVERY_S = 300.0  # periodic MLflow flush for long steps


class Checkpoints:
    """``running()`` makes the step's record so far; ``write`` puts it in the ledger; ``mlflow()``
    says where its MLflow run is (None: no MLflow for this step)."""

    def __init__(
        self,
        *,
        running: Callable[[], StepCost],
        write: Callable[[StepCost], None],
        mlflow: Callable[[], dict[str, Any] | None],
    ) -> None:
        self._running, self._write, self._mlflow = running, write, mlflow
        self._last_flush = 0.0
        self._flush: threading.Thread | None = None
        self._stopped = threading.Event()
        self._beat: threading.Thread | None = None

    def start(self, t: float) -> None:
        """From sampler clock ``t``: the checkpoints begin (every :data:`CHECKPOINT_EVERY_S`)."""
        self._last_flush = t
        self._beat = threading.Thread(target=self._beat_loop, name="mlcost-checkpoint", daemon=True)
        self._beat.start()

    def _beat_loop(self) -> None:
        while not self._stopped.wait(CHECKPOINT_EVERY_S):
            try:
                self._write(self._running())
            except Exception:  # the next beat tries again; the step never fails for a checkpoint
                log.exception("mlcost: a checkpoint of the running step could not be written")

    def stop(self, timeout_s: float) -> None:
        """No checkpoint after this (one in flight is waited for): the sealed row comes next."""
        self._stopped.set()
        if self._beat is not None and self._beat is not threading.current_thread():
            self._beat.join(timeout_s)

    def on_sample(self, now: float, *, ending: bool) -> None:
        """After each sample (sampler clock ``now``): the MLflow flush when one is due."""
        flushing = self._flush is not None and self._flush.is_alive()
        if ending or flushing or now - self._last_flush < MLFLOW_FLUSH_EVERY_S:
            return
        target = self._mlflow()
        if target is None:
            return
        self._last_flush = now
        from mlcost.sinks.mlflow_sink import flush_running

        self._flush = threading.Thread(
            target=flush_running, args=(self._running(),), kwargs=target, name="mlcost-mlflow-flush", daemon=True
        )
        self._flush.start()

    def join(self, timeout_s: float) -> None:
        """Wait for a flush in flight: its running figures must land before the step's final ones."""
        if self._flush is not None:
            self._flush.join(timeout_s)
