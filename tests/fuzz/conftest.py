"""Hypothesis profiles for the property-based tests of every parser (issue 16).

``ci`` (the default) runs a bounded number of examples per test, so the folder adds well under two
minutes to CI; ``long`` runs many more, for a local hunt::

    HYPOTHESIS_PROFILE=long .venv/bin/pytest tests/fuzz -q        # or --hypothesis-profile=long
    HYPOTHESIS_PROFILE=long HYPOTHESIS_MAX_EXAMPLES=300 ...         # a shorter hunt

No deadline: the machines are shared and a slow example is not a failure by itself. Each property
checks its own time bound instead (see ``contract.py``), generous enough not to flake and tight
enough to catch a hang or an exponential walk.
"""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path

from hypothesis import HealthCheck, settings

_COMMON = {
    "deadline": None,
    "suppress_health_check": [HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
    "print_blob": True,
}
settings.register_profile("ci", max_examples=100, derandomize=True, **_COMMON)
settings.register_profile("long", max_examples=int(os.environ.get("HYPOTHESIS_MAX_EXAMPLES", "3000")), **_COMMON)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))


def _share(name: str) -> None:
    """Make a helper module of this folder importable by name: the suite runs with
    ``--import-mode=importlib``, which puts no test folder on ``sys.path``."""
    if name in sys.modules:
        return
    spec = importlib.util.spec_from_file_location(name, Path(__file__).with_name(f"{name}.py"))
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)


for _name in ("fuzz_contract", "fuzz_inputs"):
    _share(_name)
