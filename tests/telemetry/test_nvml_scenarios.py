"""The shared NVML scenarios on the Python simulated NVML, in-process (the stand-in suite runs the
same ones through pynvml and the C library: tests/nvml_standin/test_standin.py)."""

from __future__ import annotations

import nvml_scenarios as sc
import pytest

from mlcost.telemetry import _nvml


@pytest.mark.parametrize("name", sorted(sc.SCENARIOS))
def test_scenario_on_the_simulated_nvml(name, tmp_path, clock):
    s = sc.SCENARIOS[name]
    clock.t = 0.0
    nvml = sc.simulated_nvml(s, sc.write_trace(s, tmp_path), clock)
    backend = _nvml(s.visible, explicit=True, nvml=nvml)  # the same path open_backend takes
    result = sc.run_sampler(s, backend, lambda t: setattr(clock, "t", t))
    sc.check(s, result)


@pytest.mark.parametrize("name", sc.ERROR_SCENARIOS)
def test_a_failing_call_leaves_a_degraded_record_and_the_steps_value(name, tmp_path):
    s = sc.SCENARIOS[name]
    nvml = sc.simulated_nvml(s, sc.write_trace(s, tmp_path), __import__("time").monotonic, start=None)
    make = lambda: _nvml(s.visible, explicit=True, nvml=nvml)  # noqa: E731
    sc.check_meter(s, sc.run_meter(s, make, str(tmp_path / "ledger.db")))
