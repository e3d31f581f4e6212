"""What mlcost's NVML backend sees and costs on this machine's GPUs: run it on a GPU machine and put
its output in the README's "On a real GPU" section.

It records:

- the GPUs and the driver (names, UUIDs, MIG mode, the job's devices as mlcost resolves them);
- the per-call cost of each NVML call the backend makes (microseconds of wall and CPU time);
- whether GPM is available (Hopper and newer) and which utilisation signal mlcost picks;
- the sampler's CPU per sample (the full backend, every device, at ``--interval``);
- over a load (``--seconds`` of matrix multiplies when torch with CUDA is installed; otherwise the
  GPUs' own activity): the energy counter against integrated power, and GPM SM activity against
  NVML's utilisation, per device.

    python benchmarks/gpu_check.py [--seconds 5] [--interval 0.1] [--json out.json]
    python benchmarks/gpu_check.py --standin   # no GPU: against tests/nvml_standin's library

``--standin`` builds the stand-in libnvidia-ml.so.1 with the machine's C compiler and runs this
script again with it on LD_LIBRARY_PATH and a trace of 2 H100s, which shows the script works (its
figures are then the stand-in's, not a GPU's).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]


def _timed(fn: Any, *args: Any, n: int = 200) -> dict[str, float] | str:
    """Median-free but warm: one call first, then ``n`` calls; µs of wall and CPU per call."""
    import pynvml

    try:
        fn(*args)
    except pynvml.NVMLError as e:
        return f"not available ({e})"
    wall, cpu = time.perf_counter(), time.process_time()
    for _ in range(n):
        fn(*args)
    return {"wall_us": (time.perf_counter() - wall) / n * 1e6, "cpu_us": (time.process_time() - cpu) / n * 1e6}


def call_costs(handle: Any, mig_gi: int | None = None) -> dict[str, Any]:
    import pynvml as n

    costs = {
        "nvmlDeviceGetUtilizationRates": _timed(n.nvmlDeviceGetUtilizationRates, handle),
        "nvmlDeviceGetPowerUsage": _timed(n.nvmlDeviceGetPowerUsage, handle),
        "nvmlDeviceGetMemoryInfo": _timed(n.nvmlDeviceGetMemoryInfo, handle),
        "nvmlDeviceGetTotalEnergyConsumption": _timed(n.nvmlDeviceGetTotalEnergyConsumption, handle),
        "nvmlDeviceGetTemperature": _timed(n.nvmlDeviceGetTemperature, handle, n.NVML_TEMPERATURE_GPU),
        "nvmlDeviceGetClockInfo": _timed(n.nvmlDeviceGetClockInfo, handle, n.NVML_CLOCK_SM),
    }
    try:
        supported = n.nvmlGpmQueryDeviceSupport(handle).isSupportedDevice
    except n.NVMLError:
        supported = 0
    if supported:
        from mlcost.telemetry.gpm import GpmWindow

        window = GpmWindow(n, handle, mig_gi)
        time.sleep(0.2)  # NVML: GPM samples should be over 100 ms apart
        costs["GPM read (nvmlGpmSampleGet + nvmlGpmMetricsGet)"] = _timed(window.read, n=50)
        window.free()
    return costs


def _load(seconds: float) -> str:
    """A few seconds of large matrix multiplies on every visible GPU, if torch with CUDA is here."""
    try:
        import torch
    except ImportError:
        return "none (torch is not installed): the GPUs' own activity was measured"
    if not torch.cuda.is_available():
        return "none (torch sees no CUDA device)"

    def work(i: int) -> None:
        device = torch.device(f"cuda:{i}")
        a = torch.randn(8192, 8192, device=device, dtype=torch.bfloat16)
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            for _ in range(10):
                a @ a
            torch.cuda.synchronize(device)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(torch.cuda.device_count())]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return f"{seconds:.0f} s of bf16 8192x8192 matmuls on {len(threads)} GPU(s)"


def check(seconds: float, interval: float) -> dict[str, Any]:
    import pynvml

    from mlcost.telemetry import open_backend
    from mlcost.telemetry.nvml import NvmlBackend
    from mlcost.telemetry.sampler import Sampler

    report: dict[str, Any] = {}
    backend = open_backend({**os.environ, "MLCOST_GPU_BACKEND": "nvml"})
    if not isinstance(backend, NvmlBackend):
        return {"error": f"NVML did not start: {backend.status.degraded_reasons}"}
    report["driver"] = pynvml.nvmlSystemGetDriverVersion()
    gpus = []
    for i in range(pynvml.nvmlDeviceGetCount()):
        h = pynvml.nvmlDeviceGetHandleByIndex(i)
        try:
            mig = pynvml.nvmlDeviceGetMigMode(h)[0] == pynvml.NVML_DEVICE_MIG_ENABLE
        except pynvml.NVMLError:
            mig = None
        gpus.append({"index": i, "name": pynvml.nvmlDeviceGetName(h), "uuid": pynvml.nvmlDeviceGetUUID(h), "mig": mig})
    report["gpus"] = gpus
    report["call_costs_gpu0"] = call_costs(pynvml.nvmlDeviceGetHandleByIndex(0))

    devices = backend.open()
    report["job_devices"] = [{"index": d.index, "name": d.name, "gpu_type": d.gpu_type, "uuid": d.uuid}
                             for d in devices]
    report["util_signal"] = backend.status.util_signal
    report["gpm"] = backend.status.util_signal == "gpm_sm_activity"
    report["energy_method"] = backend.status.energy_method
    report["warnings"] = backend.status.warnings

    sampler = Sampler(backend, interval=interval)
    sampler.start()
    cpu0 = time.process_time()
    report["load"] = _load(seconds)
    if report["load"].startswith("none"):
        time.sleep(seconds)
    cpu = time.process_time() - cpu0
    usage = sampler.stop()
    report["sampler"] = {"interval_s": interval, "samples": usage.samples, "devices": len(devices),
                         "cpu_us_per_sample": cpu / max(usage.samples, 1) * 1e6
                         if report["load"].startswith("none") else "not measured (the load ran in this process)"}
    report["devices"] = [{
        "index": d.index,
        "energy_counter_kwh": d.energy_kwh if d.energy_method == "counter" else None,
        "integrated_power_kwh": d.power_integrated_kwh,
        "counter_vs_integrated_pct": (100 * (d.power_integrated_kwh / d.energy_kwh - 1)
                                      if d.energy_method == "counter" and d.energy_kwh and d.power_integrated_kwh
                                      else None),
        "gpm_sm_active_mean_pct": d.sm_active_mean_pct,
        "nvml_util_mean_pct": d.nvml_util_mean_pct,
        "power_mean_w": d.power_mean_w,
    } for d in usage.devices]
    if not report["load"].startswith("none"):  # the sampler's CPU, measured apart from the load
        idle = Sampler(open_backend({**os.environ, "MLCOST_GPU_BACKEND": "nvml"}), interval=interval).start()
        cpu0 = time.process_time()
        time.sleep(min(seconds, 3.0))
        cpu = time.process_time() - cpu0
        n = idle.stop().samples
        report["sampler"]["cpu_us_per_sample"] = cpu / max(n, 1) * 1e6
    return report


def show(report: dict[str, Any]) -> None:
    if "error" in report:
        print(report["error"])
        return
    print(f"driver: {report['driver']}")
    for gpu in report["gpus"]:
        mig = {True: "on", False: "off", None: "n/a"}[gpu["mig"]]
        print(f"GPU {gpu['index']}: {gpu['name']} {gpu['uuid']} MIG {mig}")
    print(f"job devices: {', '.join(d['name'] for d in report['job_devices'])}")
    print(f"GPM: {'yes' if report['gpm'] else 'no'}; util signal {report['util_signal']}; "
          f"energy {report['energy_method']}")
    print("per-call cost on GPU 0 (wall / CPU, microseconds):")
    for name, cost in report["call_costs_gpu0"].items():
        text = cost if isinstance(cost, str) else f"{cost['wall_us']:8.1f} / {cost['cpu_us']:8.1f}"
        print(f"  {name:52s} {text}")
    s = report["sampler"]
    per = s["cpu_us_per_sample"]
    print(f"sampler: {per if isinstance(per, str) else f'{per:.1f} us'} CPU per sample "
          f"({s['devices']} device(s), interval {s['interval_s']} s)")
    print(f"load: {report['load']}")
    def g(v: Any, unit: str = "") -> str:
        return "n/a" if v is None else f"{v:.4g}{unit}"

    for d in report["devices"]:
        diff = d["counter_vs_integrated_pct"]
        print(f"  device {d['index']}: energy counter {g(d['energy_counter_kwh'], ' kWh')} vs integrated power "
              f"{g(d['integrated_power_kwh'], ' kWh')} ({'n/a' if diff is None else f'{diff:+.2f}%'}); "
              f"GPM SM activity {g(d['gpm_sm_active_mean_pct'], '%')} vs NVML util {g(d['nvml_util_mean_pct'], '%')}; "
              f"power {g(d['power_mean_w'], ' W')}")
    for w in report["warnings"]:
        print(f"warning: {w}")


def run_on_standin(argv: list[str]) -> int:
    """Build the stand-in and run this script against it (LD_LIBRARY_PATH is read at process start)."""
    sys.path.insert(0, str(ROOT / "tests" / "nvml_standin"))
    import build

    if build.compiler() is None:
        print("no C compiler: the NVML stand-in cannot be built")
        return 2
    with tempfile.TemporaryDirectory() as tmp:
        lib = build.build(tmp)
        trace = Path(tmp) / "trace.csv"
        trace.write_text("t_s,device,util_pct,mem_used_gb,power_w,tensor_active_pct\n"
                         "0,0,95,60,640,55\n1,0,40,60,400,20\n0,1,20,10,200,5\n")
        path = os.pathsep.join(filter(None, [str(lib), os.environ.get("LD_LIBRARY_PATH")]))
        env = {**os.environ, "LD_LIBRARY_PATH": path, "MLCOST_NVML_STANDIN_TRACE": str(trace),
               "MLCOST_NVML_STANDIN_DEVICES": "2",
               "MLCOST_NVML_STANDIN_GPU": "H100"}
        print("(against the NVML stand-in library: these are the stand-in's figures, not a GPU's)")
        return subprocess.run([sys.executable, __file__, *argv], env=env).returncode


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--interval", type=float, default=0.1)
    parser.add_argument("--json", help="also write the figures to this file")
    parser.add_argument("--standin", action="store_true", help="run against tests/nvml_standin (no GPU needed)")
    args = parser.parse_args()
    if args.standin:
        return run_on_standin([a for a in sys.argv[1:] if a != "--standin"])
    import logging

    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    report = check(args.seconds, args.interval)
    show(report)
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2))
    return 0 if "error" not in report else 1


if __name__ == "__main__":
    sys.exit(main())
