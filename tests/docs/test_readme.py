"""The README's examples run as written, on the simulated GPU, from a fresh checkout's folder.

- Python blocks run in order in one fresh interpreter (a later block may use an earlier block's
  import), in the repository's root, so the example ``mlcost.toml`` there is the policy in force as it
  is for a newcomer. The one name a block leaves to the reader, ``train()`` (your training loop), is
  defined first as a no-op.
- TOML blocks are loaded as what they are: the policy file, the price catalog.
- The shell block's commands run as printed, but for the environment set-up (``python3 -m venv``,
  ``pip install``) this test runs in already, and ``pytest``, which is what runs this test. The demo
  runs in an 80-column terminal with its venv not on PATH, and the follow-up commands it prints are run
  exactly as printed.
"""

from __future__ import annotations

import os
import re
import shlex
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
README = (ROOT / "README.md").read_text()
# (language, body) of each fenced block, but those marked `<!-- not run ... -->` on the line before
# (they need a PostgreSQL server, a GPU, a cluster): the mark says why, where a reader sees it
BLOCKS = [(lang, body) for mark, lang, body in
          re.findall(r"^(<!-- not run[^\n]*-->\n)?```(\w*)\n(.*?)^```", README, re.S | re.M) if not mark]  # fmt: skip
SETUP = ("python3 -m venv", "pip install")
SKIPPED = (*SETUP, "pytest")


def _blocks(kind: str) -> list[str]:
    return [body for lang, body in BLOCKS if lang == kind]


def _env(tmp_path: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLCOST_", "MLFLOW_", "AIRFLOW"))}
    env.update(MLCOST_GPU_BACKEND="simulated", MLCOST_SIM_DEVICES="2", MLCOST_LEDGER=str(tmp_path / "ledger.db"),
               AIRFLOW_HOME=str(tmp_path / "airflow"), COLUMNS="80", NO_COLOR="1", **extra)  # fmt: skip
    return env


def test_the_python_examples_run_as_written(tmp_path):
    python = _blocks("python")
    assert len(python) >= 3
    script = "def train(*args, **kwargs):  # your training loop\n    pass\n\n" + "\n\n".join(python)
    path = tmp_path / "readme_examples.py"  # a file: kfp builds a component from its function's source
    path.write_text(script)
    out = subprocess.run([sys.executable, str(path)], cwd=ROOT, env=_env(tmp_path), capture_output=True,
                         text=True, timeout=300)  # fmt: skip
    assert out.returncode == 0, out.stderr[-4000:]
    assert "PreflightRefused" not in out.stderr and "Traceback" not in out.stderr
    total, idle, gpu_hours = (float(x) for x in out.stdout.split()[:3])  # print(m.cost.total_usd, ...)
    assert total > 0 and gpu_hours > 0 and idle >= 0


def test_the_toml_examples_load(tmp_path):
    from mlcost.policy import Policy
    from mlcost.pricing.catalog import PriceCatalog

    blocks = _blocks("toml")
    prices = [b for b in blocks if "[gpus." in b or "[energy]" in b]
    policies = [b for b in blocks if b not in prices]
    assert prices and policies
    for i, block in enumerate(policies):  # the policy file, and the tables documented further down
        (tmp_path / f"policy{i}.toml").write_text(block)
        Policy.load(tmp_path / f"policy{i}.toml")
    first = Policy.load(tmp_path / "policy0.toml")
    assert first.budgets.job_usd == 50 and first.budgets.max_duration == 6 * 3600
    for i, block in enumerate(prices):
        (tmp_path / f"prices{i}.toml").write_text(block)
        PriceCatalog.load(tmp_path / f"prices{i}.toml")


def test_the_repository_has_the_example_policy_the_docs_use(tmp_path):
    from mlcost.policy import Policy

    example = ROOT / "mlcost.toml"
    assert example.is_file()
    policy_block = _blocks("toml")[0]
    assert policy_block in example.read_text()  # the README's policy, verbatim
    assert Policy.load(example).cluster.max_gpus == 8
    # the command the docs suggest for a compiled pipeline, as written, from the repository's root
    yaml = tmp_path / "pipeline.yaml"
    compiled = subprocess.run([sys.executable, "pipelines/training_pipeline.py", "compile", str(yaml)], cwd=ROOT,
                              env=_env(tmp_path), capture_output=True, text=True, timeout=300)  # fmt: skip
    assert compiled.returncode == 0, compiled.stderr
    gate = subprocess.run([sys.executable, "-m", "mlcost.cli", "gate", "--pipeline", str(yaml), "--policy",
                           "mlcost.toml"], cwd=ROOT, env=_env(tmp_path), capture_output=True, text=True,
                          timeout=300)  # fmt: skip
    assert gate.returncode in (0, 1), gate.stderr  # a verdict, not "bad input"
    assert "Traceback" not in gate.stderr


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _bin_not_on_path() -> str:
    here = str(Path(sys.executable).parent)
    return os.pathsep.join(p for p in os.environ.get("PATH", "").split(os.pathsep) if p and p != here)


def test_the_shell_example_runs_and_the_demo_hints_work_as_printed(tmp_path):
    commands = [c.strip() for bash in _blocks("bash") for line in bash.splitlines()
                if line.strip() and not line.startswith("#") for c in line.split("&&")]  # fmt: skip
    to_run = [c for c in commands if not any(c.startswith(s) or s in c for s in SKIPPED)]
    assert to_run == [".venv/bin/mlcost demo", ".venv/bin/ruff check ."]
    venv_bin = Path(sys.executable).parent
    env = _env(tmp_path, PATH=_bin_not_on_path(), HOME=str(tmp_path))
    env.pop("MLCOST_GPU_BACKEND")  # the demo chooses (no driver here: simulated, and says so)
    for command in to_run:
        argv = shlex.split(command)
        argv[0] = str(venv_bin / Path(argv[0]).name)  # this environment's .venv/bin
        if argv[-1] == "demo":
            argv += ["--home", str(tmp_path / "demo")]  # the same run, in a folder the test removes
        out = subprocess.run(argv, cwd=ROOT, env=env, capture_output=True, text=True, timeout=400)
        assert out.returncode == 0, command + "\n" + out.stdout[-3000:] + out.stderr[-3000:]
        if argv[1] == "demo":
            demo = out.stdout
    # the demo's table fits 80 columns and never cuts a task name
    lines = demo.splitlines()
    table = lines[lines.index(next(line for line in lines if line.startswith("Cost of DAG run"))):]
    table = table[: next(i for i, line in enumerate(table) if line.startswith("DAG run "))]
    assert max(len(line) for line in table) <= 80, table
    for task_id in ("validate_training_data", "train_small", "train_large", "evaluate", "budget_gate"):
        assert any(line.startswith(task_id + " ") for line in table), task_id
    # its hints: one line each, runnable as printed from a shell whose PATH lacks the venv
    reports = next(line for line in lines if line.startswith("Reports: "))[len("Reports: "):]
    assert reports.startswith(str(venv_bin / "mlcost") + " report --ledger ")
    out = subprocess.run(reports, shell=True, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0 and "Chargeback by team" in out.stdout, out.stderr
    mlflow_hint = next(line for line in lines if line.startswith("MLflow: "))
    command = mlflow_hint[len("MLflow: "):].split("   (")[0].strip()
    assert command.startswith(str(venv_bin / "mlflow") + " ui --backend-store-uri sqlite:///")
    port = _free_port()
    server = subprocess.Popen(f"{command} --port {port}", shell=True, cwd=tmp_path, env=env, start_new_session=True,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    try:
        # listening is the proof that the printed command runs (its executable, arguments and store);
        # the UI's workers can take minutes more to boot on a loaded machine
        deadline, listening = time.monotonic() + 120, False
        while time.monotonic() < deadline and not listening:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=2).close()
                listening = True
            except OSError:
                if server.poll() is not None:
                    pytest.fail(f"`{command}` exited with {server.returncode}")
                time.sleep(0.5)
        assert listening, f"`{command}` did not listen within 120 s"
    finally:
        os.killpg(server.pid, 15)
        server.wait(30)
