"""mlcost.components.inspect against pipelines compiled by the real kfp compiler.

Every pipeline is built with ``kfp.dsl`` in ``pipelines_for_inspect.py`` and compiled once per
module into a temporary folder; expected numbers are worked out by hand in each test.
"""

from __future__ import annotations

import importlib.util
import itertools
import json
import random
import sys
from pathlib import Path

import pytest
from mlcost.components.inspect import (
    PipelineInspection,
    TaskResources,
    canonical_gpu_type,
    check_pipeline,
    inspect_pipeline,
)
from mlcost.components.inspect_antichain import max_weight_antichain

from mlcost.errors import ConfigError

pytest.importorskip("kfp")

PRICES = {"H100": 6.88, "A100-80GB": 4.10, "A100-40GB": 3.20, "L4": 0.80, "T4": 0.35}


def _load_fixture_module():
    path = Path(__file__).with_name("pipelines_for_inspect.py")
    spec = importlib.util.spec_from_file_location("pipelines_for_inspect", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # kfp reads the component source through the module
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def compiled(tmp_path_factory) -> dict[str, Path]:
    from kfp import compiler

    module = _load_fixture_module()
    out = tmp_path_factory.mktemp("compiled")
    names = [
        "type_only",
        "limit_only",
        "param_limit",
        "param_no_default",
        "fan_out",
        "nested",
        "untyped_for_k8s",
        "diamond",
        "loop_over_output",
        "metered_generic_gpu",
        "metered_max_duration",
    ]
    paths = {}
    for name in names:
        paths[name] = out / f"{name}.yaml"
        compiler.Compiler().compile(getattr(module, name), str(paths[name]))
    return paths


def by_path(report: PipelineInspection) -> dict[str, TaskResources]:
    return {t.path: t for t in report.tasks}


# --- what each task asks for ------------------------------------------------------------------


def test_only_a_type_means_one_gpu_of_that_type(compiled):
    report = inspect_pipeline(compiled["type_only"])
    (task,) = report.tasks
    assert (task.path, task.accelerator, task.gpu_type, task.gpus_per_instance) == (
        "train",
        "NVIDIA_TESLA_T4",
        "T4",
        1,
    )
    assert report.peak_concurrent_gpus == report.total_gpus == 1


def test_only_a_limit_has_no_type_so_the_default_type_applies(compiled):
    untyped = inspect_pipeline(compiled["limit_only"])
    assert untyped.tasks[0].gpus_per_instance == 2
    assert untyped.tasks[0].accelerator is None and untyped.tasks[0].gpu_type is None

    typed = inspect_pipeline(compiled["limit_only"], default_gpu_type="A100-80GB")
    task = typed.tasks[0]
    assert task.gpu_type == "A100-80GB"
    assert (task.cpu_request, task.cpu_limit) == (0.5, 8.0)
    assert task.memory_limit_gb == pytest.approx(32.0)
    assert task.memory_request_gb == pytest.approx(16 * 2**30 / 1e9)


def test_a_metered_component_on_a_generic_gpu_is_typed_by_its_meter(compiled):
    (task,) = inspect_pipeline(compiled["metered_generic_gpu"]).tasks
    assert (task.accelerator, task.gpus_per_instance, task.gpu_type) == ("nvidia.com/gpu", 2, "H100")
    priced = inspect_pipeline(
        compiled["metered_generic_gpu"], price_per_gpu_hour=PRICES.__getitem__, default_max_duration_s=3600
    )
    assert priced.projected_cost_usd == pytest.approx(2 * PRICES["H100"])
    violations = check_pipeline(priced, allowed_gpu_types=["L4"])
    assert [(v.rule, v.observed) for v in violations] == [("allowed_gpu_types", "H100")]


def test_a_step_is_never_projected_past_the_max_duration_its_meter_stops_it_at(compiled):
    def history(seconds):
        return lambda name, tags: seconds if name in ("metered_short", "metered_train") else None

    def one(name, **kw):
        (task,) = inspect_pipeline(compiled[name], default_max_duration_s=3600, **kw).tasks
        return task.duration_s, task.duration_source

    # the component's own max_duration="30m" is its limit, with or without history
    assert one("metered_max_duration") == (1800, "meter_max_duration")
    assert one("metered_max_duration", history=history(600)) == (600, "history")
    assert one("metered_max_duration", history=history(7200)) == (1800, "history_capped")
    # without one, the default (the policy's budgets.max_duration) is the limit the meter applies
    assert one("metered_generic_gpu", history=history(7200)) == (3600, "history_capped")
    assert one("metered_generic_gpu", history=history(600)) == (600, "history")


def test_untyped_gpus_cannot_be_priced_without_a_default_type(compiled):
    with pytest.raises(ConfigError, match=r"train.*default_gpu_type") as err:
        inspect_pipeline(compiled["limit_only"], price_per_gpu_hour=PRICES.__getitem__, default_max_duration_s=60)
    assert str(compiled["limit_only"]) in str(err.value)


def test_a_limit_from_a_pipeline_parameter_uses_its_default_or_the_argument(compiled):
    # kfp 2.17 compiles set_accelerator_limit(gpus) to
    # resourceCount: "{{$.inputs.parameters['pipelinechannel--gpus']}}", bound on the task to the
    # pipeline input `gpus` (default 4.0 in root.inputDefinitions).
    text = compiled["param_limit"].read_text()
    assert "resourceCount: '{{$.inputs.parameters[''pipelinechannel--gpus'']}}'" in text

    default = by_path(inspect_pipeline(compiled["param_limit"], default_gpu_type="H100"))
    assert default["train"].gpus_per_instance == 4
    assert default["train"].gpu_type == "H100"  # "nvidia.com/gpu" names no model
    assert default["prepare"].gpus_per_instance == 0

    overridden = inspect_pipeline(compiled["param_limit"], arguments={"gpus": 6})
    assert by_path(overridden)["train"].gpus_per_instance == 6
    assert overridden.peak_concurrent_gpus == 6


def test_a_parameter_with_no_default_and_no_argument_is_named(compiled):
    with pytest.raises(ConfigError) as err:
        inspect_pipeline(compiled["param_no_default"])
    message = str(err.value)
    assert str(compiled["param_no_default"]) in message
    assert "'gpus' has no default and no argument" in message
    assert (
        by_path(inspect_pipeline(compiled["param_no_default"], arguments={"gpus": 3}))["train"].gpus_per_instance == 3
    )


def test_an_unknown_argument_is_refused_rather_than_ignored(compiled):
    with pytest.raises(ConfigError, match=r"unknown pipeline argument\(s\) gpu;.*gpus"):
        inspect_pipeline(compiled["param_limit"], arguments={"gpu": 6})


# --- fan-out and nesting ------------------------------------------------------------------------


def test_parallel_for_with_and_without_parallelism(compiled):
    report = inspect_pipeline(compiled["fan_out"])
    tasks = by_path(report)
    h100 = tasks["for-loop-2/train"]  # 5 raw items, parallelism=2, 2 GPUs each
    assert (h100.gpu_type, h100.gpus_per_instance, h100.instances, h100.max_concurrent) == ("H100", 2, 5, 2)
    l4 = tasks["for-loop-3/train-2"]  # 3 items from the `shards` default, no cap
    assert (l4.gpu_type, l4.instances, l4.max_concurrent) == ("L4", 3, 3)
    assert report.total_gpus == 2 * 5 + 1 * 3
    assert report.peak_concurrent_gpus == 2 * 2 + 1 * 3  # the two loops are not ordered

    wider = by_path(inspect_pipeline(compiled["fan_out"], arguments={"shards": list(range(10))}))
    assert (wider["for-loop-3/train-2"].instances, wider["for-loop-3/train-2"].max_concurrent) == (10, 10)


def test_nested_sub_pipelines_keep_their_own_arguments_and_order(compiled):
    # stage(n=4) -> stage(n=1), and stage() (default n=2) beside them; each stage loops 3 times
    # with parallelism=1.
    report = inspect_pipeline(compiled["nested"])
    tasks = by_path(report)
    assert {p: (t.gpus_per_instance, t.instances, t.max_concurrent) for p, t in tasks.items()} == {
        "stage/for-loop-2/train": (4, 3, 1),
        "stage-2/for-loop-2/train": (1, 3, 1),
        "stage-3/for-loop-2/train": (2, 3, 1),
    }
    assert {t.gpu_type for t in report.tasks} == {"A100-80GB"}
    assert report.total_gpus == 3 * (4 + 1 + 2)
    # stage and stage-2 never overlap; the worst moment is stage beside stage-3.
    assert report.peak_concurrent_gpus == 4 + 2

    smaller = inspect_pipeline(compiled["nested"], arguments={"n": 1})
    assert smaller.peak_concurrent_gpus == 1 + 2  # now stage-3 (2) beside either stage (1)


def test_a_loop_over_an_upstream_output_needs_its_size_from_the_caller(compiled):
    with pytest.raises(ConfigError, match=r"for-loop-1.*output 'Output' of task 'list-shards'.*loop_sizes"):
        inspect_pipeline(compiled["loop_over_output"])
    report = inspect_pipeline(compiled["loop_over_output"], loop_sizes={"for-loop-1": 7})
    assert by_path(report)["for-loop-1/train"].instances == 7
    assert report.peak_concurrent_gpus == 7


def test_peak_uses_dependencies_not_the_sum_of_all_tasks(compiled):
    # a(8) -> b(gpus), c(3) -> d(1): at most a alone, or b beside c, or d alone.
    assert inspect_pipeline(compiled["diamond"]).peak_concurrent_gpus == 8
    assert inspect_pipeline(compiled["diamond"], arguments={"gpus": 6}).peak_concurrent_gpus == 9
    assert inspect_pipeline(compiled["diamond"]).total_gpus == 8 + 2 + 3 + 1


# --- kfp-kubernetes's second document --------------------------------------------------------


def test_a_kfp_kubernetes_node_selector_names_the_gpu_model(compiled, tmp_path):
    # kfp-kubernetes is not installed here (kfp's pins leave it out), so the second document is
    # written by hand the way `kubernetes.add_node_selector(task, "cloud.google.com/gke-accelerator",
    # "nvidia-tesla-a100")` emits it (see kfp-kubernetes' test/snapshot/data/node_selector.yaml).
    two_docs = tmp_path / "with_platform.yaml"
    two_docs.write_text(
        compiled["untyped_for_k8s"].read_text() + "---\n"
        "platforms:\n"
        "  kubernetes:\n"
        "    deploymentSpec:\n"
        "      executors:\n"
        "        exec-train:\n"
        "          nodeSelector:\n"
        "            labels:\n"
        "              cloud.google.com/gke-accelerator: nvidia-tesla-a100\n"
    )
    report = inspect_pipeline(two_docs, default_gpu_type="H100")
    (task,) = report.tasks
    assert (task.gpus_per_instance, task.gpu_type) == (8, "A100-40GB")
    # Without the platform document the default type is all there is.
    assert inspect_pipeline(compiled["untyped_for_k8s"], default_gpu_type="H100").tasks[0].gpu_type == "H100"


# --- cost ---------------------------------------------------------------------------------------


def test_projected_cost_matches_a_hand_computation(compiled):
    report = inspect_pipeline(
        compiled["fan_out"],
        max_duration_s={"for-loop-2/train": 7200},
        default_max_duration_s="30m",
        price_per_gpu_hour=PRICES.__getitem__,
    )
    tasks = by_path(report)
    # H100: 2 GPUs x 5 instances x 2 h x $6.88 = $137.60
    assert tasks["for-loop-2/train"].projected_cost_usd == pytest.approx(2 * 5 * 2 * 6.88)
    assert tasks["for-loop-2/train"].duration_source == "max_duration_s"
    # L4: 1 GPU x 3 instances x 0.5 h (default) x $0.80 = $1.20
    assert tasks["for-loop-3/train-2"].projected_cost_usd == pytest.approx(1.20)
    assert tasks["for-loop-3/train-2"].duration_source == "default"
    assert report.projected_cost_usd == pytest.approx(137.60 + 1.20)


def test_history_fills_in_between_explicit_durations_and_the_default(compiled):
    asked: list[str] = []

    def history(name: str, tags) -> float | None:
        asked.append(name)
        return 600.0 if name == "train-2" else None

    report = inspect_pipeline(
        compiled["fan_out"],
        max_duration_s={"train": 3600},  # by task name, not path
        default_max_duration_s=7200,
        price_per_gpu_hour=PRICES.__getitem__,
        history=history,
    )
    tasks = by_path(report)
    assert tasks["for-loop-2/train"].duration_source == "max_duration_s"
    assert tasks["for-loop-3/train-2"].duration_source == "history"
    assert asked == ["train-2"]  # an explicit duration wins without asking history
    # 2 x 5 x 1 h x 6.88 + 1 x 3 x (600/3600) h x 0.80
    assert report.projected_cost_usd == pytest.approx(68.80 + 0.40)


def test_the_price_catalog_fits_as_the_price_function(compiled, tmp_path):
    from mlcost.pricing.catalog import PriceCatalog

    catalog = PriceCatalog.load()
    report = inspect_pipeline(
        compiled["type_only"], default_max_duration_s="2h", price_per_gpu_hour=catalog.gpu_hour_usd
    )
    assert report.projected_cost_usd == pytest.approx(2 * catalog.gpu_hour_usd("T4"))

    p4 = tmp_path / "p4.yaml"  # a model the catalog does not price: its error (a ConfigError) reaches the caller
    p4.write_text(compiled["type_only"].read_text().replace("NVIDIA_TESLA_T4", "NVIDIA_TESLA_P4"))
    with pytest.raises(ConfigError, match="NVIDIA_TESLA_P4"):
        inspect_pipeline(p4, default_max_duration_s="2h", price_per_gpu_hour=catalog.gpu_hour_usd)


def test_cost_is_unknown_without_a_price(compiled):
    report = inspect_pipeline(compiled["type_only"], default_max_duration_s=3600)
    assert report.projected_cost_usd is None
    assert "projected cost unknown" in report.to_markdown()


# --- policy -------------------------------------------------------------------------------------


def _priced(path: Path, **kw) -> PipelineInspection:
    return inspect_pipeline(path, default_max_duration_s=3600, price_per_gpu_hour=PRICES.__getitem__, **kw)


def test_check_pipeline_flags_too_many_gpus_and_a_blown_budget(compiled):
    report = _priced(compiled["diamond"], arguments={"gpus": 6})  # peak 9; 18 H100-hours = $123.84
    violations = check_pipeline(report, max_gpus=8, budget_usd=100.0)
    assert [v.rule for v in violations] == ["max_gpus", "budget_usd"]
    peak, budget = violations
    assert (peak.limit, peak.observed) == (8, 9)
    assert set(peak.tasks) == {"train", "train-2", "train-3", "train-4"}
    assert "may hold 9 GPUs at once; the limit is 8" in str(peak)
    assert (budget.limit, budget.observed) == (100.0, pytest.approx(18 * 6.88))
    assert budget.tasks[0] == "train"  # the most expensive task first
    assert "$123.84" in budget.message

    per_task = check_pipeline(report, max_gpus=6)  # one step of 8 is over, and so is the peak
    assert [(v.rule, v.tasks[0], v.observed) for v in per_task] == [
        ("max_gpus_per_task", "train", 8),
        ("max_gpus", "train", 9),  # tasks ranked by GPUs x concurrent instances
    ]


def test_check_pipeline_passes_a_pipeline_within_policy(compiled):
    report = _priced(compiled["diamond"])  # peak 8, 14 H100-hours = $96.32
    assert check_pipeline(report, max_gpus=8, budget_usd=100.0, allowed_gpu_types=["H100", "L4"]) == []


def test_check_pipeline_flags_gpu_types_outside_the_allowed_list(compiled):
    report = _priced(compiled["fan_out"])
    (violation,) = check_pipeline(report, allowed_gpu_types=["nvidia-l4", "A100-80GB"])
    assert (violation.rule, violation.tasks, violation.observed) == ("allowed_gpu_types", ("for-loop-2/train",), "H100")


def test_a_budget_cannot_be_checked_without_prices(compiled):
    with pytest.raises(ConfigError, match="cannot check budget_usd"):
        check_pipeline(inspect_pipeline(compiled["type_only"]), budget_usd=10)


# --- output -----------------------------------------------------------------------------------


def test_markdown_and_dict_output(compiled):
    report = _priced(compiled["fan_out"])
    md = report.to_markdown()
    assert md.splitlines()[0].startswith("| task | GPU type | GPUs/instance | instances | max concurrent |")
    assert "| `for-loop-2/train` | H100 | 2 | 5 | 2 |" in md
    assert "peak concurrent GPUs 7, total GPUs 13, projected cost $71.20" in md  # 10 x 6.88 + 3 x 0.80
    data = json.loads(json.dumps(report.to_dict()))
    assert data["peak_concurrent_gpus"] == 7 and len(data["tasks"]) == 2


# --- bad input ----------------------------------------------------------------------------------


def test_a_missing_file_is_a_config_error_naming_it(tmp_path):
    missing = tmp_path / "nope.yaml"
    with pytest.raises(ConfigError, match="not found") as err:
        inspect_pipeline(missing)
    assert str(missing) in str(err.value)


def test_yaml_that_is_not_a_pipeline_is_a_config_error(tmp_path):
    other = tmp_path / "deployment.yaml"
    other.write_text("apiVersion: apps/v1\nkind: Deployment\n")
    with pytest.raises(ConfigError, match=r"deployment\.yaml: not a compiled KFP pipeline spec"):
        inspect_pipeline(other)


def test_text_that_is_not_yaml_is_a_config_error(tmp_path):
    junk = tmp_path / "junk.yaml"
    junk.write_text("root: [unclosed\n  pipelineInfo: {\n")
    with pytest.raises(ConfigError, match=r"junk\.yaml: not valid YAML at line"):
        inspect_pipeline(junk)


def test_truncated_yaml_is_a_config_error(compiled, tmp_path):
    text = compiled["param_limit"].read_text()
    # Cut inside a quoted string: the YAML parser fails.
    mid = tmp_path / "cut_mid.yaml"
    mid.write_text(text[: text.index("{{$.inputs") + 5])
    with pytest.raises(ConfigError, match=r"cut_mid\.yaml: not valid YAML.*truncated"):
        inspect_pipeline(mid)
    # Cut at a line: still YAML, but pieces are gone.
    for marker in ("\npipelineInfo:", "\ndeploymentSpec:"):
        cut = tmp_path / "cut_line.yaml"
        cut.write_text(text[: text.index(marker) + 1])
        with pytest.raises(ConfigError) as err:
            inspect_pipeline(cut)
        assert str(cut) in str(err.value)
    reordered = tmp_path / "no_executor.yaml"  # root and pipelineInfo survive, the executors do not
    start, end = text.index("deploymentSpec:"), text.index("\npipelineInfo:") + 1
    reordered.write_text(text[:start] + text[end:])
    with pytest.raises(ConfigError, match=r"uses executor 'exec-\w+', which is not in deploymentSpec \(truncated"):
        inspect_pipeline(reordered)


# --- the pieces ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("accelerator", "expected"),
    [
        ("nvidia.com/gpu", None),
        ("NVIDIA_TESLA_T4", "T4"),
        ("NVIDIA_H100_80GB", "H100"),
        ("nvidia-h100-mega-80gb", "H100"),
        ("nvidia-h200-141gb", "H200"),
        ("nvidia-tesla-a100", "A100-40GB"),
        ("nvidia-a100-80gb", "A100-80GB"),
        ("A100-40GB", "A100-40GB"),
        ("NVIDIA_L4", "L4"),
        ("nvidia-l40s", "L40S"),
        ("A10G", "A10G"),
        ("NVIDIA_TESLA_P4", "NVIDIA_TESLA_P4"),  # unknown models keep their own name
    ],
)
def test_accelerator_names_map_to_catalog_keys(accelerator, expected):
    assert canonical_gpu_type(accelerator) == expected


def _brute_force_antichain(weights: dict[str, int], upstream: dict[str, set[str]]) -> int:
    def reaches(a: str, b: str) -> bool:
        stack, seen = [b], set()
        while stack:
            node = stack.pop()
            if node == a:
                return True
            if node not in seen:
                seen.add(node)
                stack.extend(upstream[node])
        return False

    best = 0
    nodes = list(weights)
    for r in range(len(nodes) + 1):
        for subset in itertools.combinations(nodes, r):
            if all(not reaches(a, b) and not reaches(b, a) for a, b in itertools.combinations(subset, 2)):
                best = max(best, sum(weights[n] for n in subset))
    return best


def test_peak_is_the_exact_heaviest_antichain_on_random_dags():
    rng = random.Random(7)
    for _ in range(200):
        n = rng.randint(1, 8)
        names = [f"t{i}" for i in range(n)]
        weights = {name: rng.choice([0, 1, 2, 4, 8]) for name in names}
        upstream = {names[j]: {names[i] for i in range(j) if rng.random() < 0.3} for j in range(n)}
        assert max_weight_antichain(weights, upstream) == _brute_force_antichain(weights, upstream)


def test_a_dependency_cycle_is_refused():
    with pytest.raises(ValueError, match="cycle"):
        max_weight_antichain({"a": 1, "b": 1}, {"a": {"b"}, "b": {"a"}})
