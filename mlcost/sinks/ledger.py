"""Where the ledger used to live: kept so ``from mlcost.sinks.ledger import Ledger`` keeps working.
The ledger is :mod:`mlcost.ledger` now (a SQLite file or a shared database behind one store)."""

from __future__ import annotations

from typing import Any

from mlcost.ledger.book import Ledger, figures_row, ledger_path, open_ledger
from mlcost.ledger.target import default_path
from mlcost.step import StepCost

__all__ = ["COLUMNS", "DEFAULT_LEDGER", "FIGURES_TABLE", "Ledger", "ledger_path", "open_ledger"]

DEFAULT_LEDGER = default_path()
FIGURES_TABLE = "step_figures"  # every column but ``record``: what aggregations scan

# The columns of the one-table ledger of the first releases (figures and the JSON record), for
# tests that build such a file to check that it is migrated.
COLUMNS: dict[str, str] = {
    "step_id": "TEXT PRIMARY KEY", "name": "TEXT NOT NULL", "status": "TEXT NOT NULL",
    "source": "TEXT NOT NULL", "started_at": "TEXT NOT NULL", "ended_at": "TEXT", "duration_s": "REAL",
    "gpus": "INTEGER", "gpu_type": "TEXT", "pricing": "TEXT", "team": "TEXT", "project": "TEXT",
    "model": "TEXT", "workload": "TEXT", "run_key": "TEXT", "total_usd": "REAL", "compute_usd": "REAL",
    "idle_usd": "REAL", "energy_usd": "REAL", "energy_kwh": "REAL", "spot_whatif_usd": "REAL",
    "gpu_hours": "REAL", "util_mean_pct": "REAL", "mem_peak_gb": "REAL", "idle_fraction": "REAL",
    "host_cpu_mean_pct": "REAL", "telemetry": "TEXT", "simulated": "INTEGER", "samples": "INTEGER",
    "record": "TEXT NOT NULL",
}  # fmt: skip


def _row(step: StepCost) -> dict[str, Any]:
    """``step`` as a row of the one-table ledger of the first releases."""
    row, record = figures_row(step, "")
    return {**{k: v for k, v in row.items() if k in COLUMNS}, "record": record}
