import pytest

from mlcost import Policy
from mlcost.errors import ConfigError

FULL = """
[budgets]
job_usd = 50
run_usd = 200
max_duration = "2h"
[cluster]
max_gpus = 8
max_nodes = 2
allowed_gpu_types = ["H100", "A100-80GB", "L4"]
[idle]
max_fraction = 0.5
timeout = "15m"
threshold_pct = 5
[[models]]
name = "ranker"
max_cost_per_run_usd = 30
[regression]
max_increase_pct = 20
baseline = "tags.`mlcost.branch` = 'main'"
[warn.budgets]
job_usd = 30
"""


def test_the_documented_policy_file_parses(tmp_path):
    path = tmp_path / "mlcost.toml"
    path.write_text(FULL)
    policy = Policy.load(path)
    assert policy.budgets.job_usd == 50 and policy.budgets.max_duration == 7200
    assert policy.idle.timeout == 900 and policy.cluster.allowed_gpu_types == ["H100", "A100-80GB", "L4"]
    assert policy.model_ceiling("ranker").max_cost_per_run_usd == 30
    assert policy.warn.budgets.job_usd == 30 and policy.warn.budgets.run_usd is None
    assert policy.origin("budgets.job_usd") == f"budgets.job_usd in {path}"


def test_discovery_order_mlcost_toml_then_pyproject(tmp_path, monkeypatch):
    monkeypatch.delenv("MLCOST_POLICY")
    monkeypatch.chdir(tmp_path)
    assert Policy.load().source == "built-in defaults"
    (tmp_path / "pyproject.toml").write_text("[project]\nname='x'\n[tool.mlcost.budgets]\njob_usd = 7\n")
    assert Policy.load().budgets.job_usd == 7
    (tmp_path / "mlcost.toml").write_text("[budgets]\njob_usd = 9\n")
    assert Policy.load().budgets.job_usd == 9


def test_environment_overrides_one_key_and_is_named_as_the_origin(tmp_path, monkeypatch):
    path = tmp_path / "mlcost.toml"
    path.write_text(FULL)
    monkeypatch.setenv("MLCOST_BUDGETS__JOB_USD", "12.5")
    policy = Policy.load(path)
    assert policy.budgets.job_usd == 12.5 and policy.budgets.run_usd == 200
    assert policy.origin("budgets.job_usd") == "environment variable MLCOST_BUDGETS__JOB_USD"


@pytest.mark.parametrize(
    ("text", "field"),
    [
        ("[budgets]\njob_usd = -5\n", "budgets.job_usd"),
        ("[cluster]\nmax_gpu = 3\n", "cluster.max_gpu: unknown key"),
        ("[idle]\nthreshold_pct = 500\n", "idle.threshold_pct"),
        ('[idle]\ntimeout = "soon"\n', "idle.timeout"),
        ("[[models]]\nmax_cost_per_run_usd = 3\n", "models.0.name"),
        ("[budgets\n", "not valid TOML"),
    ],
)
def test_malformed_policy_names_file_and_field(tmp_path, text, field):
    path = tmp_path / "mlcost.toml"
    path.write_text(text)
    with pytest.raises(ConfigError) as err:
        Policy.load(path)
    assert str(path) in str(err.value) and field in str(err.value)


def test_bad_duration_says_which_units_are_allowed(tmp_path):
    path = tmp_path / "mlcost.toml"
    path.write_text('[budgets]\nmax_duration = "2 hours"\n')
    with pytest.raises(ConfigError, match="ms, s, m, h or d"):
        Policy.load(path)
