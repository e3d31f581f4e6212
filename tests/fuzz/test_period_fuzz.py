"""Property: every ``--since/--until`` (report, export, ``gate --ledger``, the Cost view) goes
through one parser, which returns an aware UTC datetime or refuses with a ConfigError naming the
flag; never a raw ``OverflowError`` (``--since 3000000d``) and never a pass on garbage."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

from fuzz_contract import holds
from hypothesis import given
from hypothesis import strategies as st

from mlcost.period import Period, parse_when

NOW = datetime(2026, 6, 1, tzinfo=timezone.utc)
WHENS = st.one_of(
    st.text(max_size=30),
    st.text(alphabet="0123456789-:T+Z. dhms", max_size=30),
    st.datetimes().map(datetime.isoformat),
    st.datetimes(timezones=st.just(timezone(timedelta(hours=-1)))).map(datetime.isoformat),
    st.integers(0, 10**12).map(lambda n: f"{n}d"),
    st.sampled_from(["garbage", "3000000d", "0001-01-01T00:00-01:00", "9999-12-31T23:59+00:00", "7d", "1h30m",
                     "2026-02-30", "", " ", "nan", "1e9d", "-1d"]),
)


@given(WHENS)
def test_any_since_is_an_aware_utc_time_or_refused_naming_the_flag(value):
    when = holds(lambda: parse_when(value, field="--since", now=NOW), names="--since")
    if when is not None:
        assert when.tzinfo is not None and when.utcoffset() == timedelta(0)


@given(WHENS, WHENS)
def test_any_period_is_half_open_and_non_empty_or_refused(since, until):
    period = holds(lambda: Period.parse(since, until, now=NOW))
    if period is not None and period.since is not None and period.until is not None:
        assert period.since < period.until


def test_garbage_in_the_gate_exits_2_not_0(tmp_path, capsys):
    from mlcost.cli import main
    from mlcost.ledger import Ledger
    from mlcost.step import StepCost

    ledger = str(tmp_path / "ledger.db")
    Ledger(ledger).write(StepCost(step_id="s1", name="train", status="succeeded",
                                  started_at="2026-01-01T00:00:00+00:00", total_usd=1.0))  # fmt: skip
    for argv in (["gate"], ["report"]):
        for flag, value in (("--since", "garbage"), ("--since", "3000000d"), ("--until", "2026-13-01")):
            code = main([*argv, "--ledger", ledger, flag, value])
            err = capsys.readouterr().err
            assert code == 2 and flag in err and "Traceback" not in err, (argv, flag, value, err)
