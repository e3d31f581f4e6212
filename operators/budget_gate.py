"""``BudgetGateOperator``: the last task of a DAG run, failing it when the run spent too much.

Each metered task enforces its own step budget; only a task that sees the whole run can enforce
a DAG-level budget (``budgets.run_usd``) or a per-model ceiling (``models[].max_cost_per_run_usd``).
It sums what the run's steps recorded (the local ledger, or MLflow when the workers do not share a
disk) and fails without retry, listing the costliest tasks so the reader knows where to look.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from mlcost.operators.metered import run_key_for
from mlcost.operators.version_compat import AirflowFailException, BaseOperator, Context

log = logging.getLogger(__name__)

SOURCES = ("ledger", "mlflow")


@dataclass
class RunSpend:
    """What one DAG run spent, from whichever source was read."""

    run_key: str
    total_usd: float = 0.0
    idle_usd: float = 0.0
    by_task: dict[str, float] = field(default_factory=dict)
    by_model: dict[str, float] = field(default_factory=dict)
    steps: int = 0

    def costliest(self, n: int) -> list[tuple[str, float]]:
        return sorted(self.by_task.items(), key=lambda kv: (-kv[1], kv[0]))[:n]

    def as_dict(self) -> dict[str, Any]:
        return {
            "run_key": self.run_key,
            "total_usd": round(self.total_usd, 6),
            "idle_usd": round(self.idle_usd, 6),
            "steps": self.steps,
            "by_task": {k: round(v, 6) for k, v in self.by_task.items()},
            "by_model": {k: round(v, 6) for k, v in self.by_model.items()},
        }


def spend_from_ledger(run_key: str, ledger: Any = None) -> RunSpend:
    """Sum the run's metered steps in the ledger (a ``Ledger``, a path or a URL: the shared one
    when the workers share one), in the database; every try counts, a lost or running one too
    (money spent is spent)."""
    from mlcost.ledger.queries import reading, run_spend

    spend = RunSpend(run_key)
    by_task: dict[str, float] = defaultdict(float)
    by_model: dict[str, float] = defaultdict(float)
    with reading(ledger) as conn:
        rows = run_spend(conn, run_key)
    for r in rows:
        spend.total_usd += r["total_usd"]
        spend.idle_usd += r["idle_usd"]
        spend.steps += int(r["steps"])
        by_task[r["task"]] += r["total_usd"]
        if r["model"]:
            by_model[r["model"]] += r["total_usd"]
    spend.by_task, spend.by_model = dict(by_task), dict(by_model)
    return spend


def spend_from_mlflow(run_key: str, tracking_uri: str | None, experiment: str | None) -> RunSpend:
    """Sum the step runs tagged ``mlcost.run_key`` in MLflow (for workers without a shared disk)."""
    from mlcost.operators.hooks.mlflow_runs import TAG_RUN_KEY, MlflowRunsHook

    from mlcost import names
    from mlcost.sinks.mlflow_sink import tag_equals

    hook = MlflowRunsHook(tracking_uri=tracking_uri)
    client = hook.get_conn()
    exp = client.get_experiment_by_name(hook.experiment_name(experiment))
    spend = RunSpend(run_key)
    if exp is None:
        return spend
    runs = client.search_runs([exp.experiment_id], filter_string=tag_equals(TAG_RUN_KEY, run_key), max_results=5000)
    by_task: dict[str, float] = defaultdict(float)
    by_model: dict[str, float] = defaultdict(float)
    for run in runs:
        if run.data.tags.get(names.TAG_KIND) or names.COST_USD not in run.data.metrics:
            continue
        cost = float(run.data.metrics[names.COST_USD])
        spend.total_usd += cost
        spend.idle_usd += float(run.data.metrics.get(names.IDLE_COST_USD, 0.0))
        spend.steps += 1
        by_task[run.data.tags.get(names.TAG_STEP, run.info.run_name or "?")] += cost
        if run.data.tags.get(names.TAG_MODEL):
            by_model[run.data.tags[names.TAG_MODEL]] += cost
    spend.by_task, spend.by_model = dict(by_task), dict(by_model)
    return spend


class BudgetGateOperator(BaseOperator):
    """Fail the DAG run when its recorded cost breaks the run budget or a per-model ceiling.

    Put it downstream of the metered tasks (``trigger_rule="all_done"`` also gates runs where a
    task failed). Returns the run's spend as XCom.

    :param budget_usd: the run budget; default ``budgets.run_usd`` of the policy (templated)
    :param model_ceilings: also check ``[[models]] max_cost_per_run_usd`` of the policy
    :param source: ``"ledger"`` (default; the shared one when ``MLCOST_LEDGER`` is a URL) or ``"mlflow"``
    :param policy: a policy file; default ``$MLCOST_POLICY`` / ``./mlcost.toml``
    :param ledger: a ledger path or URL; default ``$MLCOST_LEDGER``
    :param top: how many of the costliest tasks the failure message lists
    :param mlflow_tracking_uri: with ``source="mlflow"``: the tracking URI (default: as the hook finds it)
    :param experiment: with ``source="mlflow"``: the experiment of the step runs
    """

    template_fields: Sequence[str] = ("budget_usd",)
    ui_color = "#fbe9e7"

    def __init__(
        self,
        *,
        budget_usd: float | None = None,
        model_ceilings: bool = True,
        source: str = "ledger",
        policy: str | None = None,
        ledger: str | None = None,
        top: int = 5,
        mlflow_tracking_uri: str | None = None,
        experiment: str | None = None,
        **kwargs: Any,
    ) -> None:
        if source not in SOURCES:
            raise ValueError(f"source must be one of {', '.join(SOURCES)}, got {source!r}")
        super().__init__(**kwargs)
        self.budget_usd, self.model_ceilings, self.source = budget_usd, model_ceilings, source
        self.policy, self.ledger, self.top = policy, ledger, top
        self.mlflow_tracking_uri, self.experiment = mlflow_tracking_uri, experiment

    def execute(self, context: Context) -> dict[str, Any]:
        from mlcost.policy import Policy

        ti = context["ti"]
        run_key = run_key_for(ti.dag_id, ti.run_id)
        policy = Policy.load(self.policy)
        if self.source == "mlflow":
            spend = spend_from_mlflow(run_key, self.mlflow_tracking_uri, self.experiment)
        else:
            spend = spend_from_ledger(run_key, self.ledger)
        log.info(
            "mlcost: DAG run %s spent $%.4f over %d steps (idle $%.4f)",
            run_key,
            spend.total_usd,
            spend.steps,
            spend.idle_usd,
        )
        costliest = ", ".join(f"{task} ${usd:.4f}" for task, usd in spend.costliest(self.top)) or "none"
        breaches = self._breaches(spend, policy)
        for warning in self._warnings(spend, policy):
            log.warning("mlcost: %s", warning)
        result = {**spend.as_dict(), "breaches": breaches}
        self._close_mlflow_parent(run_key, failed=bool(breaches))
        if breaches:
            raise AirflowFailException(
                f"mlcost budget gate: DAG run {ti.dag_id}/{ti.run_id} "
                + "; ".join(breaches)
                + f". Costliest tasks: {costliest}"
            )
        log.info("mlcost: within budget; costliest tasks: %s", costliest)
        return result

    def _close_mlflow_parent(self, run_key: str, *, failed: bool) -> None:
        """The gate is the DAG run's last word: sum the task runs onto the DAG run's MLflow run and end
        it (FINISHED, or FAILED when the gate fails). Best effort: MLflow never decides the gate."""
        from mlcost.operators.hooks.mlflow_runs import MlflowRunsHook, bounded

        hook = MlflowRunsHook(tracking_uri=self.mlflow_tracking_uri)

        def close() -> None:
            if not hook.tracking_uri():
                return
            parent_id = hook.find_dag_run_parent(run_key, experiment=self.experiment)
            if parent_id is None:
                return
            hook.update_parent_totals(parent_id, run_key, final_status="FAILED" if failed else "FINISHED",
                                      tags={"mlcost.gate": "failed" if failed else "passed"})  # fmt: skip

        bounded(close, "closing the DAG run's MLflow run")

    def _breaches(self, spend: RunSpend, policy: Any) -> list[str]:
        found = []
        if self.budget_usd not in (None, ""):
            budget, origin = float(self.budget_usd), f"budget_usd={float(self.budget_usd):g} on task {self.task_id!r}"
        elif policy.budgets.run_usd is not None:
            budget, origin = policy.budgets.run_usd, policy.origin("budgets.run_usd")
        else:
            budget, origin = None, ""
        if budget is not None and spend.total_usd > budget:
            found.append(f"spent ${spend.total_usd:.4f}, over the run budget ${budget:.4f} ({origin})")
        if self.model_ceilings:
            for ceiling in policy.models:
                limit = ceiling.max_cost_per_run_usd
                spent = spend.by_model.get(ceiling.name, 0.0)
                if limit is not None and spent > limit:
                    where = f"models[name={ceiling.name}].max_cost_per_run_usd in {policy.source}"
                    found.append(f"model {ceiling.name!r} spent ${spent:.4f}, over its ceiling ${limit:.4f} ({where})")
        return found

    @staticmethod
    def _warnings(spend: RunSpend, policy: Any) -> list[str]:
        warn = policy.warn.budgets.run_usd
        if warn is not None and spend.total_usd > warn:
            return [f"run spent ${spend.total_usd:.4f}, over the warning level ${warn:.4f} (warn.budgets.run_usd)"]
        return []
