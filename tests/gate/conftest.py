"""One real MLflow SQLite store, populated once per session by real metered steps.

The steps go through ``mlcost.meter()`` end to end (sampler, pricing, ledger, MLflow sink); only the GPU
is simulated: the NVML backend over a simulated NVML with a constant-utilisation trace, so the idle
share is known exactly. Each step runs on a :class:`StepClock`, a monotonic clock that moves only when
the step says so, so every step lasts exactly ``STEP_S`` whatever the machine's load: costs differ by
the allocation (GPUs) alone, and a +30% / +5% change of cost is a +30% / +5% change of GPUs.
(Sleeping for the duration made the cost depend on scheduling: under load a 20-GPU step once cost
more than a 26-GPU one.)
"""

from __future__ import annotations

import functools
import os
import time
from dataclasses import dataclass, field

import pytest

from mlcost.telemetry.nvml import NvmlBackend
from mlcost.telemetry.simulated_nvml import SimulatedNVML
from mlcost.telemetry.traces import Trace, TraceRow


def constant_gpu(util_pct: float, devices: int = 1, mem_used_gb: float = 8.0) -> NvmlBackend:
    """``devices`` simulated H100s whose utilisation is always ``util_pct``, read through the real
    NVML backend (the simulated NVML stands in for the driver only)."""
    row = TraceRow(0.0, util_pct, mem_used_gb, power_w=100 + 6 * util_pct)
    trace = Trace({d: [row] for d in range(devices)}, source=f"constant {util_pct}%")
    return NvmlBackend(SimulatedNVML(trace, gpu_type="H100", devices=devices), visible_devices=None,
                       telemetry="simulated")


STEP_S = 1.0  # seconds of StepClock time every step lasts
TICKS = 10  # clock moves per step; the sampler reads the devices after each


class StepClock:
    """A monotonic clock for one step's sampler that moves only on :meth:`advance`."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def _run_for(m, clock: StepClock, seconds: float) -> None:
    """Move the step's clock by ``seconds`` in TICKS moves, letting the sampler read the devices after
    each (waiting in real time for the read, never for the clock)."""
    for _ in range(TICKS):
        clock.advance(seconds / TICKS)
        seen = m._sampler.samples
        deadline = time.monotonic() + 30
        while m._sampler.samples == seen and time.monotonic() < deadline:
            time.sleep(0.002)


@dataclass
class Store:
    uri: str
    ledger: str
    ids: dict[str, list[str]] = field(default_factory=dict)  # scenario -> MLflow run ids
    step_ids: dict[str, list[str]] = field(default_factory=dict)  # scenario -> ledger step ids
    costs: dict[str, list[float]] = field(default_factory=dict)

    def others(self, *scenarios: str) -> list[float]:
        """Costs of every scenario but ``scenarios``."""
        return [c for k, v in self.costs.items() if k not in scenarios for c in v]


def _metered(
    store: Store,
    scenario: str,
    *,
    gpus: int,
    env: dict[str, str],
    util: float = 100.0,
    devices: int | None = None,
    **kw,
) -> None:
    import mlcost.metering as metering
    from mlcost import meter
    from mlcost.policy import Policy

    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    clock = StepClock()
    real_sampler = metering.Sampler
    metering.Sampler = functools.partial(real_sampler, clock=clock)
    try:
        tags = {"team": "search", "model": "ranker", "workload": "training", **kw.pop("tags", {})}
        with meter(
            kw.pop("name", "train"),
            gpus=gpus,
            gpu_type="H100",
            tags=tags,
            interval=0.05,
            backend=constant_gpu(util, devices=gpus if devices is None else devices),
            policy=Policy(),
            ledger=store.ledger,
            experiment="ranker-ci",
            mlflow_timeout_s=300,  # the step waits for its MLflow write: a loaded machine is slow, not down
            **kw,
        ) as m:
            _run_for(m, clock, STEP_S)
    finally:
        metering.Sampler = real_sampler
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    assert m.cost.mlflow_run_id or not store.uri, "the step must reach MLflow"
    store.ids.setdefault(scenario, []).append(m.cost.mlflow_run_id)
    store.step_ids.setdefault(scenario, []).append(m.cost.step_id)
    store.costs.setdefault(scenario, []).append(m.cost.total_usd)


@pytest.fixture(scope="session")
def store(tmp_path_factory) -> Store:
    """Experiment ``ranker-ci``:

    - ``main``: 3 steps on branch main, 20 GPUs each (the regression baseline)
    - ``ok`` (sha aaa): 3 steps, 21 GPUs (+5%)
    - ``slow`` (sha bbb): 3 steps, 26 GPUs (+30%)
    - ``wide`` (sha ccc): 1 step on 4 nodes, 2 GPUs allocated, one device seen and busy (idle share 1/2)
    - ``idle`` (sha ddd): 1 step, 1 GPU at 0% util (idle share 1)
    - ``dag`` (sha eee): 2 steps of one pipeline run (run_key dag-1), model embedder, 8 GPUs each
    """
    root = tmp_path_factory.mktemp("gate-store")
    uri = f"sqlite:///{root / 'mlflow.db'}"
    s = Store(uri=uri, ledger=str(root / "ledger.db"))
    # CI variables of the shell running the tests must not tag these steps ("" counts as unset)
    ci = ("GITHUB_SHA", "GITHUB_HEAD_REF", "GITHUB_REF_NAME", "GITHUB_RUN_ID", "CI_COMMIT_SHA", "CI_COMMIT_REF_NAME")
    base = {"MLFLOW_TRACKING_URI": uri, "MLCOST_PRICES": "", **dict.fromkeys(ci, "")}
    from mlflow.tracking import MlflowClient

    MlflowClient(tracking_uri=uri).create_experiment("ranker-ci")  # the store's schema, before any step
    for _ in range(3):
        _metered(s, "main", gpus=20, env={**base, "GITHUB_REF_NAME": "main", "GITHUB_SHA": "m0"})
    for _ in range(3):
        _metered(s, "ok", gpus=21, env={**base, "GITHUB_REF_NAME": "feat-ok", "GITHUB_SHA": "aaa"})
    for _ in range(3):
        _metered(s, "slow", gpus=26, env={**base, "GITHUB_REF_NAME": "feat-slow", "GITHUB_SHA": "bbb"})
    _metered(s, "wide", gpus=2, devices=1, env={**base, "GITHUB_SHA": "ccc"}, tags={"nodes": "4"})
    _metered(s, "idle", gpus=1, util=0.0, env={**base, "GITHUB_SHA": "ddd"})
    for name in ("embed", "index"):
        _metered(s, "dag", gpus=8, env={**base, "GITHUB_SHA": "eee"}, name=name, run_key="dag-1",
                 tags={"model": "embedder"})  # fmt: skip
    return s
