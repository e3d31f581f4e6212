"""``meter``: the one context manager every adapter wraps.

(The module is ``metering``, not ``meter``: a submodule named like the function ``mlcost.meter``
would replace it on the package the moment anything imported the submodule first.)

Sampler -> Usage -> Cost -> Guardrails -> Sinks, for one step. Airflow's ``@task.metered``,
Kubeflow's ``metered_component`` and plain Python all go through here, so a step is measured,
priced, stopped and recorded the same way wherever it runs.
"""

from __future__ import annotations

import functools
import logging
import os
import threading
import uuid
from collections.abc import Callable, Mapping
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any, TypeVar

from mlcost.checkpoints import Checkpoints
from mlcost.errors import ConfigError, GuardrailBreached, PreflightRefused, UnknownGpuType
from mlcost.guardrails import StepLimits, preflight
from mlcost.interrupt import Interrupter, StepInterrupted, TerminationHook
from mlcost.jobs import JobIdentity, detect_job, local_rank
from mlcost.live_checks import LiveChecks
from mlcost.meter_options import MeterOptions
from mlcost.policy import Policy
from mlcost.pricing.catalog import PriceCatalog
from mlcost.pricing.cost import allocated_cost, device_type, price
from mlcost.sinks.ledger import Ledger
from mlcost.step import (
    STATUS_BREACHED,
    STATUS_FAILED,
    STATUS_KILLED,
    STATUS_RUNNING,
    STATUS_SUCCEEDED,
    Breach,
    StepCost,
)
from mlcost.telemetry.base import GpuBackend
from mlcost.telemetry.sampler import Sampler
from mlcost.usage import Usage

if TYPE_CHECKING:
    from mlcost.sinks.mlflow_open import RunOpener

log = logging.getLogger(__name__)
F = TypeVar("F", bound=Callable[..., Any])

_CI_TAGS = {
    "git_sha": ("GITHUB_SHA", "CI_COMMIT_SHA"),
    "branch": ("GITHUB_HEAD_REF", "GITHUB_REF_NAME", "CI_COMMIT_REF_NAME"),
    "ci_job": ("GITHUB_RUN_ID", "CI_JOB_ID"),
}


def _now() -> str:
    return datetime.now(timezone.utc).isoformat()


class Meter:
    """One metered step. Use through :func:`meter` or :func:`metered`."""

    def __init__(
        self,
        name: str,
        *,
        policy: Policy | str | os.PathLike[str] | None = None,
        catalog: PriceCatalog | str | os.PathLike[str] | None = None,
        ledger: Ledger | str | os.PathLike[str] | None = None,
        backend: GpuBackend | None = None,
        clock: Callable[[], float] | None = None,
        run_key: str | None = None,
        context: Mapping[str, str] | None = None,
        mlflow_run_id: str | None = None,
        mlflow_parent_run_id: str | Callable[[], str | None] | None = None,
        mlflow_timeout_s: float = 15.0,
        tracking_uri: str | None = None,
        options: MeterOptions | None = None,
        **keywords: Any,
    ) -> None:
        """``keywords`` are the meter's keywords (:class:`mlcost.meter_options.MeterOptions`:
        gpus, gpu_type, pricing, budget_usd, max_duration, idle_timeout, tags, interval, nodes,
        job_id, node_rank, experiment), or pass them validated as ``options``; the rest is plumbing
        for adapters."""
        # every check runs here, before anything starts; metered_component builds a Meter to run them
        # when the pipeline is defined
        if not name or not isinstance(name, str):
            raise ConfigError(f"a step needs a name, got {name!r}", field="name")
        if options is None:
            options = MeterOptions.parse(keywords)
        elif keywords:
            raise ConfigError(f"pass the meter's keywords as options= or one by one, not both: {', '.join(keywords)}")
        self.options = options
        gpus, gpu_type, tags = options.gpus, options.gpu_type, dict(options.tags)
        self.policy = policy if isinstance(policy, Policy) else Policy.load(policy)
        self.catalog = catalog if isinstance(catalog, PriceCatalog) else PriceCatalog.load(catalog)
        if gpu_type is not None:
            self.catalog.canonical(gpu_type)  # an unknown type lists the known ones
        self.limits = StepLimits.resolve(
            name,
            self.policy,
            budget_usd=options.budget_usd,
            max_duration=options.max_duration,
            idle_timeout=options.idle_timeout,
        )
        for key, env_names in _CI_TAGS.items():
            value = next((os.environ[e] for e in env_names if os.environ.get(e)), None)
            if value and key not in tags:
                tags[key] = value
        self.job: JobIdentity = detect_job(job_id=options.job_id, node_rank=options.node_rank, nodes=options.nodes)
        # torchrun, srun and Kubeflow's launchers start one process per GPU: local rank 0 meters the node
        self.leader = local_rank() == 0
        nodes, experiment = (self.job.nodes if self.job.nodes > 1 else options.nodes), options.experiment
        if gpus is not None and nodes and nodes > 1 and gpus % nodes:
            raise ConfigError(
                f"gpus={gpus} is the job's total over nodes={nodes}, so it must divide evenly "
                "(each node is billed for its own share)",
                field="gpus",
            )
        self.name, self.pricing, self.interval, self.nodes = name, options.pricing, options.interval, nodes
        self.tags = tags
        self.ledger = ledger if isinstance(ledger, Ledger) else Ledger(ledger)
        self._requested_gpus, self._requested_type = gpus, gpu_type
        self._backend = backend
        self._clock = clock  # the sampler's (a test's hand-driven one; the backend then shares it)
        self.run_key, self.context = run_key, dict(context or {})
        if nodes is not None:
            self.context.setdefault("nodes", str(nodes))  # the gate's max_nodes policy reads it
        self.live: LiveChecks | None = None  # made at start, when the node's GPUs are known
        self.experiment, self.mlflow_run_id = experiment, mlflow_run_id
        # a callable: the parent is looked up on the opener's thread, while the body runs
        self._parent_lookup = mlflow_parent_run_id if callable(mlflow_parent_run_id) else None
        self.mlflow_parent_run_id: str | None = None if callable(mlflow_parent_run_id) else mlflow_parent_run_id
        self._opener: RunOpener | None = None
        self.mlflow_timeout_s = mlflow_timeout_s
        self.tracking_uri = tracking_uri  # default: MLflow's own (MLFLOW_TRACKING_URI)
        self.step_id = uuid.uuid4().hex
        self.cost: StepCost | None = None  # set when the step ends
        self.breach: GuardrailBreached | None = None
        self._lock = threading.RLock()
        self._sampler: Sampler | None = None
        self._unit_price: float | None = None
        self._price_note: str | None = None
        self._device_types: list[str] | None = None  # set when the devices differ (MIG profiles)
        self._started_at = ""
        self._exiting = False
        self._in_body = False
        self._interrupts_sent = 0
        self._checkpoints = Checkpoints(
            running=lambda: self._record(STATUS_RUNNING, self._sampler.usage()),  # type: ignore[union-attr]
            write=self._write_ledger,
            mlflow=lambda: self._mlflow_target() if self._mlflow_enabled() else None,
        )
        self._finalizing = False

    # public while running ---------------------------------------------------------------------
    @property
    def gpus(self) -> int:
        """This node's allocation: ``gpus`` over the job's nodes when given, else the devices seen."""
        if self._requested_gpus is not None:
            return self._requested_gpus // (self.nodes or 1)
        return len(self._sampler.devices) if self._sampler else 0

    @property
    def job_gpus(self) -> int:
        """The whole job's allocation: what ``max_gpus`` is checked against."""
        if self._requested_gpus is not None:
            return self._requested_gpus
        return self.gpus * (self.nodes or 1)

    @property
    def gpu_type(self) -> str | None:
        if self._requested_type is not None:
            return self.catalog.canonical(self._requested_type)
        return self.detected_gpu_type

    @property
    def detected_gpu_type(self) -> str | None:
        """The first device's catalog type, as detected (the record's type when none is declared;
        devices of other profiles are priced as their own, see :meth:`_resolve_price`)."""
        devices = self._sampler.devices if self._sampler else []
        return device_type(devices[0]) if devices else None

    def cost_so_far(self) -> float:
        """USD spent so far by the allocation (GPUs × elapsed × price): what the budget is checked on."""
        if self._sampler is None or self._unit_price is None:
            return 0.0
        return allocated_cost(self.gpus, self._sampler.clock() - self._sampler.start_t, self._unit_price)

    def stop(self, reason: str = "stopped") -> StepCost | None:
        """End the step now and record it as killed (Airflow's ``on_kill``, a SIGTERM); None when
        the step is not running (not started yet, or being recorded right now)."""
        return self._finalize(STATUS_KILLED, error=reason)

    # context manager --------------------------------------------------------------------------
    def __enter__(self) -> Meter:
        if not self.leader:
            log.info("mlcost: step %r: local rank %d leaves this node's meter to local rank 0", self.name, local_rank())
            return self
        backend = self._backend
        if backend is None:
            from mlcost.telemetry import open_backend

            backend = open_backend()
        self._sampler = Sampler(
            backend,
            interval=self.interval,
            gpus_allocated=None if self._requested_gpus is None else self.gpus,
            idle_threshold_pct=self.limits.idle_threshold_pct,
            host=_host_sampler(),
            on_sample=self._on_sample,
            **({"clock": self._clock} if self._clock is not None else {}),
        )
        self._sampler.open()  # finds the devices; no thread yet, nothing spent
        self._unit_price = self._resolve_price()
        try:
            preflight(
                self.name,
                gpus=self.job_gpus,
                gpu_type=self.gpu_type,
                gpu_hour_usd=self._unit_price,
                limits=self.limits,
                policy=self.policy,
                nodes=self.nodes,
            )
            self._preflight_windows()
        except PreflightRefused as refusal:
            self._record_refusal(refusal)
            raise
        self.live = LiveChecks(
            self.name,
            self.limits,
            job=self.job,
            node_gpus=self.gpus,
            job_gpus=self.job_gpus,
            policy=self.policy,
            tags=self.tags,
            read=self.ledger.on_shared,
        )
        self._started_at = _now()
        self.live.start(
            step_id=self.step_id, started=datetime.fromisoformat(self._started_at), gpu_hour_usd=self._unit_price
        )
        self._interrupter = Interrupter()
        self._term = TerminationHook(lambda: self._finalize(STATUS_KILLED, error="SIGTERM"))
        self._checkpoints.start(self._sampler.start_t)
        # sampling runs through the first ledger write: opening the store (engine, migrations) takes
        # ~1 s the first time in a process, and a trace seen only at both ends of it is interpolated
        self._sampler.start_thread()
        running = self._record(STATUS_RUNNING, self._sampler.usage())
        self._write_ledger(running)
        if self._mlflow_enabled() and self.mlflow_run_id is None:  # the step's own run, not the caller's
            from mlcost.sinks.mlflow_open import RunOpener

            self._opener = RunOpener(running, parent=self._parent, experiment=self.experiment,
                                     tracking_uri=self.tracking_uri)  # fmt: skip
        if running.simulated:
            log.warning("mlcost: step %r runs on a SIMULATED GPU (MLCOST_GPU_BACKEND=simulated)", self.name)
        self._in_body = True  # from here a breach may interrupt: never inside __enter__, which has no __exit__
        return self

    def __exit__(self, exc_type: Any, exc: BaseException | None, tb: Any) -> bool:
        if self._sampler is None:  # not the node's meter (local rank > 0): nothing was started
            return False
        self._exiting = True
        try:
            if self.breach is not None:
                status, error = STATUS_BREACHED, str(self.breach)
            elif exc is None:
                status, error = STATUS_SUCCEEDED, None
            elif isinstance(exc, (SystemExit, KeyboardInterrupt, StepInterrupted)):
                status, error = STATUS_KILLED, f"{type(exc).__name__}: {exc}"
            else:
                status, error = STATUS_FAILED, f"{type(exc).__name__}: {exc}"
            self._finalize(status, error=error)
        finally:
            self._interrupter.restore()
            self._term.restore()
        if self.breach is not None:
            raise self.breach from None
        return False

    # internals --------------------------------------------------------------------------------
    def _resolve_price(self) -> float | None:
        gpu_type, detected = self.gpu_type, self.detected_gpu_type
        if self._requested_type is not None and detected is not None and detected != gpu_type:
            _warn_mismatch(gpu_type, detected)
        devices = self._sampler.devices if self._sampler else []
        types = [device_type(d) for d in devices]
        if self._requested_type is None and len(set(types)) > 1 and None not in types:
            self._device_types = types  # type: ignore[assignment]  # each device priced as its own type
        if gpu_type is None:
            self._price_note = "GPU type unknown (pass gpu_type=...): the step is not priced"
            return None
        try:
            if self._device_types:
                return price(Usage(duration_s=3600.0, gpus_allocated=1), self.catalog, gpu_type, self.pricing,
                             device_types=self._device_types).gpu_hour_usd
            return self.catalog.gpu_hour_usd(gpu_type, self.pricing)
        except UnknownGpuType as e:
            if self._requested_type is not None:
                raise
            self._price_note = f"detected GPU {gpu_type!r} has no price ({e}); pass gpu_type=... to price it"
            return None

    def _on_sample(self, sampler: Sampler) -> None:
        """On the sampler thread after each sample: the live checks, then the checkpoints."""
        if self.breach is None and not self._exiting and self.live is not None:
            idle_for = sampler.idle_for_s() if self.limits.idle_timeout_s is not None else None
            breach = self.live.check(elapsed_s=sampler.elapsed_s, spent_usd=self.cost_so_far(), idle_for_s=idle_for)
            if breach is not None:
                self.breach = breach
                log.error("mlcost: %s", breach)
        if self.breach is not None and self._in_body and not self._exiting and self._interrupts_sent < 3:
            self._interrupts_sent += 1  # resent (at most 3x) in case the body swallowed the first
            self._interrupter.interrupt()
        self._checkpoints.on_sample(sampler.last_t, ending=self._exiting)

    def _record(self, status: str, usage: Usage, error: str | None = None) -> StepCost:
        reasons = list(usage.degraded_reasons)
        if self._price_note:
            reasons.append(self._price_note)
        gpu_type = self.gpu_type
        money: dict[str, Any] = {}
        if self._unit_price is not None and gpu_type is not None:
            c = price(usage, self.catalog, gpu_type, self.pricing, device_types=self._device_types)
            money = {
                "gpu_hour_usd": c.gpu_hour_usd,
                "total_usd": c.total_usd,
                "compute_usd": c.compute_usd,
                "idle_usd": c.idle_usd,
                "energy_usd": c.energy_usd,
                "spot_whatif_usd": c.spot_whatif_usd,
            }
        breach = None
        if self.breach is not None and status != STATUS_RUNNING:
            b = self.breach
            breach = Breach(kind=b.limit_name, limit=b.limit, observed=b.observed, policy=b.policy, message=str(b))
        return StepCost(
            step_id=self.step_id,
            name=self.name,
            status=status,
            started_at=self._started_at or _now(),
            ended_at=None if status == STATUS_RUNNING else _now(),
            duration_s=usage.duration_s,
            gpus=usage.gpus_allocated,
            gpu_type=gpu_type,
            detected_gpu_type=self.detected_gpu_type,
            pricing=self.pricing,
            tags=self.tags,
            run_key=self.run_key,
            context=self.context,
            gpu_hours=usage.gpu_hours,
            util_mean_pct=usage.util_mean_pct,
            mem_peak_gb=usage.mem_peak_gb,
            idle_fraction=usage.idle_fraction,
            energy_kwh=usage.energy_kwh,
            samples=usage.samples,
            telemetry="degraded" if reasons and usage.telemetry != "none" else usage.telemetry,
            simulated=usage.simulated,
            util_signal=usage.util_signal,
            energy_method=usage.energy_method,
            degraded_reasons=reasons,
            devices=usage.devices,
            host=usage.host,
            idle_threshold_pct=usage.idle_threshold_pct,
            breach=breach,
            error=error,
            mlflow_run_id=self.mlflow_run_id,
            job_id=self.job.job_id,
            node_rank=self.job.node_rank if self.job.job_id is not None else None,
            nodes=self.nodes,
            **money,
        )

    def _finalize(self, status: str, *, error: str | None = None) -> StepCost | None:
        """Stop sampling and record the step, once: the ledger first, then MLflow.

        None when there is nothing to record yet: the meter was never entered, or a SIGTERM
        handler re-entered this on the same thread while the step was being recorded (the lock is
        reentrant), where stopping again would wait forever on the sampler's lock; the record in
        progress stands."""
        with self._lock:
            if self.cost is not None:
                return self.cost
            if self._finalizing or self._sampler is None:
                return None
            self._finalizing = True
            self._checkpoints.stop(self.mlflow_timeout_s)  # no checkpoint races the sealed row
            usage = self._sampler.stop()  # joins the sampler thread: no flush starts after this
            self._checkpoints.join(self.mlflow_timeout_s)
            # Which MLflow run the step is meant for is settled before the ledger's sealed write, so
            # a step whose write to the caller's active run fails is later synced into that run.
            mlflow_on = self._mlflow_enabled()
            step = self._with_spike(self._record(status, usage, error))
            self.cost = step
            self._write_ledger(step, series=self._sampler.series())
            opened = self._opener.wait(self.mlflow_timeout_s) if self._opener is not None else None
            if opened is not None and self.mlflow_run_id is not None:
                # the body started a run of its own and left it active: the cost goes there, as it
                # always has, and the run opened for the step is removed
                self._opener.discard(tracking_uri=self.tracking_uri)  # type: ignore[union-attr]
                opened = None
            if mlflow_on and self._opener is not None and self._opener.hung:
                log.warning("mlcost: MLflow did not answer within %.0fs; step %s is in the ledger %s, run "
                            "`mlcost sync` later", self.mlflow_timeout_s, self.step_id, self.ledger.path)  # fmt: skip
            elif mlflow_on:
                from mlcost.sinks.mlflow_sink import log_step_with_timeout

                run_id = log_step_with_timeout(
                    step,
                    self._sampler.series(),
                    ledger=self.ledger,
                    timeout_s=self.mlflow_timeout_s,
                    own_run_id=opened,
                    **self._mlflow_target(),
                )
                if run_id:
                    self.cost = step.model_copy(update={"mlflow_run_id": run_id})
                    if self.job.is_multi_node:
                        from mlcost.sinks.mlflow_jobs import log_job_with_timeout

                        log_job_with_timeout(self.cost, timeout_s=self.mlflow_timeout_s, **self._mlflow_target())
            self._alert(self.cost, refused=False)
            log.info("mlcost: %s", self.cost.summary())
            return self.cost

    def _record_refusal(self, refusal: PreflightRefused) -> None:
        """A refused step goes into the ledger (status ``breached``, nothing spent), so chargeback,
        the Cost view and the gate show what the policy stopped, not only what ran. Not MLflow:
        no run was started, and a refusal must not wait on a tracking server."""
        assert self._sampler is not None
        probed = self._sampler.stop()  # closes NVML; what was learned about the devices is kept
        self.breach = refusal
        self._started_at = _now()
        usage = Usage(
            duration_s=0.0,
            gpus_allocated=self.gpus,
            telemetry=probed.telemetry,
            simulated=probed.simulated,
            util_signal=probed.util_signal,
            degraded_reasons=probed.degraded_reasons,
            idle_threshold_pct=probed.idle_threshold_pct,
        )
        self.cost = self._record(STATUS_BREACHED, usage, error=str(refusal))
        self._write_ledger(self.cost)
        self._alert(self.cost, refused=True)

    # budget windows, spikes and alerts: decided in mlcost.windows and mlcost.step_alerts ------
    def _preflight_windows(self) -> None:
        from mlcost.windows import check_windows

        duration = self.limits.max_duration_s
        projected = None
        if duration is not None and self._unit_price is not None:
            projected = allocated_cost(self.gpus, duration.value, self._unit_price)
        check_windows(self.name, self.policy, self.tags, projected_usd=projected, ledger=self.ledger)

    def _with_spike(self, step: StepCost) -> StepCost:
        from mlcost.step_alerts import with_spike

        return with_spike(step, self.ledger)

    def _alert(self, step: StepCost, *, refused: bool) -> None:
        from mlcost.step_alerts import send_step_alerts

        send_step_alerts(step, self.breach, refused=refused, policy=self.policy, ledger=self.ledger)

    def _mlflow_target(self) -> dict[str, Any]:
        """Where this step's MLflow run is: the same for the periodic flush and the final log, so
        both land on one run."""
        return {
            "experiment": self.experiment,
            "run_id": self.mlflow_run_id,
            "parent_run_id": self._parent(),
            "tracking_uri": self.tracking_uri,
        }

    def _parent(self) -> str | None:
        """The MLflow run this step's run nests under: given, or looked up once (a DAG run's run)."""
        if self._parent_lookup is not None:
            lookup, self._parent_lookup = self._parent_lookup, None
            self.mlflow_parent_run_id = lookup()
        return self.mlflow_parent_run_id

    def _mlflow_enabled(self) -> bool:
        """MLflow is used when configured: a run to log into, an active run of the user's (only
        looked for when mlflow is already imported: we never import it to find out), or a
        tracking URI. An active run wins over a new one, so cost lands on the training run, unless
        ``tracking_uri`` names another server than the one the active run lives on."""
        if self.mlflow_run_id:
            return True
        import sys

        mlflow = sys.modules.get("mlflow")
        active = mlflow.active_run() if mlflow is not None and hasattr(mlflow, "active_run") else None
        if active is not None and self.tracking_uri in (None, mlflow.get_tracking_uri()):
            self.mlflow_run_id = active.info.run_id
            return True
        return bool(self.tracking_uri or os.environ.get("MLFLOW_TRACKING_URI"))

    def _write_ledger(self, step: StepCost, series: dict[str, Any] | None = None) -> None:
        try:
            self.ledger.write(step, series=series)
        except Exception as e:  # the job must not die because the ledger disk is full
            log.error("mlcost: could not write step %s to the ledger %s: %s", step.step_id, self.ledger.path, e)


_mismatches_warned: set[tuple[str, str]] = set()


def _warn_mismatch(declared: str, detected: str) -> None:
    """Once per process and pair: a DAG of a hundred steps declared the same way says it once."""
    if (declared, detected) not in _mismatches_warned:
        _mismatches_warned.add((declared, detected))
        log.warning("mlcost: gpu_type=%r was declared but this job runs on %s; it is priced as declared "
                    "(the record keeps both)", declared, detected)


def _host_sampler() -> Any | None:
    try:
        from mlcost.telemetry.host import HostSampler
    except ImportError:  # pragma: no cover - psutil is a dependency
        return None
    return HostSampler()


def meter(name: str, **kwargs: Any) -> Meter:
    """Meter one step::

        with meter("train", gpus=2, gpu_type="H100", budget_usd=40, max_duration="2h",
                   idle_timeout="15m", tags={"team": "search", "model": "ranker"}) as m:
            train()
        m.cost.total_usd

    Raises ``PreflightRefused`` before the body runs when the request breaks the policy, and
    ``BudgetExceeded`` / ``GuardrailBreached`` out of the body when a live limit trips (within two
    sampling intervals). The step is recorded whatever happens.
    """
    return Meter(name, **kwargs)


def metered(name: str | None = None, **kwargs: Any) -> Callable[[F], F]:
    """Decorator form of :func:`meter`; the step is named after the function unless ``name`` is given.
    The ``StepCost`` of the latest call is on ``wrapper.last_cost``."""

    def decorate(fn: F) -> F:
        @functools.wraps(fn)
        def wrapper(*args: Any, **kw: Any) -> Any:
            m = Meter(name or fn.__name__, **kwargs)
            try:
                with m:
                    return fn(*args, **kw)
            finally:
                wrapper.last_cost = m.cost  # type: ignore[attr-defined]

        wrapper.last_cost = None  # type: ignore[attr-defined]
        return wrapper  # type: ignore[return-value]

    return decorate
