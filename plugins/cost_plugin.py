"""The mlcost Airflow plugin: the cost listener and the Cost view in the Airflow 3 UI.

Registered through the ``airflow.plugins`` entry point, so installing mlcost is enough. The
listener records (it cannot fail tasks: Airflow swallows listener errors); guardrails live in the
operators. The view is a FastAPI app mounted by the API server under ``/mlcost`` and linked from
the navigation ("Browse" > "Cost view"). Every route of the view but ``/health`` requires an
Airflow login and shows only the DAGs the user may read (``plugins/auth.py``).
"""

from __future__ import annotations

import os
from typing import Any

from airflow.plugins_manager import AirflowPlugin
from mlcost.plugins import listener

URL_PREFIX = "/mlcost"


class LazyApp:
    """An ASGI app that builds :func:`mlcost.plugins.cost_view.create_app` on its first request.

    Airflow loads plugins in every component, task processes included (for the listener); this
    keeps FastAPI, SQLAlchemy and the view out of them, and only the API server ever builds the
    app (after it has started its auth manager, which the app's routes depend on).
    """

    def __init__(self, ledger: str | os.PathLike[str] | None = None) -> None:
        self.ledger = ledger
        self._app: Any = None

    @property
    def app(self) -> Any:
        if self._app is None:
            from mlcost.plugins.cost_view import create_app

            self._app = create_app(self.ledger)
        return self._app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        await self.app(scope, receive, send)


class MlcostPlugin(AirflowPlugin):
    """Listener + Cost view."""

    name = "mlcost"
    listeners = [listener]
    fastapi_apps = [{"app": LazyApp(), "url_prefix": URL_PREFIX, "name": "mlcost cost view"}]
    external_views = [
        {
            "name": "Cost view",
            "href": f"{URL_PREFIX}/",
            "destination": "nav",
            "category": "browse",
            "url_route": "mlcost-cost",
        }
    ]
