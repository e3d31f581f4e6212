"""One throwaway Airflow home (SQLite, migrated once) for every Airflow test of the session.

Airflow reads AIRFLOW_HOME when it is first imported, so the home is set here, at collection, before
any test module imports Airflow. Every test that needs Airflow lives under tests/airflow (operators,
the cost plugin, the demo DAG), so this one conftest covers them all.
"""

from __future__ import annotations

import atexit
import shutil
import tempfile
from pathlib import Path

import pytest
from mlcost.operators.local import init_db, install_dag, prepare_home

HOME = Path(tempfile.mkdtemp(prefix="mlcost-airflow-"))
atexit.register(shutil.rmtree, HOME, ignore_errors=True)
DAGS = prepare_home(HOME)
HERE = Path(__file__).parent


@pytest.fixture(scope="session")
def airflow_db() -> Path:
    """The migrated metadata DB; returns the dags folder."""
    init_db()
    return DAGS


@pytest.fixture
def dagfile(airflow_db):
    """Install a DAG file of tests/airflow/dagfiles into the dags folder; returns its path there."""

    def install(name: str) -> Path:
        return install_dag(HERE / "dagfiles" / name, airflow_db)

    return install
