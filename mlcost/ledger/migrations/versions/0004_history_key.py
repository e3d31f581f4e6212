"""The anomaly scan's index.

Each row gets ``history_key``, its name and tags as one number (:func:`mlcost.ledger.schema.history_key`),
and the index ``steps_history`` holds every row's history in start order with the columns the scan
reads. The anomaly report then reads a million steps from the index alone, already grouped and
ordered, instead of sorting the table and comparing five text columns per row. Existing rows get
their key here, in batches.

Revision ID: 0004
Revises: 0003
"""

import sqlalchemy as sa
from alembic import op

from mlcost.ledger.schema import HISTORY_DIMENSIONS, HISTORY_INDEX, history_key, steps_view_sql

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

_BATCH = 10_000


def upgrade() -> None:
    conn = op.get_bind()
    op.execute("DROP VIEW IF EXISTS steps")  # PostgreSQL expands f.* when the view is made
    op.add_column("step_figures", sa.Column("history_key", sa.BigInteger, nullable=True))
    figures = sa.table("step_figures", *(sa.column(c) for c in ("step_id", "history_key", *HISTORY_DIMENSIONS)))
    pending = sa.select(figures.c.step_id, *(figures.c[d] for d in HISTORY_DIMENSIONS)).where(
        figures.c.history_key.is_(None)
    )
    update = sa.update(figures).where(figures.c.step_id == sa.bindparam("b_step_id"))
    update = update.values(history_key=sa.bindparam("b_key"))
    while rows := conn.execute(pending.limit(_BATCH)).mappings().all():
        conn.execute(update, [{"b_step_id": r["step_id"], "b_key": history_key(dict(r))} for r in rows])
    op.create_index("steps_history", "step_figures", list(HISTORY_INDEX))
    op.execute(steps_view_sql(conn.dialect.name))


def downgrade() -> None:
    op.execute("DROP VIEW steps")
    op.drop_index("steps_history", "step_figures")
    op.drop_column("step_figures", "history_key")
    op.execute(steps_view_sql(op.get_bind().dialect.name))
