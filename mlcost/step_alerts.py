"""What a step alerts on: its windows' thresholds, a guardrail that stopped or refused it, and a
cost spike against its own history.

Pure decisions (which alerts, with which de-duplication keys) over figures the meter already has;
:mod:`mlcost.alerts` claims and delivers them. Keys make each alert once-only across the fleet: a
window's threshold once per period, a step's stop, refusal or spike once per step.
"""

from __future__ import annotations

import logging
import statistics
from collections.abc import Iterable, Sequence
from datetime import datetime, timezone
from typing import Any

from mlcost.alerts import KIND_GUARDRAIL, KIND_PREFLIGHT, KIND_SPIKE, KIND_WINDOW_SPENT, KIND_WINDOW_WARN, Alert
from mlcost.policy import Policy
from mlcost.robust import ANOMALY_Z, modified_z
from mlcost.step import STATUS_BREACHED, STATUS_SUCCEEDED, Spike, StepCost
from mlcost.windows import WindowStatus, period_key, window_status, windows_for

log = logging.getLogger(__name__)

SPIKE_MIN_RATIO = 1.5
"""A spike is also at least this many times its history's median: the modified z-score alone
flags a 6% rise on a step whose cost never varies, which is noise to a person paged for it."""


def find_spike(step: StepCost, history: Sequence[tuple[float, float]]) -> Spike | None:
    """The step's cost (else GPU-hours) when it is far above its own earlier runs, or None."""
    for index, metric, value in ((0, "total_usd", step.total_usd), (1, "gpu_hours", step.gpu_hours)):
        values = [h[index] for h in history]
        z = modified_z(value, values)
        if z is None:
            return None  # too little history to know what is usual
        median = statistics.median(values)
        if z > ANOMALY_Z and value >= SPIKE_MIN_RATIO * median:
            return Spike(metric=metric, value=value, median=median, z=min(z, 1e9), history=len(values))
    return None


def window_alerts(statuses: Iterable[WindowStatus]) -> list[Alert]:
    """One alert per threshold crossed and one when the window is spent, once per period."""
    out = []
    for st in statuses:
        period = period_key(st.window.period, st.now)
        figures = st.to_json()
        for pct in st.crossed_pct:
            out.append(
                Alert(
                    KIND_WINDOW_WARN,
                    f"window:{st.name}:{pct:g}:{period}",
                    f":warning: mlcost budget window {st.name!r} passed {pct:g}%: ${st.spent_usd:.2f} of "
                    f"${st.limit_usd:.2f} this {st.window.period} (forecast ${st.forecast_usd:.2f})",
                    {"window": figures, "threshold_pct": pct},
                )
            )
        if st.spent_usd >= st.limit_usd:
            out.append(
                Alert(
                    KIND_WINDOW_SPENT,
                    f"window:{st.name}:limit:{period}",
                    f":octagonal_sign: mlcost budget window {st.name!r} is spent: ${st.spent_usd:.2f} of "
                    f"${st.limit_usd:.2f} this {st.window.period}; new steps in its scope are refused",
                    {"window": figures},
                )
            )
    return out


def breach_alert(step: StepCost, breach: Any, *, refused: bool) -> Alert:
    kind = KIND_PREFLIGHT if refused else KIND_GUARDRAIL
    verb = "refused" if refused else "stopped"
    return Alert(
        kind,
        f"{kind}:{step.step_id}",
        f":no_entry: mlcost {verb} step {step.name!r}: {breach}",
        _step_fields(step) | {"limit": breach.limit_name, "limit_value": breach.limit, "policy": breach.policy},
    )


def spike_alert(step: StepCost) -> Alert:
    spike = step.spike
    assert spike is not None
    unit = "$" if spike.metric == "total_usd" else ""
    what = "cost" if spike.metric == "total_usd" else "GPU-hours"
    return Alert(
        KIND_SPIKE,
        f"spike:{step.step_id}",
        f":chart_with_upwards_trend: mlcost: step {step.name!r} {what} {unit}{spike.value:.4g} is "
        f"{spike.value / spike.median if spike.median else float('inf'):.1f}x its usual {unit}{spike.median:.4g} "
        f"(z={spike.z:.1f} over its last {spike.history} runs)",
        _step_fields(step) | {"spike": spike.model_dump()},
    )


def _step_fields(step: StepCost) -> dict[str, Any]:
    return {
        "step": step.name,
        "step_id": step.step_id,
        "tags": step.tags,
        "run_key": step.run_key,
        "job_id": step.job_id,
        "total_usd": step.total_usd,
    }


def with_spike(step: StepCost, ledger: Any) -> StepCost:
    """``step`` with its spike recorded when its cost is far above its own history (same name and
    tags, earlier succeeded runs, from the ledger every machine shares)."""
    if step.status != STATUS_SUCCEEDED or step.total_usd <= 0:
        return step
    from mlcost.ledger.runtime import step_history

    try:
        history = ledger.on_shared(
            lambda store: step_history(
                store, step.name, step.tags, before=step.started_at, exclude_step_id=step.step_id
            )
        )
    except Exception as e:
        log.debug("mlcost: no history for step %r: %s", step.name, e)
        return step
    spike = find_spike(step, history)
    if spike is None:
        return step
    log.warning("mlcost: step %r cost spike: %s %.4g against a usual %.4g (z=%.1f)",
                step.name, spike.metric, spike.value, spike.median, spike.z)  # fmt: skip
    return step.model_copy(update={"spike": spike})


def send_step_alerts(step: StepCost, breach: Any, *, refused: bool, policy: Policy, ledger: Any) -> None:
    """Send what ``step`` has to say, off its path: a stop or refusal, a spike, and the thresholds
    its windows crossed. Nothing at all without webhooks in the policy."""
    from mlcost import alerts

    hooks = policy.alerts
    if not hooks.webhooks:
        return
    found = []
    if breach is not None and step.status == STATUS_BREACHED:
        found.append(breach_alert(step, breach, refused=refused))
    if step.spike is not None:
        found.append(spike_alert(step))
    now = datetime.now(timezone.utc)
    try:
        statuses = [
            ledger.on_shared(lambda store, w=w: window_status(store, w, now)) for w in windows_for(policy, step.tags)
        ]
    except Exception as e:
        log.warning("mlcost: step %r: budget windows not read for alerts: %s", step.name, e)
        statuses = []
    found += window_alerts(statuses)
    for alert in found:
        alerts.send(alert, ledger, hooks.webhooks, timeout_s=hooks.timeout_s, retries=hooks.retries)
