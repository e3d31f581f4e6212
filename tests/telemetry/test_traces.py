"""Trace loading: presets, CSV errors that name file/line/column, and the exact truth."""

from __future__ import annotations

import pytest

from mlcost.errors import ConfigError
from mlcost.telemetry.nvml import NvmlBackend
from mlcost.telemetry.sampler import Sampler
from mlcost.telemetry.simulated_nvml import SimulatedNVML
from mlcost.telemetry.traces import PRESETS, load_trace, preset, truth


@pytest.mark.parametrize(
    ("rows", "line", "column"),
    [
        ([(0, 0, 50, 1, 100), (1, 0, "abc", 1, 100)], 3, "util_pct"),
        ([(0, 0, 150, 1, 100)], 2, "util_pct"),
        ([(0, 0, 50, 1, -3)], 2, "power_w"),
        ([(0, 0.5, 50, 1, 100)], 2, "device"),
        ([(2, 0, 50, 1, 100), (1, 0, 50, 1, 100)], 3, "t_s"),
    ],
)
def test_a_bad_csv_names_the_file_the_line_and_the_column(write_trace, rows, line, column):
    path = write_trace(rows)
    with pytest.raises(ConfigError) as err:
        load_trace(path)
    message = str(err.value)
    assert path in message and f"line {line}" in message and column in message


def test_a_missing_column_and_a_missing_file_are_named(write_trace, tmp_path):
    path = write_trace([(0, 0, 50, 100)], header="t_s,device,util_pct,power_w")
    with pytest.raises(ConfigError, match="mem_used_gb"):
        load_trace(path)
    with pytest.raises(ConfigError, match="busy"):
        load_trace(str(tmp_path / "nope.csv"))  # neither a file nor a preset: the presets are listed


def test_truth_is_the_exact_step_function_integral(write_trace):
    trace = load_trace(write_trace([(0, 0, 90, 30, 500), (1, 0, 0, 30, 120), (2, 0, 60, 50, 400)]))
    t = truth(trace, 0, 0.5, 3.0)
    assert t.energy_j == pytest.approx(0.5 * 500 + 120 + 400)
    assert t.util_mean_pct == pytest.approx((0.5 * 90 + 0 + 60) / 2.5)
    assert t.idle_seconds == pytest.approx(1.0) and t.mem_peak_gb == 50
    assert truth(trace, 0, 0.5, 0.9).mem_peak_gb == 30  # the row in force at the window's start counts


@pytest.mark.parametrize(("name", "low", "high"), [("busy", 90, 100), ("idle", 0, 0), ("bursty", 45, 50),
                                                   ("starved", 20, 30)])
def test_presets_have_the_advertised_shape(name, low, high):
    trace = load_trace(name, gpu_type="L4", devices=2)
    assert sorted(trace.rows) == [0, 1]
    t = truth(trace, 1, 0.0, 400.0)
    assert low <= t.util_mean_pct <= high
    assert 0 < t.power_mean_w <= 72  # scaled to the L4's 72 W board power
    if name == "idle":
        assert t.idle_seconds == 400 and 0.10 * 72 <= t.power_mean_w <= 0.15 * 72 and t.mem_peak_gb > 0


def _riemann_mean(trace, device, attribute, t0, t1, steps=20_000):
    """A brute-force midpoint sum over row look-ups: independent of the prefix-sum tables."""
    h = (t1 - t0) / steps
    return sum(getattr(trace.row_at(device, t0 + (i + 0.5) * h), attribute) for i in range(steps)) / steps


@pytest.mark.parametrize("spec", ["bursty", "starved", "csv"])
def test_means_and_integrals_agree_with_a_brute_force_sum_on_any_window(write_trace, spec):
    """The simulated energy counter and GPM read these every sample: windows inside one row,
    across rows, across a period's wrap, longer than a period, and before the first row."""
    rows = [(0.5, 0, 90, 30, 500), (1.0, 0, 0, 30, 120), (2.5, 0, 60, 50, 400)]
    trace = load_trace(write_trace(rows)) if spec == "csv" else load_trace(spec)
    windows = [(0.1, 0.2), (0.0, 0.7), (1.9, 2.6), (0.0, 3.0), (7.5, 12.5), (39.0, 41.0), (3.0, 95.0)]
    for t0, t1 in windows:
        for attribute in ("power_w", "util_pct"):
            expected = _riemann_mean(trace, 0, attribute, t0, t1)
            assert trace.mean(0, attribute, t0, t1) == pytest.approx(expected, rel=2e-3, abs=1e-6), (t0, t1)
            assert trace.integral(0, attribute, t0, t1) == pytest.approx(expected * (t1 - t0), rel=2e-3, abs=1e-6)


def test_an_unknown_preset_lists_the_presets():
    with pytest.raises(ConfigError, match=", ".join(PRESETS)):
        preset("sleepy")


def test_the_sampler_on_the_simulated_nvml_measures_the_truth(clock):
    """End to end with a hand-driven clock: counter energy is exact, trapezoid util close."""
    trace = load_trace("bursty", gpu_type="H100")
    sim = SimulatedNVML(trace, gpu_type="A100-80GB", clock=clock)
    sampler = Sampler(NvmlBackend(nvml=sim, visible_devices=None, telemetry="simulated"), interval=0.5, clock=clock)
    sampler.open()
    for _ in range(160):  # 80 s = two bursty periods, sampled every 0.5 s
        clock.advance(0.5)
        sampler.sample_once()
    (device,) = sampler.usage().devices
    expected = truth(trace, 0, 0.0, 80.0)
    assert device.energy_method == "counter"
    assert device.energy_kwh * 3.6e6 == pytest.approx(expected.energy_j, rel=1e-6)
    assert device.util_mean_pct == pytest.approx(expected.util_mean_pct, rel=0.02)
    assert device.idle_seconds == pytest.approx(expected.idle_seconds, rel=0.02)
