"""What a step used, per device and per step: the input to pricing and to every report.

Usage is measured, never priced: the same Usage can be priced again with other prices (what-if).
Utilisation and idle share are taken over the *allocation*: a step that asked for 4 GPUs and used 1
shows 3 idle GPUs, because that is what the bill pays for (OpenCost's request-vs-usage rule).
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class DeviceUsage(BaseModel):
    """One device over one step."""

    model_config = ConfigDict(extra="ignore")

    index: int
    uuid: str = ""
    name: str = ""
    gpu_type: str | None = None
    mig_profile: str | None = None
    seconds: float = 0.0  # time this device was metered (stops if it was lost)
    samples: int = 0
    util_signal: str | None = None  # nvml_util / gpm_sm_activity / none (MIG on A100/A30: idle unknown)
    util_mean_pct: float | None = None  # of the step's util signal, time-weighted
    util_peak_pct: float | None = None
    nvml_util_mean_pct: float | None = None  # NVML's "a kernel was running", kept beside GPM figures
    sm_active_mean_pct: float | None = None
    tensor_active_mean_pct: float | None = None
    mem_peak_gb: float | None = None
    mem_total_gb: float | None = None
    power_mean_w: float | None = None
    power_peak_w: float | None = None
    energy_kwh: float | None = None
    energy_method: str = "none"
    power_integrated_kwh: float | None = None  # kept beside the counter's figure as a cross-check
    idle_seconds: float = 0.0  # seconds with util below the idle threshold
    temperature_peak_c: float | None = None
    sm_clock_mean_mhz: float | None = None  # well under the boost clock while busy: throttled (heat, power cap)
    lost_at_s: float | None = None  # seconds after start when the device stopped answering


class HostUsage(BaseModel):
    """The job's process tree: tells a GPU waiting on a CPU-bound input pipeline from an idle one."""

    cpu_mean_pct: float | None = None  # 100 = one core busy
    cpu_peak_pct: float | None = None
    rss_peak_gb: float | None = None
    cpu_count: int | None = None


class Usage(BaseModel):
    """One step's usage, as the Sampler measured it."""

    duration_s: float
    gpus_allocated: int
    devices: list[DeviceUsage] = Field(default_factory=list)
    host: HostUsage = Field(default_factory=HostUsage)
    telemetry: str = "none"
    simulated: bool = False
    util_signal: str = "none"
    energy_method: str = "none"
    degraded_reasons: list[str] = Field(default_factory=list)
    samples: int = 0
    idle_threshold_pct: float = 5.0

    @property
    def gpu_seconds(self) -> float:
        """Allocated GPU-seconds: what is billed."""
        return self.gpus_allocated * self.duration_s

    @property
    def gpu_hours(self) -> float:
        return self.gpu_seconds / 3600.0

    @property
    def _unseen_gpus(self) -> int:
        return max(0, self.gpus_allocated - len(self.devices))

    @property
    def _judged(self) -> list[DeviceUsage]:
        """Allocated devices whose utilisation was read: one without a signal (MIG on A100/A30)
        is neither busy nor idle, it is unknown."""
        return [d for d in self.devices[: self.gpus_allocated or None] if d.util_signal != "none"]

    @property
    def observed_gpu_seconds(self) -> float:
        """GPU-seconds we know the state of: metered devices plus allocated GPUs the job never
        touched (known idle). Time after a device was lost is unknown and left out."""
        return sum(d.seconds for d in self._judged) + self._unseen_gpus * self.duration_s

    @property
    def idle_gpu_seconds(self) -> float:
        return sum(d.idle_seconds for d in self._judged) + self._unseen_gpus * self.duration_s

    @property
    def idle_fraction(self) -> float | None:
        """Share of observed allocated GPU time below the idle threshold; None when nothing was
        observed (no telemetry, or no device with a utilisation signal), so a missing meter never
        reads as 'fully busy' or 'fully idle'."""
        if not self.devices or not (self._judged or self._unseen_gpus):
            return None
        observed = self.observed_gpu_seconds
        return self.idle_gpu_seconds / observed if observed > 0 else None

    @property
    def util_mean_pct(self) -> float | None:
        """Time-weighted mean utilisation over the allocation (untouched allocated GPUs count 0)."""
        measured = [d for d in self.devices[: self.gpus_allocated or None] if d.util_mean_pct is not None]
        if not measured:
            return None
        busy = sum(d.util_mean_pct * d.seconds for d in measured)  # type: ignore[operator]
        observed = sum(d.seconds for d in measured) + self._unseen_gpus * self.duration_s
        return busy / observed if observed > 0 else None

    @property
    def mem_peak_gb(self) -> float | None:
        peaks = [d.mem_peak_gb for d in self.devices if d.mem_peak_gb is not None]
        return max(peaks) if peaks else None

    @property
    def energy_kwh(self) -> float | None:
        """Energy of the metered devices; None (not 0) when no device could measure it."""
        values = [d.energy_kwh for d in self.devices if d.energy_kwh is not None]
        return sum(values) if values else None
