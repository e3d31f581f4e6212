"""What metering costs on a real two-worker Airflow deployment (not a test; run by hand).

    .venv/bin/python benchmarks/fleet_airflow.py [--tasks 20] [--rounds 2] [--seconds 0.5]

Brings up tests/fleet/deployment.py (PostgreSQL, Redis, an MLflow server on PostgreSQL, Airflow 3
with the CeleryExecutor and two workers), then runs two DAGs of ``--tasks`` tasks with the same body
(a ``--seconds`` wait), alternately, ``--rounds`` times each: one with ``@task.metered`` (simulated
GPU, shared ledger on PostgreSQL, MLflow on the server), one with plain ``@task``. Prints:

- the DAG run's wall time, metering on and off;
- what the meter adds per task: a task's duration in Airflow minus its body's, metered minus plain,
  quantile by quantile at the median, p90 and p95 (target: p95 under 0.5 s), and the stricter
  figure that subtracts the plain median from every metered task;
- the time from the DAG run's end until the Cost view API shows its whole cost (target: under 5 s);
- the peak number of ledger connections (``application_name = 'mlcost'``) and the shared ledger's
  bytes per step, for docs/deploy.md's sizing section.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import threading
import time
from datetime import datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "fleet"))
import deployment  # noqa: E402

DAG_FILE = '''
import time
from datetime import datetime

from airflow.sdk import DAG, task

SECONDS = {seconds}


def body() -> dict:
    start = time.time()
    time.sleep(SECONDS)
    return {{"body_s": time.time() - start}}


with DAG("fleet_bench_metered", schedule=None, start_date=datetime(2025, 1, 1), catchup=False, max_active_tasks=64):
    for i in range({tasks}):
        task.metered(task_id=f"t{{i:02d}}", gpus=1, gpu_type="H100", interval=0.5, queue=("w1", "w2")[i % 2],
                     tags={{"team": "bench", "model": "m", "workload": "training"}})(body)()

with DAG("fleet_bench_plain", schedule=None, start_date=datetime(2025, 1, 1), catchup=False, max_active_tasks=64):
    for i in range({tasks}):
        task(task_id=f"t{{i:02d}}", queue=("w1", "w2")[i % 2])(body)()
'''


def ts(value: str) -> float:
    return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def run_once(dep: deployment.Deployment, dag_id: str) -> dict:
    run_id = dep.trigger(dag_id)
    run = dep.wait_for_run(dag_id, run_id, timeout=600)
    seen_end = time.time()
    tis = dep.task_instances(dag_id, run_id)
    extra = []
    for task_id, ti in tis.items():
        if ti["state"] != "success":
            raise SystemExit(f"{dag_id}/{task_id} ended {ti['state']}:\n{dep.logs()}")
        body = dep.xcom(dag_id, run_id, task_id)["body_s"]
        extra.append(ts(ti["end_date"]) - ts(ti["start_date"]) - body)
    return {"run_id": run_id, "wall_s": ts(run["end_date"]) - ts(run["start_date"]), "extra": extra,
            "end": ts(run["end_date"]), "seen_end": seen_end}  # fmt: skip


def cost_visible_after(dep: deployment.Deployment, dag_id: str, run: dict, tasks: int) -> float | str:
    """Seconds from the run's end until the Cost view lists the run with all its steps."""
    from mlcost.operators.metered import run_key_for

    run_key = run_key_for(dag_id, run["run_id"])
    deadline = time.time() + 60
    last = None
    while time.time() < deadline:
        status, body = dep.api("GET", f"/mlcost/api/runs?dag_id={dag_id}&limit=20")
        last = (status, str(body)[:300])
        if status == 200:
            found = [r for r in body["runs"] if r["run_key"] == run_key]
            if found and found[0]["steps"] >= tasks and found[0]["total_usd"] > 0:
                return time.time() - run["end"]
        time.sleep(0.05)
    return f"not visible within 60 s (last answer: {last})"


class ConnectionPeak(threading.Thread):
    """Samples the number of mlcost's connections to the shared ledger every 0.1 s."""

    def __init__(self, url: str) -> None:
        super().__init__(daemon=True)
        self.url, self.peak, self._done = url, 0, threading.Event()

    def run(self) -> None:
        import psycopg

        with psycopg.connect(self.url, autocommit=True) as conn:
            while not self._done.wait(0.1):
                n = conn.execute("SELECT count(*) FROM pg_stat_activity WHERE application_name = 'mlcost'").fetchone()
                self.peak = max(self.peak, n[0])

    def stop(self) -> int:
        self._done.set()
        self.join(5)
        return self.peak


def ledger_bytes(url: str) -> tuple[int, int]:
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        size = conn.execute(
            "SELECT sum(pg_total_relation_size(c.oid)) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE n.nspname = 'public' AND c.relkind = 'r'"
        ).fetchone()[0]
        steps = conn.execute("SELECT count(*) FROM step_figures").fetchone()[0]
    return int(size or 0), int(steps)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--seconds", type=float, default=0.5)
    args = parser.parse_args()

    folder = Path(tempfile.mkdtemp(prefix="mlcost-bench-fleet-"))
    dag_file = folder / "fleet_bench.py"
    dag_file.write_text(DAG_FILE.format(tasks=args.tasks, seconds=args.seconds))
    dep = deployment.Deployment(folder / "deployment", dag_files=[dag_file])
    results: dict[str, list[dict]] = {"metered": [], "plain": []}
    visible: list[float | str] = []
    try:
        dep.start()
        print(f"deployment up: {json.dumps(dep.timings)}", flush=True)
        for dag_id in ("fleet_bench_metered", "fleet_bench_plain"):
            dep.wait_for_dag(dag_id)
        db = dep.db_url("mlcost").replace("+psycopg", "")
        # a warm-up run of each: first imports, first MLflow experiment and DAG-run parent
        run_once(dep, "fleet_bench_plain")
        run_once(dep, "fleet_bench_metered")
        size0, steps0 = ledger_bytes(db)
        peak = ConnectionPeak(dep.db_url("postgres").replace("+psycopg", ""))
        peak.start()
        for _ in range(args.rounds):
            for kind in ("plain", "metered"):
                run = run_once(dep, f"fleet_bench_{kind}")
                results[kind].append(run)
                if kind == "metered":
                    visible.append(cost_visible_after(dep, "fleet_bench_metered", run, args.tasks))
        connections = peak.stop()
        size1, steps1 = ledger_bytes(db)
    finally:
        dep.stop()
        print(f"deployment stopped, nothing left running: {json.dumps(dep.timings)}", flush=True)

    plain_extra = [x for r in results["plain"] for x in r["extra"]]
    metered_extra = [x for r in results["metered"] for x in r["extra"]]
    base = statistics.median(plain_extra)
    added = [x - base for x in metered_extra]
    print(f"\n{args.tasks} tasks of {args.seconds:g} s on 2 Celery workers (concurrency 2 each), {args.rounds} rounds")
    for kind in ("plain", "metered"):
        walls = ", ".join(f"{r['wall_s']:.1f}" for r in results[kind])
        print(f"  DAG run wall time, {'metering off (@task)' if kind == 'plain' else 'metering on (@task.metered)'}: "
              f"{walls} s (median {statistics.median(r['wall_s'] for r in results[kind]):.1f} s)")  # fmt: skip
    p95_plain = pct(plain_extra, 0.95)
    print(f"  task overhead in Airflow (duration - body), plain: median {base:.3f} s, p95 {p95_plain:.3f} s")
    # metered against plain quantile by quantile (the shift between the two distributions): what a
    # task at the median / p95 takes more with the meter than a task at the same rank without it
    shift = {q: pct(metered_extra, q) - pct(plain_extra, q) for q in (0.5, 0.9, 0.95)}
    print("  meter adds per task, metered minus plain quantile by quantile: "
          + ", ".join(f"p{round(q * 100)} {v:.3f} s" for q, v in shift.items())
          + f"  (target p95 < 0.5 s: {'met' if shift[0.95] < 0.5 else 'NOT met'})")  # fmt: skip
    print(f"  stricter, each metered task minus the plain median: median {statistics.median(added):.3f} s, "
          f"p95 {pct(added, 0.95):.3f} s (counts Airflow's own spread, {p95_plain - base:.3f} s at the p95 for "
          "plain tasks, against the meter)")  # fmt: skip
    print("  the slowest metered tasks (duration - body): "
          + ", ".join(f"{x:.2f}" for x in sorted(metered_extra)[-5:]) + " s")  # fmt: skip
    shown = [v for v in visible if isinstance(v, float)]
    for v in visible:
        if not isinstance(v, float):
            print(f"  Cost view: {v}")
    if shown:
        print(f"  cost visible in the Cost view API after the run ended: {', '.join(f'{v:.2f}' for v in shown)} s"
              f"  (target < 5 s: {'met' if max(shown) < 5 else 'NOT met'})")  # fmt: skip
    print(f"  peak ledger connections (application_name=mlcost): {connections}")
    if steps1 > steps0:
        print(f"  shared ledger growth: {(size1 - size0) / (steps1 - steps0):,.0f} bytes per step "
              f"({steps1 - steps0} steps, PostgreSQL tables and indexes)")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
