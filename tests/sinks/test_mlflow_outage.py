"""A tracking server that is down, refuses or hangs: every command fails fast and honestly, and
nothing is lost (issue 10, items 1-5). Servers here are real sockets: a closed port refuses, a
listening socket that never answers hangs; the stores that answer are real MLflow SQLite stores."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from mlcost import meter
from mlcost.sinks.ledger import Ledger
from mlcost.sinks.mlflow_reach import sink_key
from mlcost.sync import sync


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def hanging_server():
    """A TCP server that accepts connections and never answers (a wedged proxy or server)."""
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(64)
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        srv.settimeout(0.2)
        while not stop.is_set():
            try:
                conn, _ = srv.accept()
                held.append(conn)
            except OSError:
                continue

    t = threading.Thread(target=accept, daemon=True)
    t.start()
    yield f"http://127.0.0.1:{srv.getsockname()[1]}"
    stop.set()
    t.join(5)
    for c in held:
        c.close()
    srv.close()


def _mlcost(*args: str, cwd: Path, env: dict[str, str] | None = None, timeout: float = 120):
    full = {**os.environ, **(env or {})}
    started = time.monotonic()
    proc = subprocess.run([sys.executable, "-m", "mlcost.cli", *args], cwd=cwd, env=full, capture_output=True,
                          text=True, timeout=timeout)  # fmt: skip
    return proc, time.monotonic() - started


def _one_line_error(proc) -> str:
    assert "Traceback" not in proc.stderr and "Traceback" not in proc.stdout
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, proc.stderr
    return lines[0]


def _three_steps(uri: str, monkeypatch) -> list[str]:
    monkeypatch.setenv("MLCOST_GPU_BACKEND", "none")
    ids = []
    for i in range(3):
        with meter(f"step-{i}", gpus=1, gpu_type="T4", interval=0.02, tracking_uri=uri, mlflow_timeout_s=0.5) as m:
            pass
        ids.append(m.cost.step_id)
    return ids


# 1. gate and compare -------------------------------------------------------------------------------
@pytest.mark.parametrize("command", ["gate", "compare"])
def test_reading_a_refusing_server_is_one_line_and_exit_2_within_30s(command, tmp_path):
    uri = f"http://127.0.0.1:{_closed_port()}"
    proc, took = _mlcost(command, "--tracking-uri", uri, "--experiment", "x", cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr  # an outage is not "policy breached" (1)
    assert took < 30
    line = _one_line_error(proc)
    assert "unreachable" in line and "refused" in line and uri in line


@pytest.mark.parametrize("command", ["gate", "compare"])
def test_reading_a_hanging_server_is_exit_2_within_30s(command, tmp_path, hanging_server):
    proc, took = _mlcost(command, "--tracking-uri", hanging_server, "--experiment", "x", cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr
    assert took < 30
    assert "no HTTP answer" in _one_line_error(proc)


def test_the_gate_bounds_mlflow_retries_only_for_its_own_call(tmp_path, monkeypatch):
    """The retry cap is scoped: after the command the user's environment is as it was."""
    from mlcost.sinks.mlflow_reach import CLI_HTTP, bounded_http

    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "99")
    before = {k: os.environ.get(k) for k in CLI_HTTP}
    with bounded_http():
        assert os.environ["MLFLOW_HTTP_REQUEST_MAX_RETRIES"] == "1"
        assert os.environ["MLFLOW_HTTP_REQUEST_TIMEOUT"] == "99"  # the user's own setting wins
    assert {k: os.environ.get(k) for k in CLI_HTTP} == before


# 2. sync -------------------------------------------------------------------------------------------
def test_sync_against_a_refusing_server_gives_up_once_and_keeps_every_step(tmp_path, monkeypatch):
    uri = f"http://127.0.0.1:{_closed_port()}"
    ids = _three_steps(uri, monkeypatch)
    proc, took = _mlcost("sync", "--tracking-uri", uri, cwd=tmp_path)
    assert proc.returncode != 0 and took < 60
    line = _one_line_error(proc)
    assert "gave up" in line and "kept 3 steps" in line
    assert sorted(s.step_id for s in Ledger().unsynced(sink_key(uri))) == sorted(ids)


def test_sync_against_a_hanging_server_gives_up_within_60s(tmp_path, monkeypatch, hanging_server):
    ids = _three_steps(f"http://127.0.0.1:{_closed_port()}", monkeypatch)
    proc, took = _mlcost("sync", "--tracking-uri", hanging_server, cwd=tmp_path)
    assert proc.returncode != 0 and took < 60
    assert "gave up" in _one_line_error(proc)
    assert len(Ledger().unsynced(sink_key(hanging_server))) == len(ids)


def test_a_server_lost_mid_sync_ends_the_run_at_the_first_outage(tmp_path, monkeypatch):
    """Past the probe, the first step that finds no server stops the sync: the others are not
    each retried for minutes, and all of them are kept."""
    import mlcost.sync as sync_module

    uri = f"sqlite:///{tmp_path / 'm.db'}"
    _three_steps(f"http://127.0.0.1:{_closed_port()}", monkeypatch)
    calls = []

    def server_gone(*args, **kwargs):
        calls.append(1)
        raise RuntimeError("API request to http://x/api/2.0/mlflow/runs/create failed with exception "
                           "ConnectionError(Connection refused)")  # fmt: skip

    monkeypatch.setattr(sync_module, "log_step", server_gone)
    result = sync(Ledger(), tracking_uri=uri)
    assert len(calls) == 1 and result.unreachable and result.kept == 3 and not result.synced


def test_a_long_sync_shows_a_progress_bar_on_a_terminal(tmp_path, monkeypatch):
    _three_steps(f"http://127.0.0.1:{_closed_port()}", monkeypatch)
    uri = f"sqlite:///{tmp_path / 'm.db'}"
    tty = {"TTY_COMPATIBLE": "1", "TTY_INTERACTIVE": "1", "COLUMNS": "80", "NO_COLOR": "1"}
    proc, _ = _mlcost("sync", "--tracking-uri", uri, cwd=tmp_path, env=tty)
    assert proc.returncode == 0, proc.stderr
    out = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", proc.stdout)
    assert "syncing" in out and "3/3" in out and "Synced 3 steps" in out
    piped, _ = _mlcost("sync", "--tracking-uri", f"sqlite:///{tmp_path / 'other.db'}", cwd=tmp_path,
                       env={"TTY_COMPATIBLE": "0"})  # fmt: skip
    assert "syncing" not in piped.stdout and "Synced 3 steps" in piped.stdout


# 3. the meter's end --------------------------------------------------------------------------------
def test_a_meter_ends_within_2s_when_the_server_refuses_connections(monkeypatch):
    monkeypatch.setenv("MLCOST_GPU_BACKEND", "none")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"http://127.0.0.1:{_closed_port()}")
    m = meter("train", gpus=1, gpu_type="T4", interval=0.02)  # the default 15 s MLflow timeout
    with m:
        pass_started = time.monotonic()
    assert time.monotonic() - pass_started < 2
    assert m.cost.status == "succeeded" and m.cost.mlflow_run_id is None
    assert [s.step_id for s in Ledger().unsynced(sink_key(os.environ["MLFLOW_TRACKING_URI"]))] == [m.cost.step_id]


def test_a_meter_waits_out_its_timeout_only_for_a_hanging_server(monkeypatch, hanging_server):
    import mlflow  # noqa: F401  (imported here, not half-way on the sink's thread when the test ends)

    monkeypatch.setenv("MLCOST_GPU_BACKEND", "none")
    started = time.monotonic()
    with meter("train", gpus=1, gpu_type="T4", interval=0.02, tracking_uri=hanging_server, mlflow_timeout_s=1.5) as m:
        pass
    assert 1.4 <= time.monotonic() - started < 10
    assert m.cost.status == "succeeded"


# 4. no tracking URI; marks per server --------------------------------------------------------------
@pytest.mark.parametrize("command", [["sync"], ["compare", "--experiment", "x"], ["gate", "--experiment", "x"]])
def test_no_tracking_uri_is_an_error_and_creates_no_mlflow_db(command, tmp_path, monkeypatch):
    _three_steps(f"http://127.0.0.1:{_closed_port()}", monkeypatch)
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    proc = subprocess.run([sys.executable, "-m", "mlcost.cli", *command], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=120)  # fmt: skip
    assert proc.returncode == 2, proc.stderr
    assert "MLFLOW_TRACKING_URI" in _one_line_error(proc)
    assert not (tmp_path / "mlflow.db").exists() and not (tmp_path / "mlruns").exists()
    assert len(Ledger().unsynced(sink_key(f"sqlite:///{tmp_path / 'mlflow.db'}"))) == 3


def test_synced_marks_name_their_server_so_another_server_still_gets_everything(tmp_path, monkeypatch):
    ids = _three_steps(f"http://127.0.0.1:{_closed_port()}", monkeypatch)
    first, second = f"sqlite:///{tmp_path / 'a.db'}", f"sqlite:///{tmp_path / 'b.db'}"
    assert sorted(sync(Ledger(), tracking_uri=first).synced) == sorted(ids)
    assert sync(Ledger(), tracking_uri=first).synced == []
    assert sorted(sync(Ledger(), tracking_uri=second).synced) == sorted(ids)
    with Ledger().connect() as conn:
        sinks = {r[0] for r in conn.execute("SELECT DISTINCT sink FROM synced")}
    assert sinks == {sink_key(first), sink_key(second)} and all(s.startswith("mlflow:sqlite:///") for s in sinks)


def test_a_sink_key_never_carries_a_password():
    assert sink_key("https://me:s3cret@mlflow.example.com:8443/") == "mlflow:https://me@mlflow.example.com:8443"
    assert "s3cret" not in sink_key("http://:s3cret@h")


# 5. idempotency ------------------------------------------------------------------------------------
def _client(uri):
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=uri)


def test_case_a_a_failed_write_to_the_callers_run_is_synced_into_that_run(tmp_path, monkeypatch):
    import mlflow

    import mlcost.sinks.mlflow_sink as sink

    monkeypatch.setenv("MLCOST_GPU_BACKEND", "none")
    uri = f"sqlite:///{tmp_path / 'm.db'}"
    mlflow.set_tracking_uri(uri)

    def first_write_fails(*args, **kwargs):
        raise RuntimeError("the tracking server dropped the request")

    real_log_step = sink.log_step
    monkeypatch.setattr(sink, "log_step", first_write_fails)
    with mlflow.start_run() as run, meter("train", gpus=1, gpu_type="L4", interval=0.02) as m:
        pass
    monkeypatch.setattr(sink, "log_step", real_log_step)
    assert m.cost.mlflow_run_id == run.info.run_id  # the intended run, recorded before the try
    result = sync(Ledger(), tracking_uri=uri)
    assert result.synced == [m.cost.step_id], result
    assert "cost_usd" in _client(uri).get_run(run.info.run_id).data.metrics
    assert _client(uri).get_experiment_by_name("mlcost") is None  # no stray run elsewhere


def test_case_b_a_step_of_another_experiment_is_found_again_not_duplicated(tmp_path, monkeypatch):
    monkeypatch.setenv("MLCOST_GPU_BACKEND", "none")
    uri = f"sqlite:///{tmp_path / 'm.db'}"
    with meter("train", gpus=1, gpu_type="T4", interval=0.02, experiment="ranker", tracking_uri=uri) as m:
        pass
    ledger = Ledger()
    with ledger.connect() as conn:  # the mark is lost (a crash between the MLflow write and the note)
        conn.execute("DELETE FROM synced")
    assert sync(ledger, tracking_uri=uri).synced == [m.cost.step_id]
    client = _client(uri)
    runs = client.search_runs([e.experiment_id for e in client.search_experiments()])
    assert [r.data.tags["mlcost.step_id"] for r in runs] == [m.cost.step_id]
    assert len(client.get_metric_history(runs[0].info.run_id, "cost_usd")) == 1
