"""Who may see which spend: the Cost view's access rules, declared as FastAPI dependencies.

The view asks Airflow's auth manager, never its own list: ``get_user`` (a Bearer token or the UI's
JWT cookie; 401 without one) and ``permitted_dag_filter_factory("GET")`` (the DAG ids the user may
read). Every route takes a :class:`DagScope` and every query narrows by it, so a table, a chart, a
total and a JSON answer can only ever show the same rows. Steps that belong to no DAG (plain Python,
Kubeflow) are shown only to a user who may read every DAG, since no per-DAG rule covers them.
Nothing is checked by hand inside a route (STYLE.md, habit 13).
"""

from __future__ import annotations

from typing import Annotated, Any
from urllib.parse import urlsplit

from fastapi import Depends, Request
from mlcost.plugins.version_compat import (
    DagDetails,
    get_auth_manager,
    get_user,
    permitted_dag_filter_factory,
)

from mlcost.ledger.cost_view import DagScope

# No DAG is named this (a DAG id cannot hold ':'), so only a rule that covers every DAG allows it:
# FAB checks the global "DAGs" resource and then a "DAG:<id>" one no role has; SimpleAuthManager
# answers by role. Asking about a DAG that cannot exist is how "may read all DAGs" is put to any
# auth manager through its public API.
ANY_DAG_PROBE = "mlcost:any-dag"


def _user_name(user: Any) -> str:
    for attr in ("get_name", "get_id"):
        try:
            return str(getattr(user, attr)())
        except Exception:  # an auth manager's user without that accessor
            continue
    return ""


def dag_scope(
    user: Annotated[Any, Depends(get_user)],
    permitted: Annotated[Any, Depends(permitted_dag_filter_factory("GET"))],
) -> DagScope:
    """The dependency every data route takes (401 from ``get_user`` when nobody is logged in)."""
    all_dags = get_auth_manager().is_authorized_dag(method="GET", details=DagDetails(id=ANY_DAG_PROBE), user=user)
    return DagScope(all_dags=bool(all_dags), dag_ids=frozenset(permitted.value or ()), user=_user_name(user))


DagScopeDep = Annotated[DagScope, Depends(dag_scope)]


def login_url(request: Request) -> str:
    """Airflow's login page, coming back to this page afterwards (a path on this server only)."""
    here = urlsplit(str(request.url))
    back = here.path + (f"?{here.query}" if here.query else "")
    return get_auth_manager().get_url_login(next_url=back)
