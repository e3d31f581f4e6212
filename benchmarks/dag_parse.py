"""What a DAG file pays at parse time for mlcost's Airflow provider, next to ``airflow.sdk`` alone.

Airflow parses DAG files often and under a timeout, so the provider's imports must stay cheap.
Each figure is the median of fresh interpreter runs (imports are cached per process, so every run
is a new process); the time is measured inside the process around the import statements only.

    python benchmarks/dag_parse.py [--runs 7]

Target: under 50 ms over ``airflow.sdk`` for ``from mlcost.operators import ...`` and for the
``@task.metered`` lookup.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile

HEAVY = ("mlflow", "pandas", "great_expectations", "kfp", "pynvml", "fastapi")

CASES = {
    "airflow.sdk alone": ("import airflow.sdk", ""),
    "+ from mlcost.operators import MeteredOperator, BudgetGateOperator": (
        "import airflow.sdk",
        "from mlcost.operators import MeteredOperator, BudgetGateOperator",
    ),
    "+ @task.metered lookup (task.metered)": ("import airflow.sdk", "from airflow.sdk import task; task.metered"),
    "  (Airflow's own @task.bash lookup, for reference)": (
        "import airflow.sdk",
        "from airflow.sdk import task; task.bash",
    ),
}

CHILD = """
import sys, time, json
t0 = time.perf_counter()
{base}
t1 = time.perf_counter()
{extra}
t2 = time.perf_counter()
print(json.dumps({{"base_ms": (t1 - t0) * 1e3, "extra_ms": (t2 - t1) * 1e3,
                  "heavy": [m for m in {heavy!r} if m in sys.modules]}}))
"""


def measure(base: str, extra: str, runs: int, env: dict[str, str]) -> tuple[float, float, list[str]]:
    bases, extras, heavy = [], [], set()
    for _ in range(runs):
        code = CHILD.format(base=base, extra=extra or "pass", heavy=HEAVY)
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
        row = json.loads(out.stdout.strip().splitlines()[-1])
        bases.append(row["base_ms"])
        extras.append(row["extra_ms"])
        heavy.update(row["heavy"])
    return statistics.median(bases), statistics.median(extras), sorted(heavy)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=7)
    args = parser.parse_args()
    home = tempfile.mkdtemp(prefix="mlcost-parse-")
    env = {**os.environ, "AIRFLOW_HOME": home, "AIRFLOW__CORE__LOAD_EXAMPLES": "False"}
    subprocess.run([sys.executable, "-c", "import airflow.sdk"], env=env, check=True, capture_output=True)  # warm
    print(f"median of {args.runs} fresh interpreters each (python {sys.version.split()[0]})")
    print(f"{'case':<68} {'airflow.sdk ms':>15} {'extra ms':>9}  heavy modules loaded")
    worst = 0.0
    for name, (base, extra) in CASES.items():
        base_ms, extra_ms, heavy = measure(base, extra, args.runs, env)
        if "mlcost" in name or "metered" in name:
            worst = max(worst, extra_ms)
        print(f"{name:<68} {base_ms:>15.0f} {extra_ms:>9.1f}  {', '.join(heavy) or '-'}")
    verdict = "within" if worst < 50 else "OVER"
    print(f"mlcost adds at most {worst:.1f} ms over airflow.sdk: {verdict} the 50 ms target")
    return 0 if worst < 50 else 1


if __name__ == "__main__":
    raise SystemExit(main())
