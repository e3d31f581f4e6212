"""Property: any policy file is read into a Policy or refused with a ConfigError naming the file."""

from __future__ import annotations

import math

from fuzz_contract import holds
from fuzz_inputs import mutated, tables, to_toml, write, yaml_value
from hypothesis import given
from hypothesis import strategies as st

from mlcost.policy import Policy

SHAPE = {
    "budgets": ["job_usd", "run_usd", "max_duration"],
    "cluster": ["max_gpus", "max_nodes", "allowed_gpu_types"],
    "idle": ["max_fraction", "timeout", "threshold_pct"],
    "regression": ["max_increase_pct", "baseline"],
    "models": ["name"],
    "warn": ["budgets", "idle"],
}
VALID = """[budgets]
job_usd = 50
run_usd = 200
max_duration = "2h"
[cluster]
max_gpus = 8
allowed_gpu_types = ["H100", "L4"]
[idle]
max_fraction = 0.5
timeout = "15m"
[[models]]
name = "ranker"
max_cost_per_run_usd = 30
[warn.budgets]
job_usd = 30
"""


def _valid(policy: Policy) -> None:
    """What a loaded policy promises its readers: finite, non-negative limits."""
    for table in (policy.budgets, policy.idle, policy.warn.budgets):
        for value in table.model_dump().values():
            if isinstance(value, float):
                assert math.isfinite(value) and value >= 0


def _load(path: str) -> None:
    policy = holds(lambda: Policy.load(path, env={}), names=path)
    if policy is not None:
        _valid(policy)


@given(tables(SHAPE))
def test_any_policy_shaped_toml_is_read_or_refused_naming_the_file(tmp_path_factory, data):
    _load(write(tmp_path_factory.mktemp("p") / "mlcost.toml", to_toml(data)))


@given(tables(SHAPE))
def test_any_policy_shaped_yaml_is_read_or_refused_naming_the_file(tmp_path_factory, data):
    _load(write(tmp_path_factory.mktemp("p") / "mlcost.yaml", yaml_value(data)))


@given(mutated(VALID))
def test_a_damaged_policy_file_is_read_or_refused_naming_the_file(tmp_path_factory, text):
    _load(write(tmp_path_factory.mktemp("p") / "mlcost.toml", text))


@given(st.binary(max_size=200), st.sampled_from(["mlcost.toml", "mlcost.yaml"]))
def test_any_bytes_are_read_or_refused_naming_the_file(tmp_path_factory, content, name):
    _load(write(tmp_path_factory.mktemp("p") / name, VALID.encode()[:40] + content))


def test_the_reproducers_of_issue_16_are_refused_naming_the_file(tmp_path):
    cases = {
        "latin1.toml": "[budgets]\njob_usd = 5 # café\n".encode("latin-1"),
        "list.toml": "[budgets]\nmax_duration = [1, 2]\n",
        "table.toml": "[idle]\ntimeout = {a = 1}\n",
        "datetime.toml": "[budgets]\nmax_duration = 1979-05-27T07:32:00Z\n",
        "deep.toml": "a = " + "[" * 1000 + "]" * 1000 + "\n",
        "deep.yaml": "a: " + "[" * 1000 + "]" * 1000 + "\n",
        "digits.toml": "[budgets]\njob_usd = " + "9" * 5000 + "\n",
        "digits.yaml": "budgets:\n  job_usd: " + "9" * 5000 + "\n",
        "nan.toml": "[budgets]\njob_usd = nan\n",
        "bomb.yaml": "a: &a [1,1,1,1,1,1,1,1,1]\nb: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a]\n"
        + "".join(f"c{i}: &c{i} [{', '.join(['*b' if i == 0 else f'*c{i - 1}'] * 9)}]\n" for i in range(7))
        + "budgets:\n  job_usd: *c6\n",
    }
    for name, content in cases.items():
        path = write(tmp_path / name, content)
        assert holds(lambda path=path: Policy.load(path, env={}), names=path) is None, name
