"""NvmlBackend over the simulated NVML: values, units, probing once, GPM, energy method, lost GPUs."""

from __future__ import annotations

import logging

import pynvml
import pytest

from mlcost.errors import DeviceLost, TelemetryError
from mlcost.telemetry.base import ENERGY_COUNTER, ENERGY_INTEGRATED, ENERGY_NONE, UTIL_SIGNAL_GPM_SM, UTIL_SIGNAL_NVML
from mlcost.telemetry.nvml import NvmlBackend, gpu_type_from_name
from mlcost.telemetry.simulated_nvml import SimulatedNVML
from mlcost.telemetry.traces import load_trace

ROWS = [(0.0, 0, 90, 30, 500), (1.0, 0, 0, 30, 120), (2.0, 0, 60, 50, 400)]


def _backend(path, clock, gpu="A100-80GB", **sim):
    nvml = SimulatedNVML(load_trace(path), gpu_type=gpu, clock=clock, **sim)
    return NvmlBackend(nvml=nvml, visible_devices=None, telemetry="simulated"), nvml


def test_readings_follow_the_trace_in_si_units(write_trace, clock):
    backend, _ = _backend(write_trace(ROWS), clock)
    (dev,) = backend.open()
    assert (dev.gpu_type, dev.mem_total_gb, dev.power_limit_w) == ("A100-80GB", 80.0, 400.0)
    clock.advance(0.5)
    first = backend.read(dev)
    assert (first.util_pct, first.mem_used_gb, first.power_w) == (90, 30, 500)
    clock.advance(2.0)  # t = 2.5: third row
    second = backend.read(dev)
    assert (second.util_pct, second.mem_used_gb, second.power_w) == (60, 50, 400)
    # the energy counter is the exact integral of power: 0.5 s × 500 W + 1 s × 120 W + 0.5 s × 400 W
    assert second.energy_mj - first.energy_mj == pytest.approx((250 + 120 + 200) * 1000, abs=1)
    assert first.energy_mj > 1e6  # counts since driver load, not from zero
    assert backend.status.util_signal == UTIL_SIGNAL_NVML and backend.status.energy_method == ENERGY_COUNTER


def test_an_unsupported_call_warns_once_and_reads_none(write_trace, clock, caplog):
    backend, nvml = _backend(write_trace(ROWS), clock, not_supported={"nvmlDeviceGetPowerUsage"})
    with caplog.at_level(logging.WARNING):
        (dev,) = backend.open()
        readings = [backend.read(dev) for _ in range(50)]
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "power" in warnings[0].getMessage()
    assert all(r.power_w is None and r.util_pct == 90 for r in readings)
    assert nvml.calls["nvmlDeviceGetPowerUsage"] == 1  # probed once, never retried per sample
    assert backend.status.energy_method == ENERGY_COUNTER and len(backend.status.warnings) == 1


def test_a_call_that_stops_being_supported_mid_run_is_dropped_after_one_warning(write_trace, clock, caplog):
    backend, nvml = _backend(write_trace(ROWS), clock)
    (dev,) = backend.open()
    nvml.not_supported.add("nvmlDeviceGetTemperature")
    with caplog.at_level(logging.WARNING):
        readings = [backend.read(dev) for _ in range(20)]
    assert len(caplog.records) == 1 and all(r.temperature_c is None for r in readings)
    assert nvml.calls["nvmlDeviceGetTemperature"] == 2  # the probe, then the one failing read


@pytest.mark.parametrize(
    ("missing", "method"),
    [
        (set(), ENERGY_COUNTER),
        ({"nvmlDeviceGetTotalEnergyConsumption"}, ENERGY_INTEGRATED),
        ({"nvmlDeviceGetTotalEnergyConsumption", "nvmlDeviceGetPowerUsage"}, ENERGY_NONE),
    ],
)
def test_energy_method_is_the_counter_else_integrated_power_else_none(write_trace, clock, missing, method):
    backend, _ = _backend(write_trace(ROWS), clock, not_supported=missing)
    (dev,) = backend.open()
    assert backend.status.energy_method == method
    assert (backend.read(dev).energy_mj is None) == bool(missing)


def test_gpm_sm_activity_is_the_util_signal_on_hopper(write_trace, clock):
    header = "t_s,device,util_pct,mem_used_gb,power_w,tensor_active_pct"
    backend, _ = _backend(write_trace([(0, 0, 90, 30, 500, 40), (1, 0, 0, 30, 120, 0)], header), clock, gpu="H100")
    (dev,) = backend.open()
    assert backend.status.util_signal == UTIL_SIGNAL_GPM_SM
    clock.advance(2.0)
    r = backend.read(dev)
    # GPM is the mean over the interval since the previous sample; NVML util is the value now
    assert r.util_pct == r.sm_active_pct == pytest.approx(45)
    assert r.tensor_active_pct == pytest.approx(20) and r.nvml_util_pct == 0


def test_without_gpm_support_nvml_util_is_used(write_trace, clock, caplog):
    with caplog.at_level(logging.WARNING):
        backend, _ = _backend(write_trace(ROWS), clock, gpu="H100", gpm=False)
        (dev,) = backend.open()
    assert backend.status.util_signal == UTIL_SIGNAL_NVML and backend.read(dev).sm_active_pct is None
    assert not caplog.records  # pre-Hopper GPUs have no GPM: nothing to warn about


def test_a_device_that_vanishes_raises_device_lost(write_trace, clock):
    backend, _ = _backend(write_trace(ROWS), clock, gpu="H100", lost={0: 1.0})
    (dev,) = backend.open()
    clock.advance(0.5)
    assert backend.read(dev).power_w == 500
    clock.advance(1.0)
    with pytest.raises(DeviceLost, match="stopped answering") as err:
        backend.read(dev)
    assert isinstance(err.value.__cause__, pynvml.NVMLError_GpuIsLost)


def test_a_lost_event_in_the_trace_csv_loses_the_device(write_trace, clock):
    header = "t_s,device,util_pct,mem_used_gb,power_w,event"
    path = write_trace([(0, 0, 50, 10, 200, ""), (2, 0, 0, 0, 0, "lost")], header)
    backend, _ = _backend(path, clock)
    (dev,) = backend.open()
    backend.read(dev)
    clock.advance(2.0)
    with pytest.raises(DeviceLost):
        backend.read(dev)


def test_nvml_init_failure_is_a_telemetry_error(write_trace, clock):
    backend, _ = _backend(write_trace(ROWS), clock, init_error=pynvml.NVML_ERROR_DRIVER_NOT_LOADED)
    with pytest.raises(TelemetryError, match="Driver Not Loaded"):
        backend.open()


@pytest.mark.parametrize(
    ("name", "key"),
    [
        ("NVIDIA H100 80GB HBM3", "H100"), ("NVIDIA H100 PCIe", "H100"), ("NVIDIA H200", "H200"),
        ("NVIDIA A100-SXM4-80GB", "A100-80GB"), ("NVIDIA A100 80GB PCIe", "A100-80GB"),
        ("NVIDIA A100-SXM4-40GB", "A100-40GB"), ("NVIDIA A100-PCIE-40GB", "A100-40GB"),
        ("NVIDIA L40S", "L40S"), ("NVIDIA L4", "L4"), ("NVIDIA A10G", "A10G"), ("Tesla T4", "T4"),
        ("NVIDIA GH200 480GB", None), ("NVIDIA L40", None), ("NVIDIA GeForce RTX 4090", None),
    ],
)
def test_gpu_names_map_to_catalog_keys(name, key):
    assert gpu_type_from_name(name) == key


def test_a_device_the_trace_omits_reads_idle_on_every_signal(write_trace, clock, caplog):
    backend, _ = _backend(write_trace(ROWS), clock, gpu="H100", devices=2)
    with caplog.at_level(logging.WARNING):
        _, untraced = backend.open()
    clock.advance(0.5)
    r = backend.read(untraced)
    assert (r.util_pct, r.sm_active_pct, r.tensor_active_pct, r.mem_used_gb) == (0, 0, 0, 0)
    assert r.power_w == pytest.approx(0.12 * 700)
    assert backend.status.util_signal == UTIL_SIGNAL_GPM_SM and "device 1" not in caplog.text
