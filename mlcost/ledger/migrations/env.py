"""Alembic environment of the ledger: always run from mlcost.ledger.migrate, on the connection (and
inside the transaction) it passes, so a migration holds the same lock as the check before it."""

from alembic import context

from mlcost.ledger.migrate import VERSION_TABLE
from mlcost.ledger.schema import metadata

connection = context.config.attributes["connection"]
context.configure(
    connection=connection,
    target_metadata=metadata,
    version_table=VERSION_TABLE,
    render_as_batch=connection.dialect.name == "sqlite",
)
with context.begin_transaction():
    context.run_migrations()
