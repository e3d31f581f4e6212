"""The one parser of every --since/--until (issue 16 item 3): a clear ConfigError naming the flag,
never a silent pass, never an OverflowError."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from mlcost.errors import ConfigError
from mlcost.period import Period, parse_when

NOW = datetime(2026, 6, 1, 12, 0, tzinfo=timezone.utc)


def test_iso_dates_and_spans():
    assert parse_when("2025-06-01", field="--since") == datetime(2025, 6, 1, tzinfo=timezone.utc)
    assert parse_when("2025-06-01T12:00:00+02:00", field="--since") == datetime(2025, 6, 1, 10, tzinfo=timezone.utc)
    assert parse_when("7d", field="--since", now=NOW) == NOW - timedelta(days=7)
    assert parse_when("1h30m", field="--since", now=NOW) == NOW - timedelta(minutes=90)
    assert parse_when(None, field="--since") is None and parse_when("  ", field="--since") is None


@pytest.mark.parametrize("value", ["garbage", "last tuesday", "7 days", "-3d", "2025-13-01", "1e9d", "nan"])
def test_garbage_is_a_config_error_naming_the_flag(value):
    with pytest.raises(ConfigError, match=r"--since: expected an ISO date/time .* or a span"):
        parse_when(value, field="--since")


@pytest.mark.parametrize("value", ["3000000d", "99999999999999999999d", "1000000000h"])
def test_a_span_before_year_one_is_a_config_error_not_an_overflow(value):
    with pytest.raises(ConfigError, match=r"--until: the span .* reaches before year 1"):
        parse_when(value, field="--until")


def test_a_period_that_ends_before_it_starts_is_refused():
    with pytest.raises(ConfigError, match=r"--until.*not after --since"):
        Period.parse("2025-06-02", "2025-06-01")
    assert Period("2025-06-01").since == datetime(2025, 6, 1, tzinfo=timezone.utc)
    week_ago = (NOW - timedelta(days=7)).isoformat()
    assert Period.parse(None, "7d", now=NOW).label() == f"from the first step to {week_ago}"


@pytest.mark.parametrize(
    "text",
    ["0001-01-01T00:00:00-01:00", "9999-12-31T23:59:59+00:00", "0001-01-01", "0d", "1.5h", "\x00", "2025-06-01 ",
     "\u0663\u0663d", "1" * 5000 + "d", "2025-06-01T10:00:00Z", "h", "1h1h"],
)  # fmt: skip
def test_edge_text_is_a_utc_time_or_a_config_error(text):
    try:
        dt = parse_when(text, field="--since", now=NOW)
    except ConfigError as e:
        assert str(e).startswith("--since: ")
    else:
        assert dt is None or dt.tzinfo == timezone.utc
