"""The live guardrails of a running step, in one place: its budget, max duration and idle timeout,
its job's budget across nodes, and the budget windows that stop running steps.

The meter calls :meth:`LiveChecks.check` after every sample and stops the step on the breach it
returns. Everything here is a decision over numbers: the step's own figures from the sampler, and
for a job or a window, the rows other machines wrote to the shared ledger.

**A job's budget holds for the job.** Allocation is deterministic (GPUs × time × unit price), so a
node computes the whole job's spend at any instant from the other nodes' rows (their start, GPUs
and price; their last checkpoint once they are lost, their total once sealed) without asking them
anything. The rows are re-read every sample until every node's row is in sight (within the first
minute), then every :data:`PEER_REFRESH_S`. Without a shared ledger no peer is ever seen, and each node holds
its share of the budget: ``budget × its GPUs / the job's GPUs``.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from typing import Any

from mlcost.errors import BudgetExceeded, GuardrailBreached
from mlcost.guardrails import StepLimits, check_live
from mlcost.jobs import JobIdentity
from mlcost.policy import BudgetWindow, Policy

log = logging.getLogger(__name__)

PEER_STARTUP_S = 60.0  # until every node is seen (at most this long), peers are re-read after every sample
PEER_REFRESH_S = 10.0  # then this often (a node restarted by its launcher appears within it)
WINDOW_REFRESH_S = 10.0  # a stop_running window is re-read this often


class LiveChecks:
    """What stops a running step. ``read(work)`` runs ``work(store)`` on the ledger every machine
    shares, bounded in time (:meth:`mlcost.ledger.Ledger.read_shared`)."""

    def __init__(
        self,
        step: str,
        limits: StepLimits,
        *,
        job: JobIdentity,
        node_gpus: int,
        job_gpus: int,
        policy: Policy,
        tags: dict[str, str],
        read: Callable[[Callable[[Any], Any]], Any],
    ) -> None:
        self.step, self.job, self.policy, self.tags, self._read = step, job, policy, tags, read
        self.node_gpus, self.job_gpus = node_gpus, job_gpus
        self.job_budget = limits.budget_usd if job.is_multi_node else None
        # a job's budget is the job's: the step's own check runs without it
        self.limits = dataclasses.replace(limits, budget_usd=None) if self.job_budget else limits
        self.stopping_windows = [w for w in policy.budgets.windows if w.stop_running and w.applies_to(tags)]
        self._step_id = ""
        self._started: datetime | None = None
        self._deadline_s = math.inf
        self._peers: list[Any] = []
        self._peers_read_at = -math.inf
        self._windows_read_at = -math.inf
        self._read_failed = False

    def start(self, *, step_id: str, started: datetime, gpu_hour_usd: float | None) -> None:
        """The step starts now: from here its spend grows with time."""
        self._step_id, self._started = step_id, started
        self._deadline_s = self.limits.spend_deadline_s(self.node_gpus, gpu_hour_usd)
        if self.job_budget is not None or self.stopping_windows:
            self._deadline_s = 0.0  # other machines' spend counts: every sample is checked

    def check(self, *, elapsed_s: float, spent_usd: float, idle_for_s: float | None) -> GuardrailBreached | None:
        idle = self.limits.idle_timeout_s
        if elapsed_s < self._deadline_s and not (idle and idle_for_s is not None and idle_for_s > idle.value):
            return None
        breach = check_live(self.step, self.limits, elapsed_s=elapsed_s, spent_usd=spent_usd, idle_for_s=idle_for_s)
        if breach is None and self.job_budget is not None:
            breach = self._check_job(elapsed_s, spent_usd)
        if breach is None and self.stopping_windows and elapsed_s - self._windows_read_at >= WINDOW_REFRESH_S:
            self._windows_read_at = elapsed_s
            breach = self._check_windows(spent_usd)
        return breach

    # the job ----------------------------------------------------------------------------------
    def _check_job(self, elapsed_s: float, spent_usd: float) -> GuardrailBreached | None:
        assert self.job_budget is not None and self._started is not None
        # every sample only while nodes may still be joining: once every node's row is in sight, the
        # job's spend follows from those rows alone until a periodic re-read (a restarted node)
        starting = elapsed_s < PEER_STARTUP_S and len(self._peers) < self.job.nodes - 1
        every = 0.0 if starting else PEER_REFRESH_S
        if elapsed_s - self._peers_read_at >= every:
            self._peers_read_at = elapsed_s
            self._peers = self._try_read(self._read_peers, self._peers)
        budget = self.job_budget
        now = self._started + timedelta(seconds=elapsed_s)
        if self._peers:
            job_spent = spent_usd + sum(p.allocated_usd(now) for p in self._peers)
            if job_spent > budget.value:
                return self._job_breach(job_spent, f"across {1 + len(self._peers)} node rows")
            return None
        share = budget.value * self.node_gpus / self.job_gpus if self.job_gpus else budget.value
        if spent_usd > share:
            # no other node in sight (no shared ledger): this node holds its share of the budget
            return self._job_breach(spent_usd, f"this node's share ${share:.4f} of it, no other node in the ledger")
        return None

    def _read_peers(self, store: Any) -> list[Any]:
        from mlcost.ledger.runtime import job_peers

        assert self.job.job_id is not None
        return job_peers(store, self.job.job_id, exclude_step_id=self._step_id)

    def _job_breach(self, spent: float, how: str) -> BudgetExceeded:
        budget = self.job_budget
        assert budget is not None
        return BudgetExceeded(
            f"step {self.step!r} stopped on node {self.job.node_rank} of {self.job.nodes}: job "
            f"{self.job.job_id!r} spent ${spent:.4f}, over the job budget of ${budget.value:.4f} "
            f"({budget.origin}; {how})",
            limit_name="job_budget_usd",
            limit=budget.value,
            observed=spent,
            policy=budget.origin,
            step=self.step,
        )

    # windows ----------------------------------------------------------------------------------
    def _check_windows(self, spent_usd: float) -> GuardrailBreached | None:
        from mlcost.windows import window_status

        now = datetime.now(timezone.utc)
        for window in self.stopping_windows:
            status = self._try_read(lambda store, w=window: window_status(store, w, now), None)
            if status is not None and status.spent_usd >= window.usd:
                return window_breach(self.step, status, self.policy, stopped=True)
        return None

    def _try_read(self, work: Callable[[Any], Any], default: Any) -> Any:
        try:
            return self._read(work)
        except Exception as e:  # a ledger that cannot be read leaves the step's own checks in force
            if not self._read_failed:
                self._read_failed = True
                log.warning("mlcost: step %r: cannot read the shared ledger for job/window limits: %s", self.step, e)
            return default


def window_breach(
    step: str, status: Any, policy: Policy, *, stopped: bool, projected_usd: float | None = None
) -> GuardrailBreached:
    """The exception for a spent window (or one ``projected_usd`` more would overspend): names the
    window, its spend, its limit and the policy file."""
    from mlcost.errors import PreflightRefused

    window: BudgetWindow = status.window
    scope = ", ".join(f"{k}={v}" for k, v in window.scope.items()) or "everyone"
    origin = f"budgets.windows {window.label!r} in {policy.source}"
    what = "stopped" if stopped else "refused before start"
    message = (
        f"step {step!r} {what}: budget window {window.label!r} ({scope}, {window.period} from "
        f"{status.start:%Y-%m-%d}) has spent ${status.spent_usd:.4f} of its ${window.usd:.2f} ({origin})"
    )
    observed = status.spent_usd
    if projected_usd is not None:
        message += f"; this step projects ${projected_usd:.4f} more, which would overspend it"
        observed += projected_usd
    cls = GuardrailBreached if stopped else PreflightRefused
    return cls(message, limit_name="budget_window", limit=window.usd, observed=observed, policy=origin,
               step=step)  # fmt: skip
