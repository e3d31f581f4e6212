"""An in-process Airflow API server app (Airflow's own ``create_app``, its default
SimpleAuthManager) with the plugin mounted, and real JWTs from that auth manager."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="module")
def airflow_app(airflow_db):
    from airflow.api_fastapi.app import create_app

    return create_app()


@pytest.fixture
def client(airflow_app):
    from fastapi.testclient import TestClient

    return TestClient(airflow_app)


@pytest.fixture
def token(airflow_app):
    """``token(role)``: a Bearer header for a SimpleAuthManager user with that role (None: no role)."""
    from airflow.api_fastapi.app import get_auth_manager
    from airflow.api_fastapi.auth.managers.simple.user import SimpleAuthManagerUser

    def make(role: str | None = "admin", name: str = "alice") -> dict[str, str]:
        jwt = get_auth_manager().generate_jwt(SimpleAuthManagerUser(username=name, role=role))
        return {"Authorization": f"Bearer {jwt}"}

    return make
