"""The Cost view over HTTP, mounted in Airflow's own API app: figures exact, same filters for page
and API, anonymous refused. Per-DAG permissions need the FAB auth manager: test_cost_view_server.py."""

from __future__ import annotations

import pytest
from mlcost.operators.local import install_dag, run_dag
from mlcost.plugins.cost_plugin import LazyApp

from mlcost.demo import demo_dag_file
from mlcost.sinks.ledger import Ledger
from mlcost.step import StepCost


def _step(step_id: str, dag: str | None, task: str, team: str, model: str, total: float, idle: float, **kw) -> StepCost:
    return StepCost(
        step_id=step_id,
        name=task,
        status=kw.pop("status", "succeeded"),
        started_at=f"2025-01-0{step_id[-1]}T00:00:00+00:00",
        tags={"team": team, "model": model},
        run_key=f"airflow:{dag}/r1" if dag else "kfp:pipeline/run-1",
        context={"dag_id": dag, "task_id": task, "run_id": "r1"} if dag else {},
        total_usd=total,
        idle_usd=idle,
        gpus=1,
        gpu_hours=kw.pop("gpu_hours", 1.0),
        **kw,
    )


@pytest.fixture
def three_dags():
    ledger = Ledger()
    ledger.write(_step("s1", "d1", "train", "search", "ranker", 10.0, 2.5, mlflow_run_id="abc123"))
    ledger.write(_step("s2", "d1", "eval", "search", "ranker", 2.0, 0.0))
    ledger.write(_step("s3", "d2", "train", "ads", "ctr", 4.0, 3.0))
    ledger.write(_step("s4", None, "kfp-train", "ads", "ctr", 1.0, 0.5))
    ledger.write(_step("s5", "d2", "train", "ads", "ctr", 0.0, 0.0, status="breached", gpu_hours=0.0))
    ledger.write(_step("s6", "d2", "train", "ads", "ctr", 0.0, 0.0, status="running"))
    kill_without_a_trace(ledger, "s6")
    return ledger


def kill_without_a_trace(ledger: Ledger, step_id: str) -> None:
    """What SIGKILL leaves: a running row whose heartbeat stopped long ago (so it reads as lost)."""
    import sqlite3

    with sqlite3.connect(ledger.path) as conn:
        conn.execute("UPDATE step_figures SET heartbeat_at = '2025-01-06T00:00:00+00:00' WHERE step_id = ?", (step_id,))


ALL = {"period": "all"}


def test_anonymous_is_refused_and_sent_to_login(client, three_dags):
    for path in (
        "/mlcost/api/costs",
        "/mlcost/api/totals",
        "/mlcost/api/daily",
        "/mlcost/api/top-steps",
        "/mlcost/api/flagged",
        "/mlcost/api/runs",
    ):
        assert client.get(path).status_code == 401, path
    page = client.get("/mlcost/", params={"period": "7d"}, follow_redirects=False)
    assert page.status_code == 303
    assert (
        page.headers["location"].startswith("/auth/login")
        and "next=%2Fmlcost%2F%3Fperiod%3D7d" in page.headers["location"]
    )
    assert client.get("/mlcost/api/costs", headers={"Authorization": "Bearer not-a-jwt"}).status_code in (401, 403)


def test_health_answers_without_revealing_where_the_ledger_is(client, three_dags, monkeypatch):
    body = client.get("/mlcost/health").json()
    assert body == {"status": "ok"}
    assert str(three_dags.path) not in client.get("/mlcost/health").text


def test_groups_totals_and_idle_share_are_exact(client, token, three_dags):
    h = token("admin")
    by_team = client.get("/mlcost/api/costs", params={**ALL, "group": "team"}, headers=h).json()
    assert [(r["team"], r["total_usd"], r["idle_share"]) for r in by_team["rows"]] == [
        ("search", 12.0, pytest.approx(2.5 / 12.0)),
        ("ads", 5.0, 0.7),
    ]
    by_task = client.get("/mlcost/api/costs", params={**ALL, "group": "task", "dag_id": "d1"}, headers=h).json()
    assert [(r["dag_id"], r["task_id"], r["total_usd"]) for r in by_task["rows"]] == [
        ("d1", "train", 10.0),
        ("d1", "eval", 2.0),
    ]
    assert client.get("/mlcost/api/costs", params={"since": "2025-01-03"}, headers=h).json()["total_usd"] == 5.0
    custom = {"since": "2025-01-02", "until": "2025-01-04"}
    assert client.get("/mlcost/api/totals", params=custom, headers=h).json()["totals"]["total_usd"] == 6.0
    totals = client.get("/mlcost/api/totals", params=ALL, headers=h).json()["totals"]
    assert totals["total_usd"] == 17.0 and totals["refused_steps"] == 1 and totals["steps"] == 6
    assert totals["lost_steps"] == 1
    daily = client.get("/mlcost/api/daily", params={**ALL, "by": "dag"}, headers=h).json()
    assert daily["days"][:5] == [f"2025-01-0{i}" for i in range(1, 6)]
    assert {s["key"]: s["usd"][:5] for s in daily["series"]} == {
        "d1": [10.0, 2.0, 0, 0, 0],
        "d2": [0, 0, 4.0, 0, 0],
        "(no DAG)": [0, 0, 0, 1.0, 0],
    }
    top = client.get("/mlcost/api/top-steps", params={**ALL, "order": "idle"}, headers=h).json()["steps"]
    assert [s["step_id"] for s in top] == ["s3", "s1", "s4"]
    s1 = next(s for s in top if s["step_id"] == "s1")
    assert s1["links"]["airflow"] == "/dags/d1/runs/r1/tasks/train" and "mlflow" not in s1["links"]
    flagged = client.get("/mlcost/api/flagged", params=ALL, headers=h).json()["steps"]
    assert [(s["step_id"], s["flag"], s["status"]) for s in flagged] == [
        ("s6", "lost", "lost"),
        ("s5", "refused", "breached"),
    ]
    assert client.get("/mlcost/api/runs", params=ALL, headers=h).json()["runs"][0]["run_key"] == "airflow:d2/r1"


def test_a_two_node_job_is_one_row_of_the_api_and_the_page(client, token, three_dags):
    for rank in (0, 1):
        node = _step(f"j{rank + 7}", "d2", "ddp", "ads", "ctr", 6.0, 1.0, job_id="ddp-7", node_rank=rank, nodes=2)
        three_dags.write(node)
    h = token("admin")
    top = client.get("/mlcost/api/top-steps", params=ALL, headers=h).json()["steps"]
    assert [(s["step_id"], s["job_id"], s["nodes"], s["total_usd"]) for s in top[:2]] == [
        ("j7", "ddp-7", 2, 12.0),
        ("s1", None, 1, 10.0),
    ]
    assert top[0]["gpus"] == 2 and top[0]["links"]["airflow"] == "/dags/d2/runs/r1/tasks/ddp"
    page = client.get("/mlcost/", params=ALL, headers=h).text
    assert page.count("(job of 2 nodes)") == 1  # once in the top-cost table, never node by node


def test_bad_filters_are_a_400_that_names_the_value(client, token, three_dags):
    h = token("viewer")
    for params, word in (
        ({"group": "nope"}, "group"),
        ({"period": "1y"}, "period"),
        ({"since": "yesterday"}, "since"),
        ({"period": "custom"}, "custom"),
        ({"since": "2025-01-05", "until": "2025-01-01"}, "until"),
    ):
        r = client.get("/mlcost/api/costs", params=params, headers=h)
        assert r.status_code == 400 and word in r.json()["detail"], r.text


def test_mlflow_links_need_a_tracking_server(client, token, three_dags, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://mlflow.example:5000/")
    top = client.get("/mlcost/api/top-steps", params=ALL, headers=token()).json()["steps"]
    assert top[0]["links"]["mlflow"] == "http://mlflow.example:5000/#/runs/abc123"


def test_a_user_without_dag_access_sees_nothing_not_even_steps_of_no_dag(client, token, three_dags):
    h = token(None)  # a SimpleAuthManager user with no role: may read no DAG
    assert client.get("/mlcost/api/totals", params=ALL, headers=h).json()["totals"]["steps"] == 0
    assert client.get("/mlcost/api/costs", params=ALL, headers=h).json()["rows"] == []
    page = client.get("/mlcost/", params=ALL, headers=h)
    assert page.status_code == 200 and "kfp-train" not in page.text and "$10.0000" not in page.text


def test_openapi_documents_every_endpoint(client):
    spec = client.get("/mlcost/openapi.json").json()
    assert {"/api/totals", "/api/costs", "/api/daily", "/api/top-steps", "/api/flagged", "/api/runs", "/health"} <= set(
        spec["paths"]
    )
    assert "period" in str(spec["paths"]["/api/costs"]["get"]["parameters"])


def test_cost_view_shows_the_demo_run(airflow_db, simulated_gpu, client, token):
    simulated_gpu("bursty", gpu="H100")
    result = run_dag(install_dag(demo_dag_file(), airflow_db), "mlcost_demo", conf={"train_seconds": 0.5})
    assert result.state == "success", result.tasks
    steps = {s.context["task_id"]: s for s in Ledger().steps(run_key=result.run_key) if s.source == "meter"}
    h = token("viewer")

    tasks = client.get("/mlcost/api/costs", params={"group": "task", "dag_id": "mlcost_demo"}, headers=h).json()
    got = {r["task_id"]: r for r in tasks["rows"]}
    for task_id, step in steps.items():
        assert got[task_id]["total_usd"] == pytest.approx(step.total_usd)
        assert got[task_id]["idle_usd"] == pytest.approx(step.idle_usd)
    assert got["validate_training_data"]["total_usd"] == 0 and got["validate_training_data"]["metered_steps"] == 0
    assert tasks["total_usd"] == pytest.approx(sum(s.total_usd for s in steps.values()))

    models = {
        r["model"]: r for r in client.get("/mlcost/api/costs", params={"group": "model"}, headers=h).json()["rows"]
    }
    assert models["ranker-large"]["total_usd"] == pytest.approx(steps["train_large"].total_usd)
    (dag_row,) = client.get("/mlcost/api/costs", params={"group": "dag"}, headers=h).json()["rows"]
    assert dag_row["dag_id"] == "mlcost_demo" and dag_row["runs"] == 1 and dag_row["simulated"] is True

    page = client.get("/mlcost/", headers=h)
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    for text in ("By DAG", "By task", "By team", "By model", "train_large", "ranker-small", "search", "Simulated data"):
        assert text in page.text
    for chart in ("spend-per-day", "idle-by-dag", "idle-by-team", "top-cost", "top-idle"):
        assert f'data-chart="{chart}"' in page.text
    assert f"${steps['train_large'].total_usd:,.4f}" in page.text
    assert "<script" not in page.text and "http://" not in page.text.replace('xmlns="http://www.w3.org/2000/svg"', "")


def test_the_plugin_mounts_a_lazy_app():
    app = LazyApp()
    assert app._app is None  # FastAPI is built on the first request, in the API server only


def test_budget_windows_and_their_burn_for_users_who_read_every_dag(client, token, tmp_path, monkeypatch):
    from datetime import datetime, timezone

    now = datetime.now(timezone.utc).isoformat()
    ledger = Ledger()
    ledger.write(_step("w1", "d1", "train", "search", "ranker", 30.0, 1.0).model_copy(update={"started_at": now}))
    policy = tmp_path / "mlcost.toml"
    policy.write_text('[[budgets.windows]]\nteam = "search"\nperiod = "month"\nusd = 40\nwarn_at_pct = [50]\n')
    monkeypatch.setenv("MLCOST_POLICY", str(policy))
    (window,) = client.get("/mlcost/api/budget-windows", headers=token("admin")).json()["windows"]
    assert (window["name"], window["spent_usd"], window["limit_usd"], window["state"]) == (
        "search-monthly",
        30.0,
        40,
        "warned",
    )
    page = client.get("/mlcost/", headers=token("admin")).text
    assert 'data-chart="budget-windows"' in page and "search-monthly" in page
    # a user who may not read every DAG would learn other DAGs' spend from a team's window
    assert client.get("/mlcost/api/budget-windows", headers=token(None)).json()["windows"] == []
    assert "Budget windows" not in client.get("/mlcost/", headers=token(None)).text


def test_no_windows_in_the_policy_shows_no_budget_section(client, token, three_dags):
    assert client.get("/mlcost/api/budget-windows", headers=token()).json()["windows"] == []
    assert "Budget windows" not in client.get("/mlcost/", params=ALL, headers=token()).text


def test_a_ledger_no_step_has_written_yet_is_an_empty_view(client, token, tmp_path, monkeypatch):
    monkeypatch.setenv("MLCOST_LEDGER", str(tmp_path / "not-yet" / "ledger.db"))
    assert client.get("/mlcost/api/totals", headers=token()).json()["totals"]["steps"] == 0
    assert client.get("/mlcost/", headers=token()).status_code == 200
    assert client.get("/mlcost/health").json() == {"status": "ok"}
    assert not (tmp_path / "not-yet").exists()  # the view reads; it never creates a ledger
