"""Run a DAG file end to end on this machine: a throwaway Airflow home on SQLite and ``dag.test()``.

Used by ``mlcost demo`` and by the test-suite, which both need the same few facts right: Airflow
reads ``AIRFLOW_HOME`` once, when it is first imported, so the environment is set before that;
``dag.test()`` needs the metadata DB and the DAG file inside the dags folder (else "the dag is not
serialized"). Airflow is imported inside the functions only.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

_PREPARED: Path | None = None
_DB_READY = False


class AirflowHomeError(RuntimeError):
    """Airflow was imported before the throwaway home was set, with another home."""


def prepare_home(home: str | os.PathLike[str], *, quiet: bool = True) -> Path:
    """Point Airflow at ``home`` (a dags folder inside it, SQLite, no examples). Idempotent; call it
    before anything imports ``airflow``. Returns the dags folder."""
    global _PREPARED
    home = Path(home).resolve()
    if _PREPARED is not None:
        if home != _PREPARED:
            raise AirflowHomeError(f"this process already uses the Airflow home {_PREPARED}, not {home}")
        return home / "dags"
    if "airflow.configuration" in sys.modules and os.environ.get("AIRFLOW_HOME") != str(home):
        raise AirflowHomeError(
            "airflow was imported before the throwaway AIRFLOW_HOME was set; run in a fresh process "
            f"(AIRFLOW_HOME is {os.environ.get('AIRFLOW_HOME')!r})"
        )
    dags = home / "dags"
    dags.mkdir(parents=True, exist_ok=True)
    env = {
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__CORE__DAGS_FOLDER": str(dags),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{home / 'airflow.db'}",
        "AIRFLOW__CORE__UNIT_TEST_MODE": "False",
    }
    if quiet:
        env["AIRFLOW__LOGGING__LOGGING_LEVEL"] = "WARNING"
    os.environ.update(env)
    _PREPARED = home
    return dags


def init_db() -> None:
    """Create the metadata DB once per process (``airflow db migrate`` on SQLite; ~4 s)."""
    global _DB_READY
    if _DB_READY:
        return
    from airflow.utils import db

    db.initdb()
    _DB_READY = True


def install_dag(source: str | os.PathLike[str], dags_folder: str | os.PathLike[str]) -> Path:
    """Copy a DAG file into the dags folder (``dag.test()`` only runs DAGs that live there)."""
    target = Path(dags_folder) / Path(source).name
    if Path(source).resolve() != target.resolve():
        shutil.copyfile(source, target)
    return target


def load_dag(path: str | os.PathLike[str], dag_id: str) -> Any:
    """Import the DAG file and return its DAG ``dag_id``."""
    path = Path(path)
    name = f"mlcost_dagfile_{path.stem}"
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    from airflow.sdk import DAG

    for value in vars(module).values():
        if isinstance(value, DAG) and value.dag_id == dag_id:
            return value
    raise LookupError(f"{path} defines no DAG {dag_id!r}")


@dataclass
class RunResult:
    """What a ``dag.test()`` run ended with."""

    dag_id: str
    run_id: str
    state: str
    tasks: dict[str, str] = field(default_factory=dict)  # task id -> state
    tries: dict[str, int] = field(default_factory=dict)  # task id -> try number

    @property
    def run_key(self) -> str:
        from mlcost.operators.metered import run_key_for

        return run_key_for(self.dag_id, self.run_id)


def run_dag(path: str | os.PathLike[str], dag_id: str, *, conf: dict[str, Any] | None = None) -> RunResult:
    """``dag.test()`` the DAG ``dag_id`` of the file ``path`` (inside the dags folder) and report
    the run's state and each task's state and try number."""
    init_db()
    dag = load_dag(path, dag_id)
    dr = dag.test(run_conf=conf)
    from airflow.utils.session import create_session

    with create_session() as session:
        tis = dr.get_task_instances(session=session)
        tasks = {ti.task_id: str(getattr(ti.state, "value", ti.state)) for ti in tis}
        tries = {ti.task_id: int(ti.try_number) for ti in tis}
    return RunResult(dag_id, dr.run_id, str(getattr(dr.state, "value", dr.state)), tasks, tries)


def xcom(result: RunResult, task_id: str, key: str = "return_value") -> Any:
    """The XCom ``key`` that ``task_id`` pushed in the run ``result`` (None when there is none)."""
    from airflow.models.xcom import XComModel
    from airflow.utils.session import create_session
    from sqlalchemy import select

    with create_session() as session:
        row = session.scalars(
            select(XComModel).where(
                XComModel.dag_id == result.dag_id,
                XComModel.run_id == result.run_id,
                XComModel.task_id == task_id,
                XComModel.key == key,
            )
        ).first()
        return XComModel.deserialize_value(row) if row is not None else None
