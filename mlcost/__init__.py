"""mlcost: put a meter on every GPU step — sample, price, guard and record it.

The public API (stable)::

    from mlcost import meter, metered, StepCost, PriceCatalog, Policy, GuardrailBreached, BudgetExceeded

Names are imported on first use, so ``import mlcost`` (and a DAG file importing
``mlcost.operators``) stays cheap: no mlflow, pandas, kfp or great_expectations at import time.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

_EXPORTS = {
    "meter": "mlcost.metering",
    "metered": "mlcost.metering",
    "Meter": "mlcost.metering",
    "StepCost": "mlcost.step",
    "PriceCatalog": "mlcost.pricing.catalog",
    "Policy": "mlcost.policy",
    "GuardrailBreached": "mlcost.errors",
    "BudgetExceeded": "mlcost.errors",
    "PreflightRefused": "mlcost.errors",
    "ConfigError": "mlcost.errors",
    "UnknownGpuType": "mlcost.errors",
    "MlcostError": "mlcost.errors",
}

__all__ = [
    "BudgetExceeded",
    "ConfigError",
    "GuardrailBreached",
    "Meter",
    "MlcostError",
    "Policy",
    "PreflightRefused",
    "PriceCatalog",
    "StepCost",
    "UnknownGpuType",
    "meter",
    "metered",
]

if TYPE_CHECKING:  # pragma: no cover
    from mlcost.errors import (
        BudgetExceeded,
        ConfigError,
        GuardrailBreached,
        MlcostError,
        PreflightRefused,
        UnknownGpuType,
    )
    from mlcost.metering import Meter, meter, metered
    from mlcost.policy import Policy
    from mlcost.pricing.catalog import PriceCatalog
    from mlcost.step import StepCost


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'mlcost' has no attribute {name!r}")
    value = getattr(import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])
