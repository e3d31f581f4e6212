"""A real ``airflow api-server`` with the mlcost plugin and the FAB auth manager, for the Cost
view's permission and browser tests: started once per session by PID, always stopped.

The home is throwaway (SQLite, its own AIRFLOW_HOME and ledger); the server runs in its own process
group so stopping it also stops its uvicorn workers. Readiness is polled on Airflow's health
endpoint with a deadline, never assumed after a sleep.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

pytest.importorskip("airflow.providers.fab", reason="the FAB provider (mlcost[fab]) gives per-DAG rules")

HERE = Path(__file__).parent
START_TIMEOUT_S = 240
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@dataclass
class Server:
    url: str
    home: Path
    ledger: Path
    log: Path
    passwords: dict[str, str]

    def token(self, user: str) -> dict[str, str]:
        import httpx

        r = httpx.post(f"{self.url}/auth/token", json={"username": user, "password": self.passwords[user]}, timeout=60)
        r.raise_for_status()
        return {"Authorization": f"Bearer {r.json()['access_token']}"}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def seed_ledger(path: Path, now: datetime) -> None:
    """Two weeks of simulated spend: two DAGs of two teams, a Kubeflow step of no DAG, and steps a
    guardrail refused. Dated from ``now`` so the default period (30 days) shows all of it."""
    from mlcost.sinks.ledger import Ledger
    from mlcost.step import StepCost

    ledger = Ledger(path)

    def step(i: str, day: int, dag: str | None, task: str, team: str, model: str, usd: float, idle: float, **kw):
        started = (now - timedelta(days=day, hours=1)).isoformat()
        run = f"scheduled__{(now - timedelta(days=day)).date()}"
        ledger.write(
            StepCost(
                step_id=i,
                name=task,
                status=kw.pop("status", "succeeded"),
                started_at=started,
                ended_at=started,
                tags={"team": team, "model": model, "workload": "training"},
                run_key=f"airflow:{dag}/{run}" if dag else f"kfp:nightly-embeddings/run-{day}",
                context={"dag_id": dag, "task_id": task, "run_id": run, "map_index": "-1"} if dag else {},
                total_usd=usd,
                idle_usd=idle,
                gpus=kw.pop("gpus", 4),
                gpu_type="H100",
                gpu_hours=usd / 6.98,
                simulated=True,
                telemetry="simulated",
                mlflow_run_id=f"run{i}",
                **kw,
            )
        )

    for day in range(14):
        step(f"a{day}", day, "team_a_train", "train", "search", "ranker", 40 + 9 * (day % 4), 8 + 5 * (day % 3))
        step(f"ae{day}", day, "team_a_train", "evaluate", "search", "ranker", 6, 0.5)
        step(f"b{day}", day, "team_b_train", "train", "ads", "ctr", 25 + 4 * (day % 3), 14 + 2 * (day % 2))
        if day % 2 == 0:
            step(f"k{day}", day, None, "embed", "ads", "embedder", 12, 7)
    step("ra", 1, "team_a_train", "train_xl", "search", "ranker", 0.0, 0.0, status="breached", gpus=16)
    step("rb", 3, "team_b_train", "train", "ads", "ctr", 0.0, 0.0, status="breached", gpus=12)
    step("la", 2, "team_a_train", "train", "search", "ranker", 21.0, 4.0, status="running")
    import sqlite3

    with sqlite3.connect(path) as conn:  # what SIGKILL leaves: its heartbeat stopped long ago, so it is lost
        conn.execute("UPDATE step_figures SET heartbeat_at = started_at WHERE step_id = 'la'")


POLICY = """
[[budgets.windows]]
team = "search"
period = "month"
usd = 1500
warn_at_pct = [80]

[[budgets.windows]]
team = "ads"
period = "week"
usd = 250
warn_at_pct = [50, 80]
"""


@pytest.fixture(scope="session")
def fab_server(tmp_path_factory) -> Server:
    home = tmp_path_factory.mktemp("airflow-fab")
    (home / "dags").mkdir()
    shutil.copy(HERE / "dags_two_teams.py", home / "dags" / "dags_two_teams.py")
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    ledger = home / "ledger.db"
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW", "MLCOST_"))},
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__CORE__DAGS_FOLDER": str(home / "dags"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{home / 'airflow.db'}",
        "AIRFLOW__CORE__AUTH_MANAGER": "airflow.providers.fab.auth_manager.fab_auth_manager.FabAuthManager",
        "AIRFLOW__API__BASE_URL": url,
        "AIRFLOW__API_AUTH__JWT_SECRET": "mlcost-test-secret",
        "AIRFLOW__LOGGING__LOGGING_LEVEL": "WARNING",
        "MLCOST_LEDGER": str(ledger),
        "MLFLOW_TRACKING_URI": "http://127.0.0.1:5000",  # only for the links to each step's run
        "MLCOST_POLICY": str(home / "mlcost.toml"),
    }
    (home / "mlcost.toml").write_text(POLICY)
    bin_dir = Path(sys.executable).parent
    setup = subprocess.run(
        [sys.executable, str(HERE / "fab_home.py")], env=env, capture_output=True, text=True, timeout=300
    )
    assert setup.returncode == 0 and "ready:" in setup.stdout, setup.stdout[-3000:] + setup.stderr[-3000:]
    seed_ledger(ledger, datetime.now(timezone.utc))
    log = home / "api-server.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [str(bin_dir / "airflow"), "api-server", "--host", "127.0.0.1", "--port", str(port), "--workers", "1"],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        _wait_ready(url, proc, log)
        yield Server(url, home, ledger, log, {"admin": "admin-pw", "alice": "alice-pw"})
    finally:
        _stop(proc)


def _wait_ready(url: str, proc: subprocess.Popen, log: Path) -> None:
    import httpx

    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"airflow api-server exited with {proc.returncode}:\n{log.read_text()[-4000:]}")
        try:
            if httpx.get(f"{url}/api/v2/monitor/health", timeout=5).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise AssertionError(f"airflow api-server not ready after {START_TIMEOUT_S} s:\n{log.read_text()[-4000:]}")


def _stop(proc: subprocess.Popen) -> None:
    """SIGTERM to the server's own process group (it and its workers), SIGKILL if it lingers."""
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=30)


def chromium_path() -> str | None:
    """Debian's chromium (``apt-get install -y chromium``; .ci/run installs it), or $MLCOST_CHROMIUM."""
    for candidate in (os.environ.get("MLCOST_CHROMIUM"), "chromium", "chromium-browser"):
        if candidate and (found := shutil.which(candidate)):
            return found
    return None


@pytest.fixture(scope="session")
def browser():
    sync_api = pytest.importorskip("playwright.sync_api", reason="the browser tests need playwright (mlcost[dev])")
    exe = chromium_path()
    if exe is None:
        pytest.skip("no chromium on this machine: `apt-get install -y chromium` (.ci/run does) or set MLCOST_CHROMIUM")
    with sync_api.sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=exe, args=FLAGS, headless=True)
        try:
            yield b
        finally:
            b.close()


@pytest.fixture(scope="session")
def screenshots(tmp_path_factory) -> Path:
    """Where the page's screenshots go: ``$MLCOST_SCREENSHOTS`` (docs/img to refresh the README's), else tmp."""
    target = os.environ.get("MLCOST_SCREENSHOTS")
    path = Path(target) if target else tmp_path_factory.mktemp("screenshots")
    path.mkdir(parents=True, exist_ok=True)
    return path
