"""The ledger as it was before Alembic: step figures and records in two tables, the steps view.

A database that already has ``step_figures`` but no version is stamped at this revision instead of
running it (see mlcost.ledger.migrate). A file from before the split (one ``steps`` table with the
JSON ``record`` inline) is moved here: the table becomes ``step_figures`` and its records move out.

Revision ID: 0001
Revises:
"""

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

_FIGURES = [
    ("step_id", sa.String, False), ("name", sa.Text, False), ("status", sa.String, False),
    ("source", sa.String, False), ("started_at", sa.String, False), ("ended_at", sa.String, True),
    ("duration_s", sa.Float, True), ("gpus", sa.Integer, True), ("gpu_type", sa.String, True),
    ("pricing", sa.String, True), ("team", sa.Text, True), ("project", sa.Text, True),
    ("model", sa.Text, True), ("workload", sa.String, True), ("run_key", sa.Text, True),
    ("total_usd", sa.Float, True), ("compute_usd", sa.Float, True), ("idle_usd", sa.Float, True),
    ("energy_usd", sa.Float, True), ("energy_kwh", sa.Float, True), ("spot_whatif_usd", sa.Float, True),
    ("gpu_hours", sa.Float, True), ("util_mean_pct", sa.Float, True), ("mem_peak_gb", sa.Float, True),
    ("idle_fraction", sa.Float, True), ("host_cpu_mean_pct", sa.Float, True), ("telemetry", sa.String, True),
    ("simulated", sa.Integer, True), ("samples", sa.Integer, True),
]  # fmt: skip


def upgrade() -> None:
    conn = op.get_bind()
    sqlite = conn.dialect.name == "sqlite"
    tables = set(sa.inspect(conn).get_table_names())
    if "steps" in tables:  # before the split: move the table, then its records
        op.execute("ALTER TABLE steps RENAME TO step_figures")
        op.create_table("step_records", sa.Column("step_id", sa.String, primary_key=True),
                        sa.Column("record", sa.Text, nullable=False))  # fmt: skip
        op.execute("INSERT INTO step_records (step_id, record) SELECT step_id, record FROM step_figures")
        op.execute("ALTER TABLE step_figures DROP COLUMN record")
        tables = {"step_figures", "step_records"} | tables
    else:
        op.create_table(
            "step_figures",
            *(sa.Column(c, t(), primary_key=(c == "step_id"), nullable=n) for c, t, n in _FIGURES),
        )
        op.create_table("step_records", sa.Column("step_id", sa.String, primary_key=True),
                        sa.Column("record", sa.Text, nullable=False))  # fmt: skip
    indexes = {i["name"] for i in sa.inspect(conn).get_indexes("step_figures")}
    for name, cols in (("steps_started", ["started_at"]), ("steps_run", ["run_key"]),
                       ("steps_name", ["name", "started_at"])):  # fmt: skip
        if name not in indexes:
            op.create_index(name, "step_figures", cols)
    if "series" not in tables:
        op.create_table("series", sa.Column("step_id", sa.String, primary_key=True),
                        sa.Column("data", sa.LargeBinary, nullable=False))  # fmt: skip
    if "synced" not in tables:
        op.create_table(
            "synced",
            sa.Column("step_id", sa.String, nullable=False),
            sa.Column("sink", sa.String, nullable=False),
            sa.Column("remote_id", sa.Text),
            sa.Column("synced_at", sa.String, nullable=False),
            sa.PrimaryKeyConstraint("step_id", "sink"),
        )
    rowid = "f.rowid AS rowid, " if sqlite else ""
    op.execute(
        f"CREATE VIEW steps AS SELECT {rowid}f.*, r.record FROM step_figures f "
        "LEFT JOIN step_records r ON r.step_id = f.step_id"
    )


def downgrade() -> None:
    op.execute("DROP VIEW steps")
    for table in ("synced", "series", "step_records", "step_figures"):
        op.drop_table(table)
