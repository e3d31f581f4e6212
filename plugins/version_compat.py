"""Every Airflow version check of the Cost view, in one place (like ``operators/version_compat.py``).

The view asks Airflow's own security dependencies (``airflow.api_fastapi.core_api.security``) who
the user is and which DAGs they may read. Airflow 3.3 has ``get_user``, ``requires_authenticated``
and ``permitted_dag_filter_factory``; the fallbacks are what Airflow 3.0 had: ``get_user`` and the
auth manager's ``get_authorized_dag_ids``, which is what ``permitted_dag_filter_factory`` calls.
Imported by the API server only (the plugin module itself never imports this).
"""

from __future__ import annotations

from typing import Annotated, Any

from airflow.api_fastapi.auth.managers.models.resource_details import DagDetails
from airflow.api_fastapi.core_api.security import get_user

try:
    from airflow.api_fastapi.app import get_auth_manager
except ImportError:  # pragma: no cover - Airflow 3.0 kept it in the auth manager module
    from airflow.api_fastapi.auth.managers.base_auth_manager import get_auth_manager  # type: ignore[no-redef]

try:
    from airflow.api_fastapi.core_api.security import requires_authenticated
except ImportError:  # pragma: no cover - before Airflow 3.1

    def requires_authenticated() -> Any:
        from fastapi import Depends

        def inner(user: Annotated[Any, Depends(get_user)]) -> None:
            return None

        return inner


try:
    from airflow.api_fastapi.core_api.security import permitted_dag_filter_factory
except ImportError:  # pragma: no cover - an Airflow 3.0 without the factory

    def permitted_dag_filter_factory(method: str) -> Any:  # type: ignore[misc]
        from types import SimpleNamespace

        from fastapi import Depends

        def inner(user: Annotated[Any, Depends(get_user)]) -> Any:
            return SimpleNamespace(value=get_auth_manager().get_authorized_dag_ids(user=user, method=method))

        return inner


__all__ = ["DagDetails", "get_auth_manager", "get_user", "permitted_dag_filter_factory", "requires_authenticated"]
