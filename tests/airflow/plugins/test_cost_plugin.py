"""The plugin is registered by entry point, mounts the Cost view in the API server, and its listener
records (and never raises)."""

from __future__ import annotations

from types import SimpleNamespace

from mlcost.plugins import listener

from mlcost.sinks.ledger import Ledger


def test_plugin_is_loaded_with_listener_view_and_nav_entry(airflow_db):
    from airflow import plugins_manager
    from mlcost.plugins.cost_plugin import MlcostPlugin

    plugins = plugins_manager.get_plugin_info()
    mine = next(p for p in plugins if p["name"] == "mlcost")
    assert "mlcost.plugins.listener" in str(mine["listeners"])
    (app,) = MlcostPlugin.fastapi_apps
    assert app["url_prefix"] == "/mlcost"
    (view,) = MlcostPlugin.external_views
    assert view["href"] == "/mlcost/" and view["destination"] == "nav" and view["name"] == "Cost view"


def test_api_server_serves_the_cost_view_behind_its_login(client, token):
    assert client.get("/mlcost/api/costs", params={"group": "dag"}).status_code == 401
    response = client.get("/mlcost/api/costs", params={"group": "dag"}, headers=token("viewer"))
    assert response.status_code == 200, response.text
    assert response.json()["group"] == "dag"


def _ti(**over):
    base = dict(dag_id="d", run_id="r", task_id="t", try_number=1, map_index=-1, start_date=None, task=object())
    return SimpleNamespace(**{**base, **over})


def test_listener_records_unmetered_tasks_once_per_try():
    ti = _ti()
    listener.on_task_instance_running(None, ti)
    listener.on_task_instance_failed(None, ti, RuntimeError("boom"))
    listener.on_task_instance_success(None, ti)  # a late event cannot rewrite a sealed row
    (step,) = Ledger().steps(run_key="airflow:d/r")
    assert step.source == "listener" and step.status == "failed" and step.error == "boom"
    assert step.context["try_number"] == "1" and step.total_usd == 0


def test_listener_skips_metered_tasks():
    listener.on_task_instance_success(None, _ti(task=SimpleNamespace(mlcost_metered=True)))
    assert Ledger().steps(run_key="airflow:d/r") == []


def test_listener_never_raises(monkeypatch, tmp_path):
    monkeypatch.setenv("MLCOST_LEDGER", str(tmp_path))  # a directory: every write fails
    listener.on_task_instance_success(None, _ti())
    listener.on_task_instance_running(None, SimpleNamespace())  # not even a task instance
