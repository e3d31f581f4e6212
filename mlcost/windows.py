"""Budget windows: how much of a team's (project's, model's, workload's) calendar-period cap is spent.

Periods are calendar periods in UTC (a day from midnight, a week from Monday, a month from the
1st), because that is how a bill and a finance team count; a rolling 30 days would never match the
invoice. The figures are pure functions of the spend the ledger reports, so ``mlcost budgets``,
preflight and the Cost view agree to the cent.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any

from mlcost.policy import BudgetWindow, Policy

STATE_OK, STATE_WARNED, STATE_SPENT = "ok", "warned", "spent"


def period_bounds(period: str, now: datetime) -> tuple[datetime, datetime]:
    """[start, end) of the calendar period (UTC) that contains ``now``."""
    now = now.astimezone(timezone.utc)
    day = now.replace(hour=0, minute=0, second=0, microsecond=0)
    if period == "day":
        return day, day + timedelta(days=1)
    if period == "week":
        start = day - timedelta(days=day.weekday())
        return start, start + timedelta(days=7)
    if period == "month":
        start = day.replace(day=1)
        end = start.replace(year=start.year + 1, month=1) if start.month == 12 else start.replace(month=start.month + 1)
        return start, end
    raise ValueError(f"unknown period {period!r}")  # the policy model allows only the three above


def period_key(period: str, now: datetime) -> str:
    """A stable name of the period, used to alert once per (window, threshold, period)."""
    start, _ = period_bounds(period, now)
    return start.strftime("%Y-%m-%d")


@dataclass(frozen=True, slots=True)
class WindowStatus:
    """One window at one instant: what was spent, against which limit, and where it is heading."""

    window: BudgetWindow
    start: datetime
    end: datetime
    spent_usd: float
    now: datetime

    @property
    def name(self) -> str:
        return self.window.label

    @property
    def limit_usd(self) -> float:
        return self.window.usd

    @property
    def share(self) -> float:
        """Spent over the limit (1.0 = spent); a $0 window is spent from the first cent."""
        if self.limit_usd <= 0:
            return float("inf") if self.spent_usd > 0 else 1.0
        return self.spent_usd / self.limit_usd

    @property
    def forecast_usd(self) -> float:
        """Spend by the period's end at the rate so far (linear). Early in a period this is noisy,
        which is why it is shown beside the spend, never used to refuse a step."""
        elapsed = (self.now - self.start).total_seconds()
        length = (self.end - self.start).total_seconds()
        if elapsed <= 0:
            return self.spent_usd
        return self.spent_usd * length / elapsed

    @property
    def crossed_pct(self) -> list[float]:
        """The warning thresholds already crossed, lowest first."""
        return [p for p in self.window.warn_at_pct if self.spent_usd >= self.limit_usd * p / 100.0]

    @property
    def state(self) -> str:
        if self.spent_usd >= self.limit_usd:
            return STATE_SPENT
        return STATE_WARNED if self.crossed_pct else STATE_OK

    def to_json(self) -> dict[str, object]:
        return {
            "name": self.name,
            "scope": self.window.scope,
            "period": self.window.period,
            "period_start": self.start.isoformat(),
            "period_end": self.end.isoformat(),
            "spent_usd": round(self.spent_usd, 6),
            "limit_usd": self.limit_usd,
            "share_pct": round(self.share * 100.0, 2) if self.share != float("inf") else None,
            "forecast_usd": round(self.forecast_usd, 6),
            "state": self.state,
            "warn_at_pct": self.window.warn_at_pct,
            "stop_running": self.window.stop_running,
        }


def window_status(store: Any, window: BudgetWindow, now: datetime) -> WindowStatus:
    """``window`` at ``now``, its spend read from ``store`` (the ledger every machine shares)."""
    from mlcost.ledger.runtime import scope_spend

    start, end = period_bounds(window.period, now)
    return WindowStatus(window, start, end, scope_spend(store, window.scope, start, end), now)


def windows_for(policy: Policy, tags: Mapping[str, str]) -> list[BudgetWindow]:
    """The enforced windows (top level, not ``[warn]``) whose scope covers a step with ``tags``."""
    return [w for w in policy.budgets.windows if w.applies_to(tags)]


def preflight_windows(
    step: str,
    policy: Policy,
    tags: Mapping[str, str],
    *,
    projected_usd: float | None,
    read: Callable[[Callable[[Any], Any]], Any],
    now: datetime | None = None,
) -> list[WindowStatus]:
    """Refuse a step whose window is spent, or that would overspend it when its cost can be
    projected (GPUs × max duration × price). Returns the windows' state for the step's alerts.
    Another scope's windows never refuse this step."""
    from mlcost.live_checks import window_breach

    now = now or datetime.now(timezone.utc)
    statuses = []
    for window in windows_for(policy, tags):
        status = read(lambda store, w=window: window_status(store, w, now))
        statuses.append(status)
        if status.spent_usd >= window.usd:
            raise window_breach(step, status, policy, stopped=False)
        if projected_usd is not None and status.spent_usd + projected_usd > window.usd:
            raise window_breach(step, status, policy, stopped=False, projected_usd=projected_usd)
    return statuses


def check_windows(
    step: str, policy: Policy, tags: Mapping[str, str], *, projected_usd: float | None, ledger: Any
) -> list[WindowStatus]:
    """:func:`preflight_windows` on ``ledger`` (the one every machine shares). A ledger that cannot
    be read lets the step run: an outage of the guardrail's data must not stop the fleet."""
    import logging

    from mlcost.errors import PreflightRefused

    if not windows_for(policy, tags):
        return []
    try:
        return preflight_windows(step, policy, tags, projected_usd=projected_usd, read=ledger.on_shared)
    except PreflightRefused:
        raise
    except Exception as e:
        logging.getLogger(__name__).warning(
            "mlcost: step %r: budget windows not checked, the ledger cannot be read: %s", step, e
        )
        return []
