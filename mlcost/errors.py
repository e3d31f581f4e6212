"""The one exception hierarchy of mlcost.

Vendor errors (pynvml, mlflow, pydantic) are caught where they happen and re-raised as one of these,
``from`` the original, so callers handle a small, stable set of types.
"""

from __future__ import annotations

import reprlib
from typing import Any


class MlcostError(Exception):
    """Base class of every error mlcost raises on purpose."""


class ConfigError(MlcostError, ValueError):
    """A policy file, price catalog or argument is malformed.

    The message always names the source (file or argument), the field and what is allowed, because
    the person reading it is editing that file and should not have to guess.
    """

    def __init__(self, message: str, *, source: str | None = None, field: str | None = None) -> None:
        self.source = source
        self.field = field
        self.detail = message  # without the source and field prefix
        prefix = ""
        if source:
            prefix += f"{source}: "
        if field:
            prefix += f"{field}: "
        super().__init__(prefix + message)


class UnknownGpuType(ConfigError, KeyError):
    """A GPU type that neither the built-in nor the user's price catalog knows."""

    def __init__(self, gpu_type: str, known: list[str], *, source: str | None = None) -> None:
        self.gpu_type = gpu_type
        self.known = sorted(known)
        super().__init__(
            f"unknown GPU type {gpu_type!r}; known types: {', '.join(self.known)}, and their MIG "
            "profiles as '<GPU>:<profile>' (e.g. 'H100:1g.10gb'); add it to your price catalog "
            "(MLCOST_PRICES) to price it",
            source=source,
            field="gpu_type",
        )

    def __str__(self) -> str:  # KeyError would otherwise repr() the message
        return self.args[0]


class MissingExtra(MlcostError, ImportError):
    """A feature needs an optional part of mlcost that is not installed.

    The core is only the meter; reports, charts, the demo and the adapters are extras. The message is
    the command that fixes it, so the CLI prints it and exits 2 (bad input: the environment) without a
    traceback. An ``ImportError`` too, so code that falls back on a missing import still does.
    """

    def __init__(self, extra: str, modules: list[str], *, what: str | None = None) -> None:
        self.extra = extra
        self.modules = list(modules)
        names = ", ".join(self.modules)
        super().__init__(
            f"{what or 'this'} needs the [{extra}] extra ({names} {'is' if len(self.modules) == 1 else 'are'} "
            f"not installed): pip install 'mlcost[{extra}]'",
            name=self.modules[0] if self.modules else None,
        )

    def __str__(self) -> str:
        return self.args[0]

    def __reduce__(self):
        return (_rebuild_missing_extra, (self.extra, self.modules, self.args[0]))


def _rebuild_missing_extra(extra, modules, message):
    error = MissingExtra(extra, modules)
    error.args = (message,)
    return error


class TelemetryError(MlcostError):
    """A telemetry backend failed in a way the meter turns into a `degraded` record."""


class DeviceLost(TelemetryError):
    """A device stopped answering mid-run (fell off the bus, driver reset, MIG instance destroyed)."""


class GuardrailBreached(MlcostError):
    """A guardrail stopped (or refused) a step.

    Carries what a person needs to decide what to do next: which limit, what was observed, and where
    the limit came from (a keyword argument, a policy file, an environment variable).
    """

    def __init__(
        self,
        message: str,
        *,
        limit_name: str,
        limit: Any,
        observed: Any,
        policy: str,
        step: str | None = None,
    ) -> None:
        self.limit_name = limit_name
        self.limit = limit
        self.observed = observed
        self.policy = policy
        self.step = step
        super().__init__(message)

    @property
    def spent_usd(self) -> float | None:
        """The spend at the time of the breach, when the limit is a money limit."""
        return self.observed if isinstance(self.observed, (int, float)) and "usd" in self.limit_name else None

    def __reduce__(self):  # keep the fields across pickling (Airflow XCom, multiprocessing)
        return (
            _rebuild_breach,
            (type(self), self.args[0], self.limit_name, self.limit, self.observed, self.policy, self.step),
        )


def _rebuild_breach(cls, message, limit_name, limit, observed, policy, step):
    return cls(message, limit_name=limit_name, limit=limit, observed=observed, policy=policy, step=step)


class BudgetExceeded(GuardrailBreached):
    """The step's spend passed its budget (live) or its projected cost would (preflight)."""

    @property
    def spent_usd(self) -> float:
        return float(self.observed)


class PreflightRefused(GuardrailBreached):
    """A step was refused before it started: too many GPUs/nodes, a disallowed type, or a projected
    cost over budget. No GPU time was spent."""


class ProjectedBudgetExceeded(PreflightRefused, BudgetExceeded):
    """Refused before starting: the request × max duration × price is over the budget."""


def shown(value: Any, limit: int = 80) -> str:
    """A bad value as an error message quotes it: short, and never a crash of its own.

    ``repr`` of hostile input is unsafe: an integer of over 4,300 digits raises ``ValueError``, a
    list nested 1,000 deep raises ``RecursionError``, and a YAML alias bomb expands to gigabytes.
    """
    try:
        return _ShortRepr(limit).repr(value)
    except Exception:  # the message must still be written
        return f"a {type(value).__name__}"


class _ShortRepr(reprlib.Repr):
    def __init__(self, limit: int) -> None:
        super().__init__()
        self.maxlevel, self.maxstring, self.maxother, self.maxlong = 3, limit, limit, 40
        self.maxlist = self.maxtuple = self.maxdict = self.maxset = 6

    def repr_int(self, x: int, level: int) -> str:
        if x.bit_length() > 128:
            return f"<an integer of {x.bit_length()} bits>"
        return super().repr_int(x, level)
