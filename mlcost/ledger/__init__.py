"""The ledger: every metered step, in a SQLite file or a shared database (see docs/architecture.md, "Many
machines, one book").

- :mod:`~mlcost.ledger.target`: where it is (a path or a URL; passwords masked), no SQLAlchemy;
- :mod:`~mlcost.ledger.schema`: the tables (SQLAlchemy Core) and the ``lost`` rule;
- :mod:`~mlcost.ledger.store`: the one module owning engines; checks and migrates the schema;
- :mod:`~mlcost.ledger.migrate`: schema state and the Alembic migrations shipped in the package;
- :mod:`~mlcost.ledger.book`: ``Ledger``, what steps write to (local file first, then shared);
- :mod:`~mlcost.ledger.outbox`: draining the local outbox into the shared ledger.

Names are imported on first use: ``import mlcost.ledger`` does not import SQLAlchemy.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

_EXPORTS = {
    "Ledger": "mlcost.ledger.book",
    "open_ledger": "mlcost.ledger.book",
    "ledger_path": "mlcost.ledger.book",
    "Target": "mlcost.ledger.target",
    "resolve": "mlcost.ledger.target",
    "mask": "mlcost.ledger.target",
    "Store": "mlcost.ledger.store",
    "LedgerUnavailable": "mlcost.ledger.store",
    "effective_status": "mlcost.ledger.schema",
    "STATUS_LOST": "mlcost.ledger.schema",
}

__all__ = [
    "STATUS_LOST",
    "Ledger",
    "LedgerUnavailable",
    "Store",
    "Target",
    "effective_status",
    "ledger_path",
    "mask",
    "open_ledger",
    "resolve",
]

if TYPE_CHECKING:  # pragma: no cover
    from mlcost.ledger.book import Ledger, ledger_path, open_ledger
    from mlcost.ledger.schema import STATUS_LOST, effective_status
    from mlcost.ledger.store import LedgerUnavailable, Store
    from mlcost.ledger.target import Target, mask, resolve


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'mlcost.ledger' has no attribute {name!r}")
