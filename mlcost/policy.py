"""The policy: budgets, cluster limits, idle rules, per-model ceilings and cost regression.

Read from ``mlcost.toml``, ``[tool.mlcost]`` in ``pyproject.toml`` or the file ``MLCOST_POLICY``
names, with ``MLCOST_<TABLE>__<KEY>`` environment variables on top (``MLCOST_BUDGETS__JOB_USD=50``)
and a step's keyword arguments on top of that. Every limit remembers where it came from, because a
refused job's first question is "who set this?".
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from mlcost.config_files import read_config_file, validation_error
from mlcost.durations import parse_duration
from mlcost.names import ENV_POLICY

_ENV_PREFIX = "MLCOST_"


class _Table(BaseModel):
    # NaN or infinity as a limit would switch its check off (every comparison with NaN is false)
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


SCOPE_KEYS = ("team", "project", "model", "workload")


class BudgetWindow(_Table):
    """A spend cap over a calendar period (UTC) for one scope: a team, project, model or workload,
    or everyone when no scope key is set. Enforced at preflight from the ledger every machine shares."""

    name: str | None = Field(default=None, description="default: from the scope and the period")
    team: str | None = None
    project: str | None = None
    model: str | None = None
    workload: str | None = None
    period: Literal["day", "week", "month"]
    usd: float = Field(ge=0, allow_inf_nan=False, description="the window's limit in USD")
    warn_at_pct: list[float] = Field(default_factory=list, description="thresholds that alert, in % of usd")
    stop_running: bool = Field(default=False, description="also stop running steps once the window is spent")

    @field_validator("warn_at_pct")
    @classmethod
    def _thresholds(cls, values: list[float]) -> list[float]:
        for v in values:
            if not 0 < v < 100:
                raise ValueError(f"each threshold must be between 0 and 100 (exclusive), got {v!r}")
        return sorted(set(values))

    @property
    def scope(self) -> dict[str, str]:
        return {k: v for k in SCOPE_KEYS if (v := getattr(self, k)) is not None}

    @property
    def label(self) -> str:
        if self.name:
            return self.name
        scope = "-".join(self.scope.values()) or "all"
        return f"{scope}-{self.period}ly" if self.period != "day" else f"{scope}-daily"

    def applies_to(self, tags: Mapping[str, str]) -> bool:
        return all(tags.get(k) == v for k, v in self.scope.items())


class Budgets(_Table):
    job_usd: float | None = Field(default=None, ge=0, description="one metered step")
    run_usd: float | None = Field(default=None, ge=0, description="one DAG run / pipeline run")
    max_duration: float | None = Field(default=None, ge=0, description="one step, seconds ('2h' accepted)")

    windows: list[BudgetWindow] = Field(default_factory=list, description="spend caps over calendar periods")

    _duration = field_validator("max_duration", mode="before")(
        lambda v: parse_duration(v, field="budgets.max_duration")
    )

    @model_validator(mode="after")
    def _unique_window_names(self) -> Budgets:
        labels = [w.label for w in self.windows]
        duplicated = sorted({x for x in labels if labels.count(x) > 1})
        if duplicated:
            raise ValueError(f"budget windows must have distinct names; repeated: {', '.join(duplicated)}")
        return self


class Cluster(_Table):
    max_gpus: int | None = Field(default=None, ge=0)
    max_nodes: int | None = Field(default=None, ge=0)
    allowed_gpu_types: list[str] | None = None


class Idle(_Table):
    max_fraction: float | None = Field(default=None, ge=0, le=1)
    timeout: float | None = Field(default=None, ge=0, description="seconds ('15m' accepted)")
    threshold_pct: float = Field(default=5.0, ge=0, le=100)

    _duration = field_validator("timeout", mode="before")(lambda v: parse_duration(v, field="idle.timeout"))


class ModelCeiling(_Table):
    name: str
    max_cost_per_run_usd: float | None = Field(default=None, ge=0)
    max_cost_per_1k_inferences_usd: float | None = Field(default=None, ge=0)


class Regression(_Table):
    max_increase_pct: float | None = Field(default=None, ge=0)
    baseline: str | None = Field(default=None, description="MLflow search filter selecting the baseline runs")


class Alerts(_Table):
    """Where alerts go: webhooks that take a POSTed JSON body with a ``text`` field (Slack-compatible)."""

    webhooks: list[str] = Field(default_factory=list)
    timeout_s: float = Field(default=5.0, gt=0, le=60, allow_inf_nan=False)
    retries: int = Field(default=2, ge=0, le=10)

    @field_validator("webhooks")
    @classmethod
    def _urls(cls, urls: list[str]) -> list[str]:
        for url in urls:
            parts = urlsplit(url)
            if parts.scheme not in ("http", "https") or not parts.hostname:
                raise ValueError(f"a webhook must be an http(s) URL with a host, got {url!r}")
        return urls


class Limits(_Table):
    """The tables that may appear both at the top level (enforced) and under ``[warn]`` (reported)."""

    budgets: Budgets = Budgets()
    cluster: Cluster = Cluster()
    idle: Idle = Idle()
    models: list[ModelCeiling] = Field(default_factory=list)
    regression: Regression = Regression()


class Policy(Limits):
    """Everything ``mlcost.toml`` may say. ``warn`` holds the same tables, reported without failing."""

    warn: Limits = Limits()
    alerts: Alerts = Alerts()
    source: str = Field(default="built-in defaults", exclude=True)
    env_overrides: dict[str, str] = Field(default_factory=dict, exclude=True)

    @classmethod
    def load(cls, path: str | Path | None = None, *, env: Mapping[str, str] | None = None) -> Policy:
        """Find and parse the policy.

        Order: ``path``, else ``$MLCOST_POLICY``, else ``./mlcost.toml``, else ``[tool.mlcost]`` of
        ``./pyproject.toml``, else built-in defaults (no limits). ``MLCOST_<TABLE>__<KEY>``
        variables override single keys of whichever file was found.
        """
        env = os.environ if env is None else env
        data: dict[str, Any] = {}
        source = "built-in defaults"
        chosen = path or env.get(ENV_POLICY)
        if chosen:
            data, source = read_config_file(chosen), str(chosen)
        elif Path("mlcost.toml").is_file():
            data, source = read_config_file("mlcost.toml"), str(Path("mlcost.toml").resolve())
        elif Path("pyproject.toml").is_file():
            table = read_config_file("pyproject.toml", table=("tool", "mlcost"))
            if table:
                data, source = table, f"{Path('pyproject.toml').resolve()} [tool.mlcost]"
        overrides = _env_overrides(env)
        for dotted, (value, _name) in overrides.items():
            table, key = dotted.split(".", 1)
            data.setdefault(table, {})
            if isinstance(data[table], dict):
                data[table][key] = value
        try:
            policy = cls.model_validate(data)
        except ValidationError as e:
            raise validation_error(e, source=source) from e
        return policy.model_copy(
            update={"source": source, "env_overrides": {k: name for k, (_v, name) in overrides.items()}}
        )

    def origin(self, dotted: str) -> str:
        """Where the limit ``dotted`` (``"budgets.job_usd"``) was set, for error messages."""
        if dotted in self.env_overrides:
            return f"environment variable {self.env_overrides[dotted]}"
        return f"{dotted} in {self.source}"

    def model_ceiling(self, model: str | None) -> ModelCeiling | None:
        return next((m for m in self.models if model and m.name == model), None)


def _env_overrides(env: Mapping[str, str]) -> dict[str, tuple[Any, str]]:
    """``MLCOST_BUDGETS__JOB_USD=50`` -> ``{"budgets.job_usd": ("50", name)}``; pydantic coerces."""
    tables = {"budgets", "cluster", "idle", "regression"}
    found: dict[str, tuple[Any, str]] = {}
    for name, value in env.items():
        if not name.startswith(_ENV_PREFIX) or "__" not in name:
            continue
        table, _, key = name[len(_ENV_PREFIX) :].lower().partition("__")
        if table in tables and key:
            parsed: Any = [v.strip() for v in value.split(",")] if key == "allowed_gpu_types" else value
            found[f"{table}.{key}"] = (parsed, name)
    return found
