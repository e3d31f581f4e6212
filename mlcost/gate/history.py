"""How long a pipeline's steps really took: past runs, for ``mlcost gate --pipeline``'s projection.

Without history a compiled pipeline is priced as if every GPU task ran for ``budgets.max_duration``
(a worst case). :class:`StepHistory` is the ``history`` function of
:func:`mlcost.components.inspect.inspect_pipeline`: step name -> median seconds of the step's
recent past runs, or ``None``. Two sources, used together:

- the ledger: sealed steps of ``status = 'succeeded'`` written by a meter (``source = 'meter'``;
  an un-metered Airflow task's listener record times the whole task, not the metered body);
- MLflow: runs tagged ``mlcost.step = <name>`` and ``mlcost.status = 'succeeded'``, their
  ``duration_s`` metric (else end − start time of the run); a run whose ``mlcost.source`` tag is not
  ``meter`` (a listener record replayed by ``mlcost sync``) is left out. Runs logged before that tag
  existed have none and count.

A metered component's tags narrow its history to the runs carrying the same team, project, model
and workload (a step name is not unique in a shared ledger or tracking server: every team has a
``train``); a component without tags matches by name alone.

A step that reached both (the ledger writes first, MLflow after) is counted once, by its step id
(the ``mlcost.step_id`` tag). Failed, breached (stopped or refused by a guardrail: its duration is
the guardrail's, not the work's), killed and still-running steps never count. The median is over the
``window`` most recent runs of the name, so a step that got faster or slower is projected as it is now.

Which name is looked up (the rule, implemented in ``inspect``): a ``metered_component`` task is
looked up by its meter's step name, which the compiled spec holds in the component's generated
``run_metered(body, {'name': ...})`` call — the Python function's name. kfp names the *task* after
the component with dashes and a suffix for repeats (``prepare_data`` -> task ``prepare-data``;
a second ``train`` -> ``train-2``; ``set_display_name`` changes only ``taskInfo``), so the task name
is not the step name. Any other task (a plain ``@dsl.component`` whose body calls ``meter()``) is
looked up by its task name, then by that name with dashes as underscores (the function's name);
a ``-2`` suffix is never stripped, because ``train-2`` may as well be a function ``train_2``: no
history (a worst-case projection) is better than another step's.
"""

from __future__ import annotations

import os
import statistics
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from mlcost import names
from mlcost.errors import ConfigError
from mlcost.step import STATUS_SUCCEEDED

DEFAULT_WINDOW = 20  # recent succeeded runs per step name that the median is taken over
_METERED_SOURCE = "meter"  # StepCost.source of a metered step (vs "listener")


@dataclass(frozen=True, slots=True)
class PastRun:
    """One succeeded past run of a step."""

    step_id: str
    duration_s: float
    started: float  # epoch seconds, to order runs of both sources together
    source: str  # "ledger" or "mlflow"


@dataclass(frozen=True, slots=True)
class Estimate:
    """The median duration of a step's recent succeeded runs, and what it rests on."""

    step: str
    median_s: float
    runs: int
    by_source: dict[str, int] = field(default_factory=dict)
    tags: dict[str, str] = field(default_factory=dict)  # what the runs were narrowed to

    def describe(self) -> str:
        where = ", ".join(f"{src} {n}" for src, n in sorted(self.by_source.items()))
        tagged = f" tagged {', '.join(f'{k}={v}' for k, v in sorted(self.tags.items()))}" if self.tags else ""
        return f"median of {self.runs} succeeded run{'s' * (self.runs != 1)} of step {self.step}{tagged} ({where})"


def narrowing_tags(tags: Mapping[str, str] | None) -> dict[str, str]:
    """The tags of a component that its past runs must share: the chargeback keys (team, project,
    model, workload). A step name alone is not unique in a shared ledger or tracking server: every
    team has a ``train``."""
    return {k: v for k, v in (tags or {}).items() if k in names.USER_TAG_KEYS and "'" not in v}


def lookup_names(name: str) -> list[str]:
    """The names a task's history is looked up by, first match wins (see the module's rule)."""
    out = [name]
    if "-" in name and name.replace("-", "_") not in out:
        out.append(name.replace("-", "_"))
    return out


def _epoch(iso: str | None) -> float:
    if not iso:
        return 0.0
    try:
        return datetime.fromisoformat(iso).timestamp()
    except ValueError:
        return 0.0


class LedgerHistory:
    """Succeeded metered steps of the ledger at ``path`` (a path or URL), read through the query
    layer: one indexed query per step name (the ledger indexes name, started_at)."""

    label = "ledger"

    def __init__(self, path: str | os.PathLike[str] | None = None) -> None:
        from mlcost.ledger.book import open_ledger

        self.ledger = open_ledger(path)  # read-only, checked: ConfigError naming --ledger
        self.where = f"ledger {self.ledger.where}"

    def runs(
        self, step_names: Iterable[str], window: int, tags: Mapping[str, str] | None = None
    ) -> dict[str, list[PastRun]]:
        from mlcost.ledger.queries import reading, succeeded_runs

        wanted = sorted(set(step_names))
        if not wanted:
            return {}
        with reading(self.ledger) as conn:
            rows = succeeded_runs(conn, wanted, window, narrowing_tags(tags), source=_METERED_SOURCE)
        out: dict[str, list[PastRun]] = {}
        for r in rows:
            out.setdefault(r["name"], []).append(
                PastRun(r["step_id"], float(r["duration_s"]), _epoch(r["started_at"]), self.label)
            )
        return out


class MlflowHistory:
    """Succeeded runs logged by the meter to MLflow ``experiments`` (names), ``window`` per step name."""

    label = "MLflow"

    def __init__(self, experiments: list[str], *, tracking_uri: str | None = None) -> None:
        from mlflow.tracking import MlflowClient

        from mlcost.gate.records import experiment_ids

        self.client = MlflowClient(tracking_uri=tracking_uri)
        self.experiment_ids = experiment_ids(self.client, experiments)  # unknown name: ConfigError
        self.where = f"MLflow experiment{'s' * (len(experiments) > 1)} {', '.join(experiments)}"

    @classmethod
    def default_experiment(cls, *, tracking_uri: str | None = None) -> MlflowHistory | None:
        """The experiment a meter logs to when none is named (``$MLFLOW_EXPERIMENT_NAME``, else
        ``mlcost``); ``None`` when the tracking server has no such experiment."""
        from mlflow.exceptions import MlflowException
        from mlflow.tracking import MlflowClient

        from mlcost.sinks.mlflow_sink import DEFAULT_EXPERIMENT

        name = os.environ.get("MLFLOW_EXPERIMENT_NAME") or DEFAULT_EXPERIMENT
        try:
            found = MlflowClient(tracking_uri=tracking_uri).get_experiment_by_name(name)
        except MlflowException as e:
            raise ConfigError(
                f"MLflow could not look up experiment {name!r}: {e.message}", field="--tracking-uri"
            ) from e
        if found is None:
            return None
        return cls([name], tracking_uri=tracking_uri)

    def runs(
        self, step_names: Iterable[str], window: int, tags: Mapping[str, str] | None = None
    ) -> dict[str, list[PastRun]]:
        from mlflow.exceptions import MlflowException

        tagged = "".join(
            f" and tags.`{names.TAG_PREFIX}{key}` = '{value}'" for key, value in narrowing_tags(tags).items()
        )
        out: dict[str, list[PastRun]] = {}
        for step in sorted(set(step_names)):
            if "'" in step:  # not expressible in a filter string; a KFP or Python name never has one
                continue
            query = (
                f"tags.`{names.TAG_STEP}` = '{step}' and tags.`{names.TAG_STATUS}` = '{STATUS_SUCCEEDED}'{tagged}"
            )
            try:
                found = self.client.search_runs(
                    self.experiment_ids,
                    filter_string=query,
                    max_results=window,
                    order_by=["attributes.start_time DESC"],
                )
            except MlflowException as e:
                raise ConfigError(f"MLflow could not search past runs of step {step!r}: {e.message}") from e
            runs = [r for r in (self._past(run) for run in found) if r is not None]
            if runs:
                out[step] = runs
        return out

    def _past(self, run: Any) -> PastRun | None:
        if run.data.tags.get(names.TAG_SOURCE, _METERED_SOURCE) != _METERED_SOURCE:
            return None
        duration = run.data.metrics.get(names.DURATION_S)
        start, end = run.info.start_time, run.info.end_time
        if duration is None and start and end:
            duration = (end - start) / 1000.0
        if duration is None:
            return None
        step_id = run.data.tags.get(names.TAG_STEP_ID) or run.info.run_id
        return PastRun(step_id, float(duration), (start or 0) / 1000.0, self.label)


class StepHistory:
    """``(name, tags) -> median seconds`` over the given sources; the ``history`` of
    ``inspect_pipeline``, which passes each task's step name and its component's tags. Results are
    cached per name and tags; the ledger finds a name by its index, so one query per step is cheap.
    """

    def __init__(self, sources: list[LedgerHistory | MlflowHistory], *, window: int = DEFAULT_WINDOW) -> None:
        self.sources = sources
        self.window = window
        self._runs: dict[tuple[str, tuple[tuple[str, str], ...]], list[PastRun]] = {}

    @property
    def where(self) -> str:
        """The sources, as the report names them."""
        return " and ".join(s.where for s in self.sources) or "no source"

    def _runs_of(self, step: str, tags: dict[str, str]) -> list[PastRun]:
        key = (step, tuple(sorted(tags.items())))
        if key not in self._runs:
            by_id: dict[str, PastRun] = {}
            for source in self.sources:
                for r in source.runs([step], self.window, tags).get(step, []):
                    by_id.setdefault(r.step_id, r)  # a step in both the ledger and MLflow counts once
            self._runs[key] = sorted(by_id.values(), key=lambda r: -r.started)[: self.window]
        return self._runs[key]

    def estimate(self, name: str, tags: Mapping[str, str] | None = None) -> Estimate | None:
        """The median of the first of :func:`lookup_names` with any succeeded run carrying the
        component's ``tags`` (see :func:`narrowing_tags`), or ``None``."""
        narrowing = narrowing_tags(tags)
        for step in lookup_names(name):
            runs = self._runs_of(step, narrowing)
            if runs:
                by_source: dict[str, int] = {}
                for r in runs:
                    by_source[r.source] = by_source.get(r.source, 0) + 1
                median = float(statistics.median(r.duration_s for r in runs))
                return Estimate(step, median, len(runs), by_source, narrowing)
        return None

    def __call__(self, name: str, tags: Mapping[str, str] | None = None) -> float | None:
        found = self.estimate(name, tags)
        return None if found is None else found.median_s
