"""Every ledger test runs on both backends: a SQLite file and a real PostgreSQL (tests/pg_server.py)."""

from __future__ import annotations

import pytest

from mlcost.step import StepCost


@pytest.fixture(params=["sqlite", "postgresql"])
def ledger_spec(request, tmp_path, monkeypatch) -> str:
    """What MLCOST_LEDGER would say: a file path, or a fresh PostgreSQL database's URL (with the
    machine's outbox in the test's folder). Set as MLCOST_LEDGER too."""
    if request.param == "sqlite":
        spec = str(tmp_path / "ledger.db")
    else:
        spec = request.getfixturevalue("pg_url")
        monkeypatch.setenv("MLCOST_OUTBOX", str(tmp_path / "outbox.db"))
    monkeypatch.setenv("MLCOST_LEDGER", spec)
    return spec


@pytest.fixture(autouse=True)
def _fresh_engines():
    """Each test's engines are its own: a pool must not outlive the server a test stopped."""
    yield
    from mlcost.ledger.store import dispose_all

    dispose_all()


def _step(step_id: str = "s1", status: str = "running", **kw) -> StepCost:
    kw.setdefault("started_at", "2026-01-01T00:00:00+00:00")
    return StepCost(step_id=step_id, name="train", status=status, tags={"team": "search", "model": "ranker"}, **kw)


@pytest.fixture
def make_step():
    """``make_step(step_id, status, **figures)``: a StepCost of step ``train``, team search."""
    return _step
