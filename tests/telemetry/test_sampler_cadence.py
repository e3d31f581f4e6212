"""Two cadences: the util signal and power every sample, the slow signals about once a second and
always at the step's end, so a 10 Hz meter costs what a 10 Hz meter needs and loses nothing."""

from __future__ import annotations

import pytest

from mlcost.telemetry.nvml import NvmlBackend
from mlcost.telemetry.sampler import SLOW_EVERY_S, Sampler
from mlcost.telemetry.simulated_nvml import SimulatedNVML
from mlcost.telemetry.traces import load_trace, truth


def _run(sim, clock, interval: float, seconds: float) -> Sampler:
    sampler = Sampler(NvmlBackend(nvml=sim, visible_devices=None, telemetry="simulated"), interval=interval,
                      clock=clock)
    sampler.open()
    sim.calls.clear()  # count what sampling costs, not the one-off probing
    for _ in range(round(seconds / interval)):
        clock.advance(interval)
        sampler.sample_once()
    return sampler


def test_slow_signals_are_read_about_once_a_second_and_fast_ones_every_sample(clock):
    sim = SimulatedNVML(load_trace("busy", devices=2), gpu_type="H100", devices=2, clock=clock)
    sampler = _run(sim, clock, interval=0.1, seconds=5.0)
    samples = 50
    per_device = {fn: n / 2 for fn, n in sim.calls.items()}
    assert per_device["nvmlGpmMetricsGet"] == samples  # the util signal on Hopper
    assert per_device["nvmlDeviceGetPowerUsage"] == samples
    slow_reads = pytest.approx(5 / SLOW_EVERY_S, abs=1)
    for fn in ("nvmlDeviceGetTotalEnergyConsumption", "nvmlDeviceGetMemoryInfo", "nvmlDeviceGetTemperature",
               "nvmlDeviceGetClockInfo", "nvmlDeviceGetUtilizationRates"):
        assert per_device[fn] == slow_reads, fn
    device = sampler.usage().devices[0]
    assert device.temperature_peak_c is not None and device.sm_clock_mean_mhz == 1980
    assert device.nvml_util_mean_pct == pytest.approx(truth(load_trace("busy"), 0, 0.0, 5.0).util_mean_pct, rel=0.02)


def test_the_end_of_the_step_reads_the_counter_and_memory_even_between_slow_reads(clock, write_trace):
    # memory rises 0.3 s before the end and the step ends 0.4 s after the last whole second
    rows = [(0, 0, 50, 10, 300), (2.1, 0, 80, 60, 600)]
    trace = load_trace(write_trace(rows))
    sim = SimulatedNVML(trace, gpu_type="A100-80GB", clock=clock)
    sampler = _run(sim, clock, interval=0.1, seconds=2.4)
    (device,) = sampler.stop().devices
    assert device.mem_peak_gb == pytest.approx(60)
    assert device.energy_method == "counter"
    assert device.energy_kwh * 3.6e6 == pytest.approx(truth(trace, 0, 0.0, 2.4).energy_j, rel=1e-6)
    # power is still integrated every sample beside the counter, as its cross-check
    assert device.power_integrated_kwh == pytest.approx(device.energy_kwh, rel=0.02)
