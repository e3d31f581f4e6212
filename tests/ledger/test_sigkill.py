"""A step killed with SIGKILL cannot seal its row: it reads as ``lost`` once its heartbeat is older
than the lost limit, with the usage of its last checkpoint, and is counted, never dropped."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from datetime import datetime, timezone

import pytest
from sqlalchemy import select

from mlcost.ledger import Ledger
from mlcost.ledger.schema import effective_status, step_figures

CHILD = """
import time
import mlcost, mlcost.checkpoints
mlcost.checkpoints.CHECKPOINT_EVERY_S = 0.2  # checkpoints come fast, so the test need not wait 30 s
with mlcost.meter("doomed", gpus=1, gpu_type="H100", interval=0.05, tags={"team": "search"}):
    while True:
        time.sleep(0.05)
"""


def _row(spec: str) -> dict | None:
    ledger = Ledger(spec, readonly=True)
    try:
        with ledger.store.connect() as conn:
            row = conn.execute(
                select(step_figures, effective_status().label("effective")).where(step_figures.c.name == "doomed")
            ).first()
    except Exception:  # not created yet
        return None
    return dict(row._mapping) if row else None


def test_a_sigkilled_step_is_lost_with_its_last_checkpoint(ledger_spec, tmp_path, monkeypatch, capsys):
    env = {**os.environ, "MLCOST_GPU_BACKEND": "simulated", "MLCOST_SIM_TRACE": "busy", "MLCOST_SIM_GPU": "H100",
           "MLCOST_SIM_DEVICES": "1"}  # fmt: skip
    child = subprocess.Popen([sys.executable, "-c", CHILD], env=env, cwd=tmp_path)
    try:
        deadline = time.monotonic() + 120
        first = None
        while time.monotonic() < deadline:  # wait for a checkpoint after the start row, not for a time
            row = _row(ledger_spec)
            if row is not None:
                first = first or row
                if row["heartbeat_at"] > first["heartbeat_at"] and (row["total_usd"] or 0) > 0:
                    break
            assert child.poll() is None
            time.sleep(0.1)
        else:
            pytest.fail("no checkpoint arrived")
        child.send_signal(signal.SIGKILL)
        child.wait(30)
    finally:
        if child.poll() is None:
            child.kill()
    last = _row(ledger_spec)
    assert last["status"] == "running" and last["effective"] == "running"  # too recent to call lost
    assert last["total_usd"] > 0 and last["gpu_hours"] > 0

    monkeypatch.setenv("MLCOST_LOST_AFTER_S", "0.5")
    beat = datetime.fromisoformat(last["heartbeat_at"])
    while (datetime.now(timezone.utc) - beat).total_seconds() <= 0.5:
        time.sleep(0.05)
    lost = _row(ledger_spec)
    assert lost["effective"] == "lost"
    assert (lost["total_usd"], lost["gpu_hours"]) == (last["total_usd"], last["gpu_hours"])

    pytest.importorskip("mlcost.ledger.queries", reason="the readers' query layer lands with branch readers")
    from mlcost.cli import main

    assert main(["report", "--by", "team"]) == 0
    out = capsys.readouterr().out
    assert "1 lost step" in out and f"{last['total_usd']:.2f}" in out
