"""``metered_component``: ``@dsl.component`` with a meter around the body.

kfp builds a lightweight component from the function's *source* (``inspect.getsource``, following
``__wrapped__``), so an ordinary decorator wrapper is silently dropped and the meter would never run
in the pod. Instead we generate real source: a module holding the user's function (renamed) and a
wrapper with the user's exact signature plus an ``Output[Metrics]``, and hand kfp the wrapper with
the body as an ``additional_funcs`` entry. The generated module is written to a cache folder so
``inspect`` can read it like any other file.
"""

from __future__ import annotations

import ast
import hashlib
import importlib.util
import inspect
import os
import tempfile
import textwrap
from collections.abc import Callable
from pathlib import Path
from typing import Any

from mlcost.errors import ConfigError
from mlcost.meter_options import MeterOptions, split_keywords

METRICS_OUTPUT = "mlcost_metrics"
K8S_GPU_RESOURCE = "nvidia.com/gpu"


def pod_packages(extras: tuple[str, ...] = ()) -> list[str]:
    """The default ``packages_to_install`` of a component: the light meter at the compiling client's
    version (``mlcost==0.1.0``), so the pod runs the runtime that the generated source calls.

    No extra by default: the pod runs :mod:`mlcost.components.runtime` (the core meter), and kfp
    installs itself there (``--no-deps``; its runtime imports nothing of its compile-time deps). Pass
    ``extras=("postgres",)`` when the pod's ``MLCOST_LEDGER`` is a PostgreSQL URL.
    """
    from mlcost import __version__

    return [f"mlcost{'[' + ','.join(extras) + ']' if extras else ''}=={__version__}"]


def metered_component(
    func: Callable[..., Any] | None = None,
    *,
    accelerator_type: str = K8S_GPU_RESOURCE,
    packages_to_install: list[str] | None = None,
    **kwargs: Any,
) -> Any:
    """Use where ``@dsl.component`` is, with the meter's keywords::

        @metered_component(gpus=1, gpu_type="L4", budget_usd=2, tags={"team": "search", "model": "ranker"},
                           base_image="python:3.11")
        def train(rows: int, model: Output[Model]) -> float: ...

    The meter's keywords are those of ``mlcost.meter()`` (:class:`mlcost.meter_options.MeterOptions`:
    gpus, gpu_type, pricing, budget_usd, max_duration, idle_timeout, tags, interval, nodes,
    experiment), checked here, when the pipeline is defined, not in the pod. The component keeps
    its inputs, outputs and return value and gains ``mlcost_metrics: Output[Metrics]`` (cost_usd,
    idle_cost_usd, gpu_hours, gpu_util_mean_pct, energy_kwh) for the KFP UI. Used in a pipeline,
    the task requests ``gpus`` accelerators of ``accelerator_type`` (the Kubernetes resource,
    ``nvidia.com/gpu`` by default; Vertex AI names types like ``NVIDIA_H100_80GB``).
    ``packages_to_install`` defaults to :func:`pod_packages`: the core meter, pinned to this
    client's version; with a ``base_image`` that has it preinstalled, pip finds it satisfied at once
    (or pass ``packages_to_install=[]``). Every other keyword goes to ``dsl.component``.
    """
    component_kwargs = dict(kwargs)
    options = _validate(split_keywords(component_kwargs))
    config = options.keywords()  # plain values (seconds, not "2h"): the pod gets them as a literal

    def build(fn: Callable[..., Any]) -> Any:
        from kfp.dsl import component_factory

        wrapper, body = _generate(fn, config)
        additional = [body, *(component_kwargs.pop("additional_funcs", None) or [])]
        component = component_factory.create_component_from_func(
            wrapper,
            packages_to_install=pod_packages() if packages_to_install is None else packages_to_install,
            additional_funcs=additional,
            **component_kwargs,
        )
        return _with_resources(component, gpus=options.gpus, accelerator_type=accelerator_type)

    return build(func) if func is not None else build


def _validate(keywords: dict[str, Any]) -> MeterOptions:
    """Fail at pipeline-definition time, not in the pod: the keywords are parsed (one definition,
    MeterOptions) and a Meter is built (not entered: nothing is sampled or written) so its own
    checks run too (a GPU type the catalog does not know); the policy file is the pod's, so it is
    left out."""
    from mlcost.metering import Meter
    from mlcost.policy import Policy

    options = MeterOptions.parse(keywords, where="metered_component")
    Meter("component", options=options, policy=Policy())
    return options


def _generate(fn: Callable[..., Any], config: dict[str, Any]) -> tuple[Callable[..., Any], Callable[..., Any]]:
    """Write the wrapper module and import it; returns (wrapper, renamed body)."""
    source = textwrap.dedent(inspect.getsource(inspect.unwrap(fn)))
    tree = ast.parse(source)
    node = next((n for n in tree.body if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))), None)
    if node is None or node.name != fn.__name__:
        raise ConfigError(f"cannot read the source of {fn.__name__!r}: a component must be a plain function")
    if node.args.vararg or node.args.kwarg or node.args.posonlyargs:
        raise ConfigError(
            f"component {fn.__name__!r}: *args, **kwargs and positional-only parameters are not "
            "supported by KFP components"
        )
    name = fn.__name__
    body_name = f"_mlcost_body_{name}"
    if any(a.arg == METRICS_OUTPUT for a in [*node.args.args, *node.args.kwonlyargs]):
        raise ConfigError(f"component {name!r} already has a parameter named {METRICS_OUTPUT!r}")

    params, names = _parameters(source, node)
    returns = f" -> {ast.get_source_segment(source, node.returns)}" if node.returns is not None else ""
    config = {"name": name, **config}
    wrapper = (
        f"def {name}({', '.join([*params, *([] if '*' in params else ['*']), f'{METRICS_OUTPUT}: Output[Metrics]'])})"
        f"{returns}:\n"
        f"    from mlcost.components.runtime import run_metered\n\n"
        f"    return run_metered({body_name}, {config!r}, {METRICS_OUTPUT}, "
        f"{{{', '.join(f'{n!r}: {n}' for n in names)}}})\n"
    )
    node.decorator_list = []
    body_lines = source.splitlines()[node.lineno - 1 :]
    body_source = "\n".join(body_lines).replace(f"def {name}(", f"def {body_name}(", 1)
    module = load_generated(name, body_source + "\n\n\n" + wrapper)
    return getattr(module, name), getattr(module, body_name)


def load_generated(stem: str, source: str, attribute: str | None = None) -> Any:
    """Write generated component source to a cache file and import it, so that kfp's
    ``inspect.getsource`` reads it like any user file. Returns the module, or one attribute."""
    module_source = "from kfp import dsl\nfrom kfp.dsl import *\nfrom typing import *\n\n\n" + source
    digest = hashlib.sha256(module_source.encode()).hexdigest()[:16]
    folder = Path(os.environ.get("MLCOST_CACHE_DIR") or Path(tempfile.gettempdir()) / "mlcost-components")
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{stem}_{digest}.py"
    if not path.exists():
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(module_source)
        tmp.replace(path)
    spec = importlib.util.spec_from_file_location(f"mlcost_generated_{stem}_{digest}", path)
    loaded = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
    spec.loader.exec_module(loaded)  # type: ignore[union-attr]
    return getattr(loaded, attribute) if attribute else loaded


def _parameters(source: str, node: ast.FunctionDef | ast.AsyncFunctionDef) -> tuple[list[str], list[str]]:
    """The parameter list as source text (annotations and defaults verbatim) and the names."""
    args = node.args
    defaults = [None] * (len(args.args) - len(args.defaults)) + list(args.defaults)
    params, names = [], []
    for arg, default in [*zip(args.args, defaults, strict=True), *zip(args.kwonlyargs, args.kw_defaults, strict=True)]:
        text = arg.arg
        if arg.annotation is not None:
            text += f": {ast.get_source_segment(source, arg.annotation)}"
        if default is not None:
            text += f" = {ast.get_source_segment(source, default)}"
        params.append(text)
        names.append(arg.arg)
    if args.kwonlyargs:  # keep them keyword-only after the positional ones
        split = len(args.args)
        params.insert(split, "*")
    return params, names


def _with_resources(component: Any, *, gpus: int | None, accelerator_type: str) -> Any:
    """Calls inside a pipeline get the accelerator request; local calls (kfp.local) run as they are."""
    if not gpus:
        return component
    original_call = component.__call__

    class MeteredComponent(type(component)):  # type: ignore[misc]
        def __call__(self, *args: Any, **kwargs: Any) -> Any:
            task = original_call(*args, **kwargs)
            from kfp.dsl import pipeline_context

            if pipeline_context.Pipeline.get_default_pipeline() is not None:
                task.set_accelerator_type(accelerator_type).set_accelerator_limit(gpus)
            return task

    component.__class__ = MeteredComponent
    return component
