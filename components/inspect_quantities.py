"""Kubernetes quantities and accelerator names, read the way the cluster reads them.

Kept apart from :mod:`mlcost.components.inspect` because both are pure string functions that the CLI
and policy checks can reuse without touching a pipeline spec.
"""

from __future__ import annotations

import math
import re

from mlcost.errors import ConfigError, shown

MAX_ACCELERATORS = 1_000_000  # per task instance; the meter's own bound on gpus=

# Kubernetes resource.Quantity suffixes. Memory is reported in decimal GB, as the KFP compiler does
# (`set_memory_limit("16Gi")` compiles to `memoryLimit: 17.179869184`).
_BINARY = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "Pi": 2**50, "Ei": 2**60}
_DECIMAL = {"m": 1e-3, "": 1.0, "k": 1e3, "K": 1e3, "M": 1e6, "G": 1e9, "T": 1e12, "P": 1e15, "E": 1e18}
_QUANTITY = re.compile(r"^([+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?)([A-Za-z]{0,2})$")

#: Accelerator strings that say "a GPU" without saying which: the caller's default type applies.
GENERIC_ACCELERATORS = frozenset({"nvidia.com/gpu", "gpu", "nvidia-gpu"})

_SIMPLE_TOKENS = {"H200": "H200", "H100": "H100", "L40S": "L40S", "L4": "L4", "A10G": "A10G", "T4": "T4"}


def parse_quantity(value: object, *, what: str) -> float:
    """A Kubernetes quantity ('500m', '8', '16Gi', '32G', 2.5) as a plain number (cores or bytes)."""
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise ConfigError(f"{what}: expected a Kubernetes quantity, got {shown(value)}")
    if isinstance(value, (int, float)):
        return _finite(value, what)
    match = _QUANTITY.match(value.strip()) if len(value) <= 64 else None
    if not match:
        raise ConfigError(f"{what}: cannot read {shown(value)} as a Kubernetes quantity (e.g. '500m', '8', '16Gi')")
    number, suffix = match.groups()
    scale = _BINARY.get(suffix, _DECIMAL.get(suffix))
    if scale is None:
        raise ConfigError(f"{what}: unknown quantity suffix {suffix!r} in {shown(value)}")
    return _finite(float(number) * scale, what)


def _finite(value: float, what: str) -> float:
    """A quantity as a finite float: ``1e999`` or a 5,000-digit integer is no quantity a cluster has."""
    try:
        number = float(value)
    except OverflowError:
        number = math.inf
    if not math.isfinite(number):
        raise ConfigError(f"{what}: {shown(value)} is not a finite quantity")
    return number


def parse_count(value: object, *, what: str) -> int:
    """A non-negative whole number of accelerators; KFP defaults arrive as floats (``4.0``)."""
    try:
        number = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError, OverflowError):
        raise ConfigError(f"{what}: expected a whole number of accelerators, got {shown(value)}") from None
    if not math.isfinite(number) or number < 0 or number != int(number) or number > MAX_ACCELERATORS:
        raise ConfigError(
            f"{what}: expected a whole number of accelerators from 0 to {MAX_ACCELERATORS:,}, got {shown(value)}"
        )
    return int(number)


def canonical_gpu_type(accelerator: str) -> str | None:
    """mlcost's catalog key for a KFP/Kubernetes accelerator string, ``None`` when it names no model.

    KFP passes `set_accelerator_type` through verbatim, so the same GPU shows up as
    ``NVIDIA_H100_80GB``, ``nvidia-h100-80gb`` (a GKE node label) or ``H100``. We match on tokens, not
    substrings, so that ``L40S`` is never read as ``L4``. A bare ``A100`` is the 40 GB part, as GKE's
    ``nvidia-tesla-a100`` is. A string we cannot place is returned unchanged: the price lookup and
    ``allowed_gpu_types`` then report it by its own name rather than silently pricing it as another.
    """
    text = accelerator.strip()
    if not text or text.lower() in GENERIC_ACCELERATORS:
        return None
    tokens = [t for t in re.split(r"[^A-Za-z0-9]+", text.upper()) if t]
    for token in tokens:
        if token in _SIMPLE_TOKENS:
            return _SIMPLE_TOKENS[token]
        if token == "A100":
            return "A100-80GB" if any(t.startswith("80") for t in tokens) else "A100-40GB"
    return text
