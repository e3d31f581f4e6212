"""The names users see: MLflow metric and tag keys, environment variables, ledger defaults.

Defined once here and imported by every backend, sink and adapter so that they cannot drift apart
(see docs/architecture.md, "The public API").
"""

from __future__ import annotations

# MLflow metrics of a step
COST_USD = "cost_usd"
IDLE_COST_USD = "idle_cost_usd"
ENERGY_KWH = "energy_kwh"
GPU_HOURS = "gpu_hours"
GPU_UTIL_MEAN_PCT = "gpu_util_mean_pct"
GPU_MEM_PEAK_GB = "gpu_mem_peak_gb"
GPU_IDLE_FRACTION = "gpu_idle_fraction"
STEP_METRICS = (COST_USD, IDLE_COST_USD, ENERGY_KWH, GPU_HOURS, GPU_UTIL_MEAN_PCT, GPU_MEM_PEAK_GB, GPU_IDLE_FRACTION)

# Extra step metrics (additive: not in the stable list, useful in comparisons)
ENERGY_COST_USD = "energy_cost_usd"
SPOT_COST_USD = "spot_whatif_cost_usd"
DURATION_S = "duration_s"


def series_key(device: int, quantity: str) -> str:
    """Per-device time series: ``gpu/<i>/util_pct``, ``gpu/<i>/mem_used_gb``, ``gpu/<i>/power_w``."""
    return f"gpu/{device}/{quantity}"


SERIES_QUANTITIES = ("util_pct", "mem_used_gb", "power_w")
MAX_SERIES_POINTS = 1000

# MLflow tags
TAG_PREFIX = "mlcost."
TAG_TEAM = "mlcost.team"
TAG_PROJECT = "mlcost.project"
TAG_MODEL = "mlcost.model"
TAG_WORKLOAD = "mlcost.workload"
TAG_GPU_TYPE = "mlcost.gpu_type"
TAG_PRICING = "mlcost.pricing"
TAG_TELEMETRY = "mlcost.telemetry"
# Additive tags that make sync idempotent and runs traceable to the ledger
TAG_STEP_ID = "mlcost.step_id"
TAG_STEP = "mlcost.step"
TAG_STATUS = "mlcost.status"
TAG_SOURCE = "mlcost.source"  # "meter", or "listener" for an un-metered Airflow task's record
TAG_UTIL_SIGNAL = "mlcost.util_signal"
TAG_ENERGY_METHOD = "mlcost.energy_method"
TAG_DEGRADED_REASON = "mlcost.degraded_reason"
TAG_BRANCH = "mlcost.branch"
TAG_KIND = "mlcost.kind"  # on runs that are not one step
KIND_DAG_RUN = "dag_run"  # the parent run of a DAG run: its steps' total, never a step itself
KIND_JOB = "job"  # the parent run of a job across nodes: its nodes' total, never a step itself
TAG_JOB_ID = "mlcost.job_id"  # on a job's parent run and on each node's run
TAG_NODE_RANK = "mlcost.node_rank"  # on each node's run

USER_TAG_KEYS = ("team", "project", "model", "workload")
WORKLOADS = ("training", "inference", "evaluation", "data")
PRICING_MODELS = ("on_demand", "spot", "reserved")
TELEMETRY_KINDS = ("nvml", "simulated", "none", "degraded")

# Environment variables (documented in the README)
ENV_GPU_BACKEND = "MLCOST_GPU_BACKEND"
ENV_SIM_TRACE = "MLCOST_SIM_TRACE"
ENV_SIM_GPU = "MLCOST_SIM_GPU"
ENV_SIM_DEVICES = "MLCOST_SIM_DEVICES"
ENV_LEDGER = "MLCOST_LEDGER"
ENV_POLICY = "MLCOST_POLICY"
ENV_PRICES = "MLCOST_PRICES"
ENV_MLFLOW_TRACKING_URI = "MLFLOW_TRACKING_URI"
