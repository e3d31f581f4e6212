"""What a step is priced as (issue 10 items 6, 7, 18): MIG instances each as their own profile, a
declared GPU type beside the detected one, and one warning when nothing says what the GPU did."""

from __future__ import annotations

import logging
import subprocess
import sys
import textwrap
import time

import pytest

from mlcost import PriceCatalog, meter
from mlcost.cli import main
from mlcost.sinks.ledger import Ledger
from mlcost.telemetry.nvml import NvmlBackend
from mlcost.telemetry.simulated_nvml import SimulatedNVML
from mlcost.telemetry.traces import load_trace


def _backend(tmp_path, gpu="H100", **sim):
    trace = tmp_path / "trace.csv"
    trace.write_text("t_s,device,util_pct,mem_used_gb,power_w\n0,0,50,5,100\n0,1,50,20,300\n")
    return NvmlBackend(nvml=SimulatedNVML(load_trace(trace), gpu_type=gpu, **sim), visible_devices=None,
                       telemetry="simulated")


def test_mig_instances_of_different_profiles_are_each_priced_as_their_own(tmp_path):
    catalog = PriceCatalog.load()
    with meter("serve", interval=0.02, backend=_backend(tmp_path, mig=["1g.10gb", "3g.40gb"])) as m:
        time.sleep(0.1)
    step = m.cost
    hourly = catalog.gpu_hour_usd("H100:1g.10gb") + catalog.gpu_hour_usd("H100:3g.40gb")
    assert hourly == pytest.approx(7.90, abs=0.01)  # the figure; 2 x the first profile was $3.51
    assert step.gpus == 2 and step.total_usd == pytest.approx(hourly * step.duration_s / 3600, rel=1e-9)
    assert step.gpu_hour_usd == pytest.approx(hourly / 2)  # per allocated device, on average
    assert [d.mig_profile for d in step.devices] == ["1g.10gb", "3g.40gb"]


def test_the_same_profile_twice_is_priced_as_that_profile(tmp_path):
    with meter("serve", interval=0.02, backend=_backend(tmp_path, mig=["1g.10gb", "1g.10gb"])) as m:
        pass
    assert m.cost.gpu_type == "H100:1g.10gb"
    assert m.cost.gpu_hour_usd == pytest.approx(PriceCatalog.load().gpu_hour_usd("H100:1g.10gb"))


def test_mig_without_a_util_signal_reads_idle_as_unknown(tmp_path):
    with meter("serve", interval=0.02, backend=_backend(tmp_path, gpu="A100-40GB", mig=["1g.5gb", "2g.10gb"])) as m:
        time.sleep(0.05)
    step = m.cost
    assert step.idle_fraction is None and step.util_mean_pct is None  # unknown, not 0
    assert all(d.util_signal == "none" for d in step.devices)
    assert step.telemetry == "degraded" and any("util" in r for r in step.degraded_reasons)
    assert "idle n/a" in step.summary()


def test_a_declared_type_other_than_the_detected_one_is_kept_warned_once_and_reported(tmp_path, monkeypatch, caplog,
                                                                                        capsys):
    from mlcost import metering

    monkeypatch.setattr(metering, "_mismatches_warned", set())
    ledger = str(tmp_path / "ledger.db")
    with caplog.at_level(logging.WARNING):
        for _ in range(2):
            with meter("train", gpu_type="L4", interval=0.02, ledger=ledger, backend=_backend(tmp_path)) as m:
                pass
    assert (m.cost.gpu_type, m.cost.detected_gpu_type, m.cost.gpu_type_mismatch) == ("L4", "H100", True)
    assert m.cost.gpu_hour_usd == pytest.approx(0.8048)  # priced as declared
    assert sum("gpu_type='L4' was declared" in r.getMessage() for r in caplog.records) == 1
    (rec,) = {s.detected_gpu_type for s in Ledger(ledger).steps()}
    assert rec == "H100"
    assert main(["report", "--ledger", ledger, "--format", "markdown"]) == 0
    out = capsys.readouterr().out
    assert "Declared GPU type differs from the detected one" in out and "| train | L4 | H100 | 2 |" in out


def test_a_matching_declared_type_is_no_mismatch(tmp_path, caplog):
    with caplog.at_level(logging.WARNING), meter("t", gpu_type="h100", interval=0.02, backend=_backend(tmp_path)) as m:
        pass
    assert not m.cost.gpu_type_mismatch and "was declared" not in caplog.text


_TWO_STEPS = textwrap.dedent("""
    from mlcost import meter
    for name in ("a", "b"):
        with meter(name, gpus=1, gpu_type="L4", interval=0.02):
            pass
""")


def test_no_backend_and_no_driver_warns_once_per_process(tmp_path, no_nvidia_driver):
    done = subprocess.run([sys.executable, "-c", _TWO_STEPS], capture_output=True, text=True, timeout=120,
                          env={**__import__("os").environ, "MLCOST_LEDGER": str(tmp_path / "l.db")})
    assert done.returncode == 0, done.stderr
    assert done.stderr.count("GPU usage is unknown and cost is the allocation only") == 1, done.stderr
