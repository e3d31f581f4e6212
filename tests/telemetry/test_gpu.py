"""The real suite: ``MLCOST_GPU_BACKEND=nvml pytest -m gpu`` against whatever NVML the machine has
(a real driver; CI runs it against the stand-in library). Figures here cannot be held to a trace,
so they are held to what any GPU must satisfy: ranges, monotonic counters, consistent selection,
and a metered step that records NVML telemetry. Without an explicit backend every test skips.
"""

from __future__ import annotations

import os
import time

import pytest

pytestmark = pytest.mark.gpu


@pytest.fixture
def nvml_backend():
    if os.environ.get("MLCOST_GPU_BACKEND") != "nvml":
        pytest.skip("the gpu suite runs with MLCOST_GPU_BACKEND=nvml (a real driver or the stand-in)")
    from mlcost.telemetry import open_backend
    from mlcost.telemetry.nvml import NvmlBackend

    backend = open_backend()
    if not isinstance(backend, NvmlBackend):
        pytest.fail(f"MLCOST_GPU_BACKEND=nvml but NVML did not start: {backend.status.degraded_reasons}")
    yield backend
    backend.close()


def test_the_jobs_devices_are_found_and_described(nvml_backend):
    devices = nvml_backend.open()
    assert devices, "NVML started but no device is visible (check CUDA_VISIBLE_DEVICES)"
    assert [d.index for d in devices] == list(range(len(devices)))
    for d in devices:
        assert d.uuid.startswith(("GPU-", "MIG-")) and d.name
        assert d.mem_total_gb and d.mem_total_gb > 0
        assert d.power_limit_w is None or 10 < d.power_limit_w < 2000


def test_readings_are_in_range_and_the_energy_counter_only_grows(nvml_backend):
    devices = nvml_backend.open()
    first = [nvml_backend.read(d) for d in devices]
    time.sleep(0.3)
    second = [nvml_backend.read(d) for d in devices]
    for d, a, b in zip(devices, first, second, strict=True):
        for r in (a, b):
            assert r.util_pct is None or 0 <= r.util_pct <= 100
            assert r.power_w is None or 0 <= r.power_w <= 2000
            assert r.mem_used_gb is None or 0 <= r.mem_used_gb <= d.mem_total_gb * 1.01
        if a.energy_mj is not None and b.energy_mj is not None:
            assert b.energy_mj >= a.energy_mj


def test_hopper_uses_gpm_and_older_gpus_nvml_util(nvml_backend):
    devices = nvml_backend.open()
    hopper = all(any(k in d.name for k in ("H100", "H200", "H800", "GH200")) for d in devices)
    signal = nvml_backend.status.util_signal
    if hopper:
        assert signal == "gpm_sm_activity"
    elif not any(d.mig_profile for d in devices):  # MIG on Ampere has no util signal at all
        assert signal == "nvml_util"


def test_an_index_and_a_uuid_select_the_same_device(nvml_backend, monkeypatch):
    from mlcost.telemetry.nvml import NvmlBackend

    first = nvml_backend.open()[0]
    by_uuid = NvmlBackend(visible_devices=first.uuid)
    try:
        (device,) = by_uuid.open()
    finally:
        by_uuid.close()
    assert device.uuid == first.uuid and device.index == 0


def test_a_metered_step_records_nvml_telemetry(nvml_backend, tmp_path):
    from mlcost import meter

    with meter("gpu-suite", interval=0.05, ledger=str(tmp_path / "ledger.db")) as m:
        time.sleep(0.5)
    step = m.cost
    assert step.telemetry in ("nvml", "degraded") and step.devices and step.samples >= 5
    assert all(r.startswith("device") for r in step.degraded_reasons), step.degraded_reasons
    assert step.energy_method in ("counter", "integrated", "mixed")
