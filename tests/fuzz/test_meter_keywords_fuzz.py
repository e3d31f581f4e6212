"""Property: the meter's keywords (one definition, ``MeterOptions``) and the durations they take
are accepted as valid values or refused with a ConfigError naming the keyword, wherever they are
passed: ``meter()``, ``MeteredOperator``/``@task.metered`` and ``metered_component`` share the
parser tested here."""

from __future__ import annotations

import math

import pytest
from fuzz_contract import holds
from fuzz_inputs import huge_int, nested, values
from hypothesis import given
from hypothesis import strategies as st

from mlcost.durations import parse_duration
from mlcost.errors import ConfigError
from mlcost.meter_options import MAX_GPUS, MeterOptions
from mlcost.metering import Meter
from mlcost.policy import Policy

KEYWORDS = [*MeterOptions.model_fields, "budget", "gpu"]  # two typos a user makes
keywords = st.dictionaries(st.sampled_from(KEYWORDS), values, max_size=4)


def _valid(options: MeterOptions) -> None:
    for name in ("budget_usd", "max_duration", "idle_timeout", "interval"):
        value = getattr(options, name)
        assert value is None or (math.isfinite(value) and value >= 0), (name, value)
    assert options.gpus is None or 0 <= options.gpus <= MAX_GPUS
    assert options.nodes is None or options.nodes >= 1
    assert all(isinstance(k, str) and isinstance(v, str) for k, v in options.tags.items())


@given(keywords)
def test_any_meter_keywords_are_valid_or_refused_naming_the_keyword(data):
    try:
        options = MeterOptions.parse(data)
    except ConfigError as e:
        assert e.field is not None and e.field.split(".")[0] in data, (e.field, e)
    else:
        _valid(options)
        assert options.keywords().keys() <= set(MeterOptions.model_fields)


@given(keywords, st.booleans())
def test_text_from_a_rendered_template_is_read_or_refused_naming_the_keyword(data, as_text):
    data = {k: str(v) if as_text and isinstance(v, (int, float)) and not isinstance(v, bool) else v
            for k, v in data.items() if not (isinstance(v, int) and v.bit_length() > 10_000)}
    try:
        options = MeterOptions.parse(data, text=True)
    except ConfigError as e:
        assert e.field is not None and e.field.split(".")[0] in data
    else:
        _valid(options)


@given(st.dictionaries(st.sampled_from(["gpus", "gpu_type", "budget_usd", "max_duration", "tags", "nodes"]),
                       values, max_size=3))
def test_a_meter_is_built_or_refused_before_anything_starts(data):
    meter = holds(lambda: Meter("step", **data, policy=Policy()))
    if meter is not None:
        _valid(meter.options)


@given(st.one_of(values, st.text(alphabet="0123456789.msdh ", max_size=20)))
def test_any_duration_is_seconds_or_refused_naming_the_field(value):
    seconds = holds(lambda: parse_duration(value, field="idle.timeout"), names="idle.timeout")
    if seconds is not None:
        assert math.isfinite(seconds) and seconds >= 0


@given(st.lists(st.tuples(st.integers(0, 10**6), st.sampled_from(["ms", "s", "m", "h", "d"])), min_size=1, max_size=4))
def test_a_written_duration_is_the_sum_of_its_parts(parts):
    text = "".join(f"{n}{unit}" for n, unit in parts)
    scale = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400}
    assert parse_duration(text) == pytest.approx(sum(n * scale[u] for n, u in parts))


@pytest.mark.parametrize(
    ("keyword", "value"),
    [
        ("budget_usd", float("nan")),
        ("budget_usd", float("inf")),
        ("max_duration", float("nan")),
        ("idle_timeout", float("nan")),
        ("max_duration", float("inf")),
        ("budget_usd", "10"),
        ("max_duration", [1, 2]),
        ("idle_timeout", {"m": 15}),
        ("tags", ["team", "search"]),
        ("tags", {"team": ["search"]}),
        ("gpu_type", 100),
        ("budget_usd", 10**400),
        pytest.param("budget_usd", huge_int(), id="budget_usd-5000-digits"),
        ("nodes", 0),
        ("nodes", 2.5),
        ("nodes", "2"),
        ("gpus", True),
        ("interval", float("nan")),
        pytest.param("max_duration", nested(1200), id="max_duration-nested-1200-deep"),
    ],
)
def test_the_reproducers_of_issue_16_are_config_errors_naming_the_keyword(keyword, value):
    with pytest.raises(ConfigError) as err:
        Meter("train", **{keyword: value}, policy=Policy())
    assert err.value.field.split(".")[0] == keyword and keyword in str(err.value)


@pytest.mark.parametrize(("keyword", "value"), [("budget_usd", float("nan")), ("max_duration", [1]), ("nodes", 0)])
def test_every_adapter_refuses_a_bad_keyword_where_the_step_is_defined(keyword, value):
    pytest.importorskip("airflow.sdk")
    pytest.importorskip("kfp")
    from mlcost.components import metered_component
    from mlcost.operators import MeteredOperator

    with pytest.raises(ConfigError, match=keyword):
        MeteredOperator(task_id="train", python_callable=lambda: None, **{keyword: value})
    with pytest.raises(ConfigError, match=keyword):
        metered_component(base_image="python:3.11", **{keyword: value})
    with pytest.raises(ConfigError, match=keyword):
        Meter("train", **{keyword: value}, policy=Policy())


def test_a_templated_keyword_is_checked_once_rendered():
    pytest.importorskip("airflow.sdk")
    from mlcost.operators import MeteredOperator

    op = MeteredOperator(task_id="train", python_callable=lambda: None, budget_usd="{{ params.budget }}")
    assert op.budget_usd == "{{ params.budget }}"  # left for Airflow to render
    assert MeterOptions.parse({"budget_usd": "40"}, text=True).budget_usd == 40.0  # what execute() reads
    with pytest.raises(ConfigError, match="budget_usd"):
        MeterOptions.parse({"budget_usd": "nan"}, text=True)
