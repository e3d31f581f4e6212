"""Property: any compiled-pipeline-shaped YAML is inspected into a report (and checked against a
policy) or refused with a ConfigError naming the file; never another exception, never slow."""

from __future__ import annotations

import json
import math

from fuzz_contract import holds
from fuzz_inputs import diamond_pipeline, mutated, values, write, yaml_bomb_pipeline, yaml_value
from hypothesis import event, given
from hypothesis import strategies as st
from mlcost.components.inspect import check_pipeline, inspect_pipeline

COMPONENTS = ["comp-a", "comp-b", "comp-c", "comp-loop", "comp-missing"]
TASKS = ["t1", "t2", "t3", "for-loop-1"]
junk_or = lambda strategy: st.one_of(strategy, values)  # noqa: E731 - a local shorthand

resources = st.fixed_dictionaries(
    {},
    optional={
        "accelerator": junk_or(st.fixed_dictionaries({}, optional={
            "resourceType": junk_or(st.sampled_from(
                ["H100", "nvidia.com/gpu", "NVIDIA_L4", "{{$.inputs.parameters['pipelinechannel--g']}}"]
            )),
            "resourceCount": junk_or(st.sampled_from(["1", "8", "0", "-1", "1.5", "1e999", "nan",
                                                      "{{$.inputs.parameters['pipelinechannel--n']}}"])),
        })),
        "resourceCpuLimit": junk_or(st.sampled_from(["500m", "8", "16Gi", "1e999", "x"])),
        "resourceMemoryLimit": junk_or(st.sampled_from(["16Gi", "32G", "1e400", "-1"])),
        "cpuLimit": values,
    },
)
tasks = st.dictionaries(
    st.sampled_from(TASKS),
    junk_or(st.fixed_dictionaries(
        {"componentRef": junk_or(st.fixed_dictionaries({"name": junk_or(st.sampled_from(COMPONENTS))}))},
        optional={
            "dependentTasks": junk_or(st.lists(st.sampled_from(TASKS), max_size=3)),
            "parameterIterator": junk_or(st.fixed_dictionaries({
                "items": junk_or(st.fixed_dictionaries({}, optional={
                    "raw": junk_or(st.sampled_from(["[1, 2, 3]", "[]", "not json", "[" * 3000 + "]" * 3000, "{}"])),
                    "inputParameter": junk_or(st.sampled_from(["pipelinechannel--xs", "nope"])),
                })),
                "itemInput": junk_or(st.just("pipelinechannel--loop-item")),
            })),
            "iteratorPolicy": junk_or(st.fixed_dictionaries({"parallelismLimit": values})),
            "inputs": junk_or(st.fixed_dictionaries({"parameters": st.dictionaries(
                st.sampled_from(["pipelinechannel--n", "pipelinechannel--g", "pipelinechannel--xs"]),
                junk_or(st.one_of(
                    st.fixed_dictionaries({"componentInputParameter": st.sampled_from(["n", "g", "xs", "zz"])}),
                    st.fixed_dictionaries({"runtimeValue": st.fixed_dictionaries({"constant": values})}),
                )),
                max_size=3,
            )})),
        },
    )),
    max_size=4,
)
components = st.dictionaries(
    st.sampled_from(COMPONENTS[:-1]),
    st.one_of(
        st.fixed_dictionaries({"executorLabel": st.sampled_from(["exec-a", "exec-b", "exec-none"])}),
        st.fixed_dictionaries({"dag": st.fixed_dictionaries({"tasks": tasks})}),
        values,
    ),
    max_size=4,
)
specs = st.fixed_dictionaries(
    {
        "pipelineInfo": junk_or(st.fixed_dictionaries({"name": st.text(max_size=10)})),
        "root": junk_or(st.fixed_dictionaries(
            {"dag": junk_or(st.fixed_dictionaries({"tasks": tasks}))},
            optional={"inputDefinitions": st.fixed_dictionaries({"parameters": st.dictionaries(
                st.sampled_from(["n", "g", "xs"]), junk_or(st.fixed_dictionaries({"defaultValue": values})),
                max_size=3,
            )})},
        )),
    },
    optional={
        "components": junk_or(components),
        "deploymentSpec": junk_or(st.fixed_dictionaries({"executors": st.dictionaries(
            st.sampled_from(["exec-a", "exec-b"]),
            junk_or(st.fixed_dictionaries({"container": junk_or(st.fixed_dictionaries({"resources": resources}))})),
            max_size=2,
        )})),
    },
)


def _inspect(path: str) -> None:
    def run():
        report = inspect_pipeline(
            path, default_gpu_type="H100", price_per_gpu_hour=lambda gpu: 2.0, default_max_duration_s="1h"
        )
        check_pipeline(report, max_gpus=8, budget_usd=100.0, allowed_gpu_types=["H100"])
        report.to_markdown()
        json.dumps(report.to_dict())
        return report

    report = holds(run, names=path)
    event("inspected" if report is not None else "refused")
    if report is not None:
        assert report.peak_concurrent_gpus >= 0 and report.total_gpus >= 0
        assert report.projected_cost_usd is None or math.isfinite(report.projected_cost_usd)
        for task in report.tasks:
            assert task.gpus_per_instance >= 0 and task.instances >= 0
            quantities = (task.cpu_limit, task.cpu_request, task.memory_limit_gb, task.memory_request_gb)
            assert all(q is None or math.isfinite(q) for q in quantities)
            assert 0 <= task.max_concurrent <= max(task.instances, 1) or task.instances == 0


@given(specs)
def test_any_pipeline_shaped_spec_is_inspected_or_refused_naming_the_file(tmp_path_factory, spec):
    _inspect(write(tmp_path_factory.mktemp("ir") / "pipeline.yaml", yaml_value(spec)))


@given(st.sampled_from(["diamond", "bomb"]).flatmap(
    lambda kind: mutated(diamond_pipeline(4) if kind == "diamond" else yaml_bomb_pipeline(3, 3))))
def test_a_damaged_pipeline_file_is_inspected_or_refused_naming_the_file(tmp_path_factory, text):
    _inspect(write(tmp_path_factory.mktemp("ir") / "pipeline.yaml", text))


@given(st.integers(1, 40))
def test_a_diamond_of_any_depth_is_answered_at_once(tmp_path_factory, levels):
    path = write(tmp_path_factory.mktemp("ir") / "diamond.yaml", diamond_pipeline(levels))
    report = holds(lambda: inspect_pipeline(path, default_gpu_type="H100"), names=path, bound_s=5.0)
    if report is not None:  # small enough to list: every path to the leaf is a task run
        assert report.total_gpus == 2 ** (levels - 1) == report.peak_concurrent_gpus


def test_a_hostile_meter_call_in_a_command_is_not_a_meter_config(tmp_path):
    """The generated ``return run_metered(body, {...}, ...)`` line is read with ``ast``; the parser
    gives up on deep nesting with MemoryError/RecursionError, which must not escape."""
    calls = ["return run_metered(b, " + "-" * 100_000 + "1, m, {})", "return run_metered(b, " + "[" * 150
             + "]" * 150 + ", m, {})", "return run_metered(b, {'name': 't', 'tags': ['x']}, m, {})"]
    for i, call in enumerate(calls):
        text = diamond_pipeline(1).replace(
            "        image: python:3.11\n", f"        image: python:3.11\n        command: [{json.dumps(call)}]\n"
        )
        path = write(tmp_path / f"p{i}.yaml", text)
        report = holds(lambda path=path: inspect_pipeline(path, default_gpu_type="H100"), names=path)
        assert report is None or report.tasks[0].step_name in (None, "t")
