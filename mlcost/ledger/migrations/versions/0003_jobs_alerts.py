"""Jobs across nodes and alerts.

A node's row says which job it belongs to (``job_id``, ``node_rank``) and its unit price
(``gpu_hour_usd``), so any node can compute the job's allocation from the rows alone; ``alerts``
holds each alert once, whichever machine claims it first.

Revision ID: 0003
Revises: 0002
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def _view(sqlite: bool) -> str:
    rowid = "f.rowid AS rowid, " if sqlite else ""
    return (
        f"CREATE VIEW steps AS SELECT {rowid}f.*, r.record FROM step_figures f "
        "LEFT JOIN step_records r ON r.step_id = f.step_id"
    )


def upgrade() -> None:
    sqlite = op.get_bind().dialect.name == "sqlite"
    op.execute("DROP VIEW IF EXISTS steps")  # PostgreSQL expands f.* when the view is made
    op.add_column("step_figures", sa.Column("job_id", sa.String, nullable=True))
    op.add_column("step_figures", sa.Column("node_rank", sa.Integer, nullable=True))
    op.add_column("step_figures", sa.Column("gpu_hour_usd", sa.Float, nullable=True))
    op.create_index("steps_job", "step_figures", ["job_id"])
    op.create_table(
        "alerts",
        sa.Column("key", sa.String, primary_key=True),
        sa.Column("kind", sa.String, nullable=False),
        sa.Column("created_at", sa.String, nullable=False),
        sa.Column("body", sa.Text, nullable=False),
        sa.Column("delivered_at", sa.String),
        sa.Column("attempts", sa.Integer, nullable=False, server_default="0"),
        sa.Column("last_error", sa.Text),
    )
    op.execute(_view(sqlite))


def downgrade() -> None:
    sqlite = op.get_bind().dialect.name == "sqlite"
    op.execute("DROP VIEW steps")
    op.drop_table("alerts")
    op.drop_index("steps_job", "step_figures")
    for column in ("gpu_hour_usd", "node_rank", "job_id"):
        op.drop_column("step_figures", column)
    op.execute(_view(sqlite))
