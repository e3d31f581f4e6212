"""Draining the outbox: the local file's rows the shared ledger has not acknowledged in their
latest state, delivered once.

A row is pending while the outbox has no ``synced`` mark for it (sink ``ledger``) naming its
current state (status and heartbeat). Delivery is the same upsert a step does, which never moves
a row back, and the mark is written after it: a drain cut short delivers the rest next time, and
delivering a row twice changes nothing. So ``mlcost sync`` run twice changes nothing the second
time, and a step's background drain racing ``mlcost sync`` is harmless.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from sqlalchemy import and_, select

from mlcost.ledger.book import SHARED_SINK, Ledger, version
from mlcost.ledger.schema import FIGURE_COLUMNS, now_iso, series, step_figures, step_records, synced

if TYPE_CHECKING:  # pragma: no cover
    from sqlalchemy import Select

log = logging.getLogger(__name__)

BACKGROUND_EVERY_S = 60.0  # a process drains in the background at most this often
BATCH = 200  # rows per transaction on the shared ledger
_background_lock = threading.Lock()
_last_background: dict[str, float] = {}


@dataclass
class DrainResult:
    delivered: list[str] = field(default_factory=list)  # step ids written (or found newer) there
    failed: str | None = None  # why the drain stopped early, if it did

    @property
    def ok(self) -> bool:
        return self.failed is None


def _pending_query() -> Select:
    mark = synced.alias("mark")
    cols = [step_figures.c[c] for c in FIGURE_COLUMNS]
    current = version_expr()
    return (
        select(*cols, step_records.c.record, series.c.data)
        .join(step_records, step_records.c.step_id == step_figures.c.step_id)
        .outerjoin(series, series.c.step_id == step_figures.c.step_id)
        .outerjoin(mark, and_(mark.c.step_id == step_figures.c.step_id, mark.c.sink == SHARED_SINK))
        .where(mark.c.remote_id.is_(None) | (mark.c.remote_id != current))
        .order_by(step_figures.c.started_at, step_figures.c.step_id)
    )


def version_expr():  # -> ColumnElement[str]
    """:func:`mlcost.ledger.book.version` in SQL."""
    from sqlalchemy import func

    return step_figures.c.status + "@" + func.coalesce(step_figures.c.heartbeat_at, "None")


def pending_count(ledger: Ledger) -> int:
    from sqlalchemy import func

    with ledger.local.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(_pending_query().subquery())).scalar() or 0)


def drain(ledger: Ledger) -> DrainResult:
    """Deliver every pending row of ``ledger``'s outbox to its shared database, in batches.
    Stops at the first failure (the rest stays pending); never raises for the shared side."""
    result = DrainResult()
    if ledger.remote is None:
        return result
    with ledger.local.connect() as conn:
        rows = [dict(r._mapping) for r in conn.execute(_pending_query())]
    for start in range(0, len(rows), BATCH):
        batch = rows[start : start + BATCH]
        try:
            with ledger.remote.begin() as conn:
                for r in batch:
                    figures = {c: r[c] for c in FIGURE_COLUMNS}
                    ledger.remote.upsert_on(conn, figures, r["record"], r["data"])
        except Exception as e:
            result.failed = str(e) or type(e).__name__
            log.warning("mlcost: could not drain the outbox %s into %s: %s", ledger.path, ledger.where, e)
            return result
        at = now_iso()
        from mlcost.ledger.store import _upserts

        with ledger.local.begin() as conn:
            conn.execute(
                _upserts(conn.dialect.name, ())["synced"],
                [
                    {"step_id": r["step_id"], "sink": SHARED_SINK, "synced_at": at,
                     "remote_id": version(r["status"], r["heartbeat_at"])}
                    for r in batch
                ],
            )  # fmt: skip
        result.delivered += [r["step_id"] for r in batch]
    return result


def drain_in_background(ledger: Ledger) -> threading.Thread | None:
    """Start a daemon thread draining ``ledger``'s outbox, unless one ran in this process within
    :data:`BACKGROUND_EVERY_S` or is running. A step calls it when the shared ledger answered it."""
    if ledger.remote is None:
        return None
    key = ledger.target.url
    with _background_lock:
        now = time.monotonic()
        last = _last_background.get(key)
        if last is not None and now - last < BACKGROUND_EVERY_S:
            return None
        _last_background[key] = now

    def run() -> None:
        try:
            result = drain(ledger)
            if result.delivered:
                log.info("mlcost: delivered %d step(s) from the outbox %s to %s",
                         len(result.delivered), ledger.path, ledger.where)  # fmt: skip
        except Exception as e:
            log.warning("mlcost: background drain of the outbox %s failed: %s", ledger.path, e)

    thread = threading.Thread(target=run, name="mlcost-outbox", daemon=True)
    thread.start()
    return thread


def sync_outbox(ledger: Ledger) -> tuple[str, bool]:
    """``mlcost sync``'s first part: drain the outbox; returns (a line for the user, success)."""
    if ledger.remote is None:
        return "", True
    if not ledger.path.exists():
        return f"No outbox at {ledger.path}: nothing to deliver to {ledger.where}.", True
    result = drain(ledger)
    n = len(result.delivered)
    line = f"Delivered {n} step{'s' * (n != 1)} from the outbox {ledger.path} to the ledger {ledger.where}"
    if result.ok:
        return line + ".", True
    return line + f"; stopped: {result.failed} (run `mlcost sync` again when it is reachable)", False
