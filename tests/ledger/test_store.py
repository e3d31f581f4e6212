"""The store on both backends: upsert rules, heartbeats and ``lost``, the schema and its versions."""

from __future__ import annotations

import sqlite3
from datetime import datetime, timedelta

import pytest
from sqlalchemy import select, text

from mlcost.cli import main
from mlcost.errors import ConfigError
from mlcost.ledger import Ledger, migrate
from mlcost.ledger.schema import effective_status, metadata, step_figures


def _figures(ledger: Ledger, step_id: str) -> dict:
    with ledger.store.connect() as conn:
        return dict(conn.execute(select(step_figures).where(step_figures.c.step_id == step_id)).one()._mapping)


def test_a_sealed_row_never_changes_and_a_running_row_only_moves_forward(ledger_spec, make_step):
    ledger = Ledger(ledger_spec)
    ledger.write(make_step(total_usd=1.0))
    first = _figures(ledger, "s1")
    ledger.write(make_step(total_usd=2.0))  # a later checkpoint advances the row
    second = _figures(ledger, "s1")
    assert second["total_usd"] == 2.0 and second["heartbeat_at"] > first["heartbeat_at"]

    # an older checkpoint delivered late (an outbox replay, a slow writer) does not move it back
    from mlcost.ledger.book import figures_row

    row, record = figures_row(make_step(total_usd=1.5), first["heartbeat_at"])
    assert ledger.store.upsert(row, record) is False
    assert _figures(ledger, "s1")["total_usd"] == 2.0

    ledger.write(make_step(status="succeeded", total_usd=3.0))
    ledger.write(make_step(status="killed", total_usd=99.0))  # a late writer cannot rewrite history
    ledger.write(make_step(total_usd=50.0))  # nor can a checkpoint
    reader = Ledger(ledger_spec, readonly=True).open()
    (got,) = reader.steps()
    assert (got.status, got.total_usd) == ("succeeded", 3.0)


def test_a_running_row_whose_heartbeat_is_old_reads_as_lost_with_its_last_usage(ledger_spec, make_step):
    ledger = Ledger(ledger_spec)
    ledger.write(make_step("dead", total_usd=4.25, gpu_hours=1.5))
    ledger.write(make_step("done", "succeeded", total_usd=1.0))
    beat = datetime.fromisoformat(_figures(ledger, "dead")["heartbeat_at"])
    q = select(step_figures.c.step_id, step_figures.c.total_usd, step_figures.c.gpu_hours)

    def statuses(now: datetime) -> dict:
        st = effective_status(now=now, after_s=600)
        with ledger.store.connect() as conn:
            rows = conn.execute(q.add_columns(st.label("status")))
            return {r.step_id: (r.status, r.total_usd, r.gpu_hours) for r in rows}

    assert statuses(beat + timedelta(seconds=599))["dead"][0] == "running"
    assert statuses(beat + timedelta(seconds=601)) == {"dead": ("lost", 4.25, 1.5), "done": ("succeeded", 1.0, 0.0)}


def test_the_lost_limit_is_documented_and_can_be_set(monkeypatch):
    from mlcost.ledger.schema import LOST_AFTER_S, lost_after_s

    assert lost_after_s() == LOST_AFTER_S == 600.0
    monkeypatch.setenv("MLCOST_LOST_AFTER_S", "30")
    assert lost_after_s() == 30.0
    monkeypatch.setenv("MLCOST_LOST_AFTER_S", "soon")
    with pytest.raises(ConfigError, match="MLCOST_LOST_AFTER_S"):
        lost_after_s()


def test_the_migrations_build_exactly_the_schema_of_the_code(ledger_spec, make_step):
    from alembic.autogenerate import compare_metadata
    from alembic.runtime.migration import MigrationContext
    from alembic.script import ScriptDirectory

    from mlcost.ledger.migrate import _config

    ledger = Ledger(ledger_spec)
    ledger.write(make_step())
    with ledger.store.connect() as conn:
        assert ScriptDirectory.from_config(_config(conn)).get_current_head() == migrate.HEAD
        ctx = MigrationContext.configure(conn, opts={"version_table": migrate.VERSION_TABLE})
        assert compare_metadata(ctx, metadata) == []
        assert migrate.state(conn).current


def test_a_schema_newer_than_the_code_is_refused_naming_the_fix(ledger_spec, make_step, capsys):
    Ledger(ledger_spec).write(make_step("a", "succeeded", total_usd=1.0))
    ledger = Ledger(ledger_spec)
    with ledger.store.begin() as conn:
        conn.execute(text(f"UPDATE {migrate.VERSION_TABLE} SET version_num = '9001'"))
    from mlcost.ledger.store import dispose_all

    dispose_all()
    with pytest.raises(ConfigError, match=r"revision 9001, newer than this mlcost.*pip install -U"):
        Ledger(ledger_spec).store.open()  # a step's write logs it (a shared ledger's step stays in the outbox)
    assert main(["report", "--ledger", ledger_spec]) == 2
    err = capsys.readouterr().err
    assert "--ledger" in err and "9001" in err and "pip install -U" in err and "Traceback" not in err
    assert main(["ledger", "info", "--ledger", ledger_spec]) == 2


def test_ledger_info_and_upgrade(ledger_spec, make_step, capsys):
    assert main(["ledger", "info"]) == 1  # nothing there yet: the hint names the command
    out = capsys.readouterr().out
    assert "mlcost ledger upgrade" in out
    assert main(["ledger", "upgrade"]) == 0
    assert f"-> revision {migrate.HEAD}" in capsys.readouterr().out
    Ledger().write(make_step("a", "succeeded"))
    assert main(["ledger", "upgrade"]) == 0
    assert "nothing to do" in capsys.readouterr().out
    assert main(["ledger", "info"]) == 0
    out = capsys.readouterr().out
    backend = "postgresql" if "://" in ledger_spec else "sqlite"
    assert f"backend:  {backend}" in out and f"revision: {migrate.HEAD}" in out
    assert "step_figures" in out and "1" in out.split("step_figures")[1].splitlines()[0]


# SQLite files from before Alembic -----------------------------------------------------------------
def test_a_ledger_from_before_the_split_is_migrated_once(tmp_path, make_step):
    from mlcost.sinks.ledger import COLUMNS, _row

    path = tmp_path / "old.db"
    with sqlite3.connect(path) as conn:
        conn.execute(f"CREATE TABLE steps ({', '.join(f'{c} {t}' for c, t in COLUMNS.items())})")
        for s in (make_step("a", "succeeded", total_usd=1.5), make_step("b", total_usd=0.5)):
            row = _row(s)
            marks = ", ".join("?" * len(row))
            conn.execute(f"INSERT INTO steps ({', '.join(row)}) VALUES ({marks})", tuple(row.values()))
    assert main(["ledger", "upgrade", "--ledger", str(path)]) == 0
    with sqlite3.connect(path) as conn:
        assert conn.execute(f"SELECT version_num FROM {migrate.VERSION_TABLE}").fetchone() == (migrate.HEAD,)
        beats = dict(conn.execute("SELECT step_id, heartbeat_at FROM step_figures"))
    assert beats == {"a": "2026-01-01T00:00:00+00:00", "b": "2026-01-01T00:00:00+00:00"}  # their start
    ledger = Ledger(path)
    assert [(s.step_id, s.total_usd) for s in ledger.steps()] == [("a", 1.5), ("b", 0.5)]
    assert main(["ledger", "upgrade", "--ledger", str(path)]) == 0  # once: nothing left to do


def test_a_current_ledger_without_a_version_is_stamped_not_rebuilt(tmp_path, make_step):
    """The two-table ledger of before Alembic is revision 0001 without its version row."""
    from alembic import command
    from sqlalchemy import create_engine

    from mlcost.ledger.migrate import _config
    from mlcost.sinks.ledger import _row

    path = tmp_path / "l.db"
    eng = create_engine(f"sqlite:///{path}")
    with eng.begin() as conn:
        command.upgrade(_config(conn), "0001")
        conn.exec_driver_sql(f"DROP TABLE {migrate.VERSION_TABLE}")
    eng.dispose()
    with sqlite3.connect(path) as conn:
        row = _row(make_step("a", "succeeded", total_usd=2.0))
        record = row.pop("record")
        conn.execute(f"INSERT INTO step_figures ({', '.join(row)}) VALUES ({', '.join('?' * len(row))})",
                     tuple(row.values()))  # fmt: skip
        conn.execute("INSERT INTO step_records VALUES ('a', ?)", (record,))
    conn.close()
    Ledger(path).write(make_step("b", "succeeded", total_usd=3.0))
    assert sorted((s.step_id, s.total_usd) for s in Ledger(path).steps()) == [("a", 2.0), ("b", 3.0)]
    with sqlite3.connect(path) as conn:
        assert conn.execute(f"SELECT version_num FROM {migrate.VERSION_TABLE}").fetchone() == (migrate.HEAD,)
        # the row from before revision 0004 got its history in the upgrade: the same as a new run's
        keys = dict(conn.execute("SELECT step_id, history_key FROM step_figures").fetchall())
    conn.close()
    assert keys["a"] is not None and keys["a"] == keys["b"]


def test_the_sqlite_file_is_plain_sqlite_in_wal_mode(tmp_path, make_step):
    path = tmp_path / "l.db"
    Ledger(path).write(make_step())
    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone() == ("wal",)
        assert conn.execute("SELECT COUNT(*) FROM steps").fetchone() == (1,)


def test_a_new_file_another_process_is_switching_to_wal_is_waited_for_not_refused(tmp_path, make_step, monkeypatch):
    """Eight workers starting on one new file: a process asking to switch it to WAL while another
    holds its write lock is answered SQLITE_BUSY at once (no busy timeout), which reached a step as
    "database is locked". It must wait for the peer instead."""
    from mlcost.ledger import store

    path = tmp_path / "l.db"
    peer = sqlite3.connect(path, isolation_level=None)  # another worker, mid-way through making the file
    switch, paused = store._switch_to_wal, []

    def peer_takes_the_write_lock_first(eng):
        peer.execute("BEGIN IMMEDIATE")
        return switch(eng)

    def peer_finishes(seconds):  # our first try was refused: the peer commits, as it would
        paused.append(seconds)
        if peer.in_transaction:
            peer.execute("COMMIT")

    monkeypatch.setattr(store, "_switch_to_wal", peer_takes_the_write_lock_first)
    monkeypatch.setattr(store, "_wait_for_peer", peer_finishes)
    ledger = Ledger(path)
    ledger.write(make_step(step_id="s1"))
    peer.close()
    assert paused  # it was refused once, and asked again
    assert ledger.get("s1") is not None
    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone() == ("wal",)
