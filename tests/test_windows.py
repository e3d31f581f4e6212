"""Calendar periods in UTC, shares, forecasts and states of a budget window."""

from __future__ import annotations

from datetime import datetime, timezone

import pytest

from mlcost.policy import BudgetWindow
from mlcost.windows import STATE_OK, STATE_SPENT, STATE_WARNED, WindowStatus, period_bounds, period_key

UTC = timezone.utc


@pytest.mark.parametrize(
    ("period", "start", "end"),
    [
        ("day", datetime(2026, 11, 30, tzinfo=UTC), datetime(2026, 12, 1, tzinfo=UTC)),
        ("week", datetime(2026, 11, 30, tzinfo=UTC), datetime(2026, 12, 7, tzinfo=UTC)),  # a Monday
        ("month", datetime(2026, 11, 1, tzinfo=UTC), datetime(2026, 12, 1, tzinfo=UTC)),
    ],
)
def test_period_bounds(period, start, end):
    assert period_bounds(period, datetime(2026, 11, 30, 17, 5, tzinfo=UTC)) == (start, end)


def test_december_rolls_into_the_next_year():
    assert period_bounds("month", datetime(2026, 12, 31, 23, tzinfo=UTC))[1] == datetime(2027, 1, 1, tzinfo=UTC)
    assert period_key("month", datetime(2026, 12, 31, 23, tzinfo=UTC)) == "2026-12-01"


def _status(spent: float, now: datetime) -> WindowStatus:
    window = BudgetWindow(team="search", period="month", usd=100, warn_at_pct=[80, 50])
    start, end = period_bounds("month", now)
    return WindowStatus(window, start, end, spent, now)


def test_states_and_crossed_thresholds():
    now = datetime(2026, 11, 16, tzinfo=UTC)
    assert _status(10, now).state == STATE_OK
    warned = _status(85, now)
    assert warned.state == STATE_WARNED and warned.crossed_pct == [50, 80]
    assert _status(100, now).state == STATE_SPENT


def test_forecast_extrapolates_the_rate_so_far():
    # half of November gone (15 of 30 days), $40 spent -> $80 by the end
    assert _status(40, datetime(2026, 11, 16, tzinfo=UTC)).forecast_usd == pytest.approx(80)


def test_default_name_from_scope_and_period():
    assert BudgetWindow(team="search", period="month", usd=1).label == "search-monthly"
    assert BudgetWindow(period="day", usd=1).label == "all-daily"
    assert BudgetWindow(name="x", period="week", usd=1).applies_to({"team": "anyone"})
    assert not BudgetWindow(team="search", period="week", usd=1).applies_to({"team": "ads"})
