"""Guardrails: refuse a step before it spends (preflight) and stop it while it runs (live).

Both are pure decisions over numbers the meter already has; the meter does the stopping. Each limit
carries its origin (a keyword argument, the policy file, an environment variable) so the exception
can say who set it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from mlcost.durations import format_duration, parse_duration
from mlcost.errors import (
    BudgetExceeded,
    ConfigError,
    GuardrailBreached,
    PreflightRefused,
    ProjectedBudgetExceeded,
)
from mlcost.policy import Policy
from mlcost.pricing.cost import allocated_cost


@dataclass(frozen=True, slots=True)
class Limit:
    value: float
    origin: str


@dataclass(frozen=True, slots=True)
class StepLimits:
    """The limits in force for one step: keyword arguments over the policy file over defaults."""

    budget_usd: Limit | None
    max_duration_s: Limit | None
    idle_timeout_s: Limit | None
    idle_threshold_pct: float

    def spend_deadline_s(self, gpus: int, gpu_hour_usd: float | None) -> float:
        """Elapsed seconds from which the budget or the max duration can be breached. Spend grows
        only with time, so before this the live check has only the idle timeout to watch."""
        deadline = math.inf if self.max_duration_s is None else self.max_duration_s.value
        if self.budget_usd is not None and gpus and gpu_hour_usd:
            deadline = min(deadline, self.budget_usd.value * 3600.0 / (gpus * gpu_hour_usd))
        return deadline

    @classmethod
    def resolve(
        cls,
        step: str,
        policy: Policy,
        *,
        budget_usd: float | None = None,
        max_duration: str | float | None = None,
        idle_timeout: str | float | None = None,
    ) -> StepLimits:
        def pick(kw_name: str, kw_value: float | None, dotted: str, policy_value: float | None) -> Limit | None:
            if kw_value is not None:
                return Limit(kw_value, f"{kw_name}={kw_value:g} on step {step!r}")
            if policy_value is not None:
                return Limit(policy_value, policy.origin(dotted))
            return None

        if budget_usd is not None and (isinstance(budget_usd, bool) or budget_usd < 0):
            raise ConfigError(
                f"budget_usd must be a non-negative number of USD, got {budget_usd!r}", field="budget_usd"
            )
        return cls(
            budget_usd=pick("budget_usd", budget_usd, "budgets.job_usd", policy.budgets.job_usd),
            max_duration_s=pick(
                "max_duration",
                parse_duration(max_duration, field="max_duration"),
                "budgets.max_duration",
                policy.budgets.max_duration,
            ),
            idle_timeout_s=pick(
                "idle_timeout", parse_duration(idle_timeout, field="idle_timeout"), "idle.timeout", policy.idle.timeout
            ),
            idle_threshold_pct=policy.idle.threshold_pct,
        )


def preflight(
    step: str,
    *,
    gpus: int,
    gpu_type: str | None,
    gpu_hour_usd: float | None,
    limits: StepLimits,
    policy: Policy,
    nodes: int | None = None,
) -> None:
    """Refuse a step before it starts: more GPUs or nodes than the cluster policy allows, a GPU type
    the policy does not allow, or a projected cost (GPUs × max duration × price) over the budget."""
    cluster = policy.cluster

    def refuse(rule: str, observed: Any, limit: Any, why: str) -> PreflightRefused:
        origin = policy.origin(f"cluster.{rule}")
        return PreflightRefused(
            f"step {step!r} refused before start: {why} ({origin})",
            limit_name=rule, limit=limit, observed=observed, policy=origin, step=step,
        )

    if cluster.max_gpus is not None and gpus > cluster.max_gpus:
        raise refuse("max_gpus", gpus, cluster.max_gpus, f"it requests {gpus} GPUs, the limit is {cluster.max_gpus}")
    if cluster.max_nodes is not None and nodes is not None and nodes > cluster.max_nodes:
        raise refuse(
            "max_nodes", nodes, cluster.max_nodes, f"it requests {nodes} nodes, the limit is {cluster.max_nodes}"
        )
    if cluster.allowed_gpu_types and gpu_type is not None:
        allowed = {t.upper() for t in cluster.allowed_gpu_types}
        if gpu_type.upper() not in allowed and gpu_type.partition(":")[0].upper() not in allowed:
            raise refuse(
                "allowed_gpu_types", gpu_type, cluster.allowed_gpu_types,
                f"GPU type {gpu_type} is not allowed; allowed: {', '.join(cluster.allowed_gpu_types)}",
            )
    budget, duration = limits.budget_usd, limits.max_duration_s
    if budget is not None and duration is not None and gpu_hour_usd is not None:
        projected = allocated_cost(gpus, duration.value, gpu_hour_usd)
        if projected > budget.value:
            raise ProjectedBudgetExceeded(
                f"step {step!r} refused before start: {gpus} x {gpu_type} for up to "
                f"{format_duration(duration.value)} at ${gpu_hour_usd:.4g}/GPU-hour projects ${projected:.2f}, "
                f"over the budget of ${budget.value:.2f} ({budget.origin}; duration from {duration.origin})",
                limit_name="budget_usd",
                limit=budget.value,
                observed=projected,
                policy=budget.origin,
                step=step,
            )


def check_live(
    step: str,
    limits: StepLimits,
    *,
    elapsed_s: float,
    spent_usd: float,
    idle_for_s: float | None,
) -> GuardrailBreached | None:
    """The breach to stop the step with, or None. Called by the sampler after every sample."""
    budget = limits.budget_usd
    if budget is not None and spent_usd > budget.value:
        return BudgetExceeded(
            f"step {step!r} stopped: it spent ${spent_usd:.4f}, over its budget of ${budget.value:.4f} "
            f"({budget.origin})",
            limit_name="budget_usd",
            limit=budget.value,
            observed=spent_usd,
            policy=budget.origin,
            step=step,
        )
    duration = limits.max_duration_s
    if duration is not None and elapsed_s > duration.value:
        return GuardrailBreached(
            f"step {step!r} stopped: it ran {format_duration(elapsed_s)}, over its max duration of "
            f"{format_duration(duration.value)} ({duration.origin}); spent ${spent_usd:.4f}",
            limit_name="max_duration_s",
            limit=duration.value,
            observed=elapsed_s,
            policy=duration.origin,
            step=step,
        )
    idle = limits.idle_timeout_s
    if idle is not None and idle_for_s is not None and idle_for_s > idle.value:
        return GuardrailBreached(
            f"step {step!r} stopped: its GPUs were below {limits.idle_threshold_pct:g}% utilisation for "
            f"{format_duration(idle_for_s)}, over the idle timeout of {format_duration(idle.value)} "
            f"({idle.origin}); spent ${spent_usd:.4f}",
            limit_name="idle_timeout_s",
            limit=idle.value,
            observed=idle_for_s,
            policy=idle.origin,
            step=step,
        )
    return None
