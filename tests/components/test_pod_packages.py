"""A compiled pipeline's pods install the mlcost that compiled it: the light meter, pinned."""

from __future__ import annotations

import re

import yaml

import mlcost

COMPONENT = '''
from kfp import dsl
from mlcost.components import budget_gate, metered_component


@metered_component(gpus=1, gpu_type="L4", base_image="python:3.11")
def train(rows: int) -> float:
    return rows / 1000


@metered_component(gpus=1, gpu_type="L4", base_image="registry.example/mlcost:1", packages_to_install=[])
def preinstalled(rows: int) -> float:
    return rows / 1000


@dsl.pipeline(name="pinned")
def pinned(rows: int = 10):
    a = train(rows=rows)
    b = preinstalled(rows=rows)
    budget_gate(1.0, a, b)
'''


def _installs(tmp_path) -> dict[str, list[str]]:
    """What each executor's command pip-installs, read from the compiled YAML."""
    import importlib.util

    from kfp import compiler

    source = tmp_path / "pinned_pipeline.py"
    source.write_text(COMPONENT)
    spec = importlib.util.spec_from_file_location("pinned_pipeline", source)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    compiler.Compiler().compile(module.pinned, str(tmp_path / "pinned.yaml"))
    doc = yaml.safe_load((tmp_path / "pinned.yaml").read_text())
    out = {}
    for name, executor in doc["deploymentSpec"]["executors"].items():
        command = " ".join(executor["container"]["command"])
        out[name] = re.findall(r"'(mlcost[^']*)'", command)
    return out


def test_a_compiled_metered_component_pins_the_compiling_version(tmp_path):
    installs = _installs(tmp_path)
    pin = f"mlcost=={mlcost.__version__}"
    assert installs["exec-train"] == [pin]
    assert installs["exec-mlcost-budget-gate"] == [pin]
    assert installs["exec-preinstalled"] == []  # a base image with mlcost: nothing to install


def test_pod_packages_adds_the_extras_a_pod_needs():
    from mlcost.components.metered import pod_packages

    assert pod_packages(("postgres",)) == [f"mlcost[postgres]=={mlcost.__version__}"]
