"""Helpers for the telemetry tests: a hand-driven clock and a CSV trace writer."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

HEADER = "t_s,device,util_pct,mem_used_gb,power_w"


class ManualClock:
    """A clock the test moves: readings then depend on trace time only, never on scheduling."""

    def __init__(self, t: float = 1000.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t

    def advance(self, dt: float) -> None:
        self.t += dt


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
def write_trace(tmp_path):
    def write(rows, header: str = HEADER, name: str = "trace.csv") -> str:
        path = tmp_path / name
        path.write_text(header + "\n" + "\n".join(",".join(map(str, r)) for r in rows) + "\n")
        return str(path)

    return write



def _load_scenarios() -> None:
    """Register the shared NVML scenarios (nvml_scenarios.py) as ``nvml_scenarios``: the stand-in
    suite also runs that file as a script, so it is loaded by path, not as a package module."""
    if "nvml_scenarios" not in sys.modules:
        spec = importlib.util.spec_from_file_location("nvml_scenarios", Path(__file__).with_name("nvml_scenarios.py"))
        module = importlib.util.module_from_spec(spec)
        sys.modules["nvml_scenarios"] = module
        spec.loader.exec_module(module)


_load_scenarios()
