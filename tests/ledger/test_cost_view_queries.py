"""The Cost view's queries (mlcost.ledger.cost_view) on SQLite and a real PostgreSQL: the same
figures from the one-scan overview, the per-group queries and the top lists; a user's DAG scope
narrows every one; lost and refused steps are flagged; periods parse as every reader's."""

from __future__ import annotations

import pytest
from sqlalchemy import update

from mlcost.errors import ConfigError
from mlcost.ledger import Ledger
from mlcost.ledger import cost_view as v
from mlcost.ledger.queries import reading
from mlcost.ledger.schema import step_figures
from mlcost.step import StepCost

NOW = "2026-01-08T00:00:00+00:00"


def _step(step_id: str, dag: str | None, total: float, idle: float, day: int, **kw) -> StepCost:
    return StepCost(
        step_id=step_id, name=kw.pop("name", "train"), status=kw.pop("status", "succeeded"),
        started_at=f"2026-01-0{day}T10:00:00+00:00", tags={"team": kw.pop("team", "search"), "model": "m"},
        run_key=f"airflow:{dag}/r{day}" if dag else f"kfp:p/{day}", total_usd=total, idle_usd=idle,
        gpus=1, gpu_hours=kw.pop("gpu_hours", 1.0),
        context={"dag_id": dag, "task_id": "train", "run_id": f"r{day}"} if dag else {}, **kw,
    )  # fmt: skip


@pytest.fixture
def view_ledger(ledger_spec) -> str:
    book = Ledger(ledger_spec)
    for step in (
        _step("a1", "dag.a", 10.0, 2.0, 1),
        _step("a2", "dag.a", 5.0, 1.0, 2),
        _step("b1", "dag_b", 4.0, 3.0, 2, team="ads"),
        _step("k1", None, 2.0, 1.0, 3, team="ads"),
        _step("r1", "dag_b", 0.0, 0.0, 3, status="breached", gpu_hours=0.0, team="ads"),
        _step("x1", "dag.a", 1.5, 0.5, 4, status="running"),
    ):
        book.write(step)
    with book.store.begin() as conn:  # x1 died without a final record: its heartbeat is stale
        conn.execute(update(step_figures).where(step_figures.c.step_id == "x1").values(heartbeat_at="2020-01-01"))
    return ledger_spec


def test_overview_folds_to_the_same_figures_as_the_group_queries(view_ledger):
    f = v.period_filters(v.EVERYTHING, period="all")
    with reading(view_ledger) as conn:
        cells = v.overview(conn, f)
        (totals,) = v.fold(cells, None)
        direct = v.totals(conn, f)
        for key in ("total_usd", "idle_usd", "steps", "refused_steps", "lost_steps", "failed_steps"):
            assert totals[key] == pytest.approx(direct[key]), key
        assert (direct["total_usd"], direct["steps"], direct["refused_steps"], direct["lost_steps"]) == (
            pytest.approx(22.5), 6, 1, 1)  # fmt: skip
        for key, group in (("dag_id", "dag"), ("team", "team")):
            folded = [(r[key], r["total_usd"], r["steps"]) for r in v.fold(cells, key)]
            assert folded == [(r[key], pytest.approx(r["total_usd"]), r["steps"]) for r in v.cost_by(conn, group, f)]
        assert [r["dag_id"] for r in v.cost_by(conn, "dag", f)] == ["dag.a", "dag_b", "(no DAG)"]
        daily = v.spend_per_day(conn, "dag", v.period_filters(v.EVERYTHING, since="2026-01-01", until="2026-01-05"))
        assert daily["days"] == ["2026-01-01", "2026-01-02", "2026-01-03", "2026-01-04"]
        series = {s["key"]: s["usd"] for s in daily["series"]}
        assert series == {"dag.a": [10, 5, 0, 1.5], "dag_b": [0, 4, 0, 0], "(no DAG)": [0, 0, 2, 0]}
        flagged = [(s["step_id"], s["flag"]) for s in v.flagged_steps(conn, f)]
        assert flagged == [("x1", "lost"), ("r1", "refused")]
        assert [s["step_id"] for s in v.top_steps(conn, f, order="idle")] == ["b1", "a1", "a2", "k1", "x1"]
        assert [r["run_key"] for r in v.dag_runs(conn, f, limit=2)] == ["airflow:dag.a/r4", "airflow:dag_b/r3"]


def test_a_scope_of_one_dag_narrows_every_query(view_ledger):
    f = v.period_filters(v.DagScope(all_dags=False, dag_ids=frozenset({"dag_b"})), period="all")
    with reading(view_ledger) as conn:
        assert v.totals(conn, f)["total_usd"] == 4.0 and v.totals(conn, f)["steps"] == 2
        assert {c["dag_id"] for c in v.overview(conn, f)} == {"dag_b"}
        assert {c["dag_id"] for c in v.breakdown(conn, f)} == {"dag_b"}
        assert [s["step_id"] for s in v.top_steps(conn, f)] == ["b1"]
        assert [s["step_id"] for s in v.flagged_steps(conn, f)] == ["r1"]
        assert [r["dag_id"] for r in v.dag_runs(conn, f)] == ["dag_b", "dag_b"]
        nothing = v.period_filters(v.DagScope(all_dags=False), period="all")
        assert v.totals(conn, nothing)["steps"] == 0 and v.cost_by(conn, "team", nothing) == []


def test_a_job_across_nodes_is_one_top_entry_the_sum_of_its_nodes(view_ledger):
    """Three nodes at $4 each are a $12 job: first in the list, once, not three $4 rows below a1."""
    book = Ledger(view_ledger)
    for rank, status in enumerate(("succeeded", "failed", "succeeded")):
        book.write(_step(f"j{rank}", "dag.a", 4.0, 0.5, 5, job_id="ddp-1", node_rank=rank, nodes=3, status=status))
    f = v.period_filters(v.EVERYTHING, period="all")
    with reading(view_ledger) as conn:
        top = v.top_steps(conn, f)
        assert [(s["step_id"], s["nodes"]) for s in top[:3]] == [("j0", 3), ("a1", 1), ("a2", 1)]
        job = top[0]
        assert job["job_id"] == "ddp-1" and job["gpus"] == 3 and job["status"] == "failed"
        assert (job["total_usd"], job["idle_usd"]) == (pytest.approx(12.0), pytest.approx(1.5))
        assert [s["step_id"] for s in v.top_steps(conn, f, limit=1)] == ["j0"]
        idle = [(s["step_id"], s["idle_usd"]) for s in v.top_steps(conn, f, order="idle")]
        assert idle[:3] == [("b1", 3.0), ("a1", 2.0), ("j0", pytest.approx(1.5))]
        assert sum(s["total_usd"] for s in top) == pytest.approx(v.totals(conn, f)["total_usd"])  # each step once
        elsewhere = v.period_filters(v.DagScope(all_dags=False, dag_ids=frozenset({"dag_b"})), period="all")
        assert [s["step_id"] for s in v.top_steps(conn, elsewhere)] == ["b1"]  # a job is in its DAG's scope


def test_periods_parse_as_every_readers_since():
    f = v.period_filters(v.EVERYTHING, since="7d")
    assert f.name == "custom" and f.since is not None and f.until is None
    assert v.period_filters(v.EVERYTHING, period="7d", since="2020-01-01").name == "7d"  # the selector wins
    for kwargs, field in (
        ({"since": "garbage"}, "since"),
        ({"since": "3000000d"}, "since"),
        ({"since": "2026-01-05", "until": "2026-01-01"}, "until"),
        ({"period": "1y"}, "period"),
        ({"period": "custom"}, "period"),
    ):
        with pytest.raises(ConfigError) as e:
            v.period_filters(v.EVERYTHING, **kwargs)
        assert str(e.value).startswith(f"{field}: "), e.value
