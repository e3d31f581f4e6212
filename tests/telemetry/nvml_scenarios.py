"""NVML scenarios and their assertions, shared by two suites (issue 15):

- ``tests/telemetry/test_nvml_scenarios.py`` runs each one in-process on the Python
  :class:`~mlcost.telemetry.simulated_nvml.SimulatedNVML`;
- ``tests/nvml_standin/test_standin.py`` runs the same one in a subprocess with
  ``MLCOST_GPU_BACKEND=nvml``, where the real ``pynvml`` loads the C stand-in
  ``libnvidia-ml.so.1`` through ``LD_LIBRARY_PATH``.

Both produce the same JSON-able result and :func:`check` holds it to the trace within 1%, so a
struct layout, a symbol name or a return code the backend gets wrong through ctypes fails here even
though the Python stand-in (which has no ctypes layer) passes.

Two kinds of run: ``sampler`` (a hand-driven clock: the simulated clock, or the stand-in's
``nvmlStandinSetTime``; no wall-clock dependence) and ``meter`` (the whole ``@metered`` step in real
time, for the record a step leaves when telemetry fails: the value returned, ``degraded`` with the
reason, one warning).

Run as a script (by the stand-in suite): ``python nvml_scenarios.py sampler|meter NAME``; it prints
the result as JSON. The stand-in's configuration comes from the environment (:func:`standin_env`).
"""

from __future__ import annotations

import json
import logging
import math
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

HEADER = "t_s,device,util_pct,mem_used_gb,power_w,tensor_active_pct"
REL = 0.01  # the bar: figures within 1% of the trace
DRIVER_NOT_LOADED = 9


@dataclass(frozen=True)
class Scenario:
    name: str
    rows: tuple[tuple[Any, ...], ...]
    gpu: str = "H100"
    devices: int = 1
    mig: tuple[str, ...] = ()
    not_supported: tuple[str, ...] = ()
    lost: dict[int, float] = field(default_factory=dict)  # trace device -> trace time
    visible: str | None = None
    init_error: int | None = None
    steps: int = 40
    interval: float = 0.1
    header: str = HEADER
    checks: tuple[str, ...] = ()  # names of the check functions below

    @property
    def energy_counter(self) -> bool:
        return self.gpu != "P100"  # the old (pre-Volta) model: no total-energy counter


BUSY = ((0.0, 0, 90, 30, 500, 40), (1.0, 0, 0, 30, 120, 0), (2.0, 0, 60, 50, 400, 10))
OLD = ((0.0, 0, 90, 10, 200, 0), (1.0, 0, 0, 10, 40, 0), (2.0, 0, 60, 14, 160, 0))  # a 16 GB, 250 W board
THREE = ((0.0, 0, 10, 5, 100, 0), (0.0, 1, 70, 40, 450, 30), (0.0, 2, 30, 20, 300, 10),
         (2.0, 0, 0, 5, 90, 0), (2.0, 1, 95, 38, 600, 50), (2.0, 2, 50, 25, 350, 20))

SCENARIOS = {s.name: s for s in (
    Scenario("h100_pair", THREE[:2] + THREE[3:5], devices=2, checks=("discovery", "figures", "gpm_signal")),
    Scenario("a100_without_gpm", BUSY, gpu="A100-80GB", checks=("discovery", "figures", "nvml_signal")),
    Scenario("old_gpu_without_energy_counter", OLD, gpu="P100", checks=("figures", "integrated_energy")),
    Scenario("visible_indices", THREE, gpu="A100-80GB", devices=3, visible="2,0", checks=("visible", "figures")),
    Scenario("visible_gpu_uuids", THREE, gpu="A100-80GB", devices=3,
             visible="GPU-5e1f0002-aaaa-4bbb-8ccc-000000000002,GPU-5e1f0000", checks=("visible", "figures")),
    Scenario("mig_h100_two_profiles", THREE[:2] + THREE[3:5], mig=("1g.10gb", "3g.40gb"),
             checks=("mig_profiles", "figures", "gpm_signal")),
    Scenario("visible_mig_uuid", THREE, devices=2, mig=("1g.10gb", "3g.40gb"),
             visible="MIG-7a1c0101-dddd-4eee-8fff-000000000003", checks=("visible", "mig_profiles")),
    Scenario("mig_gpu_index", THREE, devices=2, mig=("1g.10gb", "3g.40gb"), visible="1",
             checks=("visible", "mig_profiles")),
    Scenario("mig_a100_without_util", THREE, gpu="A100-40GB", mig=("1g.5gb", "2g.10gb", "4g.20gb"),
             checks=("mig_profiles", "no_util_signal")),
    Scenario("power_not_supported", BUSY, gpu="A100-80GB", not_supported=("nvmlDeviceGetPowerUsage",),
             checks=("warned_once", "figures")),
    Scenario("gpu_lost", BUSY, lost={0: 0.2}, checks=("lost",)),
    Scenario("driver_not_loaded", BUSY, init_error=DRIVER_NOT_LOADED, checks=("no_driver",)),
)}

# what each scenario's visible devices are, as (physical index, MIG profile)
EXPECTED_VISIBLE = {
    "visible_indices": [(2, None), (0, None)],
    "visible_gpu_uuids": [(2, None), (0, None)],
    "visible_mig_uuid": [(1, "3g.40gb")],
    "mig_gpu_index": [(1, "1g.10gb")],  # CUDA: a MIG-enabled GPU's index means its first instance
}
EXPECTED_WARNING = {"power_not_supported": "power", "gpu_lost": "lost", "old_gpu_without_energy_counter": "energy",
                    "driver_not_loaded": "Driver Not Loaded"}


def write_trace(s: Scenario, folder: Path) -> Path:
    path = folder / f"{s.name}.csv"
    width = len(s.header.split(","))
    lines = [",".join(str(v) for v in (*row, *[""] * (width - len(row)))) for row in s.rows]
    path.write_text(s.header + "\n" + "\n".join(lines) + "\n")
    return path


def standin_env(s: Scenario, trace: Path) -> dict[str, str]:
    """The stand-in library's settings for ``s`` (see tests/nvml_standin/nvml_standin.c)."""
    env = {
        "MLCOST_GPU_BACKEND": "nvml",
        "MLCOST_NVML_STANDIN_TRACE": str(trace),
        "MLCOST_NVML_STANDIN_GPU": s.gpu,
        "MLCOST_NVML_STANDIN_DEVICES": str(s.devices),
        "MLCOST_NVML_STANDIN_MIG": ",".join(s.mig),
        "MLCOST_NVML_STANDIN_NOT_SUPPORTED": ",".join(s.not_supported),
        "MLCOST_NVML_STANDIN_LOST": ",".join(f"{k}:{t}" for k, t in s.lost.items()),
        "MLCOST_NVML_STANDIN_INIT_ERROR": str(s.init_error or ""),
    }
    if s.visible is not None:
        env["CUDA_VISIBLE_DEVICES"] = s.visible
    return env


def simulated_nvml(s: Scenario, trace: Path, clock: Callable[[], float], start: float | None = 0.0) -> Any:
    from mlcost.telemetry.simulated_nvml import SimulatedNVML
    from mlcost.telemetry.traces import load_trace

    return SimulatedNVML(
        load_trace(trace), gpu_type=s.gpu, devices=s.devices, clock=clock, start=start,
        energy_counter=s.energy_counter, gpm=s.gpu in ("H100", "H200"), not_supported=s.not_supported,
        mig=list(s.mig) or None, init_error=s.init_error, lost=s.lost,
    )


# running -------------------------------------------------------------------------------------------

class _Warnings(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


def run_sampler(s: Scenario, backend: Any, set_time: Callable[[float], None]) -> dict[str, Any]:
    """Open ``backend``, sample it ``s.steps`` times ``s.interval`` apart on a hand-driven clock."""
    from mlcost.telemetry.sampler import Sampler

    t = [0.0]
    set_time(0.0)
    sampler = Sampler(backend, interval=s.interval, clock=lambda: t[0])
    handler = _Warnings()
    logging.getLogger("mlcost").addHandler(handler)
    try:
        sampler.open()
        for _ in range(s.steps):
            t[0] = round(t[0] + s.interval, 9)
            set_time(t[0])
            sampler.sample_once()
        usage = sampler.stop()
    finally:
        logging.getLogger("mlcost").removeHandler(handler)
    return {
        "devices": [asdict(d) for d in sampler.devices],
        "usage": usage.model_dump(),
        "status": asdict(sampler.backend.status),
        "warnings": handler.messages,
        "t_end": t[0],
    }


def run_meter(s: Scenario, make_backend: Callable[[], Any] | None, ledger: str, seconds: float = 0.4) -> dict[str, Any]:
    """A whole ``@metered`` step in real time: what it returns and the record it leaves.
    ``make_backend`` (None: the meter's own choice from the environment) runs while warnings are
    being counted, since opening NVML is where a missing driver is warned about."""
    from mlcost import metered

    handler = _Warnings()
    logging.getLogger("mlcost").addHandler(handler)
    try:
        backend = make_backend() if make_backend else None

        @metered(f"scenario-{s.name}", interval=0.02, backend=backend, ledger=ledger)
        def body() -> int:
            time.sleep(seconds)  # a lower bound: the step outlives any loss time below it
            return 42

        value = body()
    finally:
        logging.getLogger("mlcost").removeHandler(handler)
    return {"value": value, "record": body.last_cost.model_dump(), "warnings": handler.messages}


# the shared assertions ------------------------------------------------------------------------------

def _approx(value: float | None, expected: float, what: str, rel: float = REL, abs_: float = 1e-9) -> None:
    assert value is not None, f"{what}: None, expected {expected:.6g}"
    assert math.isclose(value, expected, rel_tol=rel, abs_tol=abs_), f"{what}: {value:.6g} != {expected:.6g} ±{rel:.0%}"


def _trace_device(s: Scenario, result: dict[str, Any], index: int) -> int:
    """The trace device behind the job's device ``index`` (MIG instances: parent-major ordinal)."""
    info = result["devices"][index]
    if info["mig_profile"] is None:
        return info["nvml_index"]
    j = s.mig.index(info["mig_profile"])
    return info["nvml_index"] * len(s.mig) + j


def check_discovery(s: Scenario, result: dict[str, Any]) -> None:
    from mlcost.telemetry.traces import GPU_SPECS

    devices = result["devices"]
    assert [d["index"] for d in devices] == list(range(s.devices)), devices
    assert len({d["uuid"] for d in devices}) == s.devices and all(d["uuid"].startswith("GPU-") for d in devices)
    board_w, mem_gb = GPU_SPECS[s.gpu]
    for d in devices:
        assert d["gpu_type"] == s.gpu and d["mig_profile"] is None, d
        _approx(d["mem_total_gb"], mem_gb, "memory total")
        _approx(d["power_limit_w"], board_w, "power limit")


def check_figures(s: Scenario, result: dict[str, Any]) -> None:
    """Utilisation, idle time, memory peak, power and energy of every device against the trace."""
    from mlcost.telemetry.traces import truth

    trace = _load(s)
    usage = result["usage"]
    for i, dev in enumerate(usage["devices"]):
        k = _trace_device(s, result, i)
        t = truth(trace, k, 0.0, result["t_end"])
        share = _share(s, result, i)
        _approx(dev["seconds"], result["t_end"], f"device {i} seconds")
        if dev["util_signal"] != "none":
            _approx(dev["util_mean_pct"], t.util_mean_pct, f"device {i} util", abs_=0.5)
            _approx(dev["idle_seconds"], t.idle_seconds, f"device {i} idle seconds", abs_=s.interval)
        _approx(dev["mem_peak_gb"], t.mem_peak_gb, f"device {i} memory peak")
        if "nvmlDeviceGetPowerUsage" in s.not_supported:
            assert dev["power_mean_w"] is None and dev["power_integrated_kwh"] is None, dev
        else:
            parent_w = _parent_power(s, result, i)
            _approx(dev["power_mean_w"], parent_w * share, f"device {i} power")
        if s.energy_counter:
            assert dev["energy_method"] == "counter", dev
            _approx(dev["energy_kwh"] * 3.6e6, _parent_energy(s, result, i) * share, f"device {i} counter energy")
            if dev["power_integrated_kwh"] is not None:  # the cross-check: integration agrees with the counter
                _approx(dev["power_integrated_kwh"], dev["energy_kwh"], f"device {i} integrated vs counter")


def check_gpm_signal(s: Scenario, result: dict[str, Any]) -> None:
    from mlcost.telemetry.traces import truth

    assert result["status"]["util_signal"] == "gpm_sm_activity", result["status"]
    trace = _load(s)
    for i, dev in enumerate(result["usage"]["devices"]):
        k = _trace_device(s, result, i)
        t = truth(trace, k, 0.0, result["t_end"])
        _approx(dev["sm_active_mean_pct"], t.util_mean_pct, f"device {i} GPM SM activity", abs_=0.5)
        tensor = trace.integral(k, "tensor_active_pct", 0.0, result["t_end"]) / result["t_end"]
        _approx(dev["tensor_active_mean_pct"], tensor, f"device {i} GPM tensor activity", abs_=0.5)
        assert dev["util_signal"] == "gpm_sm_activity", dev
    assert not result["warnings"], result["warnings"]


def check_nvml_signal(s: Scenario, result: dict[str, Any]) -> None:
    """Ampere: no GPM, NVML's util is the signal, and that is not worth a warning."""
    assert result["status"]["util_signal"] == "nvml_util", result["status"]
    assert all(d["sm_active_mean_pct"] is None and d["tensor_active_mean_pct"] is None
               for d in result["usage"]["devices"])
    assert all(d["util_signal"] == "nvml_util" for d in result["usage"]["devices"])
    assert not result["warnings"] and result["usage"]["telemetry"] != "degraded", result


def check_integrated_energy(s: Scenario, result: dict[str, Any]) -> None:
    from mlcost.telemetry.traces import truth

    (dev,) = result["usage"]["devices"]
    assert dev["energy_method"] == "integrated" and dev["gpu_type"] is None, dev
    t = truth(_load(s), 0, 0.0, result["t_end"])
    _approx(dev["energy_kwh"] * 3.6e6, t.energy_j, "integrated energy")
    check_warned_once(s, result)


def check_visible(s: Scenario, result: dict[str, Any]) -> None:
    got = [(d["nvml_index"], d["mig_profile"]) for d in result["devices"]]
    assert got == EXPECTED_VISIBLE[s.name], got
    assert [d["index"] for d in result["devices"]] == list(range(len(got)))


def check_mig_profiles(s: Scenario, result: dict[str, Any]) -> None:
    devices = result["devices"]
    if s.name not in EXPECTED_VISIBLE:
        assert [d["mig_profile"] for d in devices] == list(s.mig) * s.devices
    for d in devices:
        assert d["uuid"].startswith("MIG-") and d["gpu_type"] == s.gpu, d
        _approx(d["mem_total_gb"], float(d["mig_profile"].split(".")[1].removesuffix("gb")), "instance memory")
    # each instance is priced as its own profile
    from mlcost.pricing.catalog import PriceCatalog
    from mlcost.pricing.cost import device_unit_prices

    catalog = PriceCatalog.load()
    expected = [catalog.gpu_hour_usd(f"{s.gpu}:{d['mig_profile']}") for d in devices]
    from mlcost.usage import DeviceUsage

    got = device_unit_prices([DeviceUsage.model_validate(d) for d in result["usage"]["devices"]], catalog, "on_demand")
    assert got == expected, (got, expected)


def check_no_util_signal(s: Scenario, result: dict[str, Any]) -> None:
    """MIG on Ampere: no utilisation at all. The record says so and idle is unknown, never 0."""
    usage = result["usage"]
    assert result["status"]["util_signal"] == "none"
    assert all(d["util_signal"] == "none" and d["util_mean_pct"] is None for d in usage["devices"])
    from mlcost.usage import Usage

    assert Usage.model_validate(usage).idle_fraction is None
    assert usage["telemetry"] == "degraded" and any("util" in r for r in usage["degraded_reasons"])
    assert len(result["warnings"]) == len(usage["devices"]), result["warnings"]  # one per device


def check_warned_once(s: Scenario, result: dict[str, Any]) -> None:
    word = EXPECTED_WARNING[s.name]
    hits = [w for w in result["warnings"] if word in w]
    assert len(hits) == 1, result["warnings"]
    usage = result.get("usage") or result["record"]
    assert usage["telemetry"] == "degraded" and any(word in r for r in usage["degraded_reasons"]), usage


def check_lost(s: Scenario, result: dict[str, Any]) -> None:
    (dev,) = result["usage"]["devices"]
    _approx(dev["lost_at_s"], s.lost[0], "lost at", abs_=s.interval)
    _approx(dev["seconds"], s.lost[0], "metered seconds", abs_=s.interval)
    check_warned_once(s, result)


def check_no_driver(s: Scenario, result: dict[str, Any]) -> None:
    usage = result["usage"]
    assert usage["devices"] == [] and "Driver Not Loaded" in " ".join(usage["degraded_reasons"]), usage


def check(s: Scenario, result: dict[str, Any]) -> None:
    for name in s.checks:
        globals()[f"check_{name}"](s, result)


def check_meter(s: Scenario, result: dict[str, Any]) -> None:
    """The step returned its value and its record says what failed: the errors' shared contract."""
    record = result["record"]
    assert result["value"] == 42 and record["status"] == "succeeded", record
    if s.init_error is not None:
        assert record["gpus"] == 0
    check_warned_once(s, result)


ERROR_SCENARIOS = ("power_not_supported", "gpu_lost", "old_gpu_without_energy_counter", "driver_not_loaded")


# helpers of the checks --------------------------------------------------------------------------------

_TRACES: dict[str, Any] = {}


def _load(s: Scenario) -> Any:
    from mlcost.telemetry.traces import Trace, TraceRow

    if s.name not in _TRACES:
        rows: dict[int, list[TraceRow]] = {}
        for r in s.rows:
            rows.setdefault(int(r[1]), []).append(TraceRow(float(r[0]), r[2], r[3], r[4], None, r[5]))
        _TRACES[s.name] = Trace(rows)
    return _TRACES[s.name]


def _share(s: Scenario, result: dict[str, Any], index: int) -> float:
    profile = result["devices"][index]["mig_profile"]
    return 1.0 if profile is None else int(profile.split("g.")[0]) / 7


def _siblings(s: Scenario, result: dict[str, Any], index: int) -> list[int]:
    info = result["devices"][index]
    if info["mig_profile"] is None:
        return [info["nvml_index"]]
    return [info["nvml_index"] * len(s.mig) + j for j in range(len(s.mig))]


def _parent_power(s: Scenario, result: dict[str, Any], index: int) -> float:
    trace, end = _load(s), result["t_end"]
    return sum(trace.integral(k, "power_w", 0.0, end) for k in _siblings(s, result, index)) / end


def _parent_energy(s: Scenario, result: dict[str, Any], index: int) -> float:
    trace, end = _load(s), result["t_end"]
    return sum(trace.integral(k, "power_w", 0.0, end) for k in _siblings(s, result, index))


# the stand-in suite's subprocess ----------------------------------------------------------------------

def _main(kind: str, name: str) -> None:
    import ctypes
    import os

    import pynvml

    from mlcost.telemetry import open_backend

    symbols: set[str] = set()
    lookup = pynvml._nvmlGetFunctionPointer

    def recording(symbol: str) -> Any:  # which C symbols the backend reaches, for the suite to compare
        symbols.add(symbol)
        return lookup(symbol)

    pynvml._nvmlGetFunctionPointer = recording
    s = SCENARIOS[name]
    if kind == "sampler":
        lib = ctypes.CDLL("libnvidia-ml.so.1")  # the same library pynvml loads (LD_LIBRARY_PATH)
        lib.nvmlStandinSetTime.argtypes = [ctypes.c_double]
        lib.nvmlStandinSetTime(0.0)
        result = run_sampler(s, open_backend(), lib.nvmlStandinSetTime)
    else:
        result = run_meter(s, None, os.environ["MLCOST_LEDGER"])
    result["symbols"] = sorted(symbols)
    json.dump(result, sys.stdout)


if __name__ == "__main__":
    _main(sys.argv[1], sys.argv[2])
