"""The mlcost Airflow plugin: the cost listener and the Cost view in the Airflow 3 UI.

Registered through the ``airflow.plugins`` entry point, so installing mlcost is enough. The
listener records (it cannot fail tasks: Airflow swallows listener errors); guardrails live in the
operators. The view is a FastAPI app mounted by the API server under ``/mlcost`` and linked from
the navigation ("Browse" > "GPU cost").
"""

from __future__ import annotations

from airflow.plugins_manager import AirflowPlugin
from mlcost.plugins import listener
from mlcost.plugins.cost_view import LazyApp

URL_PREFIX = "/mlcost"


class MlcostPlugin(AirflowPlugin):
    """Listener + Cost view."""

    name = "mlcost"
    listeners = [listener]
    fastapi_apps = [{"app": LazyApp(), "url_prefix": URL_PREFIX, "name": "mlcost cost view"}]
    external_views = [
        {
            "name": "GPU cost",
            "href": f"{URL_PREFIX}/",
            "destination": "nav",
            "category": "browse",
            "url_route": "mlcost-cost",
        }
    ]
