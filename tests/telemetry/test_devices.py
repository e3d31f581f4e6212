"""CUDA_VISIBLE_DEVICES resolution and MIG instances, as the job's devices."""

from __future__ import annotations

import logging

import pytest

from mlcost.telemetry.base import UTIL_SIGNAL_GPM_SM, UTIL_SIGNAL_NONE
from mlcost.telemetry.devices import MigSlot, PhysicalGpu, mig_profile_name, resolve_visible
from mlcost.telemetry.nvml import NvmlBackend
from mlcost.telemetry.simulated_nvml import SimulatedNVML
from mlcost.telemetry.traces import load_trace

ROWS = [(0.0, 0, 10, 5, 100), (0.0, 1, 70, 40, 450), (0.0, 2, 30, 20, 300)]


def _open(write_trace, clock, visible, devices=3, **sim):
    nvml = SimulatedNVML(load_trace(write_trace(ROWS)), gpu_type="A100-80GB", devices=devices, clock=clock, **sim)
    backend = NvmlBackend(nvml=nvml, visible_devices=visible, telemetry="simulated")
    return backend, backend.open()


def test_an_index_selects_that_physical_gpu_as_job_device_0(write_trace, clock):
    backend, devices = _open(write_trace, clock, "1")
    (dev,) = devices
    assert (dev.index, dev.nvml_index) == (0, 1)
    assert backend.read(dev).util_pct == 70 and backend.read(dev).mem_used_gb == 40


@pytest.mark.parametrize(
    ("visible", "physical"),
    [
        (None, [0, 1, 2]),
        ("", []),
        ("-1", []),
        ("2,0", [2, 0]),
        ("0,7,1", [0]),  # CUDA stops at the first invalid entry
        ("1,-1,2", [1]),
        ("1,1,2", [1]),  # a repeat is invalid too
        ("GPU-5e1f0002", [2]),  # a unique UUID prefix
        ("GPU-5e1f0002-aaaa-4bbb-8ccc-000000000002,GPU-5e1f0000", [2, 0]),
        ("GPU-5e1f", []),  # ambiguous prefix
        ("gpu0", []),
    ],
)
def test_visible_devices_follow_cuda_rules(write_trace, clock, visible, physical):
    _, devices = _open(write_trace, clock, visible)
    assert [d.nvml_index for d in devices] == physical
    assert [d.index for d in devices] == list(range(len(physical)))


def test_mig_instances_are_the_jobs_devices_metered_as_their_slice(write_trace, clock):
    nvml = SimulatedNVML(load_trace(write_trace(ROWS)), gpu_type="H100", devices=1, clock=clock,
                         mig=["1g.10gb", "3g.40gb"])
    backend = NvmlBackend(nvml=nvml, visible_devices=None)
    small, big = backend.open()
    assert (small.mig_profile, small.mem_total_gb, small.gpu_type) == ("1g.10gb", 10.0, "H100")
    assert (big.mig_profile, big.mem_total_gb, big.index, big.nvml_index) == ("3g.40gb", 40.0, 1, 0)
    assert small.uuid.startswith("MIG-") and small.power_limit_w == pytest.approx(700 / 7)
    clock.advance(1.0)
    r_small, r_big = backend.read(small), backend.read(big)
    parent_w = 100 + 450  # the parent draws both instances' trace power
    assert r_small.power_w == pytest.approx(parent_w / 7) and r_big.power_w == pytest.approx(parent_w * 3 / 7)
    assert (r_small.util_pct, r_big.util_pct) == (10, 70)  # GPM per GPU instance
    assert (r_small.mem_used_gb, r_big.mem_used_gb) == (5, 40)
    assert backend.status.util_signal == UTIL_SIGNAL_GPM_SM
    # NVML util is not supported on an instance handle, but GPM covers it: no warning about util
    assert not [w for w in backend.status.warnings if "util" in w or "gpm_sm" in w]


def test_a_mig_uuid_selects_only_that_instance(write_trace, clock):
    nvml = SimulatedNVML(load_trace(write_trace(ROWS)), gpu_type="H100", devices=2, clock=clock,
                         mig=["1g.10gb", "3g.40gb"])
    nvml.nvmlInit()
    uuid = nvml.nvmlDeviceGetUUID(nvml.nvmlDeviceGetMigDeviceHandleByIndex(nvml.nvmlDeviceGetHandleByIndex(1), 1))
    (dev,) = NvmlBackend(nvml=nvml, visible_devices=uuid, initialized=True).open()
    assert (dev.uuid, dev.nvml_index, dev.mig_profile, dev.index) == (uuid, 1, "3g.40gb", 0)


def test_mig_on_ampere_has_no_utilisation_and_says_so(write_trace, clock, caplog):
    nvml = SimulatedNVML(load_trace(write_trace(ROWS)), gpu_type="A100-40GB", devices=1, clock=clock,
                         mig=["1g.5gb", "2g.10gb", "4g.20gb"])
    backend = NvmlBackend(nvml=nvml, visible_devices=None)
    with caplog.at_level(logging.WARNING):
        devices = backend.open()
    assert [d.mig_profile for d in devices] == ["1g.5gb", "2g.10gb", "4g.20gb"]
    assert backend.status.util_signal == UTIL_SIGNAL_NONE and backend.read(devices[0]).util_pct is None
    assert all(d.gpu_type == "A100-40GB" for d in devices)
    assert len(caplog.records) == 3 and all("util" in r.getMessage() for r in caplog.records)


@pytest.mark.parametrize(
    ("gi", "ci", "share", "nominal", "name"),
    [(1, 1, 1 / 8, 80, "1g.10gb"), (1, 1, 2 / 8, 80, "1g.20gb"), (3, 3, 4 / 8, 141, "3g.71gb"),
     (1, 1, 0.124, 141, "1g.18gb"), (7, 7, 1.0, 40, "7g.40gb"), (3, 1, 0.49, 80, "1c.3g.40gb")],
)
def test_mig_profile_names_follow_nvidia(gi, ci, share, nominal, name):
    assert mig_profile_name(gi, ci, share, nominal) == name


def test_old_style_mig_uuid_and_unique_mig_prefix():
    slots = [MigSlot("MIG-aaaa1111", "h0", 1, 0), MigSlot("MIG-aaaa2222", "h1", 2, 0)]
    gpus = [PhysicalGpu(0, "GPU-1234", "g0", slots), PhysicalGpu(1, "GPU-5678", "g1")]
    assert [s.uuid for s in resolve_visible("MIG-GPU-1234/2/0", gpus)] == ["MIG-aaaa2222"]
    assert [s.uuid for s in resolve_visible("MIG-aaaa1,1", gpus)] == ["MIG-aaaa1111", "GPU-5678"]
    assert resolve_visible("MIG-aaaa", gpus) == []  # ambiguous
    assert [s.uuid for s in resolve_visible("0", gpus)] == ["MIG-aaaa1111"]  # CUDA: the first instance
    assert [s.uuid for s in resolve_visible("GPU-1234", gpus)] == ["MIG-aaaa1111", "MIG-aaaa2222"]
    assert resolve_visible(None, gpus)[:2] == resolve_visible("GPU-1234", gpus)
    assert resolve_visible("0", [PhysicalGpu(0, "GPU-1234", "g0", [])]) == []  # MIG on, no instance
    assert resolve_visible("MIG-GPU-1234/1/0,MIG-aaaa1111", gpus)[1:] == []  # the same instance twice
