"""Build a throwaway Airflow home for the Cost view's server tests (run as a script, in the
server's environment): migrate the metadata DB (FAB's tables come with it), serialize the DAGs of
the dags folder, and create two FAB users:

- ``admin`` (role Admin): every DAG;
- ``alice`` (role ``OneDag``): Viewer's permissions without the global "DAGs" read, plus
  ``can read`` on ``DAG:team_a_train`` and on ``Plugins`` (Airflow lists plugin views in the
  navigation only to users who may read Plugins).

The FAB auth manager is the smallest real configuration with per-DAG rules: SimpleAuthManager has
roles only, and every role that can read a DAG can read them all.
"""

from __future__ import annotations

import sys
from argparse import Namespace

USERS = {"admin": "admin-pw", "alice": "alice-pw"}
ALICE_DAG = "team_a_train"


def main() -> None:
    from airflow.cli.commands.dag_command import dag_reserialize
    from airflow.models.dag import DagModel
    from airflow.providers.fab.auth_manager.cli_commands.utils import get_application_builder
    from airflow.security import permissions as p
    from airflow.utils import db
    from airflow.utils.session import create_session

    db.initdb()
    dag_reserialize(Namespace(bundle_name=None))
    with create_session() as session:
        dag_ids = sorted(d for (d,) in session.query(DagModel.dag_id))
    assert ALICE_DAG in dag_ids, dag_ids
    with get_application_builder() as ab:
        sm = ab.sm
        sm.sync_roles()
        for dag_id in dag_ids:
            sm.sync_perm_for_dag(dag_id, None)
        role = sm.add_role("OneDag")
        for perm in sm.find_role("Viewer").permissions:
            if perm.resource.name != p.RESOURCE_DAG:
                sm.add_permission_to_role(role, perm)
        sm.add_permission_to_role(role, sm.create_permission(p.ACTION_CAN_READ, f"DAG:{ALICE_DAG}"))
        sm.add_permission_to_role(role, sm.create_permission(p.ACTION_CAN_READ, p.RESOURCE_PLUGIN))
        sm.add_user("admin", "Ada", "Admin", "admin@example.com", sm.find_role("Admin"), password=USERS["admin"])
        sm.add_user("alice", "Alice", "Onedag", "alice@example.com", role, password=USERS["alice"])
    print("ready:", ",".join(dag_ids))


if __name__ == "__main__":
    main()
    sys.exit(0)
