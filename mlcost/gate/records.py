"""The runs a gate judges: one ``RunRecord`` per metered step, from MLflow or from the ledger.

Both sources are reduced to the same flat record so every policy is evaluated by one piece of code.
A "run" of a model, for per-model ceilings and regression, is the set of steps sharing a
``run_key`` (one DAG run / pipeline run); a step without a run key is a run of its own.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, replace
from typing import Any

from mlcost import names
from mlcost.errors import ConfigError


@dataclass(frozen=True, slots=True)
class RunRecord:
    """One metered step as the gate sees it."""

    id: str  # MLflow run id, or ledger step id
    name: str  # step name
    cost_usd: float
    gpus: int = 0
    nodes: int = 1
    gpu_type: str | None = None
    idle_fraction: float | None = None
    model: str | None = None
    team: str | None = None
    run_key: str | None = None
    status: str | None = None
    source: str = "mlflow"  # "mlflow" or "ledger"
    tags: dict[str, str] = field(default_factory=dict)
    job_id: str | None = None  # one node of a job across nodes (merged into the job by merge_jobs)

    @property
    def group(self) -> str:
        """The run (DAG/pipeline run) this step belongs to; the step itself when it has no run key."""
        return self.run_key or self.id

    @property
    def label(self) -> str:
        """How the summary names this record: step name and id (a person greps for either)."""
        return f"{self.name} ({self.id[:12]})"


def merge_jobs(records: list[RunRecord]) -> list[RunRecord]:
    """One record per job across nodes: its nodes' cost and GPUs summed, idle share weighted by
    GPUs, so ``budgets.job_usd`` and ``max_gpus`` judge the job, not each node's share of it."""
    jobs: dict[str, list[RunRecord]] = {}
    out: list[RunRecord] = []
    for r in records:
        if r.job_id is None:
            out.append(r)
        else:
            if r.job_id not in jobs:
                out.append(r)  # the job's place in the order: its first node
            jobs.setdefault(r.job_id, []).append(r)
    merged = []
    for r in out:
        nodes = jobs.get(r.job_id or "") if r.job_id is not None else None
        if not nodes:
            merged.append(r)
            continue
        gpus = sum(n.gpus for n in nodes)
        idle = [(n.idle_fraction, n.gpus) for n in nodes if n.idle_fraction is not None]
        weight = sum(g for _, g in idle)
        statuses = {n.status for n in nodes}
        merged.append(
            replace(
                r,
                id=r.job_id,
                cost_usd=sum(n.cost_usd for n in nodes),
                gpus=gpus,
                nodes=max(max(n.nodes for n in nodes), len(nodes)),
                idle_fraction=sum(f * g for f, g in idle) / weight if weight else r.idle_fraction,
                status=r.status if len(statuses) == 1 else "breached" if "breached" in statuses else "failed",
            )
        )
    return merged


def _int(value: Any, default: int) -> int:
    try:
        return int(float(value))
    except (TypeError, ValueError):
        return default


# MLflow ------------------------------------------------------------------------------------------
def from_mlflow(
    experiments: list[str],
    filter_string: str | None = None,
    *,
    tracking_uri: str | None = None,
    max_results: int | None = None,
) -> list[RunRecord]:
    """Metered runs (those with a ``cost_usd`` metric) of ``experiments`` matching ``filter_string``;
    not the parent runs of DAG runs, whose ``cost_usd`` is the total of steps that are here too.

    Raises ConfigError for an unknown experiment or a filter MLflow rejects (exit code 2).
    """
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=tracking_uri)
    ids = experiment_ids(client, experiments)
    clauses = [f"metrics.{names.COST_USD} >= 0"]
    if filter_string and filter_string.strip():
        clauses.append(filter_string.strip())
    query = " and ".join(clauses)
    out: list[RunRecord] = []
    token = None
    try:
        while True:
            page = client.search_runs(ids, filter_string=query, max_results=50000, page_token=token)
            # a DAG run's parent holds its steps' total: checking it as a job would count it twice
            # a DAG run's and a job's parent hold their steps' totals: the steps are here (a job's
            # nodes are merged into one record below)
            parents = (names.KIND_DAG_RUN, names.KIND_JOB)
            out.extend(_from_run(r) for r in page if r.data.tags.get(names.TAG_KIND) not in parents)
            token = page.token
            if not token or (max_results and len(out) >= max_results):
                break
    except MlflowException as e:
        raise ConfigError(f"MLflow rejected the filter {filter_string!r}: {e.message}", field="--filter") from e
    return merge_jobs(out)


def experiment_ids(client: Any, experiments: list[str]) -> list[str]:
    ids: list[str] = []
    for name in experiments:
        exp = client.get_experiment_by_name(name)
        if exp is None:
            known = sorted(e.name for e in client.search_experiments(max_results=200))
            raise ConfigError(
                f"unknown MLflow experiment {name!r}; known: {', '.join(known) or 'none'}", field="--experiment"
            )
        ids.append(exp.experiment_id)
    return ids


def _from_run(run: Any) -> RunRecord:
    m, t = run.data.metrics, run.data.tags
    user_tags = {k[len(names.TAG_PREFIX) :]: v for k, v in t.items() if k.startswith(names.TAG_PREFIX)}
    return RunRecord(
        id=run.info.run_id,
        name=t.get(names.TAG_STEP) or run.info.run_name or run.info.run_id,
        cost_usd=float(m.get(names.COST_USD, 0.0)),
        gpus=_int(t.get("mlcost.gpus"), 0),
        nodes=_int(t.get("mlcost.nodes"), 1),
        gpu_type=t.get(names.TAG_GPU_TYPE),
        idle_fraction=m.get(names.GPU_IDLE_FRACTION),
        model=t.get(names.TAG_MODEL),
        team=t.get(names.TAG_TEAM),
        run_key=t.get("mlcost.run_key"),
        status=t.get(names.TAG_STATUS),
        source="mlflow",
        tags=user_tags,
        job_id=t.get(names.TAG_JOB_ID),
    )


# Ledger ------------------------------------------------------------------------------------------
_CLAUSE = re.compile(
    r"""^\s*(?P<kind>tags|attributes|attribute|metrics|params)\.(?P<key>`[^`]+`|"[^"]+"|[\w.]+)\s*
    (?P<op>=|!=)\s*'(?P<value>[^']*)'\s*$""",
    re.VERBOSE | re.IGNORECASE,
)


def parse_ledger_filter(filter_string: str | None) -> list[tuple[str, str, str]]:
    """The subset of MLflow's filter language the ledger understands: ``tags.X = 'v'`` and
    ``tags.X != 'v'`` clauses joined by ``and``. ``tags.`mlcost.branch``` and ``tags.branch``
    both mean the step's ``branch`` tag; ``attributes.status`` is the step status."""
    if not filter_string or not filter_string.strip():
        return []
    out = []
    for part in re.split(r"\s+and\s+", filter_string.strip(), flags=re.IGNORECASE):
        match = _CLAUSE.match(part)
        if not match or match["kind"].lower() in ("metrics", "params"):
            raise ConfigError(
                f"the ledger understands only tags.<key> = 'value' / != 'value' clauses joined by AND, "
                f"got {part.strip()!r}",
                field="--filter",
            )
        key = match["key"].strip('`"')
        if match["kind"].lower().startswith("attribute"):
            key = "@" + key
        elif key.startswith(names.TAG_PREFIX):
            key = key[len(names.TAG_PREFIX) :]
        out.append((key, match["op"], match["value"]))
    return out


def _matches(record: dict[str, Any], clauses: list[tuple[str, str, str]]) -> bool:
    for key, op, value in clauses:
        if key.startswith("@"):
            actual = record.get(key[1:])
        else:
            actual = (record.get("tags") or {}).get(key)
            if actual is None:
                actual = (record.get("context") or {}).get(key)
            if actual is None and key in ("step", "step_id", "run_key", "status", "gpu_type", "pricing"):
                actual = record.get({"step": "name"}.get(key, key))
        if (actual == value) != (op == "="):
            return False
    return True


def from_ledger(
    path: str | None = None,
    filter_string: str | None = None,
    *,
    since: str | None = None,
    until: str | None = None,
) -> list[RunRecord]:
    """Counted steps of the ledger (sealed, and ``lost`` ones: money spent is spent), optionally
    started in [since, until) (parsed as every ``--since/--until``: a bad value is a ConfigError),
    matching ``filter_string``."""
    from mlcost.ledger.queries import reading, step_records
    from mlcost.period import Period

    period = Period.parse(since, until)
    clauses = parse_ledger_filter(filter_string)
    with reading(path) as conn:
        found = list(step_records(conn, period))
    out = []
    for rec in found:
        if clauses and not _matches(rec, clauses):
            continue
        tags, context = rec.get("tags") or {}, rec.get("context") or {}
        out.append(
            RunRecord(
                id=rec["step_id"],
                name=rec["name"],
                cost_usd=float(rec.get("total_usd") or 0.0),
                gpus=int(rec.get("gpus") or 0),
                nodes=_int(context.get("nodes", tags.get("nodes")), 1),
                gpu_type=rec.get("gpu_type"),
                idle_fraction=rec.get("idle_fraction"),
                model=tags.get("model"),
                team=tags.get("team"),
                run_key=rec.get("run_key"),
                status=rec.get("status"),
                source="ledger",
                tags=dict(tags),
                job_id=rec.get("job_id"),
            )
        )
    return merge_jobs(out)
