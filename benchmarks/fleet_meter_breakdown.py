"""Where a metered task's added time goes, against a real MLflow server and a shared ledger on PostgreSQL.

    .venv/bin/python benchmarks/fleet_meter_breakdown.py [--steps 6] [--no-preload]

Starts only PostgreSQL and ``mlflow server`` from tests/fleet/deployment.py. Like a Celery worker,
this process imports ``mlcost.operators.celery_worker.PRELOAD`` (unless ``--no-preload``), then,
like Airflow's task supervisor, forks one process per step. Each child does what ``MeteredOperator``
does around a task's body and times each part: the meter's start, its end (ledger + MLflow write;
the DAG run's parent run and the step's own run are made on a thread while the body runs), the DAG
run's totals, and the CPU it used. The first step
also creates the experiment and the DAG run's parent run; the median of the others is what a task
pays. Modules a child still had to import are listed: each is time the preload could save.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from importlib import import_module
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "fleet"))
import deployment  # noqa: E402

PARTS = ("meter start", "meter end (ledger + MLflow)", "DAG run totals")


def one_step(i: int, url: str, preloaded: set[str]) -> dict:
    """One task's metered step, in this (forked) process."""
    from mlcost.operators.hooks.mlflow_runs import MlflowRunsHook

    from mlcost.metering import Meter

    run_key, t, cpu = "airflow:breakdown/run", {}, time.process_time()
    hook = MlflowRunsHook(tracking_uri=url)

    def parent() -> str:  # as MeteredOperator does: looked up on the meter's opener thread
        return hook.dag_run_parent(run_key, experiment=None, run_name="breakdown/run", tags={})

    m = Meter(f"step{i}", gpus=1, gpu_type="H100", interval=0.5, run_key=run_key, experiment="mlcost",
              mlflow_parent_run_id=parent, tracking_uri=url)  # fmt: skip
    t0 = time.perf_counter()
    m.__enter__()
    t[PARTS[0]] = time.perf_counter() - t0
    time.sleep(0.3)  # the body; the step's MLflow run is opened meanwhile
    t0 = time.perf_counter()
    m.__exit__(None, None, None)
    t[PARTS[1]] = time.perf_counter() - t0
    t0 = time.perf_counter()
    assert m.mlflow_parent_run_id is not None
    hook.update_parent_totals(m.mlflow_parent_run_id, run_key)
    t[PARTS[2]] = time.perf_counter() - t0
    t["cpu"] = time.process_time() - cpu
    t["imported"] = sorted(n for n in set(sys.modules) - preloaded if not n.startswith("_"))
    return t


def forked(fn, *args) -> dict:
    """``fn(*args)`` in a forked child, as Airflow runs a task; its JSON answer through a pipe."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        os.close(r)
        try:
            os.write(w, json.dumps(fn(*args)).encode())
        finally:
            os._exit(0)
    os.close(w)
    data = b""
    while chunk := os.read(r, 65536):
        data += chunk
    os.close(r)
    os.waitpid(pid, 0)
    return json.loads(data)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--no-preload", action="store_true", help="fork from a process that imported nothing")
    args = parser.parse_args()
    dep = deployment.Deployment(Path(tempfile.mkdtemp(prefix="mlcost-breakdown-")))
    rows: list[dict] = []
    try:
        dep._start_postgres()
        dep.start_mlflow()
        home = Path(tempfile.mkdtemp(prefix="mlcost-breakdown-home-"))
        (home / "mlcost.toml").write_text("")
        os.environ.update(dep.mlcost_env(home))
        if not args.no_preload:
            from mlcost.operators.celery_worker import PRELOAD

            for name in PRELOAD:
                import_module(name)
        preloaded = set(sys.modules)
        rows = [forked(one_step, i, dep.mlflow_url, preloaded) for i in range(args.steps)]
    finally:
        dep.stop()
    warm = rows[1:] or rows
    print(f"\n{len(rows)} steps, a forked process each ({'no preload' if args.no_preload else 'worker preload'});"
          " first and the median of the others, seconds:")  # fmt: skip
    for key in (*PARTS, "cpu"):
        print(f"  {key:30s} {rows[0][key]:7.3f} {statistics.median(r[key] for r in warm):7.3f}")
    total = statistics.median(sum(r[k] for k in PARTS) for r in warm)
    print(f"  {'total added per task':30s} {'':7s} {total:7.3f}")
    print(f"  modules a task still imported: {', '.join(warm[-1]['imported']) or 'none'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
