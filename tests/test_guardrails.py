import pytest

from mlcost import BudgetExceeded, GuardrailBreached, Policy
from mlcost.errors import ConfigError, PreflightRefused
from mlcost.guardrails import StepLimits, check_live, preflight


@pytest.fixture
def policy(tmp_path):
    path = tmp_path / "mlcost.toml"
    path.write_text('[budgets]\njob_usd = 20\nmax_duration = "1h"\n[cluster]\nmax_gpus = 4\nmax_nodes = 1\n'
                    'allowed_gpu_types = ["H100", "L4"]\n[idle]\ntimeout = "10m"\n')
    return Policy.load(path)


def test_keyword_arguments_override_the_policy_and_say_so(policy):
    limits = StepLimits.resolve("train", policy, budget_usd=5)
    assert limits.budget_usd.value == 5 and "budget_usd=5" in limits.budget_usd.origin
    assert limits.max_duration_s.value == 3600 and "budgets.max_duration" in limits.max_duration_s.origin


def test_negative_budget_is_refused():
    with pytest.raises(ConfigError, match="non-negative"):
        StepLimits.resolve("train", Policy(), budget_usd=-1)


def test_preflight_refuses_too_many_gpus_nodes_and_disallowed_types(policy):
    limits = StepLimits.resolve("train", policy)
    with pytest.raises(PreflightRefused, match="requests 8 GPUs, the limit is 4") as err:
        preflight("train", gpus=8, gpu_type="H100", gpu_hour_usd=1.0, limits=limits, policy=policy)
    assert err.value.limit == 4 and "cluster.max_gpus" in err.value.policy
    with pytest.raises(PreflightRefused, match="2 nodes"):
        preflight("train", gpus=1, gpu_type="H100", gpu_hour_usd=1.0, limits=limits, policy=policy, nodes=2)
    with pytest.raises(PreflightRefused, match="A100-80GB is not allowed"):
        preflight("train", gpus=1, gpu_type="A100-80GB", gpu_hour_usd=1.0, limits=limits, policy=policy)
    # a MIG slice of an allowed type is allowed
    preflight("train", gpus=1, gpu_type="H100:1g.10gb", gpu_hour_usd=1.0, limits=limits, policy=policy)


def test_preflight_projects_request_times_max_duration_times_price(policy):
    limits = StepLimits.resolve("train", policy)
    # 4 GPUs x 1 h x $6 = $24 > $20: refused, and it is a BudgetExceeded too
    with pytest.raises(BudgetExceeded, match=r"projects \$24.00, over the budget of \$20.00") as err:
        preflight("train", gpus=4, gpu_type="H100", gpu_hour_usd=6.0, limits=limits, policy=policy)
    assert isinstance(err.value, PreflightRefused) and err.value.spent_usd == pytest.approx(24)
    preflight("train", gpus=3, gpu_type="H100", gpu_hour_usd=6.0, limits=limits, policy=policy)  # $18: fine


def test_live_checks_name_the_limit_and_the_spend(policy):
    limits = StepLimits.resolve("train", policy)
    assert check_live("train", limits, elapsed_s=10, spent_usd=1, idle_for_s=0) is None
    breach = check_live("train", limits, elapsed_s=10, spent_usd=20.5, idle_for_s=0)
    assert isinstance(breach, BudgetExceeded) and breach.limit == 20 and breach.spent_usd == 20.5
    assert "budgets.job_usd" in breach.policy
    breach = check_live("train", limits, elapsed_s=3601, spent_usd=1, idle_for_s=0)
    assert isinstance(breach, GuardrailBreached) and breach.limit_name == "max_duration_s"
    breach = check_live("train", limits, elapsed_s=700, spent_usd=1, idle_for_s=601)
    assert breach.limit_name == "idle_timeout_s" and "10m" in str(breach)
    assert check_live("train", limits, elapsed_s=700, spent_usd=1, idle_for_s=None) is None


def test_breach_survives_pickling_for_xcom_and_subprocesses():
    import pickle

    breach = BudgetExceeded("over", limit_name="budget_usd", limit=1.0, observed=2.0, policy="p", step="s")
    again = pickle.loads(pickle.dumps(breach))
    assert type(again) is BudgetExceeded and again.limit == 1.0 and again.policy == "p" and str(again) == "over"
