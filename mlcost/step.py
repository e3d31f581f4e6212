"""StepCost: the record of one metered step, as every sink and report sees it."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field

from mlcost.usage import DeviceUsage, HostUsage

STATUS_RUNNING = "running"
STATUS_SUCCEEDED = "succeeded"
STATUS_FAILED = "failed"  # the step body raised
STATUS_BREACHED = "breached"  # a guardrail stopped or refused it
STATUS_KILLED = "killed"  # SIGTERM / on_kill / interrupted
STATUSES = (STATUS_RUNNING, STATUS_SUCCEEDED, STATUS_FAILED, STATUS_BREACHED, STATUS_KILLED)


class Breach(BaseModel):
    kind: str  # "budget", "max_duration", "idle_timeout", "max_gpus", "preflight_budget", ...
    limit: Any
    observed: Any
    policy: str
    message: str


class Spike(BaseModel):
    """A step whose cost or GPU-hours sat far above its own history (same name and tags) at its end."""

    metric: str  # "total_usd" or "gpu_hours"
    value: float
    median: float
    z: float  # the modified z-score (mlcost.robust)
    history: int  # how many earlier runs it was compared with


class StepCost(BaseModel):
    """One step: what it was, what it used, what it cost, and whether it was allowed.

    The public attributes of docs/architecture.md (``total_usd``, ``idle_usd``, ``energy_usd``, ``energy_kwh``,
    ``gpu_hours``, ``util_mean_pct``, ``mem_peak_gb``, ``idle_fraction``, ``telemetry``, ``devices``,
    ``samples``) are stable; the rest may grow.
    """

    step_id: str
    name: str
    status: str = STATUS_RUNNING
    started_at: str  # ISO 8601, UTC
    ended_at: str | None = None
    duration_s: float = 0.0
    gpus: int = 0  # allocated (billed)
    gpu_type: str | None = None  # as priced, e.g. "H100" or "H100:1g.10gb"
    detected_gpu_type: str | None = None  # as NVML saw it (first device); differs when declared otherwise
    pricing: str = "on_demand"
    tags: dict[str, str] = Field(default_factory=dict)
    run_key: str | None = None  # groups steps of one DAG run / pipeline run
    context: dict[str, str] = Field(default_factory=dict)  # e.g. airflow dag_id, task_id, try_number
    source: str = "meter"  # "meter" or "listener" (un-metered Airflow task)
    job_id: str | None = None  # a job across nodes: one record per node, the job is their sum
    node_rank: int | None = None
    nodes: int | None = None

    # money
    gpu_hour_usd: float | None = None
    total_usd: float = 0.0
    compute_usd: float = 0.0
    idle_usd: float = 0.0
    energy_usd: float = 0.0
    spot_whatif_usd: float | None = None

    # usage
    gpu_hours: float = 0.0
    util_mean_pct: float | None = None
    mem_peak_gb: float | None = None
    idle_fraction: float | None = None
    energy_kwh: float | None = None
    samples: int = 0
    telemetry: str = "none"  # nvml / simulated / none / degraded
    simulated: bool = False
    util_signal: str = "none"
    energy_method: str = "none"
    degraded_reasons: list[str] = Field(default_factory=list)
    devices: list[DeviceUsage] = Field(default_factory=list)
    host: HostUsage = Field(default_factory=HostUsage)
    idle_threshold_pct: float = 5.0

    # outcome
    breach: Breach | None = None
    error: str | None = None
    mlflow_run_id: str | None = None
    spike: Spike | None = None

    @property
    def degraded(self) -> bool:
        return bool(self.degraded_reasons)

    @property
    def gpu_type_mismatch(self) -> bool:
        """A declared gpu_type that is not the GPU the step ran on: priced as declared, shown in reports."""
        return bool(self.detected_gpu_type and self.gpu_type and self.detected_gpu_type != self.gpu_type)

    @property
    def team(self) -> str | None:
        return self.tags.get("team")

    @property
    def model(self) -> str | None:
        return self.tags.get("model")

    def summary(self) -> str:
        """One line a person reads in a task log."""
        util = "n/a" if self.util_mean_pct is None else f"{self.util_mean_pct:.0f}%"
        idle = "n/a" if self.idle_fraction is None else f"{self.idle_fraction:.0%}"
        energy = "n/a" if self.energy_kwh is None else f"{self.energy_kwh:.4f} kWh"
        telemetry = self.telemetry + (" (SIMULATED GPU)" if self.simulated else "")
        return (
            f"{self.name}: ${self.total_usd:.4f} ({self.gpus}x {self.gpu_type or '?'} {self.pricing}, "
            f"{self.gpu_hours:.4f} GPU-h, util {util}, idle {idle} = ${self.idle_usd:.4f}, {energy}, "
            f"telemetry {telemetry}, {self.status})"
        )
