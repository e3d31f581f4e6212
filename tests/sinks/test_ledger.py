import sqlite3

from mlcost.sinks.ledger import Ledger
from mlcost.step import StepCost


def _step(step_id="s1", status="running", **kw):
    return StepCost(step_id=step_id, name="train", status=status, started_at="2026-01-01T00:00:00+00:00",
                    tags={"team": "search", "model": "ranker"}, **kw)


def test_ledger_location_comes_from_the_environment(isolated_mlcost):
    assert Ledger().path == isolated_mlcost / "ledger.db"


def test_a_sealed_step_is_never_changed(tmp_path):
    ledger = Ledger(tmp_path / "l.db")
    ledger.write(_step())
    ledger.write(_step(total_usd=1.0))  # checkpoint refreshes a running row
    ledger.write(_step(status="succeeded", total_usd=2.0))
    ledger.write(_step(status="killed", total_usd=99.0))  # a late writer cannot rewrite history
    step = ledger.get("s1")
    assert step.status == "succeeded" and step.total_usd == 2.0


def test_flat_columns_support_sql_aggregation(tmp_path):
    ledger = Ledger(tmp_path / "l.db")
    ledger.write(_step("a", "succeeded", total_usd=1.5))
    ledger.write(_step("b", "succeeded", total_usd=2.0))
    (row,) = ledger.rows("SELECT team, SUM(total_usd) AS usd FROM steps GROUP BY team")
    assert row["team"] == "search" and row["usd"] == 3.5


def test_series_round_trip_and_sync_bookkeeping(tmp_path):
    ledger = Ledger(tmp_path / "l.db")
    ledger.write(_step("a", "succeeded"), series={"gpu/0/util_pct": [(1000, 50.0), (2000, 60.0)]})
    ledger.write(_step("b"))  # still running: not offered to sinks
    assert ledger.series("a") == {"gpu/0/util_pct": [(1000, 50.0), (2000, 60.0)]}
    assert [s.step_id for s in ledger.unsynced("mlflow")] == ["a"]
    ledger.mark_synced("a", "mlflow", "run-1")
    assert ledger.unsynced("mlflow") == [] and ledger.remote_id("a", "mlflow") == "run-1"


def test_the_file_is_plain_sqlite(tmp_path):
    ledger = Ledger(tmp_path / "l.db")
    ledger.write(_step())
    with sqlite3.connect(ledger.path) as conn:
        assert conn.execute("SELECT COUNT(*) FROM steps").fetchone()[0] == 1


def test_figures_and_records_are_apart_and_the_steps_view_joins_them(tmp_path):
    """The records (~2 KB each) are a separate table: aggregations scan the figures table alone,
    or a report over a million steps reads gigabytes it does not use."""
    from mlcost.sinks.ledger import FIGURES_TABLE

    ledger = Ledger(tmp_path / "l.db")
    ledger.write(_step("a", "succeeded", total_usd=1.5))
    columns = {r["name"] for r in ledger.rows(f"PRAGMA table_info({FIGURES_TABLE})")}
    assert "record" not in columns and {"team", "total_usd", "run_key"} <= columns
    (row,) = ledger.rows("SELECT total_usd, json_extract(record, '$.tags.model') AS model FROM steps")
    assert (row["total_usd"], row["model"]) == (1.5, "ranker")


def test_a_ledger_with_inline_records_is_migrated_once_and_loses_nothing(tmp_path):
    """Ledgers written before the split had ``record`` as a column of a ``steps`` table."""
    from mlcost.sinks.ledger import COLUMNS, _row

    path = tmp_path / "old.db"
    with sqlite3.connect(path) as conn:
        conn.execute(f"CREATE TABLE steps ({', '.join(f'{c} {t}' for c, t in COLUMNS.items())})")
        conn.execute("CREATE INDEX steps_started ON steps(started_at)")
        for step in (_step("a", "succeeded", total_usd=1.5), _step("b", "running", total_usd=0.5)):
            row = _row(step)
            conn.execute(f"INSERT INTO steps ({', '.join(row)}) VALUES ({', '.join('?' * len(row))})",
                         tuple(row.values()))
    ledger = Ledger(path)
    assert [(s.step_id, s.status, s.total_usd) for s in ledger.steps()] == [("a", "succeeded", 1.5),
                                                                            ("b", "running", 0.5)]
    ledger.write(_step("a", "killed", total_usd=9.0))  # still sealed after the move
    ledger.write(_step("b", "succeeded", total_usd=2.0))  # a running row is still refreshed
    assert (ledger.get("a").total_usd, ledger.get("b").status) == (1.5, "succeeded")
    assert Ledger(path).rows("SELECT COUNT(*) AS n FROM steps")[0]["n"] == 2  # a second open: nothing to do
    with sqlite3.connect(path) as conn:
        kinds = dict(conn.execute("SELECT name, type FROM sqlite_master WHERE name LIKE 'step%'").fetchall())
    assert kinds["steps"] == "view" and kinds["step_figures"] == kinds["step_records"] == "table"
