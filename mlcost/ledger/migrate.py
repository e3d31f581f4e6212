"""The ledger's schema state and its Alembic migrations, run through Alembic's API.

Users never need an ``alembic.ini``: the scripts ship inside the package and are run on a
connection this module opens. What a database holds is classified before anything is written:

- ``empty``: no tables; a writer creates the ledger;
- ``mlcost``: an mlcost ledger at a known revision (or from before Alembic: stamped, or migrated
  from the single-table file of the first releases);
- ``newer``: an mlcost ledger whose revision this mlcost does not know: refused, naming the fix;
- ``foreign``: tables that are not a ledger's: refused, naming what was found; nothing is
  created in it.

The version lives in its own table, ``mlcost_schema_version``, so a ledger never takes the
``alembic_version`` of another application that shares the database.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from sqlalchemy import Connection, inspect, text

from mlcost.errors import ConfigError

VERSION_TABLE = "mlcost_schema_version"
REVISIONS = ("0001", "0002", "0003", "0004")  # oldest first; a test checks these against the scripts
HEAD = REVISIONS[-1]
SCRIPTS = Path(__file__).parent / "migrations"
_LEDGER_TABLES = {"step_figures", "step_records", "series", "synced", VERSION_TABLE}


@dataclass(frozen=True)
class SchemaState:
    kind: str  # "empty", "mlcost", "newer", "foreign"
    revision: str | None = None  # None: not stamped (empty, foreign, or before Alembic)
    tables: tuple[str, ...] = field(default_factory=tuple)
    pre_split: bool = False  # the one-table ledger of the first releases

    @property
    def current(self) -> bool:
        return self.kind == "mlcost" and self.revision == HEAD

    def describe(self) -> str:
        if self.kind == "empty":
            return "empty (no tables yet)"
        if self.kind == "foreign":
            return f"not an mlcost ledger (tables: {', '.join(self.tables)})"
        if self.kind == "newer":
            return f"revision {self.revision}, newer than this mlcost (knows up to {HEAD})"
        if self.pre_split:
            return "a ledger from before schema versions (one table): needs an upgrade"
        if self.revision is None:
            return "a ledger from before schema versions: needs an upgrade"
        return f"revision {self.revision}" + ("" if self.revision == HEAD else f" (head is {HEAD}): needs an upgrade")


def state(conn: Connection) -> SchemaState:
    """What the database behind ``conn`` holds (reads only)."""
    insp = inspect(conn)
    tables = tuple(sorted(t for t in insp.get_table_names() if not t.startswith("sqlite_")))
    if not tables:
        return SchemaState("empty")
    if VERSION_TABLE in tables:
        rev = conn.execute(text(f"SELECT version_num FROM {VERSION_TABLE}")).scalar()
        if rev in REVISIONS:
            return SchemaState("mlcost", rev, tables)
        return SchemaState("newer", rev, tables)
    if "step_figures" in tables and "step_records" in tables:
        return SchemaState("mlcost", None, tables)
    if "steps" in tables and {"step_id", "record", "started_at"} <= {c["name"] for c in insp.get_columns("steps")}:
        return SchemaState("mlcost", None, tables, pre_split=True)
    return SchemaState("foreign", None, tables)


def refuse(st: SchemaState, where: str, field_name: str, *, readonly: bool = False) -> None:
    """Raise the :class:`ConfigError` a reader or writer must stop with, if any."""
    if st.kind == "foreign":
        raise ConfigError(
            f"{where} is not an mlcost ledger: it has the tables {', '.join(st.tables)} and none of the "
            "ledger's; nothing was written to it. Point the ledger at its own file or database",
            field=field_name,
        )
    if st.kind == "newer":
        raise ConfigError(
            f"the ledger {where} has schema revision {st.revision}, newer than this mlcost knows "
            f"(up to {HEAD}): upgrade mlcost where this runs (pip install -U 'mlcost[postgres]')",
            field=field_name,
        )
    if readonly and st.kind == "mlcost" and not st.current:
        raise ConfigError(
            f"the ledger {where} is at {st.describe()}; run `mlcost ledger upgrade --ledger {where}` "
            "(take a backup first)",
            field=field_name,
        )


def _config(conn: Connection):  # -> alembic.config.Config
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(SCRIPTS))
    cfg.attributes["connection"] = conn
    return cfg


def create(conn: Connection) -> None:
    """A new ledger at :data:`HEAD` in one go: the tables of :mod:`mlcost.ledger.schema` (which a
    test holds equal to what the migrations build), the ``steps`` view and the version row.
    Without Alembic: importing it and running every revision took over a second, which every fresh
    Kubeflow pod or worker would pay inside its first metered step."""
    from mlcost.ledger.schema import metadata, steps_view_sql

    metadata.create_all(conn)
    conn.exec_driver_sql(steps_view_sql(conn.dialect.name))
    conn.exec_driver_sql(
        f"CREATE TABLE {VERSION_TABLE} (version_num VARCHAR(32) NOT NULL, "
        f"CONSTRAINT {VERSION_TABLE}_pkc PRIMARY KEY (version_num))"
    )
    conn.execute(text(f"INSERT INTO {VERSION_TABLE} (version_num) VALUES (:v)"), {"v": HEAD})


def upgrade(conn: Connection, st: SchemaState | None = None) -> SchemaState:
    """Bring the ledger behind ``conn`` to :data:`HEAD`, in the caller's transaction (which holds
    the write lock, so two processes opening an old ledger together migrate it once). Returns
    the state before."""
    st = st or state(conn)
    if st.current:
        return st
    if st.kind == "empty":
        create(conn)
        return st
    if st.kind != "mlcost":
        return st  # the caller refuses it
    from alembic import command

    cfg = _config(conn)
    if st.kind == "mlcost" and st.revision is None and not st.pre_split:
        command.stamp(cfg, "0001")  # the two-table ledger of before Alembic is revision 0001
    command.upgrade(cfg, "head")
    return st
