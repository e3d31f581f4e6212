"""The meter's keywords, defined once: ``meter()``, ``@metered``, ``@task.metered``,
``MeteredOperator`` and ``metered_component`` all take exactly these and validate them here.

Why one model: the list used to be written out in three signatures, each with its own checks, and
the checks drifted (a NaN budget switched the guardrail off; a list as a duration, a non-mapping
``tags`` or a huge integer raised raw ``AttributeError``/``OverflowError``). A keyword added here
(a field with a ``before`` validator) reaches every adapter: each one splits its keyword arguments
with :func:`split_keywords` and builds :class:`MeterOptions` with :meth:`MeterOptions.parse`.

Every bad value is a :class:`~mlcost.errors.ConfigError` whose ``field`` is the keyword. Values
are strict (``budget_usd="10"`` is refused: a string where a number belongs is a bug upstream)
except where an orchestrator rendered a template to text (Airflow's templated fields): there
``parse(..., text=True)`` reads numbers written as text.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError, ValidationInfo, field_validator

from mlcost.durations import parse_duration
from mlcost.errors import ConfigError
from mlcost.errors import shown as _show
from mlcost.names import PRICING_MODELS, WORKLOADS

MAX_GPUS = 1_000_000  # per step; no cluster is larger, and a bound keeps the money arithmetic finite
MAX_NODES = 100_000


class MeterOptions(BaseModel):
    """What a metered step asks for and the limits it runs under (see docs/architecture.md, "The public API")."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    gpus: int | None = None
    """GPUs billed (the allocation); default: the devices the step can see."""
    gpu_type: str | None = None
    """The priced type (``"H100"``, ``"H100:1g.10gb"``); checked against the catalog by the meter."""
    pricing: str = "on_demand"
    budget_usd: float | None = None
    """Stop the step once it has spent this much."""
    max_duration: float | None = None
    """Seconds (``"2h"`` accepted); stop the step once it ran this long."""
    idle_timeout: float | None = None
    """Seconds (``"15m"`` accepted); stop the step once its GPUs were idle this long."""
    tags: dict[str, str] = {}
    """``team``, ``project``, ``model``, ``workload``...; scalar values are kept as text."""
    interval: float = 1.0
    """Seconds between samples."""
    nodes: int | None = None
    """Nodes the job runs on (checked against ``cluster.max_nodes`` at preflight); default: from the
    launcher's environment (:mod:`mlcost.jobs`). With more than one, ``gpus`` is the job's total."""
    job_id: str | None = None
    """The job this step is one node of; default: from the launcher's environment."""
    node_rank: int | None = None
    """This node's rank in the job (0-based); default: from the launcher's environment."""
    experiment: str | None = None
    """The MLflow experiment of the step's run."""

    # construction -----------------------------------------------------------------------------
    @classmethod
    def parse(cls, keywords: Mapping[str, Any], *, text: bool = False, where: str = "meter") -> MeterOptions:
        """Validate ``keywords`` (``None`` means "not given"); raises ConfigError naming the keyword.

        ``text=True`` also reads numbers written as text (a rendered Airflow template); ``where``
        names the caller in the message for an unknown keyword."""
        given = {k: v for k, v in keywords.items() if v is not None}
        unknown = sorted(set(given) - set(cls.model_fields))
        if unknown:
            raise ConfigError(
                f"unknown keyword{'s' * (len(unknown) > 1)} {', '.join(map(repr, unknown))} of {where}; "
                f"allowed: {', '.join(cls.model_fields)}",
                field=unknown[0],
            )
        try:
            return cls.model_validate(given, context={"text": text})
        except ValidationError as e:
            raise _config_error(e) from None

    def keywords(self) -> dict[str, Any]:
        """The keywords that differ from the defaults, as plain values (JSON-able: a component's
        pod receives them as a literal)."""
        return self.model_dump(exclude_defaults=True)

    # validators -------------------------------------------------------------------------------
    @field_validator("gpus", mode="before")
    @classmethod
    def _gpus(cls, v: Any, info: ValidationInfo) -> int:
        return _integer(v, "gpus", 0, MAX_GPUS, _text(info))

    @field_validator("nodes", mode="before")
    @classmethod
    def _nodes(cls, v: Any, info: ValidationInfo) -> int:
        return _integer(v, "nodes", 1, MAX_NODES, _text(info))

    @field_validator("node_rank", mode="before")
    @classmethod
    def _node_rank(cls, v: Any, info: ValidationInfo) -> int:
        return _integer(v, "node_rank", 0, MAX_NODES - 1, _text(info))

    @field_validator("gpu_type", "experiment", "job_id", mode="before")
    @classmethod
    def _name(cls, v: Any, info: ValidationInfo) -> str:
        if not isinstance(v, str) or not v.strip():
            raise ConfigError(f"expected a non-empty string, got {_show(v)}", field=info.field_name)
        return v.strip()

    @field_validator("pricing", mode="before")
    @classmethod
    def _pricing(cls, v: Any) -> str:
        if not isinstance(v, str) or v not in PRICING_MODELS:
            raise ConfigError(f"unknown pricing {_show(v)}; allowed: {', '.join(PRICING_MODELS)}", field="pricing")
        return v

    @field_validator("budget_usd", mode="before")
    @classmethod
    def _budget(cls, v: Any, info: ValidationInfo) -> float:
        return _number(v, "budget_usd", "a non-negative number of USD", 0.0, math.inf, _text(info))

    @field_validator("interval", mode="before")
    @classmethod
    def _interval(cls, v: Any, info: ValidationInfo) -> float:
        return _number(v, "interval", "a number of seconds between 0.01 and 3600", 0.01, 3600.0, _text(info))

    @field_validator("max_duration", "idle_timeout", mode="before")
    @classmethod
    def _duration(cls, v: Any, info: ValidationInfo) -> float | None:
        field = info.field_name or "duration"
        if _text(info) and isinstance(v, str) and _looks_numeric(v):
            v = _number(v, field, "a duration", 0.0, math.inf, True)
        return parse_duration(v, field=field)

    @field_validator("tags", mode="before")
    @classmethod
    def _tags(cls, v: Any) -> dict[str, str]:
        if not isinstance(v, Mapping):
            raise ConfigError(
                f"expected a mapping of names to values such as {{'team': 'search'}}, got {_show(v)}", field="tags"
            )
        tags: dict[str, str] = {}
        for key, value in v.items():
            if not isinstance(key, str) or not key:
                raise ConfigError(f"tag names must be non-empty strings, got {_show(key)}", field="tags")
            if isinstance(value, float) and not math.isfinite(value):
                raise ConfigError(f"tag {key!r} is {value!r}; expected text or a finite number", field=f"tags.{key}")
            if not isinstance(value, (str, int, float, bool)):
                raise ConfigError(f"tag {key!r} must be text or a number, got {_show(value)}", field=f"tags.{key}")
            tags[key] = str(value)
        if "workload" in tags and tags["workload"] not in WORKLOADS:
            raise ConfigError(
                f"unknown workload {tags['workload']!r}; allowed: {', '.join(WORKLOADS)}", field="tags.workload"
            )
        return tags


def split_keywords(kwargs: dict[str, Any]) -> dict[str, Any]:
    """Remove the meter's keywords from ``kwargs`` (an adapter's ``**kwargs``) and return them;
    what is left belongs to the framework (``BaseOperator``, ``dsl.component``)."""
    return {name: kwargs.pop(name) for name in list(kwargs) if name in MeterOptions.model_fields}


# helpers ---------------------------------------------------------------------------------------


def _text(info: ValidationInfo) -> bool:
    return bool(info.context and info.context.get("text"))


def _looks_numeric(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _number(v: Any, field: str, allowed: str, low: float, high: float, text: bool) -> float:
    if isinstance(v, str) and text:
        try:
            v = float(v.strip())
        except ValueError:
            raise ConfigError(f"expected {allowed}, got {_show(v)}", field=field) from None
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise ConfigError(f"expected {allowed}, got {_show(v)}", field=field)
    try:
        value = float(v)
    except OverflowError:
        raise ConfigError(f"expected {allowed}, got {_show(v)}, too large for a number", field=field) from None
    if not math.isfinite(value) or not low <= value <= high:
        raise ConfigError(f"expected {allowed}, got {_show(v)}", field=field)
    return value


def _integer(v: Any, field: str, low: int, high: int, text: bool) -> int:
    if isinstance(v, str) and text and v.strip().isdigit() and len(v.strip()) <= 12:
        v = int(v.strip())  # more digits than that is out of range anyway
    if isinstance(v, bool) or not isinstance(v, int) or not low <= v <= high:
        raise ConfigError(f"expected a whole number from {low} to {high:,}, got {_show(v)}", field=field)
    return v


def _config_error(err: ValidationError) -> ConfigError:
    """The first problem as a ConfigError naming its keyword (a validator's own ConfigError kept)."""
    item = err.errors()[0]
    original = (item.get("ctx") or {}).get("error")
    if isinstance(original, ConfigError):
        return original
    field = ".".join(str(p) for p in item["loc"]) or None
    return ConfigError(item["msg"], field=field)
