"""Backend selection from the environment: telemetry never breaks the job."""

from __future__ import annotations

import re
import subprocess
import sys

import pynvml
import pytest

from mlcost.errors import ConfigError
from mlcost.telemetry import open_backend
from mlcost.telemetry.base import NullBackend
from mlcost.telemetry.nvml import NvmlBackend


def test_nvml_init_failure_gives_a_null_backend_with_the_reason(monkeypatch):
    def fail() -> None:
        raise pynvml.NVMLError(pynvml.NVML_ERROR_DRIVER_NOT_LOADED)

    monkeypatch.setattr(pynvml, "nvmlInit", fail)
    backend = open_backend({})
    assert isinstance(backend, NullBackend) and backend.open() == []
    assert backend.status.telemetry == "none" and "Driver Not Loaded" in backend.status.degraded_reasons[0]


def test_a_missing_pynvml_gives_a_null_backend(monkeypatch):
    monkeypatch.setitem(sys.modules, "pynvml", None)  # import pynvml raises ImportError
    backend = open_backend({"MLCOST_GPU_BACKEND": "nvml"})
    assert isinstance(backend, NullBackend) and "nvidia-ml-py" in backend.status.degraded_reasons[0]


def test_nvml_that_starts_gives_the_nvml_backend_and_one_shutdown(monkeypatch):
    calls = []
    monkeypatch.setattr(pynvml, "nvmlInit", lambda: calls.append("init"))
    backend = open_backend({})
    assert isinstance(backend, NvmlBackend) and backend.status.telemetry == "nvml" and calls == ["init"]


def test_none_is_a_null_backend_without_a_degraded_reason():
    backend = open_backend({"MLCOST_GPU_BACKEND": "none"})
    assert isinstance(backend, NullBackend) and backend.status.degraded_reasons == []


def test_an_invalid_backend_lists_the_allowed_values():
    with pytest.raises(ConfigError, match=r"MLCOST_GPU_BACKEND.*nvml, simulated, none"):
        open_backend({"MLCOST_GPU_BACKEND": "rocm"})


def test_simulated_honours_its_settings_and_cuda_visible_devices():
    env = {"MLCOST_GPU_BACKEND": "simulated", "MLCOST_SIM_TRACE": "idle", "MLCOST_SIM_GPU": "L4",
           "MLCOST_SIM_DEVICES": "4", "CUDA_VISIBLE_DEVICES": "3,1"}
    backend = open_backend(env)
    devices = backend.open()
    assert [(d.index, d.nvml_index, d.gpu_type) for d in devices] == [(0, 3, "L4"), (1, 1, "L4")]
    assert backend.status.telemetry == "simulated" and backend.read(devices[0]).util_pct == 0
    backend.close()


@pytest.mark.parametrize(
    ("key", "value", "named"),
    [("MLCOST_SIM_GPU", "H9000", "MLCOST_SIM_GPU"), ("MLCOST_SIM_DEVICES", "two", "MLCOST_SIM_DEVICES"),
     ("MLCOST_SIM_TRACE", "/nonexistent/trace.csv", "/nonexistent/trace.csv")],
)
def test_bad_simulated_settings_are_config_errors_naming_the_setting(key, value, named):
    with pytest.raises(ConfigError, match=re.escape(named)):
        open_backend({"MLCOST_GPU_BACKEND": "simulated", key: value})


def test_importing_telemetry_loads_neither_pynvml_nor_psutil():
    code = "import sys, mlcost.telemetry; print(sorted(m for m in ('pynvml', 'psutil') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
