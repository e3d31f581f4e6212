"""Optional parts of mlcost and the one check that names the extra a command is missing.

The core distribution is only the meter (telemetry, pricing, guardrails, the ledger, MLflow logging
to a tracking server through ``mlflow-skinny``), so that a Kubeflow pod or an Airflow worker installs
it in seconds. Reports, charts, FOCUS Parquet and the demo need more; a command that needs an extra
calls :func:`require_extra` before it imports anything from it, and the person running it reads the
``pip install`` line that fixes it instead of a traceback from deep inside an import.
"""

from __future__ import annotations

import importlib.util

from mlcost.errors import MissingExtra

# What each extra brings, as import names; the distributions are in pyproject.toml.
EXTRAS: dict[str, tuple[str, ...]] = {
    "reports": ("pandas", "pyarrow", "matplotlib"),
    "airflow": ("airflow",),  # top level only: finding airflow.sdk would import airflow
    "kfp": ("kfp",),
    "gx": ("great_expectations", "pandas"),
    "postgres": ("psycopg",),
}


def missing_modules(*modules: str) -> list[str]:
    """The modules of ``modules`` that cannot be imported here (looked up, not imported: cheap)."""
    out = []
    for name in modules:
        try:
            found = importlib.util.find_spec(name) is not None
        except (ImportError, ValueError):  # a parent package is missing, or a broken stub
            found = False
        if not found:
            out.append(name)
    return out


def require_extra(extra: str, *modules: str, what: str | None = None) -> None:
    """Raise :class:`MissingExtra` unless ``modules`` (default: all of the extra's) are importable.

    ``what`` names the feature in the message (default: the extra), e.g. ``"mlcost report"``.
    """
    missing = missing_modules(*(modules or EXTRAS[extra]))
    if missing:
        raise MissingExtra(extra, missing, what=what)


def extra_for(module: str) -> str | None:
    """The extra that brings ``module`` (or its top-level package), or None for a core module."""
    top = module.split(".")[0]
    for extra, modules in EXTRAS.items():
        if module in modules or top in {m.split(".")[0] for m in modules}:
            return extra
    return None
