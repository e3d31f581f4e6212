"""A trace-driven stand-in for the ``pynvml`` module.

It exposes the functions and constants :class:`~mlcost.telemetry.nvml.NvmlBackend` calls, with the
same signatures, and raises the *real* ``pynvml.NVMLError_*`` classes, so the backend's error
mapping is exercised exactly as on a GPU. Values come from a :class:`~.traces.Trace` read at
``clock() - start`` (trace time 0 is the first ``nvmlInit`` unless ``start`` is given):

- utilisation and power are the trace values in force (NVML's trailing average is not modelled);
- the energy counter is the exact integral of the trace's power plus a non-zero offset ("since
  driver load"), so a test can compare integration against it;
- GPM metrics are exact time-weighted means of the trace between the two samples;
- with ``mig`` (a list of profiles such as ``["1g.10gb", "3g.40gb"]``, created on every GPU), trace
  device ``k`` drives the k-th MIG instance in parent-major order and the parent draws the sum of
  its instances' power; utilisation, power, energy, temperature and clocks are not supported on an
  instance handle, as on real hardware;
- a device the trace does not mention reads as idle (0% util, 12% of board power);
- from a device's loss time on (``lost`` or a trace ``event=lost`` row) every call raises
  ``NVMLError_GpuIsLost``.
"""

from __future__ import annotations

import itertools
import logging
import re
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any

import pynvml

from mlcost.telemetry.traces import GPU_SPECS, Trace, TraceRow

log = logging.getLogger(__name__)

NAMES = {
    "H100": "NVIDIA H100 80GB HBM3",
    "H200": "NVIDIA H200",
    "A100-80GB": "NVIDIA A100-SXM4-80GB",
    "A100-40GB": "NVIDIA A100-SXM4-40GB",
    "L40S": "NVIDIA L40S",
    "L4": "NVIDIA L4",
    "A10G": "NVIDIA A10G",
    "T4": "Tesla T4",
}
_CONSTANTS = (
    "NVMLError", "NVML_SUCCESS", "NVML_TEMPERATURE_GPU", "NVML_CLOCK_SM", "NVML_DEVICE_MIG_ENABLE",
    "NVML_DEVICE_MIG_DISABLE", "NVML_GPM_METRIC_SM_UTIL", "NVML_GPM_METRIC_SM_OCCUPANCY",
    "NVML_GPM_METRIC_ANY_TENSOR_UTIL", "NVML_GPM_METRICS_GET_VERSION", "NVML_GPM_METRIC_MAX",
)
_OFFSET_MJ = 987_654_321
# GPM metric id -> (trace row attribute, scale): occupancy is modelled as half the SM activity.
_GPM_METRICS = {
    pynvml.NVML_GPM_METRIC_SM_UTIL: ("sm", 1.0),
    pynvml.NVML_GPM_METRIC_SM_OCCUPANCY: ("sm", 0.5),
    pynvml.NVML_GPM_METRIC_ANY_TENSOR_UTIL: ("tensor_active_pct", 1.0),
}


def _error(code: int) -> pynvml.NVMLError:
    return pynvml.NVMLError(code)  # returns the NVMLError_* subclass for ``code``


@dataclass(frozen=True)
class _Handle:
    gpu: int
    mig: int | None = None  # index of the MIG device on its parent
    ordinal: int | None = None  # trace device of a MIG instance


class c_nvmlGpmMetricsGet_t:  # pynvml's name, so the backend code is identical
    """Plain-Python twin of pynvml's ctypes struct (the simulated samples are not C pointers)."""

    def __init__(self) -> None:
        self.version = self.numMetrics = 0
        self.sample1 = self.sample2 = None
        self.metrics = [SimpleNamespace(metricId=0, nvmlReturn=0, value=0.0) for _ in range(16)]


class SimulatedNVML:
    """A stand-in for the ``pynvml`` module; see the module docstring for the model."""

    c_nvmlGpmMetricsGet_t = c_nvmlGpmMetricsGet_t

    def __init__(
        self,
        trace: Trace,
        gpu_type: str = "H100",
        devices: int = 1,
        clock: Callable[[], float] = time.monotonic,
        energy_counter: bool = True,
        gpm: bool | None = None,
        not_supported: Iterable[str] = frozenset(),
        mig: list[str] | None = None,
        init_error: int | None = None,
        lost: Mapping[int, float] | None = None,
        start: float | None = None,
    ) -> None:
        for name in _CONSTANTS:
            setattr(self, name, getattr(pynvml, name))
        self.trace, self.gpu_type, self.devices, self.clock = trace, gpu_type, devices, clock
        self.gpm = gpu_type in ("H100", "H200") if gpm is None else gpm
        self.not_supported = set(not_supported) | (set() if energy_counter else {"nvmlDeviceGetTotalEnergyConsumption"})
        self.mig, self.init_error, self.start = mig, init_error, start
        self.lost = {**trace.lost_at, **(lost or {})}
        self.board_w, self.mem_gb = GPU_SPECS.get(gpu_type, (300.0, 80.0))
        self.calls: dict[str, int] = {}
        self._initialized = False
        self._ordinals = itertools.count()
        self._instances = {(g, j): next(self._ordinals) for g in range(devices) for j in range(len(mig or []))}
        self._member_cache: dict[_Handle, list[int]] = {}
        self._untraced = TraceRow(0, 0, 0, 0.12 * self.board_w, 0.0, 0.0)  # what a device the trace omits reads
        simulated = len(self._instances) if mig else devices
        if unused := sorted(d for d in trace.rows if d >= simulated):
            log.warning("mlcost: trace %s has rows for device(s) %s, but only %s are simulated; they are ignored",
                        trace.source, unused, simulated)

    # plumbing -----------------------------------------------------------------------------------
    def _now(self) -> float:
        return self.clock() - (self.start or 0.0)

    def _check(self, fn: str, handle: _Handle | None = None) -> None:
        calls = self.calls
        calls[fn] = calls.get(fn, 0) + 1
        if not self._initialized:
            raise _error(pynvml.NVML_ERROR_UNINITIALIZED)
        if handle is not None and self.lost:  # keys: GPU index for a physical handle, trace device for an instance
            key = handle.gpu if handle.mig is None else handle.ordinal
            if key in self.lost and self._now() >= self.lost[key]:
                raise _error(pynvml.NVML_ERROR_GPU_IS_LOST)
        if fn in self.not_supported:
            raise _error(pynvml.NVML_ERROR_NOT_SUPPORTED)

    def _row(self, handle: _Handle, t: float | None = None) -> TraceRow:
        device = handle.gpu if handle.ordinal is None else handle.ordinal
        return self.trace.row_at(device, self._now() if t is None else t) or self._untraced

    def _members(self, handle: _Handle) -> list[int]:
        """Trace devices whose power this physical handle draws (fixed once the devices exist)."""
        members = self._member_cache.get(handle)
        if members is None:
            if self.mig and handle.mig is None:
                members = [o for (g, _j), o in self._instances.items() if g == handle.gpu]
            else:
                members = [handle.gpu if handle.ordinal is None else handle.ordinal]
            self._member_cache[handle] = members
        return members

    def _member_rows(self, handle: _Handle) -> list[TraceRow]:
        now, row_at, untraced = self._now(), self.trace.row_at, self._untraced
        return [row_at(o, now) or untraced for o in self._members(handle)]

    def _physical(self, fn: str, handle: _Handle) -> None:
        self._check(fn, handle)
        if handle.mig is not None:
            raise _error(pynvml.NVML_ERROR_NOT_SUPPORTED)

    # init and handles -----------------------------------------------------------------------------
    def nvmlInit(self) -> None:
        self.calls["nvmlInit"] = self.calls.get("nvmlInit", 0) + 1
        if self.init_error is not None:
            raise _error(self.init_error)
        if self.start is None:
            self.start = self.clock()
        self._initialized = True

    def nvmlShutdown(self) -> None:
        self._check("nvmlShutdown")
        self._initialized = False

    def nvmlDeviceGetCount(self) -> int:
        self._check("nvmlDeviceGetCount")
        return self.devices

    def nvmlDeviceGetHandleByIndex(self, index: int) -> _Handle:
        self._check("nvmlDeviceGetHandleByIndex")
        if not 0 <= index < self.devices:
            raise _error(pynvml.NVML_ERROR_INVALID_ARGUMENT)
        return _Handle(index)

    def nvmlDeviceGetHandleByUUID(self, uuid: str) -> _Handle:
        self._check("nvmlDeviceGetHandleByUUID")
        for g in range(self.devices):
            if uuid == self._uuid(_Handle(g)):
                return _Handle(g)
        for (g, j), o in self._instances.items():
            if uuid == self._uuid(_Handle(g, j, o)):
                return _Handle(g, j, o)
        raise _error(pynvml.NVML_ERROR_NOT_FOUND)

    def _uuid(self, h: _Handle) -> str:
        if h.mig is None:
            return f"GPU-5e1f{h.gpu:04x}-aaaa-4bbb-8ccc-{h.gpu:012x}"
        return f"MIG-7a1c{h.gpu:02x}{h.mig:02x}-dddd-4eee-8fff-{h.ordinal:012x}"

    def nvmlDeviceGetUUID(self, handle: _Handle) -> str:
        self._check("nvmlDeviceGetUUID", handle)
        return self._uuid(handle)

    def nvmlDeviceGetName(self, handle: _Handle) -> str:
        self._check("nvmlDeviceGetName", handle)
        name = NAMES.get(self.gpu_type, f"NVIDIA {self.gpu_type}")
        return name if handle.mig is None else f"{name} MIG {self.mig[handle.mig]}"

    # readings -----------------------------------------------------------------------------------
    def nvmlDeviceGetUtilizationRates(self, handle: _Handle) -> Any:
        self._physical("nvmlDeviceGetUtilizationRates", handle)
        util = round(self._row(handle).util_pct)
        return SimpleNamespace(gpu=util, memory=round(util * 0.4))

    def _mem_total(self, handle: _Handle) -> int:
        if handle.mig is None:
            return int(self.mem_gb * 1e9)
        return int(float(re.findall(r"\.(\d+)gb$", self.mig[handle.mig])[0]) * 1e9)  # profile "3g.40gb"

    def nvmlDeviceGetMemoryInfo(self, handle: _Handle, version: int | None = None) -> Any:
        self._check("nvmlDeviceGetMemoryInfo", handle)
        total = self._mem_total(handle)
        used = min(total, int(sum(r.mem_used_gb for r in self._member_rows(handle)) * 1e9))
        return SimpleNamespace(total=total, used=used, free=total - used)

    def nvmlDeviceGetPowerUsage(self, handle: _Handle) -> int:
        self._physical("nvmlDeviceGetPowerUsage", handle)
        return round(sum(r.power_w for r in self._member_rows(handle)) * 1000)

    def nvmlDeviceGetTotalEnergyConsumption(self, handle: _Handle) -> int:
        self._physical("nvmlDeviceGetTotalEnergyConsumption", handle)
        now = self._now()
        joules = sum(self.trace.integral(o, "power_w", 0.0, now) for o in self._members(handle))
        return _OFFSET_MJ + 1000 * handle.gpu + int(joules * 1000)

    def nvmlDeviceGetTemperature(self, handle: _Handle, sensor: int) -> int:
        self._physical("nvmlDeviceGetTemperature", handle)
        return round(35 + 45 * self._row(handle).util_pct / 100)

    def nvmlDeviceGetClockInfo(self, handle: _Handle, type: int) -> int:
        self._physical("nvmlDeviceGetClockInfo", handle)
        return 1980 if self._row(handle).util_pct > 0 else 345

    def nvmlDeviceGetEnforcedPowerLimit(self, handle: _Handle) -> int:
        self._physical("nvmlDeviceGetEnforcedPowerLimit", handle)
        return int(self.board_w * 1000)

    # MIG ----------------------------------------------------------------------------------------
    def nvmlDeviceGetMigMode(self, handle: _Handle) -> list[int]:
        self._physical("nvmlDeviceGetMigMode", handle)
        mode = pynvml.NVML_DEVICE_MIG_ENABLE if self.mig else pynvml.NVML_DEVICE_MIG_DISABLE
        return [mode, mode]

    def nvmlDeviceGetMaxMigDeviceCount(self, handle: _Handle) -> int:
        self._physical("nvmlDeviceGetMaxMigDeviceCount", handle)
        return 7 if self.mig else 0

    def nvmlDeviceGetMigDeviceHandleByIndex(self, handle: _Handle, index: int) -> _Handle:
        self._physical("nvmlDeviceGetMigDeviceHandleByIndex", handle)
        if (handle.gpu, index) not in self._instances:
            raise _error(pynvml.NVML_ERROR_NOT_FOUND)
        return _Handle(handle.gpu, index, self._instances[handle.gpu, index])

    def nvmlDeviceGetDeviceHandleFromMigDeviceHandle(self, handle: _Handle) -> _Handle:
        self._check("nvmlDeviceGetDeviceHandleFromMigDeviceHandle", handle)
        return _Handle(handle.gpu)

    def nvmlDeviceGetGpuInstanceId(self, handle: _Handle) -> int:
        self._check("nvmlDeviceGetGpuInstanceId", handle)
        if handle.mig is None:
            raise _error(pynvml.NVML_ERROR_INVALID_ARGUMENT)
        return handle.mig + 1

    def nvmlDeviceGetComputeInstanceId(self, handle: _Handle) -> int:
        self._check("nvmlDeviceGetComputeInstanceId", handle)
        return 0

    def nvmlDeviceGetAttributes(self, handle: _Handle) -> Any:
        self._check("nvmlDeviceGetAttributes", handle)
        slices = int(self.mig[handle.mig].split("g.")[0]) if handle.mig is not None else 7
        return SimpleNamespace(gpuInstanceSliceCount=slices, computeInstanceSliceCount=slices,
                               memorySizeMB=self._mem_total(handle) // 2**20, multiprocessorCount=slices * 16)

    # GPM ----------------------------------------------------------------------------------------
    def nvmlGpmQueryDeviceSupport(self, handle: _Handle) -> Any:
        self._physical("nvmlGpmQueryDeviceSupport", handle)
        return SimpleNamespace(version=1, isSupportedDevice=int(self.gpm))

    def nvmlGpmSampleAlloc(self) -> SimpleNamespace:
        self._check("nvmlGpmSampleAlloc")
        return SimpleNamespace(handle=None, t=None)

    def nvmlGpmSampleFree(self, sample: SimpleNamespace) -> None:
        self._check("nvmlGpmSampleFree")

    def nvmlGpmSampleGet(self, handle: _Handle, sample: SimpleNamespace) -> SimpleNamespace:
        self._physical("nvmlGpmSampleGet", handle)
        sample.handle, sample.t = handle, self._now()
        return sample

    def nvmlGpmMigSampleGet(self, handle: _Handle, gpuInstanceId: int, sample: SimpleNamespace) -> SimpleNamespace:
        self._physical("nvmlGpmMigSampleGet", handle)
        j = gpuInstanceId - 1
        if (handle.gpu, j) not in self._instances:
            raise _error(pynvml.NVML_ERROR_NOT_FOUND)
        sample.handle, sample.t = _Handle(handle.gpu, j, self._instances[handle.gpu, j]), self._now()
        return sample

    def nvmlGpmMetricsGet(self, mg: c_nvmlGpmMetricsGet_t) -> c_nvmlGpmMetricsGet_t:
        self._check("nvmlGpmMetricsGet", mg.sample2.handle)
        if not self.gpm:
            raise _error(pynvml.NVML_ERROR_NOT_SUPPORTED)
        h, t0, t1 = mg.sample2.handle, mg.sample1.t, mg.sample2.t
        device = h.gpu if h.ordinal is None else h.ordinal
        row = self.trace.row_at(device, t1) or self._untraced
        for metric in mg.metrics[: mg.numMetrics]:
            attribute, scale = _GPM_METRICS.get(metric.metricId, (None, 0.0))
            if attribute is None or getattr(row, attribute) is None:
                metric.nvmlReturn, metric.value = pynvml.NVML_ERROR_NOT_SUPPORTED, 0.0
            else:
                metric.nvmlReturn = pynvml.NVML_SUCCESS
                metric.value = scale * self.trace.mean(device, attribute, t0, t1)
        return mg
