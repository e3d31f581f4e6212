"""Kubeflow Pipelines adapter: ``metered_component``, ``budget_gate`` and compiled-spec inspection.

Imports kfp lazily: the pod that runs a metered component only needs ``mlcost.components.runtime``.
"""

from __future__ import annotations

from typing import Any

__all__ = ["budget_gate", "metered_component", "pod_packages"]


def __getattr__(name: str) -> Any:
    if name in ("metered_component", "pod_packages"):
        from mlcost.components import metered

        return getattr(metered, name)
    if name == "budget_gate":
        from mlcost.components.run_budget import budget_gate

        return budget_gate
    raise AttributeError(f"module 'mlcost.components' has no attribute {name!r}")
