"""Heartbeats: a running row carries the time of its last checkpoint (``heartbeat_at``).

A running row whose heartbeat is older than the lost limit reads as ``lost``
(mlcost.ledger.schema.effective_status). Rows written before this revision get their end, else
their start, as heartbeat: an old ``running`` row is then lost at once, which is what it is.

Revision ID: 0002
Revises: 0001
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
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
    op.add_column("step_figures", sa.Column("heartbeat_at", sa.String, nullable=True))
    op.execute("UPDATE step_figures SET heartbeat_at = COALESCE(ended_at, started_at)")
    op.create_index("steps_heartbeat", "step_figures", ["status", "heartbeat_at"])
    op.execute(_view(sqlite))


def downgrade() -> None:
    sqlite = op.get_bind().dialect.name == "sqlite"
    op.execute("DROP VIEW steps")
    op.drop_index("steps_heartbeat", "step_figures")
    op.drop_column("step_figures", "heartbeat_at")
    op.execute(_view(sqlite))
