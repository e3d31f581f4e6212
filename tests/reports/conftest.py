"""Known ledgers for the report tests: every figure a test expects is computed by hand from these."""

from __future__ import annotations

import itertools

import pytest

from mlcost.sinks.ledger import Ledger
from mlcost.step import StepCost
from mlcost.usage import DeviceUsage, HostUsage

_ids = itertools.count()


def step(
    name: str,
    total: float,
    *,
    team: str | None = "search",
    project: str | None = "discovery",
    model: str | None = "ranker",
    workload: str | None = "training",
    gpus: int = 1,
    gpu_type: str = "H100",
    hours: float = 1.0,
    idle_fraction: float | None = 0.0,
    util: float | None = 80.0,
    mem_gb: float | None = 40.0,
    host_cpu: float | None = 20.0,
    devices: int | None = None,
    started: str = "2025-06-10T10:00:00+00:00",
    status: str = "succeeded",
    pricing: str = "on_demand",
    spot: float | None = None,
    run_key: str | None = None,
    extra_tags: dict[str, str] | None = None,
    device_utils: list[float | None] | None = None,
) -> StepCost:
    """A step as the meter records it; ``device_utils`` gives each device its own mean util (the
    step's ``util`` is then their mean over the allocation); ``status="refused"`` is a step refused
    at preflight: ``breached``, nothing run, $0."""
    if status == "refused":
        status, total, hours, util, mem_gb, idle_fraction, spot = "breached", 0.0, 0.0, None, None, None, None
        devices = 0
    if device_utils is not None:
        devices = len(device_utils)
        known = [u for u in device_utils if u is not None]
        util = sum(known) / gpus if known else None
    tags = {k: v for k, v in (("team", team), ("project", project), ("model", model), ("workload", workload)) if v}
    tags.update(extra_tags or {})
    n_dev = gpus if devices is None else devices
    return StepCost(
        step_id=f"s{next(_ids):06d}",
        name=name,
        status=status,
        started_at=started,
        ended_at=None if status == "running" else started.replace("10:00:00", "11:00:00"),
        duration_s=hours * 3600,
        gpus=gpus,
        gpu_type=gpu_type,
        pricing=pricing,
        tags=tags,
        run_key=run_key,
        total_usd=total,
        compute_usd=total,
        idle_usd=total * (idle_fraction or 0.0),
        spot_whatif_usd=spot,
        gpu_hours=gpus * hours,
        util_mean_pct=util,
        mem_peak_gb=mem_gb,
        idle_fraction=idle_fraction,
        telemetry="simulated",
        simulated=True,
        devices=[
            DeviceUsage(
                index=i,
                gpu_type=gpu_type,
                seconds=hours * 3600,
                util_mean_pct=util if device_utils is None else device_utils[i],
                mem_peak_gb=mem_gb,
                mem_total_gb=80.0,
            )
            for i in range(n_dev)
        ],
        host=HostUsage(cpu_mean_pct=host_cpu, cpu_count=8),
    )


@pytest.fixture(params=["sqlite", "postgresql"])
def ledger(request, tmp_path, monkeypatch) -> Ledger:
    """The report tests run on both backends: a SQLite file, and a fresh database on the session's
    real PostgreSQL (tests/pg_server.py), with this machine's outbox in the test's folder."""
    if request.param == "sqlite":
        return Ledger(tmp_path / "ledger.db")
    monkeypatch.setenv("MLCOST_OUTBOX", str(tmp_path / "outbox.db"))
    return Ledger(request.getfixturevalue("pg_url"))


@pytest.fixture(autouse=True)
def _fresh_engines():
    """A test's pooled connections end with it (each PostgreSQL test has its own database)."""
    yield
    from mlcost.ledger.store import dispose_all

    dispose_all()


def spec(ledger: Ledger) -> str:
    """What ``--ledger`` says for ``ledger``: its file, or its database's URL."""
    return ledger.target.url if ledger.shared else str(ledger.path)


def write(ledger: Ledger, *steps: StepCost) -> list[StepCost]:
    for s in steps:
        ledger.write(s)
    return list(steps)


@pytest.fixture
def mk():
    """``mk.step(...)`` builds a StepCost, ``mk.write(ledger, *steps)`` writes them."""

    class _Mk:
        pass

    m = _Mk()
    m.step, m.write, m.spec = step, write, spec
    return m
