"""Static guardrails on a compiled Kubeflow pipeline: what it will ask for, and what that may cost.

A pipeline that asks for 64 H100s is cheapest to stop before it is submitted. This module reads the
compiled IR YAML (``kfp.compiler.Compiler().compile(...)``), finds every container task's
accelerator type and count, CPU and memory, resolves pipeline-parameter placeholders, multiplies
through ``ParallelFor`` fan-out and nested DAGs, and prices the result with a caller-given price
function. ``check_pipeline`` turns the report into policy violations for ``mlcost gate --pipeline``.

Where the numbers come from (kfp 2.17 IR):

- resources: ``deploymentSpec.executors.<label>.container.resources`` — ``accelerator.resourceType``
  / ``resourceCount`` (older specs: ``type`` / ``count``), ``resourceCpuLimit``,
  ``resourceMemoryLimit`` and the ``…Request`` twins (older: ``cpuLimit`` floats, memory in GB).
  A value set from a pipeline parameter compiles to ``{{$.inputs.parameters['pipelinechannel--x']}}``,
  which names an input of *that task*; the task binds it to its DAG's inputs, and so on up to
  ``root.inputDefinitions`` (caller's ``arguments``, else the default).
- fan-out: ``parameterIterator.items.raw`` (a JSON list) or ``items.inputParameter`` (a list bound
  like any parameter); the cap is ``iteratorPolicy.parallelismLimit`` (absent or 0: no cap).
- kfp-kubernetes writes a second YAML document, ``platforms.kubernetes.deploymentSpec.executors``;
  a node selector there (``cloud.google.com/gke-accelerator: nvidia-tesla-a100``) names the GPU
  model when the accelerator type itself is the generic ``nvidia.com/gpu``.

Peak concurrent GPUs is the heaviest set of tasks no two of which are ordered by ``dependentTasks``
(see :mod:`mlcost.components.inspect_antichain`), computed per DAG with each sub-DAG weighted by its
own peak times its concurrent iterations. It is an upper bound that ignores run-time facts the spec
does not hold: both branches of a ``dsl.If``/``Elif`` count, and so does an exit handler's task.
"""

from __future__ import annotations

import ast
import json
import os
import re
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mlcost.components.inspect_antichain import max_weight_antichain
from mlcost.components.inspect_quantities import canonical_gpu_type, parse_count, parse_quantity

from mlcost.config_files import load_yaml_documents, read_text
from mlcost.durations import parse_duration
from mlcost.errors import ConfigError, shown

__all__ = [
    "PipelineInspection",
    "TaskResources",
    "Violation",
    "canonical_gpu_type",
    "check_pipeline",
    "inspect_pipeline",
]

MAX_PIPELINE_BYTES = 64 * 2**20  # compiled specs are KB to a few MB
MAX_TASKS = 10_000  # task occurrences once sub-DAGs are unrolled (loop iterations are counted, not listed)
MAX_NESTING = 64  # sub-DAGs inside sub-DAGs
MAX_INSTANCES = 10**9  # runs of one task in one pipeline run (the product of its loops' sizes)

PriceFn = Callable[[str], float]
HistoryFn = Callable[[str, Mapping[str, str]], "float | None"]

_CHANNEL = "pipelinechannel--"
_PLACEHOLDER = re.compile(r"\{\{\$\.inputs\.parameters\['([^']+)'\]\}\}")
# Node-selector label keys that name a GPU model (GKE, NVIDIA GPU feature discovery, Karpenter).
_GPU_LABEL_KEYS = ("cloud.google.com/gke-accelerator", "nvidia.com/gpu.product", "karpenter.k8s.aws/instance-gpu-name")


@dataclass(frozen=True)
class TaskResources:
    """One container task of the pipeline, with everything a budget decision needs.

    ``instances`` is how many times the task runs in one pipeline run (product of the enclosing
    loops' sizes); ``max_concurrent`` how many of those may run at once (each loop capped by its
    ``parallelism``). ``duration_s`` is the time it is priced for and ``duration_source`` says why:
    ``max_duration_s`` (caller's per-task mapping), ``history`` (median of past runs),
    ``history_capped`` (that median, but the step's max duration is shorter: the meter stops it
    there), ``meter_max_duration`` (the ``max_duration=`` of the task's own ``metered_component``),
    ``default`` (the default max duration), or ``none``. ``meter_max_duration_s`` is that
    component's own limit and ``step_tags`` its ``tags=`` (team, model...: what its past runs
    carry). ``step_name`` is the name the task's meter records its step under, read from a
    ``metered_component``'s generated call (the Python function's name: ``prepare_data`` for task
    ``prepare-data``, ``train`` for ``train-2`` or a renamed ``set_display_name`` task); ``None``
    for a task that is not a metered component.
    """

    path: str
    name: str
    accelerator: str | None
    gpu_type: str | None
    gpus_per_instance: int
    instances: int
    max_concurrent: int
    cpu_limit: float | None = None
    cpu_request: float | None = None
    memory_limit_gb: float | None = None
    memory_request_gb: float | None = None
    duration_s: float | None = None
    duration_source: str = "none"
    price_per_gpu_hour: float | None = None
    step_name: str | None = None
    meter_max_duration_s: float | None = None
    step_tags: dict[str, str] = field(default_factory=dict)  # the metered component's tags

    @property
    def history_name(self) -> str:
        """The name past runs of this task are looked up by: the meter's step name, else the task name."""
        return self.step_name or self.name

    @property
    def total_gpus(self) -> int:
        """GPUs over all instances (count × instances)."""
        return self.gpus_per_instance * self.instances

    @property
    def gpu_hours(self) -> float | None:
        """GPU-hours if every instance runs for ``duration_s``."""
        if self.total_gpus == 0:
            return 0.0
        return None if self.duration_s is None else self.total_gpus * self.duration_s / 3600.0

    @property
    def projected_cost_usd(self) -> float | None:
        """count × instances × hours × $/GPU-hour; ``None`` when the price or duration is unknown."""
        if self.total_gpus == 0:
            return 0.0
        if self.gpu_hours is None or self.price_per_gpu_hour is None:
            return None
        return self.gpu_hours * self.price_per_gpu_hour


@dataclass(frozen=True)
class PipelineInspection:
    """What a compiled pipeline asks for: per task, and the pipeline-level totals a policy checks."""

    source: str
    pipeline_name: str
    tasks: list[TaskResources]
    peak_concurrent_gpus: int

    @property
    def total_gpus(self) -> int:
        """Σ count × instances: every GPU allocation the run makes, whether or not they overlap."""
        return sum(t.total_gpus for t in self.tasks)

    @property
    def projected_cost_usd(self) -> float | None:
        """Σ of the tasks' projected costs; ``None`` if any GPU task could not be priced."""
        costs = [t.projected_cost_usd for t in self.tasks]
        return None if any(c is None for c in costs) else float(sum(c for c in costs if c is not None))

    @property
    def gpu_tasks(self) -> list[TaskResources]:
        return [t for t in self.tasks if t.gpus_per_instance > 0]

    def to_dict(self) -> dict[str, Any]:
        """Plain data for JSON output (no prose)."""
        return {
            "source": self.source,
            "pipeline": self.pipeline_name,
            "peak_concurrent_gpus": self.peak_concurrent_gpus,
            "total_gpus": self.total_gpus,
            "projected_cost_usd": self.projected_cost_usd,
            "tasks": [
                {
                    "path": t.path,
                    "name": t.name,
                    "step_name": t.step_name,
                    "accelerator": t.accelerator,
                    "gpu_type": t.gpu_type,
                    "gpus_per_instance": t.gpus_per_instance,
                    "instances": t.instances,
                    "max_concurrent": t.max_concurrent,
                    "cpu_limit": t.cpu_limit,
                    "cpu_request": t.cpu_request,
                    "memory_limit_gb": t.memory_limit_gb,
                    "memory_request_gb": t.memory_request_gb,
                    "duration_s": t.duration_s,
                    "duration_source": t.duration_source,
                    "price_per_gpu_hour": t.price_per_gpu_hour,
                    "gpu_hours": t.gpu_hours,
                    "projected_cost_usd": t.projected_cost_usd,
                }
                for t in self.tasks
            ],
        }

    def to_markdown(self) -> str:
        """A Markdown table of the tasks and one summary line, for a CI job summary or PR comment."""
        head = (
            "| task | GPU type | GPUs/instance | instances | max concurrent | CPU req/limit | "
            "memory GB req/limit | hours | projected $ |\n|---|---|---:|---:|---:|---|---|---:|---:|"
        )
        rows = [head]
        for t in self.tasks:
            hours = "–" if t.duration_s is None else f"{t.duration_s / 3600:.2f} ({t.duration_source})"
            cost = t.projected_cost_usd
            rows.append(
                "| "
                + " | ".join(
                    [
                        f"`{t.path}`",
                        _cell(t.gpu_type if t.gpus_per_instance else None),
                        str(t.gpus_per_instance),
                        str(t.instances),
                        str(t.max_concurrent),
                        f"{_num(t.cpu_request)} / {_num(t.cpu_limit)}",
                        f"{_num(t.memory_request_gb)} / {_num(t.memory_limit_gb)}",
                        hours if t.gpus_per_instance else "–",
                        "?" if cost is None else f"{cost:,.2f}",
                    ]
                )
                + " |"
            )
        total = self.projected_cost_usd
        rows.append("")
        rows.append(
            f"**{self.pipeline_name}**: peak concurrent GPUs {self.peak_concurrent_gpus}, "
            f"total GPUs {self.total_gpus}, projected cost "
            + ("unknown (no price or duration for some task)" if total is None else f"${total:,.2f}")
        )
        return "\n".join(rows) + "\n"


@dataclass(frozen=True)
class Violation:
    """One breached limit: which rule, which task(s), the limit and what the pipeline would do."""

    rule: str  # "max_gpus_per_task" | "max_gpus" | "budget_usd" | "allowed_gpu_types"
    tasks: tuple[str, ...]
    limit: Any
    observed: Any
    message: str = field(default="")

    def __str__(self) -> str:
        return self.message


def inspect_pipeline(
    path: str | os.PathLike[str],
    *,
    arguments: Mapping[str, Any] | None = None,
    default_gpu_type: str | None = None,
    max_duration_s: Mapping[str, float | str] | None = None,
    default_max_duration_s: float | str | None = None,
    price_per_gpu_hour: PriceFn | None = None,
    history: HistoryFn | None = None,
    loop_sizes: Mapping[str, int] | None = None,
) -> PipelineInspection:
    """Read a compiled KFP pipeline and report what each task asks for and may cost.

    :param arguments: pipeline parameters for this run; they override ``root.inputDefinitions``
        defaults. An unknown name is an error (a typo would otherwise silently use the default).
    :param default_gpu_type: the model behind a generic accelerator (``nvidia.com/gpu``, or a limit
        with no type) when no node selector names one.
    :param max_duration_s: task path (``for-loop-2/train``) or task name (``train``) → seconds or a
        duration string (``"2h"``); the path wins.
    :param default_max_duration_s: the duration of a task with no entry and no history (the
        policy's ``budgets.max_duration``).
    :param price_per_gpu_hour: ``gpu_type -> $/GPU-hour``, e.g.
        ``PriceCatalog.load().gpu_hour_usd``; without it costs are ``None``. It is called once per
        GPU type, and its errors reach the caller unchanged (the catalog raises ``UnknownGpuType``,
        a ``ConfigError``, for a model it cannot price).
    :param history: ``(name, tags) -> median seconds of past runs, or None``; used after
        ``max_duration_s`` and before the default, for GPU tasks only. It is asked for the task's
        meter step name when the task is a ``metered_component`` (the function's name, e.g.
        ``prepare_data``, whatever kfp named the task: ``prepare-data``, ``train-2``), else for the
        task name, with the component's ``tags=`` (empty for other tasks) to narrow the runs by.
    :param loop_sizes: loop task path → item count, for a ``ParallelFor`` over an upstream task's
        output, which the compiled spec cannot know.
    :raises ConfigError: unreadable file, not a KFP pipeline spec, or a value that cannot be resolved.
    """
    source = str(path)
    with _malformed(source):
        spec, platform = _load(Path(path))
        walker = _Walker(spec, platform, source, loop_sizes or {})
        root = spec["root"]
        scope = _root_scope(root, dict(arguments or {}), source)
        _check_unrolled_size(walker.components, root, source)
        peak = walker.walk_dag(root, scope, prefix="", instances=1, concurrent=1, stack=("root",), outer=())
        info = spec.get("pipelineInfo")
        name = str((info.get("name") if isinstance(info, dict) else None) or Path(path).stem)

    durations = {k: parse_duration(v, field=f"max_duration_s[{k!r}]") for k, v in (max_duration_s or {}).items()}
    default_s = parse_duration(default_max_duration_s, field="default_max_duration_s")
    prices: dict[str, float] = {}
    tasks: list[TaskResources] = []
    for raw in walker.tasks:
        gpu_type = raw.gpu_type or (default_gpu_type if raw.gpus_per_instance else None)
        if gpu_type is not None:
            gpu_type = canonical_gpu_type(gpu_type) or gpu_type
        duration, why = _duration(raw, durations, history, default_s)
        price = None
        if price_per_gpu_hour is not None and raw.gpus_per_instance:
            if gpu_type is None:
                raise ConfigError(
                    f"task {raw.path!r} asks for {raw.gpus_per_instance} GPU(s) of no named type "
                    f"(accelerator {raw.accelerator or 'limit only'}); pass default_gpu_type to price it",
                    source=source,
                )
            if gpu_type not in prices:
                prices[gpu_type] = float(price_per_gpu_hour(gpu_type))
            price = prices[gpu_type]
        tasks.append(
            TaskResources(
                **{**raw.__dict__, "gpu_type": gpu_type},
                duration_s=duration,
                duration_source=why,
                price_per_gpu_hour=price,
            )
        )
    return PipelineInspection(source=source, pipeline_name=name, tasks=tasks, peak_concurrent_gpus=peak)


def check_pipeline(
    report: PipelineInspection,
    *,
    max_gpus: int | None = None,
    budget_usd: float | None = None,
    allowed_gpu_types: list[str] | None = None,
) -> list[Violation]:
    """Policy violations of an inspected pipeline; an empty list means it may be submitted.

    ``max_gpus`` is checked per task instance (one step may not ask for more) and against the
    pipeline's peak concurrent GPUs, matching the policy's ``cluster.max_gpus`` ("per step, and peak
    concurrent per run"). ``budget_usd`` is the policy's ``budgets.run_usd``.
    """
    found: list[Violation] = []
    gpu_tasks = report.gpu_tasks
    if max_gpus is not None:
        for t in gpu_tasks:
            if t.gpus_per_instance > max_gpus:
                found.append(
                    Violation(
                        "max_gpus_per_task",
                        (t.path,),
                        max_gpus,
                        t.gpus_per_instance,
                        f"task {t.path!r} asks for {t.gpus_per_instance} GPUs per instance; the limit is {max_gpus}",
                    )
                )
        if report.peak_concurrent_gpus > max_gpus:
            paths = tuple(t.path for t in sorted(gpu_tasks, key=lambda t: -t.gpus_per_instance * t.max_concurrent))
            found.append(
                Violation(
                    "max_gpus",
                    paths,
                    max_gpus,
                    report.peak_concurrent_gpus,
                    f"pipeline {report.pipeline_name!r} may hold {report.peak_concurrent_gpus} GPUs at once; "
                    f"the limit is {max_gpus} (tasks: {', '.join(paths)})",
                )
            )
    if budget_usd is not None:
        total = report.projected_cost_usd
        if total is None:
            missing = [t.path for t in gpu_tasks if t.projected_cost_usd is None]
            raise ConfigError(
                f"cannot check budget_usd={budget_usd}: no price or duration for task(s) {', '.join(missing)}; "
                "pass price_per_gpu_hour and a default max duration",
                source=report.source,
            )
        if total > budget_usd:
            ranked = sorted(gpu_tasks, key=lambda t: -(t.projected_cost_usd or 0.0))
            paths = tuple(t.path for t in ranked)
            top = ", ".join(f"{t.path} ${t.projected_cost_usd:,.2f}" for t in ranked[:3])
            found.append(
                Violation(
                    "budget_usd",
                    paths,
                    budget_usd,
                    round(total, 6),
                    f"pipeline {report.pipeline_name!r} projects ${total:,.2f}; the budget is ${budget_usd:,.2f} "
                    f"(largest: {top})",
                )
            )
    if allowed_gpu_types is not None:
        allowed = {(canonical_gpu_type(a) or a).upper() for a in allowed_gpu_types}
        for t in gpu_tasks:
            if t.gpu_type is None or t.gpu_type.upper() not in allowed:
                found.append(
                    Violation(
                        "allowed_gpu_types",
                        (t.path,),
                        sorted(allowed_gpu_types),
                        t.gpu_type,
                        f"task {t.path!r} uses GPU type {t.gpu_type or 'unknown'}; allowed: "
                        f"{', '.join(sorted(allowed_gpu_types))}",
                    )
                )
    return found


# --- reading the file -------------------------------------------------------------------------


@contextmanager
def _malformed(source: str) -> Iterator[None]:
    """A value of the wrong shape anywhere in the spec (a list where kfp writes a mapping, text
    where it writes a number) is a ConfigError naming the file, whichever line of the walk meets
    it first; mlcost's own ConfigErrors get the file added when they lack it."""
    try:
        yield
    except ConfigError as e:
        if e.source is None:  # e.g. a quantity's parser, which does not know the file
            raise ConfigError(e.detail, source=source, field=e.field) from e
        raise
    except (AttributeError, TypeError, KeyError, IndexError, ValueError, ArithmeticError) as e:
        raise ConfigError(
            f"not a well-formed KFP pipeline spec ({type(e).__name__}: {shown(str(e), 120)})", source=source
        ) from e


def _load(path: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """The pipeline spec document and the kfp-kubernetes executor config (empty when absent).

    What is read is bounded (:mod:`mlcost.config_files`): the file's size, UTF-8, and each YAML
    document's size with its aliases expanded, so a few KB of "billion laughs" anchors is refused
    at once instead of expanding into gigabytes."""
    source = str(path)
    if not path.is_file():
        raise ConfigError("compiled pipeline file not found" if not path.exists() else "not a file", source=source)
    text = read_text(path, what="compiled pipeline file", max_bytes=MAX_PIPELINE_BYTES)
    docs = [
        d for d in load_yaml_documents(text, source=source, syntax_hint=" (truncated or corrupted?)") if d is not None
    ]
    spec = next((d for d in docs if isinstance(d, dict) and "root" in d and "pipelineInfo" in d), None)
    if spec is None:
        raise ConfigError(
            "not a compiled KFP pipeline spec: no document has both 'pipelineInfo' and 'root' "
            "(compile it with kfp.compiler.Compiler().compile(pipeline, 'pipeline.yaml'))",
            source=source,
        )
    if not isinstance(spec["root"], dict) or not isinstance(spec["root"].get("dag"), dict):
        raise ConfigError("'root' has no 'dag' (truncated file?)", source=source, field="root")
    platform: dict[str, Any] = {}
    for doc in docs:
        if isinstance(doc, dict) and isinstance(doc.get("platforms"), dict):
            k8s = doc["platforms"].get("kubernetes") or {}
            platform = ((k8s.get("deploymentSpec") or {}).get("executors")) or {}
    return spec, platform


# --- resolving values ---------------------------------------------------------------------------


@dataclass(frozen=True)
class _Unresolved:
    """A value known only at run time, or never given; an error only if a resource needs it."""

    reason: str


@dataclass(frozen=True)
class _LoopItems:
    """The loop variable inside a ParallelFor body: any of these items. Resources take the largest."""

    items: tuple[Any, ...]


def _check_unrolled_size(components: Mapping[str, Any], root: dict[str, Any], source: str) -> None:
    """Refuse a spec that unrolls to more than ``MAX_TASKS`` task occurrences, or nests sub-DAGs
    deeper than ``MAX_NESTING``, before walking it.

    kfp compiles each use of a component to a component of its own (``comp-leaf``,
    ``comp-leaf-2``), but the IR lets several tasks share one sub-DAG. A hand-made "diamond" of 30
    such levels has 2**29 paths: walking them all ran for minutes. Counting is memoised per
    component (each sub-DAG counted once, whatever number of tasks call it), so the refusal is
    instant and names the shared components."""
    counts: dict[str, int] = {}
    callers: dict[str, int] = {}

    def count(component: Any, stack: tuple[str, ...]) -> int:
        if len(stack) > MAX_NESTING:
            raise ConfigError(f"sub-DAGs nest deeper than {MAX_NESTING} levels ({' > '.join(stack[:4])} > ...)",
                              source=source)
        tasks = ((component.get("dag") or {}).get("tasks")) or {} if isinstance(component, dict) else {}
        total = 0
        for task in tasks.values() if isinstance(tasks, dict) else ():
            total += 1
            ref = ((task.get("componentRef") or {}).get("name")) if isinstance(task, dict) else None
            sub = components.get(ref) if isinstance(ref, str) else None
            if not isinstance(sub, dict) or "dag" not in sub or ref in stack:
                continue  # the walk reports a missing component or a cycle, with the task's path
            callers[ref] = callers.get(ref, 0) + 1
            if ref not in counts:
                counts[ref] = count(sub, (*stack, ref))
            total += counts[ref]
        return total

    unrolled = count(root, ("root",))
    if unrolled > MAX_TASKS:
        shared = sorted((name for name, n in callers.items() if n > 1), key=lambda n: -counts[n])
        why = (
            f"; sub-DAG component(s) {', '.join(map(repr, shared[:3]))} are called by several tasks each "
            "(kfp compiles every call to its own component, so this spec was not written by kfp)"
            if shared
            else ""
        )
        raise ConfigError(
            f"the pipeline unrolls to {unrolled:,} tasks, more than the {MAX_TASKS:,} mlcost inspects{why}",
            source=source,
        )


def _root_scope(root: dict[str, Any], arguments: dict[str, Any], source: str) -> dict[str, Any]:
    params = ((root.get("inputDefinitions") or {}).get("parameters")) or {}
    unknown = sorted(set(arguments) - set(params))
    if unknown:
        raise ConfigError(
            f"unknown pipeline argument(s) {', '.join(unknown)}; the pipeline's parameters are: "
            f"{', '.join(sorted(params)) or '(none)'}",
            source=source,
            field="arguments",
        )
    scope: dict[str, Any] = {}
    for name, definition in params.items():
        if name in arguments:
            scope[name] = arguments[name]
        elif isinstance(definition, dict) and "defaultValue" in definition:
            scope[name] = definition["defaultValue"]
        else:
            scope[name] = _Unresolved(f"pipeline parameter {name!r} has no default and no argument was given")
    return scope


def _binding(spec: Any, parent: Mapping[str, Any], task: str, outer: tuple[Mapping[str, Any], ...]) -> Any:
    """The value one task input receives, from the parent DAG's scope.

    kfp 2.17 does not always thread a parameter into a ``dsl.If`` or ``ParallelFor`` sub-DAG: the
    task binds ``pipelinechannel--n`` but the sub-DAG never declares or receives it (seen with
    ``set_accelerator_limit(n)`` inside a loop of a sub-pipeline). Such a name is looked up in the
    enclosing DAGs, nearest first, as ``pipelinechannel--n`` and then as ``n`` — what the channel
    stands for.
    """
    if not isinstance(spec, dict):
        return _Unresolved(f"input of task {task!r} is malformed")
    if "parameterExpressionSelector" in spec:
        return _Unresolved(f"input of task {task!r} selects a field at run time")
    if "runtimeValue" in spec:
        return (spec["runtimeValue"] or {}).get("constant")
    if "componentInputParameter" in spec:
        name = spec["componentInputParameter"]
        if name not in parent and name.startswith(_CHANNEL):
            for scope in outer:
                for candidate in (name, name[len(_CHANNEL) :]):
                    if candidate in scope:
                        return scope[candidate]
        return parent.get(name, _Unresolved(f"parameter {name!r} is not bound where task {task!r} runs"))
    if "taskOutputParameter" in spec:
        out = spec["taskOutputParameter"] or {}
        return _Unresolved(
            f"it comes from output {out.get('outputParameterKey')!r} of task {out.get('producerTask')!r}, "
            "known only at run time"
        )
    return _Unresolved(f"input of task {task!r} is known only at run time")


def _resolve(value: Any, scope: Mapping[str, Any], depth: int = 0) -> Any:
    """Follow ``{{$.inputs.parameters['x']}}`` through the task's scope to a value (or a reason)."""
    if isinstance(value, str) and "{{$" in value:
        match = _PLACEHOLDER.fullmatch(value.strip())
        if not match:
            return _Unresolved(f"placeholder {shown(value)} is not a plain input parameter")
        if depth > 8:
            return _Unresolved(f"placeholder {shown(value)} refers to itself")
        name = match.group(1)
        if name not in scope:
            return _Unresolved(f"placeholder names parameter {name!r}, which the task does not receive")
        return _resolve(scope[name], scope, depth + 1)
    return value


def _items(value: Any) -> list[Any] | None:
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except (ValueError, RecursionError):
            return None
    return list(value) if isinstance(value, (list, tuple)) else None


# --- walking the DAGs -------------------------------------------------------------------------


@dataclass(frozen=True)
class _RawTask:
    path: str
    name: str
    accelerator: str | None
    gpu_type: str | None
    gpus_per_instance: int
    instances: int
    max_concurrent: int
    cpu_limit: float | None
    cpu_request: float | None
    memory_limit_gb: float | None
    memory_request_gb: float | None
    step_name: str | None = None
    meter_max_duration_s: float | None = None
    step_tags: dict[str, str] = field(default_factory=dict)


class _Walker:
    """Recursive descent over DAG components, collecting container tasks in spec order."""

    def __init__(
        self, spec: dict[str, Any], platform: dict[str, Any], source: str, loop_sizes: Mapping[str, int]
    ) -> None:
        self.components: dict[str, Any] = spec.get("components") or {}
        self.executors: dict[str, Any] = ((spec.get("deploymentSpec") or {}).get("executors")) or {}
        self.platform = platform
        self.source = source
        self.loop_sizes = loop_sizes
        self.tasks: list[_RawTask] = []

    def fail(self, message: str, **kw: Any) -> ConfigError:
        return ConfigError(message, source=self.source, **kw)

    def walk_dag(
        self,
        component: dict[str, Any],
        scope: Mapping[str, Any],
        *,
        prefix: str,
        instances: int,
        concurrent: int,
        stack: tuple[str, ...],
        outer: tuple[Mapping[str, Any], ...],
    ) -> int:
        """Collect this DAG's tasks; return the peak GPUs of one instance of it.

        ``scope`` holds this DAG's inputs; ``outer`` the enclosing DAGs' scopes, nearest first.
        """
        dag_tasks = ((component.get("dag") or {}).get("tasks")) or {}
        weights: dict[str, int] = {}
        upstream: dict[str, set[str]] = {}
        for key, task in dag_tasks.items():
            path = f"{prefix}{key}"
            if not isinstance(task, dict):
                raise self.fail(f"task {path!r} is malformed")
            ref = ((task.get("componentRef") or {}).get("name")) or ""
            comp = self.components.get(ref)
            if not isinstance(comp, dict):
                raise self.fail(f"task {path!r} refers to component {ref!r}, which is not defined (truncated file?)")
            if ref in stack:
                raise self.fail(f"component {ref!r} contains itself (via task {path!r})")
            params = ((task.get("inputs") or {}).get("parameters")) or {}
            task_scope = _defaults(comp)
            task_scope.update({name: _binding(b, scope, path, outer) for name, b in params.items()})
            upstream[key] = set(task.get("dependentTasks") or [])
            if "dag" in comp:
                size, cap = self._fan_out(task, task_scope, path, instances)
                weights[key] = cap * self.walk_dag(
                    comp,
                    task_scope,
                    prefix=f"{path}/",
                    instances=instances * size,
                    concurrent=concurrent * cap,
                    stack=(*stack, ref),
                    outer=(scope, *outer),
                )
            elif "executorLabel" in comp:
                weights[key] = self._container(comp["executorLabel"], task_scope, path, key, instances, concurrent)
            else:
                weights[key] = 0
        try:
            return max_weight_antichain(weights, upstream)
        except ValueError as e:
            raise self.fail(f"{e} in DAG {prefix.rstrip('/') or 'root'!r}") from e

    def _fan_out(self, task: dict[str, Any], scope: dict[str, Any], path: str, instances: int) -> tuple[int, int]:
        """(iterations, iterations that may run at once); (1, 1) for a plain sub-DAG."""
        iterator = task.get("parameterIterator") or task.get("artifactIterator")
        if not iterator:
            return 1, 1
        items_spec = iterator.get("items") or {}
        values: list[Any] | None = None
        if path in self.loop_sizes:
            size = int(self.loop_sizes[path])
        else:
            # the reason is formatted only on failure, and short: the items may be huge
            if "raw" in items_spec:
                raw = items_spec["raw"]
                values = _items(raw)
                got: Any = None
            else:
                name = items_spec.get("inputParameter") or items_spec.get("inputArtifact")
                got = _resolve(scope.get(name, _Unresolved(f"loop input {name!r} is not bound")), scope)
                values = None if isinstance(got, _Unresolved) else _items(got)
            if values is None:
                if "raw" in items_spec:
                    reason = f"items {shown(raw)} are not a JSON list"
                else:
                    reason = got.reason if isinstance(got, _Unresolved) else f"value {shown(got)} is not a list"
                raise self.fail(
                    f"cannot tell how many iterations ParallelFor {path!r} runs: {reason}; "
                    f"pass loop_sizes={{{path!r}: N}}"
                )
            size = len(values)
        if size < 0 or size * max(instances, 1) > MAX_INSTANCES:
            raise self.fail(
                f"ParallelFor {path!r} runs {size:,} iterations; with its enclosing loops that is more than "
                f"{MAX_INSTANCES:,} runs of each task inside it"
            )
        item_input = iterator.get("itemInput")
        if item_input:
            scope[item_input] = (
                _LoopItems(tuple(values))
                if values is not None
                else _Unresolved(f"items of ParallelFor {path!r} are known only at run time")
            )
        limit = int(((task.get("iteratorPolicy") or {}).get("parallelismLimit")) or 0)
        return size, min(limit, size) if limit > 0 else size

    def _container(
        self, label: str, scope: Mapping[str, Any], path: str, name: str, instances: int, concurrent: int
    ) -> int:
        executor = self.executors.get(label)
        if not isinstance(executor, dict):
            raise self.fail(f"task {path!r} uses executor {label!r}, which is not in deploymentSpec (truncated file?)")
        resources = ((executor.get("container") or {}).get("resources")) or {}
        accel = resources.get("accelerator") or {}

        def value(where: Mapping[str, Any], *keys: str, what: str) -> Any:
            raw = next((where[k] for k in keys if k in where), None)
            got = _resolve(raw, scope)
            if isinstance(got, _Unresolved):
                raise self.fail(f"task {path!r}: cannot resolve {what} {shown(raw)}: {got.reason}")
            return got

        accelerator = value(accel, "resourceType", "type", what="accelerator type")
        count_raw = value(accel, "resourceCount", "count", what="accelerator count")
        if count_raw is None:
            count = 1 if accelerator else 0
        else:
            count = _largest(count_raw, lambda v: parse_count(v, what=f"task {path!r} accelerator count"))
        if isinstance(accelerator, _LoopItems):
            raise self.fail(f"task {path!r}: the accelerator type varies with the loop item; set it statically")
        accelerator = str(accelerator) if accelerator else None
        gpu_type = canonical_gpu_type(accelerator) if accelerator else None
        metered = _metered_config(executor)
        if gpu_type is None and count:
            gpu_type = self._node_selector_type(label) or _metered_gpu_type(metered)

        def qty(keys: tuple[str, str], what: str, scale: float) -> float | None:
            got = value(resources, keys[0], what=what)
            if got is not None:
                return _largest(got, lambda v: parse_quantity(v, what=f"task {path!r} {what}")) / scale
            legacy = resources.get(keys[1])  # pre-2.x floats: cores, or memory already in GB
            return float(legacy) if isinstance(legacy, (int, float)) else None

        self.tasks.append(
            _RawTask(
                path=path,
                name=name,
                accelerator=accelerator,
                gpu_type=gpu_type,
                gpus_per_instance=count,
                instances=instances,
                max_concurrent=concurrent,
                cpu_limit=qty(("resourceCpuLimit", "cpuLimit"), "cpu limit", 1.0),
                cpu_request=qty(("resourceCpuRequest", "cpuRequest"), "cpu request", 1.0),
                memory_limit_gb=qty(("resourceMemoryLimit", "memoryLimit"), "memory limit", 1e9),
                memory_request_gb=qty(("resourceMemoryRequest", "memoryRequest"), "memory request", 1e9),
                step_name=metered.get("name") if isinstance(metered.get("name"), str) else None,
                meter_max_duration_s=_meter_max_duration(metered),
                step_tags={str(k): v for k, v in (metered.get("tags") or {}).items() if isinstance(v, str)},
            )
        )
        return count

    def _node_selector_type(self, label: str) -> str | None:
        config = self.platform.get(label) or {}
        labels = ((config.get("nodeSelector") or {}).get("labels")) or {}
        for key in _GPU_LABEL_KEYS:
            if isinstance(labels.get(key), str):
                return canonical_gpu_type(labels[key])
        return None


_RUN_METERED_CALL = re.compile(r"^\s*return (run_metered\(.*\))\s*$", re.MULTILINE)


def _metered_config(executor: Mapping[str, Any]) -> dict[str, Any]:
    """The meter config a ``metered_component`` was built with (empty for any other task): its
    generated wrapper, in the executor's command, calls ``run_metered(body, {...config...}, ...)``
    with the config as a literal, ``{'name': <function name>, 'gpus': ..., 'gpu_type': ...}``."""
    container = executor.get("container") or {}
    for text in [*(container.get("command") or []), *(container.get("args") or [])]:
        if not isinstance(text, str) or "run_metered(" not in text:
            continue
        for match in _RUN_METERED_CALL.finditer(text):
            try:
                call = ast.parse(match.group(1), mode="eval").body
                config = ast.literal_eval(call.args[1])  # type: ignore[attr-defined]
            except (SyntaxError, ValueError, IndexError, AttributeError, RecursionError, MemoryError):
                # a hand-edited command: no meter config; the parser gives up on deep nesting with these
                continue
            if isinstance(config, dict):
                return config
    return {}


def _metered_gpu_type(config: Mapping[str, Any]) -> str | None:
    """The ``gpu_type=`` a ``metered_component`` declared, so a task that asks only for a generic
    ``nvidia.com/gpu`` is still typed, can be priced and checked against ``allowed_gpu_types``."""
    if isinstance(config.get("gpu_type"), str):
        return canonical_gpu_type(config["gpu_type"]) or config["gpu_type"]
    return None


def _defaults(component: dict[str, Any]) -> dict[str, Any]:
    params = ((component.get("inputDefinitions") or {}).get("parameters")) or {}
    return {k: v["defaultValue"] for k, v in params.items() if isinstance(v, dict) and "defaultValue" in v}


def _largest(value: Any, convert: Callable[[Any], Any]) -> Any:
    """Convert a value; for a loop variable, the largest over its items (a sound bound)."""
    if isinstance(value, _LoopItems):
        return max((convert(v) for v in value.items), default=0)
    return convert(value)


def _duration(
    task: _RawTask, durations: Mapping[str, float | None], history: HistoryFn | None, default_s: float | None
) -> tuple[float | None, str]:
    for key in (task.path, task.name):
        if key in durations and durations[key] is not None:
            return durations[key], "max_duration_s"
    # the live limit the step runs under: its own max_duration, else the default (the policy's)
    limit = task.meter_max_duration_s if task.meter_max_duration_s is not None else default_s
    if history is not None and task.gpus_per_instance:
        seen = history(task.step_name or task.name, task.step_tags)
        if seen is not None:
            if limit is not None and seen > limit:
                return limit, "history_capped"  # the meter stops the step at its limit
            return float(seen), "history"
    if task.meter_max_duration_s is not None:
        return task.meter_max_duration_s, "meter_max_duration"
    if default_s is not None:
        return default_s, "default"
    return None, "none"


def _meter_max_duration(config: Mapping[str, Any]) -> float | None:
    """The ``max_duration=`` of a metered component, in seconds (None: not set, or unreadable)."""
    raw = config.get("max_duration")
    if raw is None:
        return None
    try:
        return parse_duration(raw, field="max_duration")
    except ConfigError:  # validated when the component was defined; a hand-edited spec is not our limit
        return None


def _cell(value: str | None) -> str:
    return "–" if value is None else value.replace("|", "\\|")


def _num(value: float | None) -> str:
    return "–" if value is None else f"{value:g}"
