"""The Cost view behind a real ``airflow api-server`` with the FAB auth manager (per-DAG rules):
anonymous refused, an admin sees every DAG and the steps of no DAG, a user limited to one DAG sees
that DAG's spend only, in every endpoint and on the page. No browser needed; see conftest.py."""

from __future__ import annotations

import httpx
import pytest

# the first test also pays for the session's Airflow home and api-server (about a minute, more on a busy machine)
pytestmark = pytest.mark.timeout(900)

ENDPOINTS = ("api/totals", "api/costs", "api/daily", "api/top-steps", "api/flagged", "api/runs")
OTHERS = ("team_b_train", "(no DAG)", "embed")


def get(server, path, user=None, **params):
    headers = server.token(user) if user else {}
    return httpx.get(f"{server.url}/mlcost/{path}", params=params, headers=headers, timeout=60, follow_redirects=False)


def test_anonymous_gets_401_and_the_page_sends_to_airflow_login(fab_server):
    for path in ENDPOINTS:
        assert get(fab_server, path).status_code == 401, path
    page = get(fab_server, "", period="7d")
    assert page.status_code == 303
    assert page.headers["location"] == f"{fab_server.url}/auth/login/?next=%2Fmlcost%2F%3Fperiod%3D7d"
    # Airflow's own API refuses the same anonymous request
    assert httpx.get(f"{fab_server.url}/api/v2/dags", timeout=60).status_code == 401


def test_health_reveals_no_path_or_url(fab_server):
    r = get(fab_server, "health")
    assert r.status_code == 200 and r.json() == {"status": "ok"}
    for secret in (str(fab_server.ledger), str(fab_server.home), "sqlite", "://"):
        assert secret not in r.text


def test_admin_sees_every_dag_and_the_steps_of_no_dag(fab_server):
    rows = get(fab_server, "api/costs", "admin", group="dag").json()["rows"]
    assert {r["dag_id"] for r in rows} == {"team_a_train", "team_b_train", "(no DAG)"}
    totals = get(fab_server, "api/totals", "admin").json()["totals"]
    assert totals["total_usd"] == pytest.approx(sum(r["total_usd"] for r in rows))
    assert totals["refused_steps"] == 2 and totals["lost_steps"] == 1 and totals["simulated"] is True
    windows = get(fab_server, "api/budget-windows", "admin").json()["windows"]
    assert [w["name"] for w in windows] == ["search-monthly", "ads-weekly"]


def test_a_user_limited_to_one_dag_sees_only_its_spend(fab_server):
    admin_rows = get(fab_server, "api/costs", "admin", group="dag").json()["rows"]
    team_a = next(r for r in admin_rows if r["dag_id"] == "team_a_train")
    body = {path: get(fab_server, path, "alice").json() for path in ENDPOINTS}
    assert [r["dag_id"] for r in body["api/costs"]["rows"]] == ["team_a_train"]
    assert body["api/totals"]["totals"]["total_usd"] == pytest.approx(team_a["total_usd"])
    assert body["api/totals"]["totals"]["steps"] == team_a["steps"] and team_a["steps"] > 0
    assert body["api/daily"]["total_usd"] == pytest.approx(team_a["total_usd"])
    assert {s["key"] for s in body["api/daily"]["series"]} == {"search"}
    assert {s["dag_id"] for s in body["api/top-steps"]["steps"]} == {"team_a_train"}
    first = body["api/top-steps"]["steps"][0]
    assert first["links"] == {
        "airflow": f"/dags/team_a_train/runs/{first['run_id']}/tasks/{first['task_id']}",
        "mlflow": f"http://127.0.0.1:5000/#/runs/{first['mlflow_run_id']}",
    }
    assert [(s["step_id"], s["flag"]) for s in body["api/flagged"]["steps"]] == [("ra", "refused"), ("la", "lost")]
    # a team's window adds up spend across DAGs: not for a user who may read only some
    assert get(fab_server, "api/budget-windows", "alice").json()["windows"] == []
    assert {r["dag_id"] for r in body["api/runs"]["runs"]} == {"team_a_train"}
    for path, answer in body.items():
        for other in OTHERS:
            assert other not in str(answer), (path, other)
    # asking for another DAG, or a team of it, by name yields nothing
    assert get(fab_server, "api/totals", "alice", dag_id="team_b_train").json()["totals"]["steps"] == 0
    assert get(fab_server, "api/totals", "alice", team="ads").json()["totals"]["steps"] == 0
    page = get(fab_server, "", "alice")
    assert page.status_code == 200 and "team_a_train" in page.text
    for other in OTHERS:
        assert other not in page.text


def test_the_api_is_documented_in_openapi(fab_server):
    spec = httpx.get(f"{fab_server.url}/mlcost/openapi.json", timeout=60).json()
    assert spec["info"]["title"] == "mlcost Cost view"
    for path in ENDPOINTS:
        op = spec["paths"][f"/{path}"]["get"]
        assert {"period", "since", "until", "dag_id", "team"} <= {p["name"] for p in op["parameters"]}, path
        assert "200" in op["responses"]
