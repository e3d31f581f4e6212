"""The contract between the Sampler and a GPU telemetry backend.

A backend knows how to find the job's devices and read one device; it knows nothing about time,
money or sinks. The Sampler owns the clock and the aggregation (see ``mlcost.telemetry.sampler``).
Units are on the names (``_gb``, ``_w``, ``_mj``, ``_pct``); conversion from NVML's units happens
once, inside the backend.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

# Which signal a step's utilisation figures come from (recorded on the step as `util_signal`).
UTIL_SIGNAL_NVML = "nvml_util"  # nvmlDeviceGetUtilizationRates().gpu: "a kernel was running"
UTIL_SIGNAL_GPM_SM = "gpm_sm_activity"  # GPM SM activity (Hopper+): the share of SMs busy
UTIL_SIGNAL_NONE = "none"

ENERGY_COUNTER = "counter"  # nvmlDeviceGetTotalEnergyConsumption differences
ENERGY_INTEGRATED = "integrated"  # trapezoid integration of power samples
ENERGY_NONE = "none"  # neither: recorded as such, never a silent 0 kWh


@dataclass(frozen=True, slots=True)
class DeviceInfo:
    """One device the job may use, as the job sees it.

    ``index`` is the job's own ordinal (what ``cuda:<index>`` means under CUDA_VISIBLE_DEVICES);
    ``nvml_index`` is the physical index NVML uses. For a MIG instance ``uuid`` is the ``MIG-...``
    UUID, ``mig_profile`` is e.g. ``"1g.10gb"`` and ``mem_total_gb`` is the instance's memory.
    """

    index: int
    nvml_index: int
    uuid: str
    name: str
    gpu_type: str | None = None  # price-catalog key guessed from the name, e.g. "H100"
    mem_total_gb: float | None = None
    mig_profile: str | None = None
    power_limit_w: float | None = None


@dataclass(slots=True)
class DeviceReading:
    """One reading of one device. ``None`` means "not supported / not available", never zero."""

    util_pct: float | None = None  # the util signal the backend chose for this device
    nvml_util_pct: float | None = None  # NVML's kernel-running percentage, always kept when read
    sm_active_pct: float | None = None  # GPM, Hopper+
    tensor_active_pct: float | None = None  # GPM, Hopper+
    mem_used_gb: float | None = None
    power_w: float | None = None
    energy_mj: float | None = None  # cumulative counter since driver load
    temperature_c: float | None = None
    sm_clock_mhz: float | None = None


@dataclass(slots=True)
class BackendStatus:
    """What a backend learned while opening and reading: recorded on the step."""

    telemetry: str  # "nvml" | "simulated" | "none"
    util_signal: str = UTIL_SIGNAL_NONE
    energy_method: str = ENERGY_NONE  # the method the backend can offer
    degraded_reasons: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    device_signals: dict[int, str] = field(default_factory=dict)  # job device index -> its util signal


@runtime_checkable
class GpuBackend(Protocol):
    """What the Sampler needs from a telemetry backend.

    ``open`` probes capabilities once per device; ``read`` must be cheap (no I/O beyond the driver)
    and raises ``mlcost.errors.DeviceLost`` when a device stops answering. Calls that a device does
    not support are dropped after one warning, never retried every sample. ``slow=False`` asks
    for the per-sample signals only (the util signal and power), leaving the slow ones (memory,
    energy counter, temperature, clocks, NVML util beside GPM) ``None``: the Sampler reads those
    about once a second.
    """

    status: BackendStatus

    def open(self) -> list[DeviceInfo]: ...

    def read(self, device: DeviceInfo, *, slow: bool = True) -> DeviceReading: ...

    def close(self) -> None: ...


class NullBackend:
    """No GPU telemetry at all (no driver, or ``MLCOST_GPU_BACKEND=none``).

    The step is still metered by time and priced by allocation; the record says why there is no
    telemetry. A null object instead of ``None`` keeps the Sampler free of special cases.
    """

    def __init__(self, reason: str | None = None) -> None:
        self.status = BackendStatus(telemetry="none", degraded_reasons=[reason] if reason else [])

    def open(self) -> list[DeviceInfo]:
        return []

    def read(self, device: DeviceInfo, *, slow: bool = True) -> DeviceReading:  # pragma: no cover - no devices
        return DeviceReading()

    def close(self) -> None:
        return None
