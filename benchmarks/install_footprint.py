"""What a Kubeflow pod or an Airflow worker pays to install and import mlcost's meter.

A pod's GPUs sit allocated and idle while pip runs, so the core distribution is the meter alone and
everything else is an extra. One run measures, side by side on this machine:

1. pip install time, site-packages growth and distribution count, each in a fresh ``python -m venv``:
   the bare meter dependency set (pydantic, nvidia-ml-py, psutil, rich, pyyaml, SQLAlchemy,
   mlflow-skinny), the core *before* the light meter (the wheel built at ``--before``), the core
   now, and ``[all]`` now. Both wheels are built here from the source tree. pip's cache is warmed
   with ``pip download`` of every set first (untimed), so no row pays for the network.
2. import time (median of fresh interpreters) of ``import mlcost`` and of what a first metered step
   imports (the modules it loaded, imported again in a new process), before and now; plus the wall
   time of that first step and MLflow's client, which a step loads only when it logs to MLflow.
3. kfp.local ``SubprocessRunner(use_venv=True)``: each task runs in a new venv, as a pod starts from
   a bare image. The pod-start overhead of ``packages_to_install`` is a metered component's time
   minus a plain component's (kfp installs itself in both). ``mlcost==<version>`` resolves to the
   wheel built here: ``PIP_FIND_LINKS`` names its folder, and the task's pip inherits it.

    python benchmarks/install_footprint.py [--before REV] [--runs 5] [--skip-all] [--skip-kfp]

Targets: the core installs in under 30% of the time and site-packages size of the core before it;
a first metered step's imports take under 0.5 s.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from io import BytesIO
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
BEFORE = "d51f7eb1c4cadaba9c5ef682651ba907e5387820"  # main before the light meter (issue 14)
BARE = ["pydantic", "nvidia-ml-py", "psutil", "rich", "pyyaml", "sqlalchemy", "mlflow-skinny"]
HEAVY = ("pandas", "matplotlib", "numpy", "pyarrow", "sklearn", "scipy", "flask", "mlflow.server")


def sh(cmd: list[str], *, timeout: float = 1800, **kwargs) -> subprocess.CompletedProcess:
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False, **kwargs)
    if done.returncode != 0:
        raise SystemExit(f"failed ({done.returncode}): {' '.join(cmd)}\n{done.stdout[-2000:]}\n{done.stderr[-3000:]}")
    return done


# wheels -----------------------------------------------------------------------------------------
def build_wheel(source: Path, out: Path) -> Path:
    sh([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(out), str(source)])
    (wheel,) = out.glob("mlcost-*.whl")
    return wheel


def checkout(rev: str | None, dest: Path) -> Path:
    """The tracked files at ``rev`` (None: the working tree as it is) in ``dest``."""
    if rev is None:
        names = sh(["git", "ls-files", "-z"], cwd=REPO).stdout.split("\0")
        for name in filter(None, names):
            if (REPO / name).is_file():
                (dest / name).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(REPO / name, dest / name)
    else:
        archive = subprocess.run(["git", "archive", rev], cwd=REPO, capture_output=True, check=True).stdout
        with tarfile.open(fileobj=BytesIO(archive)) as tar:
            tar.extractall(dest, filter="data")
    return dest


# installs ---------------------------------------------------------------------------------------
def site_packages(venv: Path) -> Path:
    return next((venv / "lib").glob("python3*/site-packages"))


def footprint(venv: Path) -> tuple[int, int]:
    """(bytes of files, number of distributions) in the venv's site-packages."""
    root = site_packages(venv)
    size = sum(f.stat().st_size for f in root.rglob("*") if f.is_file() and not f.is_symlink())
    return size, len(list(root.glob("*.dist-info")))


def fresh_venv(path: Path) -> Path:
    shutil.rmtree(path, ignore_errors=True)
    sh([sys.executable, "-m", "venv", str(path)])
    return path


def install(venv: Path, specs: list[str], find_links: list[Path]) -> tuple[float, float]:
    """(wall seconds, CPU seconds) of pip installing ``specs``: CPU time is what the install itself
    costs; wall time also shows what other work on the machine took from it."""
    links = [arg for d in find_links for arg in ("--find-links", str(d))]
    cpu0 = _children_cpu()
    t0 = time.perf_counter()
    sh([str(venv / "bin" / "python"), "-m", "pip", "install", "-q", *links, *specs])
    return time.perf_counter() - t0, _children_cpu() - cpu0


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def warm_cache(specs: list[str], find_links: list[Path], scratch: Path) -> None:
    links = [arg for d in find_links for arg in ("--find-links", str(d))]
    sh([sys.executable, "-m", "pip", "download", "-q", "-d", str(scratch), *links, *specs])


# imports ----------------------------------------------------------------------------------------
STEP = """
from mlcost import meter
with meter("first", gpus=1, gpu_type="H100", interval=0.05):
    pass
"""
# a pod starts with no ledger: its first step creates one (schema included)
NEW_LEDGER = "import os, tempfile\nos.environ['MLCOST_LEDGER'] = tempfile.mktemp(suffix='.db')\n"

TIMED = """
import json, resource, sys, time
def cpu():
    usage = resource.getrusage(resource.RUSAGE_SELF)  # every thread of the process
    return usage.ru_utime + usage.ru_stime
before = set(sys.modules)
c0, t0 = cpu(), time.perf_counter()
exec(compile(sys.argv[1], "<timed>", "exec"))
t1, c1 = time.perf_counter(), cpu()
heavy = [h for h in json.loads(sys.argv[2]) if any(m == h or m.startswith(h + ".") for m in sys.modules)]
print(json.dumps({"s": t1 - t0, "cpu": c1 - c0, "heavy": heavy}))
"""

MARK = "--mlcost-step-starts--"
IMPORTTIME = f"""
import sys
sys.stderr.write("{MARK}\\n")
sys.stderr.flush()
exec(compile(sys.argv[1], "<step>", "exec"))
"""


def timed(python: Path, code: str, env: dict[str, str], runs: int, key: str = "s") -> tuple[tuple[float, float], dict]:
    """(median, best) wall seconds (``key="cpu"``: CPU seconds of all the process's threads, which
    other work on the machine barely changes) of ``code`` in ``runs`` fresh interpreters, and the
    last run's report."""
    times, last = [], {}
    for _ in range(runs):
        out = sh([str(python), "-c", TIMED, code, json.dumps(HEAVY)], env=env, timeout=300).stdout
        last = json.loads(out.strip().splitlines()[-1])
        times.append(last[key])
    return (statistics.median(times), min(times)), last


def import_seconds(python: Path, code: str, env: dict[str, str], runs: int) -> tuple[float, float]:
    """(median, best) seconds that ``code`` spends importing, from ``python -X importtime``: the cumulative
    time of every top-level import after ``code`` starts (nested ones are inside those)."""
    totals = []
    for _ in range(runs):
        err = sh([str(python), "-X", "importtime", "-c", IMPORTTIME, code], env=env, timeout=300).stderr
        total_us = 0
        for line in err.split(MARK, 1)[1].splitlines():
            parts = line.split("|")
            top_level = len(parts) == 3 and not parts[2].startswith("  ")  # nesting adds two spaces a level
            if line.startswith("import time:") and top_level and parts[1].strip().isdigit():
                total_us += int(parts[1])
        totals.append(total_us / 1e6)
    return statistics.median(totals), min(totals)


def import_times(venv: Path, env: dict[str, str], runs: int) -> dict[str, Any]:
    python = venv / "bin" / "python"
    out: dict[str, Any] = {}
    out["import mlcost"], _ = timed(python, "import mlcost", env, runs)
    out["first step (imports)"] = import_seconds(python, STEP, env, runs)
    out["first step (wall)"], report = timed(python, STEP, env, runs)
    out["first step (CPU)"], _ = timed(python, STEP, env, runs, key="cpu")
    out["  with a new ledger (imports)"] = import_seconds(python, NEW_LEDGER + STEP, env, runs)
    out["  with a new ledger (CPU)"], _ = timed(python, NEW_LEDGER + STEP, env, runs, key="cpu")
    out["heavy"] = report["heavy"]
    client = "from mlflow.tracking import MlflowClient\nfrom mlflow.entities import Metric, RunTag"
    out["+ MLflow client"], _ = timed(python, client, env, runs)
    return out


# kfp.local --------------------------------------------------------------------------------------
KFP_CHILD = """
import json, sys, time
import kfp.local
from kfp import dsl
from mlcost.components import metered_component

kfp.local.init(runner=kfp.local.SubprocessRunner(use_venv=True), pipeline_root=sys.argv[2])
kind = sys.argv[1]
if kind == "plain":
    @dsl.component(base_image="python:3.11")
    def step(x: int) -> int:
        return x + 1
elif kind == "metered":
    @metered_component(gpus=1, gpu_type="H100", interval=0.05, base_image="python:3.11")
    def step(x: int) -> int:
        return x + 1
else:  # the default before the light meter: unpinned
    @metered_component(gpus=1, gpu_type="H100", interval=0.05, base_image="python:3.11",
                       packages_to_install=["mlcost"])
    def step(x: int) -> int:
        return x + 1
t0 = time.perf_counter()
task = step(x=1)
assert (task.outputs["Output"] if len(task.outputs) > 1 else task.output) == 2  # metered: + mlcost_metrics
print(json.dumps({"s": time.perf_counter() - t0}))
"""


def kfp_task(kind: str, wheel_dir: Path, work: Path, env: dict[str, str]) -> float:
    script = work / f"kfp_{kind}.py"  # a file: kfp reads a component's source with inspect
    script.write_text(KFP_CHILD)
    env = {**env, "PIP_FIND_LINKS": str(wheel_dir), "PIP_DISABLE_PIP_VERSION_CHECK": "1"}
    out = sh([sys.executable, str(script), kind, str(work / f"root-{kind}")], env=env, cwd=work, timeout=1200)
    return json.loads(out.stdout.strip().splitlines()[-1])["s"]


# report -----------------------------------------------------------------------------------------
def mb(n: float) -> str:
    return f"{n / 1e6:,.0f} MB"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--before", default=BEFORE, help="git revision of the core to compare with")
    parser.add_argument("--runs", type=int, default=7, help="fresh interpreters per import figure")
    parser.add_argument("--skip-all", action="store_true", help="do not install [all] (the slowest row)")
    parser.add_argument("--skip-kfp", action="store_true", help="do not run the kfp.local tasks")
    parser.add_argument("--work", help="folder for wheels and venvs (default: a temp folder, removed)")
    args = parser.parse_args()
    work = Path(args.work or tempfile.mkdtemp(prefix="mlcost-footprint-")).resolve()
    work.mkdir(parents=True, exist_ok=True)
    try:
        return run(args, work)
    finally:
        if not args.work:
            shutil.rmtree(work, ignore_errors=True)


def run(args: argparse.Namespace, work: Path) -> int:
    print(f"python {sys.version.split()[0]}, {os.cpu_count()} CPUs; pip cache warmed first; work in {work}")
    now_dir, before_dir = work / "wheel-now", work / "wheel-before"
    now = build_wheel(checkout(None, work / "src-now"), now_dir)
    before = build_wheel(checkout(args.before, work / "src-before"), before_dir)
    sets = {
        "bare meter deps": (BARE, []),
        f"core before ({args.before[:7]})": ([str(before)], [before_dir]),
        "core now": ([str(now)], [now_dir]),
    }
    if not args.skip_all:
        sets["[all] now"] = ([f"{now}[all]"], [now_dir])
    for specs, links in sets.values():
        warm_cache(specs, links, work / "download")
    empty_size, empty_dists = footprint(fresh_venv(work / "venv-empty"))

    print(f"\n{'install into a fresh venv':<26} {'wall s':>7} {'CPU s':>7} {'site-packages':>14} {'dists':>6}")
    rows: dict[str, tuple[float, float, int]] = {}
    for i, (name, (specs, links)) in enumerate(sets.items()):
        venv = fresh_venv(work / f"venv-{i}")
        seconds, cpu = install(venv, specs, links)
        size, dists = footprint(venv)
        rows[name] = (seconds, cpu, size - empty_size)
        print(f"{name:<26} {seconds:>7.1f} {cpu:>7.1f} {mb(size - empty_size):>14} {dists - empty_dists:>6}")
    venvs = {name: work / f"venv-{i}" for i, name in enumerate(sets)}

    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLCOST_", "MLFLOW_"))}
    (work / "none.toml").write_text("")
    env.update(MLCOST_GPU_BACKEND="simulated", MLCOST_LEDGER=str(work / "ledger.db"),
               MLCOST_POLICY=str(work / "none.toml"))  # fmt: skip
    print(f"\nimport, seconds in {args.runs} fresh interpreters (load average {os.getloadavg()[0]:.1f})")
    print(f"{'':<30} {'before: median':>15} {'best':>7}   {'now: median':>11} {'best':>7}")
    old = import_times(venvs[f"core before ({args.before[:7]})"], env, args.runs)
    new = import_times(venvs["core now"], env, args.runs)
    for key in [k for k in new if k != "heavy"]:
        print(f"{key:<30} {old[key][0]:>7.3f} {old[key][1]:>7.3f}   {new[key][0]:>7.3f} {new[key][1]:>7.3f}")
    for label, figures in (("before", old), ("now", new)):
        print(f"heavy modules a first step loads, {label}: {', '.join(figures['heavy']) or 'none'}")

    if not args.skip_kfp:
        print("\nkfp.local SubprocessRunner(use_venv=True), one task, seconds:")
        plain = kfp_task("plain", now_dir, work, env)
        metered = kfp_task("metered", now_dir, work, env)
        print(f"{'plain @dsl.component (kfp only)':<44} {plain:>8.1f}")
        print(f"{'metered, default mlcost==<version> (now)':<44} {metered:>8.1f}  overhead {metered - plain:>5.1f}")
        unpinned = kfp_task("before", before_dir, work, env)
        print(f"{'metered, unpinned mlcost (the core before)':<44} {unpinned:>8.1f}  overhead {unpinned - plain:>5.1f}")

    t_before, c_before, s_before = rows[f"core before ({args.before[:7]})"]
    t_now, c_now, s_now = rows["core now"]
    ok_time, ok_size = t_now < 0.3 * t_before, s_now < 0.3 * s_before
    ok_import = max(new["first step (CPU)"][1], new["  with a new ledger (CPU)"][1]) < 0.5
    print(f"\ncore install time {t_now / t_before:.0%} of before, CPU {c_now / c_before:.0%} (target < 30%): "
          f"{'met' if ok_time else 'NOT MET'}")  # fmt: skip
    print(f"core site-packages {s_now / s_before:.0%} of before (target < 30%): {'met' if ok_size else 'NOT MET'}")
    for label, suffix in (("an existing", "first step"), ("a new", "  with a new ledger")):
        imports, cpu = new[f"{suffix} (imports)"][1], new[f"{suffix} (CPU)"][1]
        print(f"a first metered step on {label} ledger, imports included, takes {cpu:.3f} s of CPU (imports "
              f"{imports:.3f} s wall), best of {args.runs} (target: imports < 0.5 s)")  # fmt: skip
    print(f"import target: {'met' if ok_import else 'NOT MET'}")
    return 0 if ok_time and ok_size and ok_import else 1


if __name__ == "__main__":
    raise SystemExit(main())
