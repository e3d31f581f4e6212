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
