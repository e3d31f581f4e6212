"""The outbox: a shared ledger that goes away loses nothing, and ``mlcost sync`` delivers once."""

from __future__ import annotations

import threading
import time

import pytest
from sqlalchemy import select

import mlcost
from mlcost.cli import main
from mlcost.ledger import Ledger
from mlcost.ledger.schema import step_figures, step_records


@pytest.fixture
def shared(pg_server, pg_url, tmp_path, monkeypatch, simulated_gpu):
    """MLCOST_LEDGER is the shared database; the server is running again after the test."""
    monkeypatch.setenv("MLCOST_LEDGER", pg_url)
    monkeypatch.setenv("MLCOST_OUTBOX", str(tmp_path / "outbox.db"))
    yield pg_url
    if not pg_server.running:
        pg_server.start()


def _dump(url: str) -> list[tuple]:
    ledger = Ledger(url, readonly=True)
    with ledger.store.connect() as conn:
        figures = conn.execute(select(step_figures).order_by(step_figures.c.step_id)).all()
        records = conn.execute(select(step_records).order_by(step_records.c.step_id)).all()
    return [tuple(r) for r in figures] + [tuple(r) for r in records]


def _step(i: int) -> mlcost.Meter:
    with mlcost.meter(f"step{i}", gpus=1, gpu_type="H100", interval=0.02) as m:
        pass
    return m


def test_the_database_stopping_mid_run_loses_nothing_and_sync_delivers_each_step_once(
    shared, pg_server, mlflow_uri, capsys
):
    before = [_step(i) for i in range(3)]
    pg_server.stop()
    during = []
    for i in range(3, 6):
        t0 = time.monotonic()
        during.append(_step(i))
        assert time.monotonic() - t0 < 6.0  # start + end, each bounded by the wait
    assert all(m.cost.status == "succeeded" for m in before + during)
    pg_server.start()
    assert {r[0] for r in _dump(shared) if len(r) > 2} == {m.step_id for m in before}  # 3 arrived

    assert main(["sync"]) == 0
    out = " ".join(capsys.readouterr().out.split())
    assert "Delivered 3 steps from the outbox" in out
    rows = {r[0]: r for r in _dump(shared) if len(r) > 2}
    assert sorted(rows) == sorted(m.step_id for m in before + during)
    status = list(step_figures.c.keys()).index("status")
    total = list(step_figures.c.keys()).index("total_usd")
    for m in before + during:
        assert rows[m.step_id][status] == "succeeded"
        assert rows[m.step_id][total] == pytest.approx(m.cost.total_usd)

    first = _dump(shared)
    assert main(["sync"]) == 0
    assert "Delivered 0 steps" in " ".join(capsys.readouterr().out.split())
    assert _dump(shared) == first  # nothing changed


def test_a_later_step_drains_the_outbox_in_the_background(shared, pg_server, monkeypatch):
    from mlcost.ledger import outbox

    monkeypatch.setattr(outbox, "BACKGROUND_EVERY_S", 0.0)
    assert main(["ledger", "upgrade"]) == 0
    pg_server.stop()
    missed = _step(0)
    pg_server.start()
    assert missed.step_id not in {r[0] for r in _dump(shared)}
    _step(1)  # its delivery succeeds, and it starts a drain of what the outage left
    for t in [t for t in threading.enumerate() if t.name == "mlcost-outbox"]:
        t.join(30)
    assert missed.step_id in {r[0] for r in _dump(shared)}
    assert outbox.pending_count(Ledger(shared)) == 0


def test_a_hung_database_costs_a_step_at_most_the_wait(shared, monkeypatch, tmp_path):
    """A server that accepts connections but never answers: the step waits SHARED_WAIT_S, once."""
    import socket

    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(16)  # accepts (the kernel does), never speaks
    try:
        url = f"postgresql+psycopg://u@127.0.0.1:{srv.getsockname()[1]}/db"
        monkeypatch.setenv("MLCOST_LEDGER", url)
        monkeypatch.setenv("MLCOST_LEDGER_WAIT_S", "1.0")
        t0 = time.monotonic()
        m = _step(0)
        assert m.cost.status == "succeeded"
        assert time.monotonic() - t0 < 3.5  # start + end: each at most the 1 s wait
        assert Ledger(url).local.counts()["step_figures"] == 1  # in the outbox
    finally:
        srv.close()


def test_sync_against_an_unreachable_database_exits_1_and_keeps_the_outbox(shared, pg_server, capsys, mlflow_uri):
    pg_server.stop()
    m = _step(0)
    assert main(["sync"]) == 1
    assert "run `mlcost sync` again" in " ".join(capsys.readouterr().out.split())  # rich wraps lines
    pg_server.start()
    assert main(["sync"]) == 0
    assert m.step_id in {r[0] for r in _dump(shared)}


def test_an_outbox_that_cannot_be_written_does_not_keep_a_step_from_the_shared_ledger(
    shared, tmp_path, monkeypatch, caplog
):
    """MLCOST_OUTBOX names a file that is not a ledger: the step still reaches the database, and the
    file is left as it was."""
    import hashlib
    import sqlite3

    foreign = tmp_path / "app.db"
    with sqlite3.connect(foreign) as conn:
        conn.execute("CREATE TABLE users (id INTEGER PRIMARY KEY)")
    conn.close()
    digest = hashlib.sha256(foreign.read_bytes()).hexdigest()
    monkeypatch.setenv("MLCOST_OUTBOX", str(foreign))
    m = _step(0)
    assert m.cost.status == "succeeded"
    rows = {r[0]: r for r in _dump(shared) if len(r) > 2}
    assert rows[m.step_id][list(step_figures.c.keys()).index("status")] == "succeeded"
    assert hashlib.sha256(foreign.read_bytes()).hexdigest() == digest
    assert "not the outbox" in caplog.text
