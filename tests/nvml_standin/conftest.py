"""Build the stand-in libnvidia-ml.so.1 once per session and run scenarios against it through
pynvml in subprocesses (``LD_LIBRARY_PATH`` must be set before a process starts)."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).parent
SCENARIO_SCRIPT = HERE.parent / "telemetry" / "nvml_scenarios.py"


def _load(name: str, path: Path):
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, path)
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


_load("nvml_scenarios", SCENARIO_SCRIPT)
standin_build = _load("nvml_standin_build", HERE / "build.py")


@pytest.fixture(scope="session")
def standin_lib(tmp_path_factory) -> Path:
    """The folder holding the freshly built stand-in (skips, saying why, without a C compiler)."""
    if standin_build.compiler() is None:
        pytest.skip("no C compiler (cc, gcc or clang) on PATH: the NVML stand-in cannot be built")
    return standin_build.build(tmp_path_factory.mktemp("nvml-standin"))


@pytest.fixture
def standin_env(standin_lib, tmp_path):
    """The environment of a subprocess whose pynvml loads the stand-in."""

    def env(**extra: str) -> dict[str, str]:
        base = {k: v for k, v in os.environ.items() if not k.startswith("MLCOST_NVML_STANDIN_")}
        base.pop("CUDA_VISIBLE_DEVICES", None)
        base["LD_LIBRARY_PATH"] = os.pathsep.join(p for p in (str(standin_lib), base.get("LD_LIBRARY_PATH")) if p)
        base["MLCOST_LEDGER"] = str(tmp_path / "ledger.db")
        base.update(extra)
        return base

    return env


@pytest.fixture
def run_scenario(standin_env, tmp_path):
    """Run one shared scenario in a subprocess against the stand-in; returns its JSON result."""
    sc = sys.modules["nvml_scenarios"]

    def run(kind: str, name: str) -> dict:
        s = sc.SCENARIOS[name]
        env = standin_env(**sc.standin_env(s, sc.write_trace(s, tmp_path)))
        done = subprocess.run([sys.executable, str(SCENARIO_SCRIPT), kind, name], env=env, capture_output=True,
                              text=True, timeout=120)
        assert done.returncode == 0, done.stderr[-3000:]
        return json.loads(done.stdout)

    return run
