"""The light meter as a pod installs it: the built wheel, no extras, in a fresh venv.

The venv is built once per module (``python -m venv`` and pip with its own cache, as a pod would
with a warm cache). In it a metered step writes the ledger and logs to a real ``mlflow server``
over HTTP (started from this venv's MLflow, stopped by PID whatever happens), the reporting stack is
absent, and ``mlcost report`` names the extra to install.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

pytestmark = [pytest.mark.install, pytest.mark.timeout(900)]  # a cold pip cache downloads the core

REPO = Path(__file__).resolve().parents[1]
ABSENT = ("pandas", "matplotlib", "scipy", "scikit-learn", "flask", "mlflow")  # mlflow: the full one
INSTALL_TIMEOUT_S = 900


def _run(cmd: list[str], timeout: float, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False, **kwargs)


def build_wheel(out: Path) -> Path:
    """Build mlcost's wheel from the tracked files (a copy, so the checkout gets no build/ folder)."""
    src = out / "src"
    files = _run(["git", "ls-files", "-z"], 60, cwd=REPO)
    if files.returncode != 0:  # not a git checkout: copy the tree without local state
        shutil.copytree(REPO, src, ignore=shutil.ignore_patterns(".venv", ".git", "build", "dist", "*.egg-info"))
    else:
        for name in filter(None, files.stdout.split("\0")):
            if (REPO / name).is_file():
                (src / name).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(REPO / name, src / name)
    built = _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(out / "dist"), str(src)], 600)
    assert built.returncode == 0, built.stderr[-3000:]
    (wheel,) = (out / "dist").glob("mlcost-*.whl")
    return wheel


@pytest.fixture(scope="module")
def core_venv(tmp_path_factory) -> Path:
    """A fresh venv with the core wheel installed and nothing else; returns its bin folder."""
    root = tmp_path_factory.mktemp("light")
    wheel = build_wheel(root)
    venv = root / "venv"
    made = _run([sys.executable, "-m", "venv", str(venv)], 300)
    assert made.returncode == 0, made.stderr
    installed = _run([str(venv / "bin" / "python"), "-m", "pip", "install", "-q", str(wheel)], INSTALL_TIMEOUT_S)
    assert installed.returncode == 0, installed.stderr[-3000:]
    return venv / "bin"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def mlflow_server(tmp_path):
    """A real MLflow tracking server on loopback, started from this interpreter's MLflow (the full
    package, which the core venv does not have); stopped by its PID even when the test fails."""
    port = _free_port()
    log = open(tmp_path / "mlflow-server.log", "wb")  # noqa: SIM115 - closed in finally
    cmd = [sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(port),
           "--backend-store-uri", f"sqlite:///{tmp_path / 'server.db'}",
           "--default-artifact-root", str(tmp_path / "artifacts"), "--workers", "1"]  # fmt: skip
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    uri = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 180
        while True:  # a bounded wait for readiness, not a race: the test starts once /health answers
            try:
                with urllib.request.urlopen(f"{uri}/health", timeout=5) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"mlflow server did not start: {(tmp_path / 'mlflow-server.log').read_text()[-2000:]}")
            time.sleep(0.5)
        yield uri
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, 15)  # the server's own group: uvicorn workers go with it
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, 9)
                proc.wait(30)
        log.close()


def _env(tmp_path: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLCOST_", "MLFLOW_", "VIRTUAL_ENV"))}
    env.update(MLCOST_LEDGER=str(tmp_path / "ledger.db"), MLCOST_POLICY=str(tmp_path / "none.toml"),
               MLCOST_GPU_BACKEND="simulated", MLCOST_SIM_TRACE="busy", **extra)  # fmt: skip
    (tmp_path / "none.toml").write_text("")
    return env


STEP = """
import json, sys
from mlcost import meter
# a generous MLflow wait: importing MLflow's client on a busy 2-core machine can take 15 s
with meter("train", gpus=2, gpu_type="H100", tags={"team": "search"}, interval=0.05, mlflow_timeout_s=240,
           tracking_uri=sys.argv[1] if len(sys.argv) > 1 else None) as m:
    sum(range(10**5))
print(json.dumps({"step_id": m.cost.step_id, "usd": m.cost.total_usd,
                  "heavy": sorted(k for k in ("pandas", "matplotlib", "numpy", "sklearn", "flask")
                                  if k in sys.modules)}))
"""


VERSIONS = """
import importlib.metadata as m, json, sys
out = {}
for name in sys.argv[1:]:
    try:
        out[name] = m.version(name)
    except m.PackageNotFoundError:
        out[name] = None
print(json.dumps(out))
"""


def test_the_core_venv_has_no_reporting_stack(core_venv):
    probe = _run([str(core_venv / "python"), "-c", VERSIONS, *ABSENT, "mlflow-skinny", "sqlalchemy", "mlcost"], 120)
    found = json.loads(probe.stdout)
    assert {d: v for d, v in found.items() if d in ABSENT and v} == {}
    assert found["mlflow-skinny"] and found["sqlalchemy"] and found["mlcost"]


def test_a_metered_step_writes_the_ledger_and_logs_to_an_mlflow_server(core_venv, mlflow_server, tmp_path):
    done = _run([str(core_venv / "python"), "-c", STEP, mlflow_server], 300, env=_env(tmp_path))
    assert done.returncode == 0, done.stderr[-3000:]
    out = json.loads(done.stdout.strip().splitlines()[-1])
    assert out["heavy"] == []  # nothing of the reporting stack was imported on the way

    from mlflow.tracking import MlflowClient

    from mlcost.sinks.ledger import Ledger
    from mlcost.sinks.mlflow_reach import sink_key

    (step,) = Ledger(tmp_path / "ledger.db").steps()  # the ledger the core venv wrote, read here
    assert step.step_id == out["step_id"] and step.status == "succeeded" and step.gpus == 2
    assert Ledger(tmp_path / "ledger.db").unsynced(sink_key(mlflow_server)) == []  # the server acknowledged it
    client = MlflowClient(mlflow_server)
    (run,) = client.search_runs(
        [client.get_experiment_by_name("mlcost").experiment_id], f"tags.`mlcost.step_id` = '{step.step_id}'"
    )
    assert run.data.metrics["cost_usd"] == pytest.approx(out["usd"])
    assert run.data.tags["mlcost.team"] == "search" and run.info.status == "FINISHED"


def test_report_without_the_extra_names_it_and_exits_2(core_venv, tmp_path):
    step = _run([str(core_venv / "python"), "-c", STEP], 300, env=_env(tmp_path))
    assert step.returncode == 0, step.stderr[-3000:]
    ledger = ["--ledger", str(tmp_path / "ledger.db")]
    for command in (
        ["report", *ledger],
        ["export", "--focus", "-o", str(tmp_path / "focus.parquet"), *ledger],
        ["compare", "--experiment", "x"],
    ):
        done = _run([str(core_venv / "mlcost"), *command], 120, env=_env(tmp_path))
        assert done.returncode == 2, (command, done.stdout, done.stderr)
        assert f"mlcost {command[0]}: mlcost {command[0]} needs the [reports] extra" in done.stderr
        assert "pip install 'mlcost[reports]'" in done.stderr
        assert "Traceback" not in done.stderr + done.stdout
