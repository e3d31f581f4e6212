"""How long reports and the gate take at scale (not a test; run by hand).

    .venv/bin/python benchmarks/report_scale.py [--rows 1000000] [--runs 10000] [--dir DIR]

1. chargeback + anomalies over a synthetic ledger of ``--rows`` sealed steps (target: under 5 s);
2. ``mlcost gate`` over ``--runs`` metered MLflow runs in a SQLite tracking store (target: under 30 s).

Building the data is not timed (the MLflow store takes a few minutes for 10,000 runs).
"""

from __future__ import annotations

import argparse
import json
import random
import sqlite3
import tempfile
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path


def build_ledger(path: Path, rows: int) -> None:
    from mlcost.sinks.ledger import COLUMNS, Ledger

    Ledger(path).rows("SELECT 1")  # creates the schema
    rng = random.Random(7)
    names = [f"step{i:03d}" for i in range(500)]
    teams, workloads = ["search", "ads", "vision", "nlp", "growth"], ["training", "inference", "evaluation", "data"]
    t0 = datetime(2025, 1, 1, tzinfo=timezone.utc)
    cols = [c for c in COLUMNS if c != "record"]
    batch, records = [], []
    device = {
        "uuid": "GPU-5e1f0000-aaaa-4bbb-8ccc-000000000000", "name": "NVIDIA H100 80GB HBM3", "gpu_type": "H100",
        "mig_profile": None, "seconds": 1800.0, "samples": 1800, "util_mean_pct": 71.3, "util_peak_pct": 99.0,
        "nvml_util_mean_pct": 96.2, "sm_active_mean_pct": 71.3, "tensor_active_mean_pct": 42.8, "mem_peak_gb": 71.2,
        "mem_total_gb": 79.6, "power_mean_w": 598.4, "power_peak_w": 688.1, "energy_kwh": 0.2992,
        "energy_method": "counter", "power_integrated_kwh": 0.2987, "idle_seconds": 92.5, "temperature_peak_c": 71.0,
        "sm_clock_mean_mhz": 1980.0, "lost_at_s": None,
    }  # fmt: skip
    host = {"cpu_mean_pct": 312.5, "cpu_peak_pct": 790.0, "rss_peak_gb": 31.4, "cpu_count": 64}
    with sqlite3.connect(path) as conn:
        conn.execute("PRAGMA synchronous=OFF")
        for i in range(rows):
            name = names[i % len(names)]
            gpus = 1 + (hash(name) % 4)
            hours = 0.5 * (1 + (i % 7) / 10)
            cost = gpus * hours * 12.29 * (5 if rng.random() < 0.001 else 1)
            idle = rng.random() * 0.5
            start = (t0 + timedelta(seconds=i * 30)).isoformat()
            values = {
                "step_id": f"b{i:08d}", "name": name, "status": "succeeded", "source": "meter", "started_at": start,
                "ended_at": start, "duration_s": hours * 3600, "gpus": gpus, "gpu_type": "H100", "pricing": "on_demand",
                "team": teams[i % 5], "project": f"p{i % 20}", "model": f"m{i % 50}", "workload": workloads[i % 4],
                "run_key": f"r{i // 4}", "total_usd": cost, "compute_usd": cost, "idle_usd": cost * idle,
                "energy_usd": 0.0, "energy_kwh": None, "spot_whatif_usd": cost * 0.26, "gpu_hours": gpus * hours,
                "util_mean_pct": 100 * (1 - idle), "mem_peak_gb": 40.0, "idle_fraction": idle,
                "host_cpu_mean_pct": 50.0, "telemetry": "simulated", "simulated": 1, "samples": 100,
            }  # fmt: skip
            # the full record as the meter writes it (per-device usage, host, tags, context): ~2 KB,
            # so the table is as wide on disk as a real ledger's
            values["record"] = json.dumps({
                **values, "devices": [{**device, "index": d} for d in range(gpus)], "host": host,
                "tags": {"team": values["team"], "project": values["project"], "model": values["model"]},
                "context": {"dag_id": "train_ranker", "task_id": name, "run_id": values["run_key"], "try_number": "1"},
                "degraded_reasons": [], "breach": None, "util_signal": "gpm_sm_activity", "energy_method": "counter",
            }, separators=(",", ":"))  # fmt: skip
            batch.append(tuple(values[c] for c in cols))
            records.append((values["step_id"], values["record"]))
            if len(batch) == 50000 or i == rows - 1:
                conn.executemany(f"INSERT INTO step_figures ({', '.join(cols)}) VALUES ({', '.join('?' * len(cols))})",
                                 batch)  # fmt: skip
                conn.executemany("INSERT INTO step_records (step_id, record) VALUES (?, ?)", records)
                batch.clear()
                records.clear()


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


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--rows", type=int, default=1_000_000)
    p.add_argument("--runs", type=int, default=10_000)
    p.add_argument("--dir", help="keep the generated data here (reused when present)")
    args = p.parse_args()
    root = Path(args.dir or tempfile.mkdtemp(prefix="mlcost-bench-"))
    root.mkdir(parents=True, exist_ok=True)

    from mlcost.reports import analysis as a
    from mlcost.sinks.ledger import Ledger

    ledger_file = root / f"ledger-{args.rows}.db"
    if not ledger_file.exists():
        t = time.perf_counter()
        build_ledger(ledger_file, args.rows)
        print(f"built a ledger of {args.rows:,} steps in {time.perf_counter() - t:.1f} s (not timed)")
    ledger = Ledger(ledger_file)
    t = time.perf_counter()
    cb = a.chargeback(ledger, a.Period(), by=("team",))
    t_cb = time.perf_counter() - t
    an = a.anomalies(ledger, a.Period())
    t_total = time.perf_counter() - t
    print(f"chargeback + anomalies over {args.rows:,} steps: {t_total:.2f} s "
          f"(chargeback {t_cb:.2f} s; {len(cb)} teams, {len(an)} anomalies)  target < 5 s")  # fmt: skip

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
