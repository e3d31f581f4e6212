"""The core meter end to end on the simulated NVML: figures, guardrails, records."""

import os
import signal
import subprocess
import sys
import textwrap
import threading
import time

import pytest

from mlcost import BudgetExceeded, GuardrailBreached, PreflightRefused, meter, metered
from mlcost.sinks.ledger import Ledger


def _trace(tmp_path, rows):
    path = tmp_path / "trace.csv"
    path.write_text("t_s,device,util_pct,mem_used_gb,power_w\n" + "\n".join(",".join(map(str, r)) for r in rows))
    return str(path)


def _step_function_mean(rows, device, column, until):
    """The exact time-weighted mean of a held-until-next-row trace over [0, until]."""
    points = [(r[0], r[column]) for r in rows if r[1] == device]
    total = 0.0
    for (t0, v), (t1, _) in zip(points, [*points[1:], (until, None)], strict=True):
        total += v * (min(t1, until) - t0)
    return total / until


def test_util_energy_and_idle_match_the_trace_within_one_percent(tmp_path):
    """The whole meter (record, pricing, ledger) over the simulated driver, with the sampler and
    the driver on one hand-driven clock: 300 samples 10 ms apart whatever the machine's load."""
    from mlcost.telemetry.nvml import NvmlBackend
    from mlcost.telemetry.simulated_nvml import SimulatedNVML
    from mlcost.telemetry.traces import load_trace

    rows = [(0.0, 0, 90, 30, 500), (1.0, 0, 0, 30, 120), (2.0, 0, 60, 50, 400)]
    now = [1000.0]
    driver = SimulatedNVML(load_trace(_trace(tmp_path, rows), gpu_type="A100-80GB", devices=1),
                           gpu_type="A100-80GB", clock=lambda: now[0])  # fmt: skip
    backend = NvmlBackend(nvml=driver, telemetry="simulated")
    # a sampling thread that never wakes (an hour's interval): the test takes each sample itself
    with meter("train", interval=3600, backend=backend, clock=lambda: now[0]) as m:
        for _ in range(300):
            now[0] += 0.01
            m._sampler.sample_once()
    step = m.cost
    (device,) = step.devices
    duration = device.seconds
    assert step.telemetry == "simulated" and step.simulated and step.util_signal == "nvml_util"
    assert step.util_mean_pct == pytest.approx(_step_function_mean(rows, 0, 2, duration), rel=0.01)
    assert device.idle_seconds == pytest.approx(1.0, rel=0.01)
    assert step.idle_fraction == pytest.approx(1.0 / duration, rel=0.01)
    mean_power = _step_function_mean(rows, 0, 4, duration)
    assert device.energy_method == "counter"
    assert device.energy_kwh == pytest.approx(mean_power * duration / 3.6e6, rel=0.01)
    # the counter and the integration of power samples agree on a trace that has both
    assert device.power_integrated_kwh == pytest.approx(device.energy_kwh, rel=0.01)
    assert step.mem_peak_gb == pytest.approx(50)
    assert step.gpu_type == "A100-80GB" and step.gpus == 1
    assert step.total_usd == pytest.approx(5.12 * step.duration_s / 3600, rel=1e-6)


def test_a_budget_stops_the_step_within_two_intervals_and_names_the_budget(simulated_gpu):
    simulated_gpu("busy", devices=8)
    interval = 0.1
    rate = 8 * 12.29 / 3600  # USD per second for 8 on-demand H100s
    budget = 0.01
    started = time.monotonic()
    with pytest.raises(BudgetExceeded) as err, meter("train", gpu_type="H100", budget_usd=budget, interval=interval):
        time.sleep(30)
    stopped_after = time.monotonic() - started
    assert stopped_after <= budget / rate + 2 * interval + 0.1
    breach = err.value
    assert breach.limit == budget and breach.spent_usd > budget and "budget_usd=0.01" in breach.policy
    assert "$0.0100" in str(breach) and "budget" in str(breach)
    (step,) = Ledger().steps()
    assert step.status == "breached" and step.breach.kind == "budget_usd"


def test_a_stop_reaches_a_meter_on_another_thread(simulated_gpu):
    simulated_gpu("busy", devices=8)
    caught = {}

    def work():
        try:
            with meter("worker", gpu_type="H100", budget_usd=0.005, interval=0.05):
                deadline = time.monotonic() + 10
                while time.monotonic() < deadline:  # a Python loop: the async exception lands here
                    sum(range(1000))
        except BudgetExceeded as e:
            caught["breach"] = e

    thread = threading.Thread(target=work)
    thread.start()
    thread.join(15)
    assert isinstance(caught.get("breach"), BudgetExceeded)


def test_idle_timeout_stops_a_step_whose_gpus_do_nothing(simulated_gpu):
    simulated_gpu("idle")
    with pytest.raises(GuardrailBreached) as err, meter("stuck", gpu_type="H100", idle_timeout=0.3, interval=0.05):
        time.sleep(10)
    assert err.value.limit_name == "idle_timeout_s" and "idle timeout" in str(err.value)


def test_preflight_refuses_before_the_body_runs_and_the_ledger_says_so(simulated_gpu):
    ran = []
    with (
        pytest.raises(PreflightRefused, match="projects"),
        meter("big", gpus=8, gpu_type="H100", budget_usd=10, max_duration="1h", tags={"team": "search"}),
    ):
        ran.append(True)
    assert ran == []
    # chargeback and the Cost view see what the policy stopped: a breached step that spent nothing
    (step,) = Ledger().steps()
    assert (step.name, step.status, step.gpus, step.duration_s, step.total_usd) == ("big", "breached", 8, 0.0, 0.0)
    assert step.breach.kind == "budget_usd" and step.breach.observed == pytest.approx(8 * 12.29)
    assert "projects" in step.error and step.tags["team"] == "search" and step.simulated


def test_allocation_is_billed_and_untouched_gpus_show_idle(simulated_gpu):
    simulated_gpu("busy", devices=1)
    with meter("train", gpus=4, gpu_type="H100", interval=0.02) as m:
        time.sleep(0.3)
    step = m.cost
    assert step.gpus == 4 and len(step.devices) == 1
    assert step.total_usd == pytest.approx(4 * 12.29 * step.duration_s / 3600)
    assert step.idle_fraction == pytest.approx(0.75, abs=0.02)


def test_cuda_visible_devices_meters_only_the_jobs_device(tmp_path, simulated_gpu, monkeypatch):
    rows = [(0.0, 0, 10, 5, 100), (0.0, 1, 70, 40, 450)]
    simulated_gpu(_trace(tmp_path, rows), gpu="A100-80GB", devices=2)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "1")
    with meter("train", interval=0.02) as m:
        time.sleep(0.3)
    (device,) = m.cost.devices
    assert device.index == 0  # cuda:0 inside the job ...
    assert device.util_mean_pct == pytest.approx(70)  # ... is physical device 1
    assert device.mem_peak_gb == pytest.approx(40)
    assert m.cost.gpus == 1


def test_the_record_is_in_the_ledger_after_an_exception(simulated_gpu):
    with pytest.raises(ZeroDivisionError), meter("train", gpu_type="H100", interval=0.02):
        1 / 0  # noqa: B018
    (step,) = Ledger().steps()
    assert step.status == "failed" and "ZeroDivisionError" in step.error and step.total_usd > 0


def test_decorator_returns_the_value_and_keeps_the_cost(simulated_gpu):
    @metered(gpu_type="H100", interval=0.02, tags={"team": "search", "workload": "inference"})
    def predict(x):
        time.sleep(0.1)
        return x * 2

    assert predict(21) == 42
    assert predict.last_cost.name == "predict" and predict.last_cost.tags["team"] == "search"


def test_without_nvml_the_function_still_returns_and_the_record_says_degraded(monkeypatch, no_nvidia_driver):
    monkeypatch.setenv("MLCOST_GPU_BACKEND", "nvml")

    @metered(gpus=1, gpu_type="L4", interval=0.02)
    def work():
        return "done"

    assert work() == "done"
    step = work.last_cost
    assert step.telemetry == "degraded" and step.degraded_reasons
    assert any("NVML" in r or "nvml" in r for r in step.degraded_reasons)
    assert step.total_usd == pytest.approx(0.8048 * step.duration_s / 3600)  # priced by allocation


_CHILD = textwrap.dedent(
    """
    import sys, time
    from mlcost import meter
    with meter("long", gpu_type="H100", interval=0.05):
        print("started", flush=True)
        time.sleep(60)
    """
)


@pytest.mark.parametrize(("sig", "status", "code"), [(signal.SIGTERM, "killed", 143), (signal.SIGKILL, "running", -9)])
def test_a_step_killed_half_way_leaves_its_record(simulated_gpu, sig, status, code):
    proc = subprocess.Popen([sys.executable, "-c", _CHILD], stdout=subprocess.PIPE, text=True, env=os.environ.copy())
    assert proc.stdout.readline().strip() == "started"
    time.sleep(0.3)
    proc.send_signal(sig)
    assert proc.wait(timeout=30) == code
    (step,) = Ledger().steps()
    assert step.name == "long" and step.status == status
    if sig == signal.SIGTERM:
        assert step.error == "SIGTERM" and step.duration_s >= 0.3 and step.total_usd > 0


def test_the_public_meter_is_the_function_whatever_was_imported_first():
    """Adapters import the meter's module before user code runs; ``from mlcost import meter`` must
    still give the context manager (a submodule of the same name would shadow it)."""
    code = (
        "import mlcost.metering, mlcost.operators.metered\n"
        "from mlcost import meter, metered, Meter\n"
        "assert callable(meter) and meter.__module__ == 'mlcost.metering', meter\n"
        "assert isinstance(meter('train', gpus=0), Meter) and callable(metered())\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, env={**os.environ, "MLCOST_GPU_BACKEND": "none"})


def test_a_sigterm_while_the_step_is_being_recorded_leaves_that_record(simulated_gpu):
    """The SIGTERM handler runs on the main thread, possibly in the middle of the step's own end;
    stopping again there would wait forever on the sampler's lock."""
    with meter("train", gpu_type="H100", interval=0.05) as m:
        sampler = m._sampler
        stop = sampler.stop
        reentered = []

        def interrupted_stop():
            reentered.append(m.stop("SIGTERM"))  # what the handler does, on the same thread
            return stop()

        sampler.stop = interrupted_stop
    assert reentered == [None]
    assert m.cost.status == "succeeded" and [s.status for s in Ledger().steps()] == ["succeeded"]


def test_a_step_sampled_once_an_hour_still_checkpoints(monkeypatch, simulated_gpu):
    """Checkpoints have their own thread: a step whose sampler wakes once an hour still refreshes its
    ledger row (its heartbeat), so it never reads as lost while it runs."""
    from sqlalchemy import select

    from mlcost.ledger.schema import effective_status, step_figures

    monkeypatch.setattr("mlcost.checkpoints.CHECKPOINT_EVERY_S", 0.1)
    simulated_gpu("busy")
    beats = set()
    with meter("slow", gpus=1, gpu_type="H100", interval=3600) as m:
        deadline = time.monotonic() + 60
        while len(beats) < 3:  # the start row's heartbeat, then two checkpoints
            assert time.monotonic() < deadline, f"the row was refreshed {len(beats) - 1} times"
            with Ledger().store.connect() as conn:
                row = conn.execute(select(step_figures.c.heartbeat_at, effective_status().label("status"))
                                   .where(step_figures.c.step_id == m.step_id)).first()  # fmt: skip
            if row is not None:
                assert row.status == "running"
                beats.add(row.heartbeat_at)
            time.sleep(0.05)
    assert m.cost.status == "succeeded" and Ledger().steps()[0].status == "succeeded"
