"""Where a metered task's added time goes, against a real MLflow server and a shared ledger on PostgreSQL.

    .venv/bin/python benchmarks/fleet_meter_breakdown.py [--steps 5]

Starts only PostgreSQL and ``mlflow server`` from tests/fleet/deployment.py, then does in one warm
process what ``MeteredOperator`` does around a task's body, timing each part: the DAG run's MLflow
parent lookup, building the meter, its start, its end (ledger + MLflow write) and the DAG run's
totals. The first step pays the imports and the experiment's creation; the median of the others is
what a task on a worker with preloaded modules (``mlcost.operators.celery_worker``) pays.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "fleet"))
import deployment  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=5)
    args = parser.parse_args()
    dep = deployment.Deployment(Path(tempfile.mkdtemp(prefix="mlcost-breakdown-")))
    rows: list[dict[str, float]] = []
    try:
        dep._start_postgres()
        dep.start_mlflow()
        home = Path(tempfile.mkdtemp(prefix="mlcost-breakdown-home-"))
        (home / "mlcost.toml").write_text("")
        os.environ.update(dep.mlcost_env(home))
        from mlcost.operators.hooks.mlflow_runs import MlflowRunsHook

        from mlcost.metering import Meter

        run_key = "airflow:breakdown/run"
        for i in range(args.steps):
            t: dict[str, float] = {}
            t0 = time.perf_counter()
            hook = MlflowRunsHook(tracking_uri=dep.mlflow_url)
            parent = hook.dag_run_parent(run_key, experiment=None, run_name="breakdown/run", tags={})
            t["parent lookup"] = time.perf_counter() - t0
            t0 = time.perf_counter()
            m = Meter(f"step{i}", gpus=1, gpu_type="H100", interval=0.5, run_key=run_key, experiment="mlcost",
                      mlflow_parent_run_id=parent, tracking_uri=dep.mlflow_url)  # fmt: skip
            t["meter built"] = time.perf_counter() - t0
            t0 = time.perf_counter()
            m.__enter__()
            t["meter start"] = time.perf_counter() - t0
            time.sleep(0.3)  # the body
            t0 = time.perf_counter()
            m.__exit__(None, None, None)
            t["meter end (ledger + MLflow)"] = time.perf_counter() - t0
            t0 = time.perf_counter()
            hook.update_parent_totals(parent, run_key)
            t["DAG run totals"] = time.perf_counter() - t0
            rows.append(t)
    finally:
        dep.stop()
    warm = rows[1:] or rows
    print(f"\n{len(rows)} steps; first (cold) and the median of the others (warm), seconds:")
    for key in rows[0]:
        print(f"  {key:30s} {rows[0][key]:7.3f} {statistics.median(r[key] for r in warm):7.3f}")
    total = statistics.median(sum(r.values()) for r in warm)
    print(f"  {'total added per task (warm)':30s} {'':7s} {total:7.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
