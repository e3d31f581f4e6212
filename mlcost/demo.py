"""``mlcost demo``: run the example DAG end to end on embedded defaults, then show what it cost.

A throwaway Airflow home on SQLite, the DAG ``dags/mlcost_demo.py`` run by ``dag.test()`` (Airflow's
real task runner, listeners and XCom), MLflow on a SQLite file, the ledger beside it, and a
simulated GPU, clearly labelled, when this machine has no NVIDIA driver. Airflow reads its home
once, on first import, so everything is set before Airflow is imported.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shlex
import shutil
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

DAG_ID = "mlcost_demo"
DAG_FILE = "mlcost_demo.py"


def demo_dag_file() -> Path:
    """The example DAG: ``dags/`` of the source checkout (``pip install -e``), else the copy a wheel
    installs under ``<prefix>/share/mlcost/dags``."""
    candidates = [
        Path(__file__).resolve().parent.parent / "dags" / DAG_FILE,
        Path(sys.prefix) / "share" / "mlcost" / "dags" / DAG_FILE,
    ]
    for path in candidates:
        if path.is_file():
            return path
    raise FileNotFoundError(f"the demo DAG {DAG_FILE} is not in {', '.join(map(str, candidates))}")


def command(name: str) -> str:
    """How to type ``name`` so that it runs this environment's copy: the bare name when PATH finds
    that copy, else its full path (a venv that was never activated is not on PATH)."""
    here = Path(sys.executable).parent / name
    found = shutil.which(name)
    if found and here.exists() and Path(found).resolve() == here.resolve():
        return name
    if here.exists():
        return shlex.quote(str(here))
    return f"{shlex.quote(sys.executable)} -m {'mlcost.cli' if name == 'mlcost' else name}"


def _nvml_available() -> bool:
    try:
        import pynvml

        pynvml.nvmlInit()
        count = pynvml.nvmlDeviceGetCount()
        pynvml.nvmlShutdown()
        return count > 0
    except Exception:
        return False


@contextlib.contextmanager
def output_to(log_path: str | Path) -> Iterator[None]:
    """Everything written to stdout/stderr goes to ``log_path`` while this is open, at the
    file-descriptor level: Airflow's loggers keep their own handle on stdout, and kfp.local's task
    subprocesses inherit the descriptors. The demo and the KFP example then show only their own
    lines (the outcome and the cost), with the logs in the file."""
    Path(log_path).parent.mkdir(parents=True, exist_ok=True)
    sys.stdout.flush()
    sys.stderr.flush()
    saved = os.dup(1), os.dup(2)
    with open(log_path, "ab") as log:
        os.dup2(log.fileno(), 1)
        os.dup2(log.fileno(), 2)
        try:
            yield
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            os.close(saved[0])
            os.close(saved[1])


def _parse(argv_args: Any) -> argparse.Namespace:
    if isinstance(argv_args, argparse.Namespace):
        return argv_args
    parser = argparse.ArgumentParser(prog="mlcost demo")
    parser.add_argument("--home", help="folder for the Airflow home, MLflow store and ledger (default: temp)")
    return parser.parse_args(list(argv_args or []))


def run_demo(argv_args: argparse.Namespace | Sequence[str] | None = None) -> int:
    """Run the demo; 0 when the DAG run succeeded, 1 when it failed, 2 when it could not start.

    Without the [all] extra it raises :class:`mlcost.errors.MissingExtra`, which the CLI prints (exit 2).
    """
    from rich.console import Console

    args = _parse(argv_args)
    console = Console()
    if not console.is_terminal and not os.environ.get("COLUMNS"):  # a pipe or a CI log: room for the table
        console = Console(width=130)
    home = Path(getattr(args, "home", None) or tempfile.mkdtemp(prefix="mlcost-demo-")).resolve()
    home.mkdir(parents=True, exist_ok=True)
    try:
        dag_file = demo_dag_file()
    except FileNotFoundError as e:
        console.print(f"[red]{e}[/red]")
        return 2
    from mlcost.extras import require_extra

    # looked up, never imported here: Airflow's home is not set yet. The DAG uses pandas and GX.
    require_extra("all", "airflow", "pandas", "great_expectations", what="mlcost demo")
    from mlcost.operators.local import AirflowHomeError, install_dag, prepare_home

    try:
        dags = prepare_home(home / "airflow")
    except AirflowHomeError as e:
        console.print(f"[red]{e}[/red]")
        return 2
    ledger_path = home / "ledger.db"
    mlflow_db = home / "mlflow.db"
    policy = home / "mlcost.toml"
    if not policy.exists():
        policy.write_text("# the demo's policy: no limits beyond the ones the DAG sets on its tasks\n")
    chosen = os.environ.get("MLCOST_GPU_BACKEND")  # the user's explicit choice wins over detection
    simulated = chosen == "simulated" if chosen else not _nvml_available()
    os.environ.update(
        {
            "MLCOST_LEDGER": str(ledger_path),
            "MLCOST_POLICY": str(policy),
            "MLFLOW_TRACKING_URI": f"sqlite:///{mlflow_db}",
            "MLFLOW_EXPERIMENT_NAME": "mlcost-demo",
        }
    )
    if simulated:
        os.environ["MLCOST_GPU_BACKEND"] = "simulated"
        os.environ.setdefault("MLCOST_SIM_TRACE", "bursty")
        why = "As chosen" if chosen else "No NVIDIA driver found"
        console.print(
            f"[bold yellow]{why}: the GPUs in this demo are SIMULATED "
            f"(MLCOST_GPU_BACKEND=simulated, trace {os.environ['MLCOST_SIM_TRACE']!r}). "
            "Prices and arithmetic are real.[/bold yellow]"
        )
    console.print(f"mlcost demo: Airflow home, MLflow store and ledger in [bold]{home}[/bold]")
    log_path = home / "demo.log"
    started = time.monotonic()
    with console.status("migrating the Airflow DB on SQLite and running the DAG with dag.test() ..."):
        try:
            with output_to(log_path):
                from mlcost.operators.local import run_dag

                result = run_dag(install_dag(dag_file, dags), DAG_ID, conf={"train_seconds": 3.0})
        except Exception as e:
            console.print(f"[red]the demo could not run: {type(e).__name__}: {e}[/red] (log: {log_path})")
            return 2
    _print_table(console, result, ledger_path, simulated)
    colour = "green" if result.state == "success" else "red"
    console.print(
        f"DAG run [{colour}]{result.state}[/{colour}] in {time.monotonic() - started:.0f} s (Airflow log: {log_path})"
    )
    # whole commands, never wrapped, naming this environment's executables when they are not on PATH
    console.print(f"MLflow:  {command('mlflow')} ui --backend-store-uri sqlite:///{mlflow_db}   "
                  "(experiment 'mlcost-demo')", soft_wrap=True, highlight=False)  # fmt: skip
    console.print(f"Reports: {command('mlcost')} report --ledger {shlex.quote(str(ledger_path))}", soft_wrap=True,
                  highlight=False)  # fmt: skip
    return 0 if result.state == "success" else 1


def _print_table(console: Any, result: Any, ledger_path: Path, simulated: bool) -> None:
    from mlcost.sinks.ledger import Ledger

    steps = {s.context.get("task_id", s.name): s for s in Ledger(ledger_path).steps(run_key=result.run_key)}
    order = sorted(result.tasks, key=lambda t: (steps[t].started_at if t in steps else "~", t))
    entries = [(t, result.tasks[t], steps.get(t)) for t in order]
    title = f"Cost of DAG run {result.dag_id}" + ("  [SIMULATED GPU]" if simulated else "")
    console.print(cost_table(title, entries, simulated=simulated, caption=f"run {result.run_id}"))


def print_run_costs(since: str, *, title: str, console: Any = None, ledger: str | None = None) -> float:
    """Print the metered steps recorded since ``since`` (ISO time) as the demo's cost table; returns
    their total. The examples (``pipelines/``) end with it instead of their runner's own log."""
    from rich.console import Console

    from mlcost.sinks.ledger import Ledger

    console = console or Console()
    steps = [s for s in Ledger(ledger).steps(since=since) if s.source == "meter"]
    simulated = any(s.simulated for s in steps)
    title += "  [SIMULATED GPU]" if simulated else ""
    console.print(cost_table(title, [(s.name, s.status, s) for s in steps], simulated=simulated))
    return sum(s.total_usd for s in steps)


def cost_table(title: str, entries: list[tuple[str, str, Any]], *, simulated: bool, caption: str | None = None) -> Any:
    """A run's cost, one row per ``(task, state, StepCost or None)``, readable at 80 columns: the task
    name (the key) is never cut; the telemetry is said once, in the title, unless a step's differs."""
    from rich import box
    from rich.table import Table

    usual = "simulated" if simulated else "nvml"
    table = Table(title=title, title_justify="left", box=box.SIMPLE_HEAD, show_edge=False, padding=(0, 1, 0, 0),
                  caption=caption, caption_justify="left")  # fmt: skip
    width = max([len("task"), *(len(e[0]) for e in entries)])
    table.add_column("task", no_wrap=True, min_width=width)
    for col in ("state", "GPUs", "GPU-h", "util", "idle", "cost", "idle $"):
        table.add_column(col, justify="left" if col in ("state", "GPUs") else "right", overflow="fold")
    total = idle = 0.0
    for task_id, state, s in entries:
        if s is None or s.source != "meter":
            table.add_row(task_id, state, "no GPU", "", "", "", "", "")
            continue
        total += s.total_usd
        idle += s.idle_usd
        gpus = f"{s.gpus}x {s.gpu_type or '?'}" + ("" if s.telemetry == usual else f" ({s.telemetry})")
        table.add_row(
            task_id,
            state,
            gpus,
            f"{s.gpu_hours:.4f}",
            "" if s.util_mean_pct is None else f"{s.util_mean_pct:.0f}%",
            "" if s.idle_fraction is None else f"{s.idle_fraction:.0%}",
            f"${s.total_usd:.4f}",
            f"${s.idle_usd:.4f}",
        )
    table.add_section()
    table.add_row("total", "", "", "", "", "", f"${total:.4f}", f"${idle:.4f}")
    return table
