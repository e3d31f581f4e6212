"""The queries guardrails make while steps run: a job's other nodes, a window's spend, a step's own
history, and the alerts already claimed.

Reports aggregate the whole ledger after the fact; these are small, indexed reads on a step's
path (job_id, started_at, name), made against the ledger every machine shares, so a node sees its
peers and a team's window is one figure across the fleet.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

from sqlalchemy import and_, func, select, update

from mlcost.ledger.schema import alerts, effective_status, now_iso, step_figures
from mlcost.step import STATUS_BREACHED, STATUS_SUCCEEDED

if TYPE_CHECKING:  # pragma: no cover
    from mlcost.ledger.store import Store

SCOPE_COLUMNS = ("team", "project", "model", "workload")
HISTORY_LIMIT = 50  # the latest runs a step is compared with (as the anomaly report's causes)


@dataclass(frozen=True, slots=True)
class PeerRow:
    """Another node's row of the same job: enough to compute its allocation at any instant."""

    step_id: str
    node_rank: int | None
    status: str  # effective: running, lost, or sealed
    started_at: datetime
    gpus: int
    gpu_hour_usd: float | None
    duration_s: float  # at its last checkpoint (running) or its end (sealed)

    def allocated_usd(self, now: datetime) -> float:
        """GPUs × time × price: up to ``now`` while it runs, up to its last checkpoint once lost,
        and its whole duration once sealed."""
        if not self.gpu_hour_usd or not self.gpus:
            return 0.0
        seconds = (now - self.started_at).total_seconds() if self.status == "running" else self.duration_s
        return self.gpus * max(seconds, 0.0) * self.gpu_hour_usd / 3600.0


def job_peers(store: Store, job_id: str, *, exclude_step_id: str) -> list[PeerRow]:
    """The rows of ``job_id``'s other nodes (latest attempt per node rank wins nothing: every row
    spent money, so every row counts)."""
    f = step_figures
    q = select(
        f.c.step_id, f.c.node_rank, effective_status().label("status"), f.c.started_at, f.c.gpus,
        f.c.gpu_hour_usd, f.c.duration_s,
    ).where(f.c.job_id == job_id, f.c.step_id != exclude_step_id, f.c.status != STATUS_BREACHED)  # fmt: skip
    with store.connect() as conn:
        rows = conn.execute(q).all()
    return [
        PeerRow(
            r.step_id, r.node_rank, r.status, _when(r.started_at), int(r.gpus or 0), r.gpu_hour_usd,
            float(r.duration_s or 0.0),
        )
        for r in rows
    ]


def scope_spend(store: Store, scope: Mapping[str, str], start: datetime, end: datetime) -> float:
    """USD spent by the steps of ``scope`` (team / project / model / workload; empty = everyone)
    started in [start, end): sealed steps at their total, running and lost ones at their last
    checkpoint (money spent is spent)."""
    from mlcost.ledger.queries import in_period  # the one period filter of every reader
    from mlcost.period import Period

    f = step_figures
    conds = [in_period(Period(start, end))]
    conds += [f.c[k] == v for k, v in scope.items() if k in SCOPE_COLUMNS]
    with store.connect() as conn:
        return float(conn.execute(select(func.coalesce(func.sum(f.c.total_usd), 0.0)).where(and_(*conds))).scalar())


def step_history(
    store: Store, name: str, tags: Mapping[str, str], *, before: str, exclude_step_id: str
) -> list[tuple[float, float]]:
    """(total_usd, gpu_hours) of the latest succeeded runs of the same step, same name and tags,
    started before ``before``: the history a spike is judged against."""
    f = step_figures
    conds = [f.c.name == name, f.c.status == STATUS_SUCCEEDED, f.c.started_at < before, f.c.step_id != exclude_step_id]
    for key in SCOPE_COLUMNS:
        conds.append(f.c[key] == tags[key] if tags.get(key) is not None else f.c[key].is_(None))
    q = select(f.c.total_usd, f.c.gpu_hours).where(*conds).order_by(f.c.started_at.desc()).limit(HISTORY_LIMIT)
    with store.connect() as conn:
        return [(float(r.total_usd or 0.0), float(r.gpu_hours or 0.0)) for r in conn.execute(q)]


# alerts ----------------------------------------------------------------------------------------
def claim_alert(store: Store, key: str, kind: str, body: Mapping[str, Any]) -> bool:
    """Record the alert ``key``; False when some machine already did (it is theirs to send)."""
    ins = store._insert(alerts).values(key=key, kind=kind, created_at=now_iso(), body=json.dumps(body), attempts=0)
    with store.begin() as conn:
        return bool(conn.execute(ins.on_conflict_do_nothing(index_elements=["key"])).rowcount)


def record_alert_delivery(store: Store, key: str, *, delivered: bool, error: str | None) -> None:
    values: dict[str, Any] = {"attempts": alerts.c.attempts + 1, "last_error": error}
    if delivered:
        values["delivered_at"] = now_iso()
    with store.begin() as conn:
        conn.execute(update(alerts).where(alerts.c.key == key).values(**values))


def undelivered_alerts(store: Store) -> list[tuple[str, str, dict[str, Any]]]:
    """(key, kind, body) of every alert no webhook has acknowledged yet, oldest first."""
    q = select(alerts.c.key, alerts.c.kind, alerts.c.body).where(alerts.c.delivered_at.is_(None))
    with store.connect() as conn:
        return [(r.key, r.kind, json.loads(r.body)) for r in conn.execute(q.order_by(alerts.c.created_at))]


def _iso(when: datetime) -> str:
    return when.astimezone(timezone.utc).isoformat(timespec="microseconds")


def _when(iso: str) -> datetime:
    when = datetime.fromisoformat(iso)
    return when if when.tzinfo else when.replace(tzinfo=timezone.utc)
