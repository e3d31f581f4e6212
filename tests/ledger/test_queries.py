"""The readers' one query layer on both backends: the period filter, lost rows counted and shown by
every reader, and the aggregations the budget gate, the pipeline history and the Cost view ask for."""

from __future__ import annotations

import pytest
from sqlalchemy import update

from mlcost.cli import main
from mlcost.ledger import Ledger
from mlcost.ledger import queries as q
from mlcost.ledger.schema import step_figures
from mlcost.period import Period
from mlcost.step import StepCost

STALE = "2020-01-01T00:00:00.000000+00:00"  # a heartbeat far older than any lost limit


def _step(step_id: str, total: float, *, status: str = "succeeded", started: str = "2026-01-05T10:00:00+00:00",
          **kw) -> StepCost:  # fmt: skip
    kw.setdefault("tags", {"team": "search", "model": "ranker", "workload": "training"})
    return StepCost(step_id=step_id, name=kw.pop("name", "train"), status=status, started_at=started,
                    total_usd=total, compute_usd=total, gpus=1, gpu_type="H100", gpu_hours=1.0, **kw)  # fmt: skip


def _make_lost(ledger: Ledger, step_id: str) -> None:
    """The step stopped checkpointing long ago (SIGKILL, a node gone): its heartbeat is stale."""
    with ledger.store.begin() as conn:
        conn.execute(update(step_figures).where(step_figures.c.step_id == step_id).values(heartbeat_at=STALE))


@pytest.fixture
def book(ledger_spec) -> Ledger:
    ledger = Ledger(ledger_spec)
    for step in (
        _step("sealed", 10.0),
        _step("dead", 4.0, status="running"),  # will be lost: counted at its last checkpoint's $4
        _step("live", 100.0, status="running"),  # still running: no report counts it yet
        _step("early", 50.0, started="2025-12-31T23:59:59.999999+00:00"),
        _step("edge", 1.0, started="2026-01-10T00:00:00+00:00"),
    ):
        ledger.write(step)
    _make_lost(ledger, "dead")
    return ledger


def test_the_period_is_half_open_on_both_backends(book):
    with q.reading(book) as conn:
        def total(since=None, until=None):
            return q.total_usd(conn, Period(since, until))

        assert total() == pytest.approx(10 + 4 + 50 + 1)  # sealed and lost; not the live one
        assert total("2026-01-01") == pytest.approx(15.0)  # "early" is a microsecond before
        assert total("2026-01-01", "2026-01-10") == pytest.approx(14.0)  # until is exclusive
        assert total("2026-01-10T00:00:00+00:00") == pytest.approx(1.0)  # since is inclusive
        assert total("2026-01-10T01:00:00+01:00") == pytest.approx(1.0)  # the same instant, another zone


def test_a_lost_step_is_counted_and_shown_by_every_reader(book, ledger_spec, capsys):
    from mlcost.gate.records import from_ledger
    from mlcost.pricing.catalog import PriceCatalog
    from mlcost.reports import analysis as a
    from mlcost.reports.focus import focus_rows
    from mlcost.reports.validate import ledger_frame

    period = Period("2026-01-01", "2026-01-10")
    (team,) = a.chargeback(book, period, by=("team",)).to_dict("records")
    assert (team["total_usd"], team["steps"], team["lost_steps"]) == (pytest.approx(14.0), 2, 1)

    focus = focus_rows(book, period, PriceCatalog.load()).set_index("ResourceId")
    assert focus.loc["dead", "x_Status"] == "lost" and focus.loc["dead", "BilledCost"] == pytest.approx(4.0)
    assert "live" not in focus.index

    runs = {r.id: r for r in from_ledger(ledger_spec, since="2026-01-01", until="2026-01-10")}
    assert set(runs) == {"sealed", "dead"} and runs["dead"].status == "lost" and runs["dead"].cost_usd == 4.0

    assert set(ledger_frame(book)["status"]) == {"succeeded", "lost"}

    from mlcost.ledger import cost_view as view

    with q.reading(book) as conn:
        f = view.period_filters(view.EVERYTHING, since="2026-01-01", until="2026-01-10")
        (row,) = view.cost_by(conn, "team", f)
        flagged = view.flagged_steps(conn, f)
    assert row["lost_steps"] == 1 and row["total_usd"] == pytest.approx(114.0)  # the view shows the live one too
    assert [(r["step_id"], r["flag"]) for r in flagged] == [("dead", "lost")]

    assert main(["report", "--ledger", ledger_spec, "--since", "2026-01-01", "--until", "2026-01-10",
                 "--by", "team", "--format", "markdown"]) == 0  # fmt: skip
    assert "1 lost step (died without a final record" in capsys.readouterr().out


def test_run_spend_sums_a_runs_metered_tries_in_the_database(ledger_spec):
    ledger = Ledger(ledger_spec)
    ctx = {"dag_id": "d", "task_id": "fit"}
    for step in (
        _step("t1", 3.0, run_key="airflow:d/r1", context=ctx, status="failed", idle_usd=1.0),
        _step("t2", 5.0, run_key="airflow:d/r1", context=ctx),  # the retry: both tries were paid for
        _step("t3", 2.0, run_key="airflow:d/r1", context={"task_id": "prep"}, tags={"model": "prep-m"}),
        _step("t4", 0.0, run_key="airflow:d/r1", source="listener", context={"task_id": "notify"}),
        _step("t5", 7.0, run_key="airflow:d/r2", context=ctx),  # another run
        _step("t6", 1.5, run_key="airflow:d/r1", name="eval", status="running"),  # cost so far counts
    ):
        ledger.write(step)
    with q.reading(ledger_spec) as conn:
        rows = {(r["task"], r["model"]): r for r in q.run_spend(conn, "airflow:d/r1")}
    assert set(rows) == {("fit", "ranker"), ("prep", "prep-m"), ("eval", "ranker")}
    fit = rows[("fit", "ranker")]
    assert (fit["total_usd"], fit["idle_usd"], fit["steps"]) == (pytest.approx(8.0), pytest.approx(1.0), 2)


def test_succeeded_runs_are_the_newest_per_name_and_tags(ledger_spec):
    ledger = Ledger(ledger_spec)
    for i in range(5):
        ledger.write(_step(f"a{i}", 1.0, started=f"2026-01-0{i + 1}T00:00:00+00:00", duration_s=10.0 * (i + 1)))
    ledger.write(_step("ads", 1.0, duration_s=999.0, tags={"team": "ads"}))
    ledger.write(_step("bad", 1.0, status="failed", duration_s=999.0))
    with q.reading(ledger_spec) as conn:
        rows = q.succeeded_runs(conn, ["train"], 3, {"team": "search"})
        everyone = q.succeeded_runs(conn, ["train", "other"], 10)
    assert sorted(r["duration_s"] for r in rows) == [30.0, 40.0, 50.0]  # the 3 newest of team search
    assert len(everyone) == 6  # 5 of search + 1 of ads; the failed one never


def test_the_cost_view_reads_the_period_as_every_reader_does(book):
    from mlcost.errors import ConfigError
    from mlcost.ledger import cost_view as view

    def total(**kw):
        with q.reading(book) as conn:
            return view.totals(conn, view.period_filters(view.EVERYTHING, **kw))["total_usd"]

    # the same instant in another zone is the same period (it was a string comparison before)
    assert total(since="2026-01-10T01:00:00+01:00") == total(since="2026-01-10") == pytest.approx(1.0)
    assert total(since="2026-01-01", until="2026-01-10") == pytest.approx(114.0)  # with the live step
    for bad in ({"since": "garbage"}, {"until": "3000000d"}, {"since": "2026-01-02", "until": "2026-01-01"}):
        with pytest.raises(ConfigError, match=r"^(since|until): "):  # a ValueError: the routes answer 400
            view.period_filters(view.EVERYTHING, **bad)


def test_the_gate_counts_and_names_a_lost_step(book, ledger_spec, tmp_path, capsys):
    policy = tmp_path / "mlcost.toml"
    policy.write_text("[budgets]\njob_usd = 3\n")
    rc = main(["gate", "--policy", str(policy), "--ledger", ledger_spec, "--since", "2026-01-01",
               "--until", "2026-01-10"])  # fmt: skip
    out = capsys.readouterr().out
    assert rc == 1  # both the sealed $10 step and the lost $4 one are over $3
    assert "1 lost step" in out and "train (dead)" in out and "total $14.00)" in out


def test_a_bound_on_the_second_includes_rows_stored_with_or_without_microseconds(ledger_spec):
    ledger = Ledger(ledger_spec)
    ledger.write(_step("plain", 1.0, started="2026-02-01T00:00:00+00:00"))
    ledger.write(_step("micro", 2.0, started="2026-02-01T00:00:00.000000+00:00"))
    ledger.write(_step("later", 4.0, started="2026-02-01T00:00:00.000001+00:00"))
    with q.reading(ledger_spec) as conn:
        assert q.total_usd(conn, Period("2026-02-01")) == pytest.approx(7.0)  # since is inclusive
        assert q.total_usd(conn, Period(None, "2026-02-01")) == 0  # until is exclusive
        assert q.total_usd(conn, Period(None, "2026-02-01T00:00:00.000001+00:00")) == pytest.approx(3.0)


def test_the_anomaly_scan_gives_each_history_in_start_order_on_both_backends(ledger_spec, monkeypatch):
    """Runs written out of order, two histories, a NULL figure and a bounded period: each history
    comes back in start order (ties by step id), and on SQLite the fast path (the index's order) and
    the plain ordered read agree."""
    ledger = Ledger(ledger_spec)
    starts = ["2026-01-03", "2026-01-01", "2026-01-02", "2026-01-02", "2026-01-05"]
    for i, (day, step_id) in enumerate(zip(starts, ["c", "a", "b2", "b1", "e"], strict=True)):
        ledger.write(_step(step_id, float(i + 1), started=f"{day}T10:00:00+00:00"))
    ledger.write(_step("other", 7.0, name="eval"))
    with ledger.store.begin() as conn:  # a step whose GPU-hours were not measured
        conn.execute(update(step_figures).where(step_figures.c.step_id == "e").values(gpu_hours=None))
    period = Period.parse(since="2026-01-02", until="2026-01-04")
    with q.reading(ledger) as conn:
        scan = sorted(q.anomaly_scan(conn, Period(), period))
        if conn.dialect.name == "sqlite":
            checked = []
            real = q._sqlite_in_index_order

            def plain_read_instead(c, stmt):  # note what the check said, then take the ordered read
                checked.append(real(c, stmt))
                return False

            monkeypatch.setattr(q, "_sqlite_in_index_order", plain_read_instead)
            assert sorted(q.anomaly_scan(conn, Period(), period)) == scan
            assert checked == [True]  # the index's order is what the fast path relies on
    train = next(h for h in scan if h[0].startswith("a"))
    assert train[0].split(q.ID_SEP) == ["a", "b1", "b2", "c", "e"]
    assert [float(v) for v in train[1].split(",")] == [2.0, 4.0, 3.0, 1.0, 5.0]
    assert train[2].split(",")[-1].lower() == "nan"  # no GPU-hours: no run of that figure
    assert train[3] == "0,1,1,1,0"
