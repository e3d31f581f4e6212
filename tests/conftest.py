"""Shared fixtures: every test gets its own ledger and an empty policy, and nothing from the
developer's shell (tracking URI, CI variables, a GPU backend choice) leaks in.

Except into the ``gpu`` suite: ``MLCOST_GPU_BACKEND=nvml pytest -m gpu`` runs the tests marked
``gpu`` against the NVML that the shell names (a real driver, or the stand-in on LD_LIBRARY_PATH),
with the shell's ``CUDA_VISIBLE_DEVICES``; without an explicit backend they skip.
"""

from __future__ import annotations

import os
import sys

import pytest

# tests/pg_server.py: the session's real PostgreSQL (pg_server, pg_url); tests/webhook.py: a loopback webhook
pytest_plugins = ("pg_server", "webhook")

_LEAKY = (
    "MLFLOW_TRACKING_URI",
    "MLFLOW_EXPERIMENT_NAME",
    "MLFLOW_RUN_ID",
    "MLCOST_GPU_BACKEND",
    "MLCOST_SIM_TRACE",
    "MLCOST_SIM_GPU",
    "MLCOST_SIM_DEVICES",
    "MLCOST_PRICES",
    "CUDA_VISIBLE_DEVICES",
    "GITHUB_SHA",
    "GITHUB_REF_NAME",
    "GITHUB_HEAD_REF",
    "GITHUB_RUN_ID",
    "GITHUB_STEP_SUMMARY",
    # the ledger's outbox and limits (mlcost.ledger): a test's outbox is in its own folder
    "MLCOST_OUTBOX",
    "MLCOST_LOST_AFTER_S",
    "MLCOST_LEDGER_WAIT_S",
    # a launcher's job identity (mlcost.jobs): a test run under SLURM or torchrun is not a job's node
    "MLCOST_JOB_ID",
    "MLCOST_NODE_RANK",
    "MLCOST_NODES",
    "TORCHELASTIC_RUN_ID",
    "GROUP_RANK",
    "LOCAL_RANK",
    "SLURM_JOB_ID",
    "SLURM_NODEID",
    "SLURM_NNODES",
    "SLURM_LOCALID",
    "PET_NNODES",
    "PET_NODE_RANK",
)


_GPU_SUITE_KEEPS = ("MLCOST_GPU_BACKEND", "CUDA_VISIBLE_DEVICES")


def pytest_configure(config):
    config.addinivalue_line("markers", "gpu: runs against the GPU backend the shell names (MLCOST_GPU_BACKEND=nvml)")


@pytest.fixture(autouse=True)
def isolated_mlcost(request, tmp_path_factory, monkeypatch):
    home = tmp_path_factory.mktemp("mlcost")
    explicit = request.node.get_closest_marker("gpu") is not None and os.environ.get("MLCOST_GPU_BACKEND")
    for name in _LEAKY:
        if not (explicit and name in _GPU_SUITE_KEEPS):
            monkeypatch.delenv(name, raising=False)
    for name in list(os.environ):
        if name.startswith("MLCOST_") and "__" in name:
            monkeypatch.delenv(name)
    policy = home / "empty-policy.toml"
    policy.write_text("")
    monkeypatch.setenv("MLCOST_POLICY", str(policy))
    monkeypatch.setenv("MLCOST_LEDGER", str(home / "ledger.db"))
    yield home
    mlflow = sys.modules.get("mlflow")
    if mlflow is not None:  # a test's mlflow.set_tracking_uri() must not leak into the next test
        while mlflow.active_run() is not None:
            mlflow.end_run()
        mlflow.set_tracking_uri(None)


@pytest.fixture
def mlflow_uri(tmp_path, monkeypatch):
    """A real MLflow tracking store on a SQLite file, set as the tracking URI. Its schema is made
    here, so a meter's first write does not race its MLflow timeout on a loaded machine."""
    from mlflow.tracking import MlflowClient

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    MlflowClient(tracking_uri=uri).search_experiments()
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    return uri


@pytest.fixture
def simulated_gpu(monkeypatch):
    """Select the simulated NVML; returns a setter for the trace, GPU type and device count."""

    def use(trace: str = "busy", gpu: str = "H100", devices: int = 1) -> None:
        monkeypatch.setenv("MLCOST_GPU_BACKEND", "simulated")
        monkeypatch.setenv("MLCOST_SIM_TRACE", str(trace))
        monkeypatch.setenv("MLCOST_SIM_GPU", gpu)
        monkeypatch.setenv("MLCOST_SIM_DEVICES", str(devices))

    use()
    return use


@pytest.fixture
def no_nvidia_driver():
    """For tests of what happens without NVML: skipped on a machine where a driver loads."""
    pynvml = pytest.importorskip("pynvml")
    try:
        pynvml.nvmlInit()
    except pynvml.NVMLError:
        return
    pynvml.nvmlShutdown()  # pragma: no cover - only on a machine with a driver
    pytest.skip("an NVIDIA driver is present: NVML is not missing here")  # pragma: no cover
