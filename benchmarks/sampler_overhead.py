"""CPU time per sample: mlcost's sampler next to MLflow's system-metrics monitor, in one run.

Both read the same simulated device set (8 x H100 on the simulated NVML: MLflow's GPU monitor is
pointed at the same stand-in for ``pynvml``), at the same interval, for the same wall time; both also
sample the host (MLflow: CPU, memory, disk, network; mlcost: the job's process tree). The main thread
sleeps meanwhile, so the process's CPU time is the sampler's. Prints CPU per sample for each, the
ratio, and mlcost's share of one core at 10 Hz.

A third contender is the same mlcost meter through the real ``pynvml`` and ctypes, against the C
stand-in ``libnvidia-ml.so.1`` of tests/nvml_standin (built here with the machine's C compiler, run
in a child process with it on LD_LIBRARY_PATH): the per-call cost of crossing into a C library,
which the Python stand-in cannot show. Skipped, saying so, without a C compiler.

It also prints a floor measured the same way: a bare thread that wakes at the interval and makes
two raw NVML calls per device (utilisation, power), with no bookkeeping at all. No sampler of
these devices can cost less than that, so it says how much of mlcost's figure is mlcost's own.

    python benchmarks/sampler_overhead.py [--seconds 10] [--devices 8] [--interval 0.1] [--rounds 3]
"""

from __future__ import annotations

import argparse
import logging
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

os.environ.setdefault("MLFLOW_ENABLE_ASYNC_LOGGING", "false")


def _simulated_nvml(devices: int):
    from mlcost.telemetry.simulated_nvml import SimulatedNVML
    from mlcost.telemetry.traces import load_trace

    return SimulatedNVML(load_trace("busy", gpu_type="H100", devices=devices), gpu_type="H100", devices=devices)


def _cpu_during(seconds: float) -> float:
    before = time.process_time()
    time.sleep(seconds)
    return time.process_time() - before


def measure_floor(devices: int, interval: float, seconds: float) -> tuple[float, int]:
    """A bare thread: wake, read util and power of each device, sleep. Nothing is kept."""
    nvml = _simulated_nvml(devices)
    nvml.nvmlInit()
    handles = [nvml.nvmlDeviceGetHandleByIndex(i) for i in range(devices)]
    running = threading.Lock()
    running.acquire()
    samples = 0

    def loop() -> None:
        nonlocal samples
        next_t = time.monotonic() + interval
        while not running.acquire(timeout=max(0.0, next_t - time.monotonic())):
            next_t += interval
            for h in handles:
                nvml.nvmlDeviceGetUtilizationRates(h)
                nvml.nvmlDeviceGetPowerUsage(h)
            samples += 1

    thread = threading.Thread(target=loop, daemon=True)
    thread.start()
    cpu = _cpu_during(seconds)
    running.release()
    thread.join()
    return cpu, samples


def measure_mlcost(devices: int, interval: float, seconds: float) -> tuple[float, int]:
    """The full meter: NVML backend over the stand-in, host sampler, live guardrails each sample."""
    from mlcost.telemetry.nvml import NvmlBackend

    return _meter(NvmlBackend(nvml=_simulated_nvml(devices), telemetry="simulated"), interval, seconds)


def _meter(backend, interval: float, seconds: float) -> tuple[float, int]:
    from mlcost.metering import Meter

    with tempfile.TemporaryDirectory() as tmp:
        m = Meter("bench", gpu_type="H100", budget_usd=1e9, idle_timeout="1h", max_duration="1h", interval=interval,
                  backend=backend, ledger=os.path.join(tmp, "ledger.db"))
        with m:
            cpu = _cpu_during(seconds)
    return cpu, m.cost.samples


def build_standin(folder: str, devices: int) -> dict[str, str] | None:
    """Build the C stand-in into ``folder``; the child's environment, or None without a compiler."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "nvml_standin"))
    import build

    if build.compiler() is None:
        return None
    lib = build.build(folder)
    trace = Path(folder) / "busy.csv"  # the busy preset's first row, held: the same load as the others
    trace.write_text("t_s,device,util_pct,mem_used_gb,power_w,tensor_active_pct\n"
                     + "".join(f"0,{d},94,68,614.7,56.4\n" for d in range(devices)))
    path = os.pathsep.join(filter(None, [str(lib), os.environ.get("LD_LIBRARY_PATH")]))
    return {**os.environ, "LD_LIBRARY_PATH": path, "MLCOST_GPU_BACKEND": "nvml", "MLCOST_NVML_STANDIN_GPU": "H100",
            "MLCOST_NVML_STANDIN_TRACE": str(trace), "MLCOST_NVML_STANDIN_DEVICES": str(devices)}


def measure_standin(env: dict[str, str], interval: float, seconds: float) -> tuple[float, int]:
    """The full meter through pynvml + ctypes + the C stand-in, in a child (LD_LIBRARY_PATH is read
    when a process starts); the child measures its own CPU the same way."""
    out = subprocess.run([sys.executable, __file__, "--standin-child", "--interval", str(interval),
                          "--seconds", str(seconds)], env=env, capture_output=True, text=True, check=True).stdout
    cpu, samples = out.split()[-2:]
    return float(cpu), int(samples)


def _standin_child(interval: float, seconds: float) -> None:
    from mlcost.telemetry import open_backend

    backend = open_backend()
    assert type(backend).__name__ == "NvmlBackend", backend.status.degraded_reasons
    cpu, samples = _meter(backend, interval, seconds)
    print(cpu, samples)


def measure_mlflow(devices: int, interval: float, seconds: float) -> tuple[float, int]:
    """MLflow's own monitor, logging every sample to a SQLite tracking store (its default: one
    sample per log)."""
    import mlflow
    import mlflow.system_metrics.metrics.gpu_monitor as gpu_monitor
    from mlflow.system_metrics.system_metrics_monitor import SystemMetricsMonitor
    from mlflow.tracking import MlflowClient

    gpu_monitor.pynvml = _simulated_nvml(devices)  # the same stand-in, where MLflow imports pynvml
    with tempfile.TemporaryDirectory() as tmp:
        uri = f"sqlite:///{tmp}/mlflow.db"
        mlflow.set_tracking_uri(uri)
        client = MlflowClient(uri)
        run = client.create_run(client.create_experiment("bench"))
        monitor = SystemMetricsMonitor(
            run.info.run_id, sampling_interval=interval, samples_before_logging=1, tracking_uri=uri
        )
        assert any(type(m).__name__ == "GPUMonitor" for m in monitor.monitors), "MLflow found no GPU"
        monitor.start()
        cpu = _cpu_during(seconds)
        monitor.finish()
        samples = len(client.get_metric_history(run.info.run_id, "system/gpu_0_utilization_percentage"))
    # set_tracking_uri also sets MLFLOW_TRACKING_URI: left set, the next round's meter would log its
    # step to this (deleted) store and measure MLflow's cost instead of its own
    mlflow.set_tracking_uri(None)
    os.environ.pop("MLFLOW_TRACKING_URI", None)
    return cpu, samples


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--devices", type=int, default=8)
    parser.add_argument("--interval", type=float, default=0.1)
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds; medians are printed")
    parser.add_argument("--standin-child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    logging.disable(logging.WARNING)
    if args.standin_child:
        _standin_child(args.interval, args.seconds)
        return
    folder = tempfile.TemporaryDirectory()
    standin_env = build_standin(folder.name, args.devices)

    import mlflow  # noqa: F401 - imported before measuring, so neither side pays for it

    idle = _cpu_during(1.0)
    # rounds interleave the three, so a noisy neighbour hits all of them alike; medians are printed
    floor, ours, theirs, ours_samples, theirs_samples = [], [], [], 0, 0
    standin, standin_samples = [], 0
    for _ in range(args.rounds):
        cpu, n = measure_floor(args.devices, args.interval, args.seconds)
        floor.append(cpu / n)
        cpu, n = measure_mlcost(args.devices, args.interval, args.seconds)
        ours.append(cpu / n)
        ours_samples += n
        cpu, n = measure_mlflow(args.devices, args.interval, args.seconds)
        theirs.append(cpu / n)
        theirs_samples += n
        if standin_env is not None:
            cpu, n = measure_standin(standin_env, args.interval, args.seconds)
            standin.append(cpu / n)
            standin_samples += n
    folder.cleanup()
    ratios = sorted(t / o for t, o in zip(theirs, ours, strict=True))
    floor_us, ours_us, theirs_us = (statistics.median(v) * 1e6 for v in (floor, ours, theirs))
    print(
        f"devices: {args.devices} simulated H100, interval {args.interval}s, {args.rounds} round(s) of "
        f"{args.seconds}s each (idle process: {idle * 1e3:.2f} ms CPU/s); medians over the rounds"
    )
    print(f"floor          : {floor_us:9.1f} us CPU per sample "
          f"(a bare thread reading util and power of each device, nothing else)")  # fmt: skip
    print(f"mlcost sampler : {ours_us:9.1f} us CPU per sample ({ours_samples} samples)")
    if standin:
        print(f"mlcost, pynvml : {statistics.median(standin) * 1e6:9.1f} us CPU per sample ({standin_samples} samples; "
              f"the real pynvml and ctypes into the C stand-in libnvidia-ml.so.1)")
    else:
        print("mlcost, pynvml : skipped (no C compiler to build the NVML stand-in)")
    print(f"MLflow monitor : {theirs_us:9.1f} us CPU per sample ({theirs_samples} samples)")
    print(f"ratio          : {theirs_us / ours_us:9.1f}x less CPU per sample for mlcost (target >= 100x); "
          f"per round {', '.join(f'{r:.0f}x' for r in ratios)}")  # fmt: skip
    print(f"mlcost at 10 Hz: {ours_us / 1e6 * 10 * 100:9.3f}% of one core on {args.devices} devices (target < 1%)")


if __name__ == "__main__":
    main()
