"""Celery settings for Airflow workers that run metered tasks: the meter's imports, paid once per worker.

    AIRFLOW__CELERY__CELERY_CONFIG_OPTIONS=mlcost.operators.celery_worker.CELERY_CONFIG   # on workers

Airflow's Celery worker forks a process for every task, and what the worker imported before forking
costs that process nothing. Airflow preloads its own expensive modules that way (the provider's
``on_celery_import_modules``); this does the same for what a metered task imports on its way into
and out of its step: MLflow's client (~1.3 s on an idle core, far more on a busy one), SQLAlchemy and
psycopg for the shared ledger, and mlcost's meter. Without it each metered task pays those imports
again. The settings themselves are Airflow's defaults, unchanged.

Only a worker fires Celery's ``import_modules`` signal: a scheduler or API server that reads the same
setting imports nothing more. Never imported by ``mlcost.operators`` (DAG files stay cheap).
"""

from __future__ import annotations

import contextlib
import logging
from importlib import import_module
from typing import Any

from airflow.providers.celery.executors.default_celery import DEFAULT_CELERY_CONFIG
from celery.signals import import_modules

log = logging.getLogger(__name__)

CELERY_CONFIG = DEFAULT_CELERY_CONFIG
"""Airflow's own Celery settings (the same object, so the provider applies nothing twice)."""

PRELOAD = (
    "mlflow",
    "mlflow.tracking",
    "mlflow.entities",
    "sqlalchemy",
    "psycopg",
    "mlflow.tracking.request_header.registry",
    "pynvml",  # ~0.35 s on its own: it wraps every NVML function at import
    "mlcost.metering",
    "mlcost.telemetry.nvml",
    "mlcost.telemetry.simulated_nvml",
    "mlcost.telemetry.host",
    "mlcost.ledger.book",
    "mlcost.ledger.store",
    "mlcost.ledger.outbox",
    "mlcost.ledger.runtime",
    "mlcost.sinks.mlflow_sink",
    "mlcost.sinks.mlflow_open",
    "mlcost.sinks.mlflow_reach",
    "mlcost.step_alerts",
    "mlcost.windows",
    "mlcost.operators.metered",
    "mlcost.operators.hooks.mlflow_runs",
    "mlcost.operators.budget_gate",
)
"""Modules a metered task imports; one that is not installed is skipped."""


@import_modules.connect
def preload(*args: Any, **kwargs: Any) -> None:
    """Import :data:`PRELOAD` in the worker, before it forks its task processes."""
    for name in PRELOAD:
        with contextlib.suppress(ImportError):
            import_module(name)
    log.info("mlcost: preloaded the meter's modules in the Celery worker")
