"""The deployment tests: a real two-worker Airflow with PostgreSQL, Redis and an MLflow server.

The deployment (deployment.py) is one per session: it takes ~40 s to come up on 2 cores. It is
stopped by the session finalizer, which fails the session if any process it started is still running.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

HERE = Path(__file__).parent


sys.path.insert(0, str(HERE))  # tests/ is not a package: the deployment modules import by name
import deployment  # noqa: E402

POLICY = """
[budgets]
run_usd = 1000
"""


def pytest_collection_modifyitems(items):
    for item in items:
        if Path(str(item.fspath)).is_relative_to(HERE):
            item.add_marker(pytest.mark.fleet)
            # the first test also pays the bring-up, the last the tear-down: minutes on a busy machine
            item.add_marker(pytest.mark.timeout(900))


@pytest.fixture(scope="session")
def fleet(request, tmp_path_factory):
    """The running deployment (``deployment.Deployment``), with the DAGs of dagfiles/ installed."""
    dep = deployment.Deployment(
        tmp_path_factory.mktemp("fleet"), dag_files=sorted((HERE / "dagfiles").glob("*.py")), policy=POLICY
    )
    request.addfinalizer(dep.stop)  # before start: a half-started deployment is stopped too
    try:
        dep.start()
    except Exception as e:
        pytest.fail(f"the deployment did not come up: {e}\n{dep.logs()}")
    return dep
