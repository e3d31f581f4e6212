"""The Sampler: one background thread that reads the job's devices at a fixed interval.

Samples go into running aggregates and a bounded series per quantity, never to disk or network:
per-sample cost is what we publish and beat peers on, and a week-long step at 10 Hz must use the
same memory as a short one. Aggregates are exact (time-weighted sums), only the series is
downsampled (bucket means, at most ``MAX_SERIES_POINTS`` per series).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from mlcost.errors import DeviceLost
from mlcost.names import MAX_SERIES_POINTS, series_key
from mlcost.telemetry.base import ENERGY_COUNTER, ENERGY_INTEGRATED, ENERGY_NONE, DeviceInfo, GpuBackend, NullBackend
from mlcost.usage import DeviceUsage, HostUsage, Usage

log = logging.getLogger(__name__)

_MJ_PER_KWH = 3.6e9
_J_PER_KWH = 3.6e6


class BoundedSeries:
    """Bucket means of a time series in at most ``max_points`` buckets.

    When the buckets are full, neighbours are merged pairwise and the bucket width doubles, so
    memory is bounded whatever the step's length and every bucket still covers equal time.
    """

    __slots__ = ("_buckets", "_max", "_start", "_width")

    def __init__(self, start: float, width: float, max_points: int = MAX_SERIES_POINTS) -> None:
        self._start, self._width, self._max = start, max(width, 1e-6), max_points
        self._buckets: list[list[float]] = []  # [sum, count, first_t]

    def add(self, t: float, value: float) -> None:
        slot = int((t - self._start) / self._width)
        while slot >= self._max:
            self._halve()
            slot = int((t - self._start) / self._width)
        buckets = self._buckets
        while len(buckets) <= slot:
            buckets.append([0.0, 0, t])
        bucket = buckets[slot]
        bucket[0] += value
        bucket[1] += 1

    def _halve(self) -> None:
        merged = []
        for i in range(0, len(self._buckets), 2):
            pair = self._buckets[i : i + 2]
            merged.append([sum(b[0] for b in pair), sum(b[1] for b in pair), pair[0][2]])
        self._buckets, self._width = merged, self._width * 2

    def __len__(self) -> int:
        return len(self._buckets)

    def points(self, wall_offset: float) -> list[tuple[int, float]]:
        """(epoch milliseconds, mean) per non-empty bucket; ``wall_offset`` maps the clock to epoch."""
        return [
            (int((self._start + i * self._width + wall_offset) * 1000), s / n)
            for i, (s, n, _t) in enumerate(self._buckets)
            if n
        ]


class _DeviceAccumulator:
    """Exact, time-weighted aggregates of one device (trapezoid rule between readings)."""

    def __init__(self, device: DeviceInfo, start: float, interval: float, threshold: float) -> None:
        self.device, self.threshold = device, threshold
        self.last_t: float | None = None
        self.seconds = self.util_seconds = self.util_weighted = self.idle_seconds = 0.0
        self.nvml_util_weighted = self.nvml_util_seconds = 0.0
        self.sm_weighted = self.sm_seconds = self.tensor_weighted = self.tensor_seconds = 0.0
        self.power_joules = self.power_seconds = 0.0
        self.prev: dict[str, float] = {}
        self.prev_below: bool | None = None
        self.util_peak = self.mem_peak = self.power_peak = None
        self.energy_first = self.energy_last = None
        self.samples = 0
        self.lost_at: float | None = None
        self.below_since: float | None = None  # for the idle-timeout guardrail
        self.series = {q: BoundedSeries(start, interval) for q in ("util_pct", "mem_used_gb", "power_w")}

    def add(self, t: float, r: Any) -> None:
        dt = 0.0 if self.last_t is None else t - self.last_t
        self.last_t = t
        self.samples += 1
        self.seconds += dt
        util = r.util_pct
        if util is not None:
            self.util_weighted += self._trapezoid("util", util, dt)
            self.util_seconds += dt if "util" in self.prev else 0.0
            below = util < self.threshold
            # each end of the interval carries half of it, as in the trapezoid rule
            self.idle_seconds += dt / 2 * (below + self.prev_below) if self.prev_below is not None else 0.0
            self.prev_below = below
            if below:
                self.below_since = t if self.below_since is None else self.below_since
            else:
                self.below_since = None
            self.util_peak = util if self.util_peak is None else max(self.util_peak, util)
            self.series["util_pct"].add(t, util)
        if r.nvml_util_pct is not None:
            self.nvml_util_seconds += dt if "nvml" in self.prev else 0.0
            self.nvml_util_weighted += self._trapezoid("nvml", r.nvml_util_pct, dt)
        if r.sm_active_pct is not None:
            self.sm_seconds += dt if "sm" in self.prev else 0.0
            self.sm_weighted += self._trapezoid("sm", r.sm_active_pct, dt)
        if r.tensor_active_pct is not None:
            self.tensor_seconds += dt if "tensor" in self.prev else 0.0
            self.tensor_weighted += self._trapezoid("tensor", r.tensor_active_pct, dt)
        if r.mem_used_gb is not None:
            self.mem_peak = r.mem_used_gb if self.mem_peak is None else max(self.mem_peak, r.mem_used_gb)
            self.series["mem_used_gb"].add(t, r.mem_used_gb)
        power = r.power_w
        if power is not None:
            self.power_seconds += dt if "power" in self.prev else 0.0
            self.power_joules += self._trapezoid("power", power, dt)
            self.power_peak = power if self.power_peak is None else max(self.power_peak, power)
            self.series["power_w"].add(t, power)
        if r.energy_mj is not None:
            if self.energy_first is None:
                self.energy_first = r.energy_mj
            self.energy_last = r.energy_mj

    def _trapezoid(self, key: str, value: float, dt: float) -> float:
        """Area of (t_prev, t] by the trapezoid rule: unbiased for a signal sampled at any phase,
        whether the source averages over a trailing window (NVML util) or is instantaneous (power)."""
        previous = self.prev.get(key)
        self.prev[key] = value
        return 0.0 if previous is None else (previous + value) / 2 * dt

    def usage(self, start: float) -> DeviceUsage:
        d = self.device

        def mean(weighted: float, seconds: float) -> float | None:
            return weighted / seconds if seconds > 0 else None

        if self.energy_first is not None and self.energy_last is not None and self.seconds > 0:
            energy, method = (self.energy_last - self.energy_first) / _MJ_PER_KWH, ENERGY_COUNTER
        elif self.power_seconds > 0:
            energy, method = self.power_joules / _J_PER_KWH, ENERGY_INTEGRATED
        else:
            energy, method = None, ENERGY_NONE
        return DeviceUsage(
            index=d.index,
            uuid=d.uuid,
            name=d.name,
            gpu_type=d.gpu_type,
            mig_profile=d.mig_profile,
            seconds=self.seconds,
            samples=self.samples,
            util_mean_pct=mean(self.util_weighted, self.util_seconds),
            util_peak_pct=self.util_peak,
            nvml_util_mean_pct=mean(self.nvml_util_weighted, self.nvml_util_seconds),
            sm_active_mean_pct=mean(self.sm_weighted, self.sm_seconds),
            tensor_active_mean_pct=mean(self.tensor_weighted, self.tensor_seconds),
            mem_peak_gb=self.mem_peak,
            mem_total_gb=d.mem_total_gb,
            power_mean_w=mean(self.power_joules, self.power_seconds),
            power_peak_w=self.power_peak,
            energy_kwh=energy,
            energy_method=method,
            power_integrated_kwh=self.power_joules / _J_PER_KWH if self.power_seconds > 0 else None,
            idle_seconds=self.idle_seconds,
            lost_at_s=None if self.lost_at is None else self.lost_at - start,
        )


class Sampler:
    """Reads ``backend`` every ``interval`` seconds on a daemon thread until :meth:`stop`.

    ``on_sample`` runs on the sampler thread after each sample (the meter's live guardrails); it
    must be cheap. The host (process-tree CPU) is read at most once a second: it costs more than a
    GPU read and changes slowly.
    """

    def __init__(
        self,
        backend: GpuBackend | None = None,
        *,
        interval: float = 1.0,
        gpus_allocated: int | None = None,
        idle_threshold_pct: float = 5.0,
        host: Any | None = None,
        clock: Callable[[], float] = time.monotonic,
        on_sample: Callable[[Sampler], None] | None = None,
    ) -> None:
        if not 0.01 <= interval <= 3600:
            raise ValueError(f"interval must be between 0.01 s and 3600 s, got {interval}")
        self.backend = backend or NullBackend()
        self.interval = interval
        self.idle_threshold_pct = idle_threshold_pct
        self.host = host
        self.clock = clock
        self.on_sample = on_sample
        self._gpus_allocated = gpus_allocated
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._devices: list[_DeviceAccumulator] = []
        self._degraded: list[str] = []
        self._host_cpu_weighted = self._host_cpu_seconds = 0.0
        self._host_cpu_peak = self._host_rss_peak = None
        self._host_last_t: float | None = None
        self.samples = 0
        self.start_t = self.last_t = 0.0
        self._wall_offset = 0.0

    # lifecycle --------------------------------------------------------------------------------
    def open(self) -> None:
        """Find the devices (probing capabilities once) and take the first sample."""
        try:
            devices = self.backend.open()
        except Exception as e:  # telemetry never breaks the job
            reason = f"GPU telemetry could not start: {e}"
            log.warning("mlcost: %s; the step is priced by allocation only", reason)
            self.backend = NullBackend(reason)
            devices = []
        self.start_t = self.last_t = self.clock()
        self._wall_offset = time.time() - self.start_t
        self._devices = [_DeviceAccumulator(d, self.start_t, self.interval, self.idle_threshold_pct) for d in devices]
        if self.host is not None and getattr(self.host, "open", None):
            self.host.open()
        self.sample_once()

    def start(self) -> Sampler:
        self.open()
        return self.start_thread()

    def start_thread(self) -> Sampler:
        """Start sampling in the background (after :meth:`open`)."""
        self._thread = threading.Thread(target=self._run, name="mlcost-sampler", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> Usage:
        """Stop the thread, take a last sample so the step's end is measured, close the backend."""
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=max(5.0, 2 * self.interval))
        self.sample_once()
        try:
            self.backend.close()
        except Exception as e:  # pragma: no cover - closing NVML must not fail the step
            log.debug("mlcost: closing telemetry failed: %s", e)
        return self.usage()

    def _run(self) -> None:
        next_t = self.clock() + self.interval
        while not self._stop.wait(max(0.0, next_t - self.clock())):
            next_t += self.interval
            self.sample_once()
            if self.on_sample is not None:
                try:
                    self.on_sample(self)
                except Exception:  # a guardrail bug must not kill the sampler
                    log.exception("mlcost: live guardrail check failed")

    # sampling ---------------------------------------------------------------------------------
    def sample_once(self) -> None:
        t = self.clock()
        with self._lock:
            for acc in self._devices:
                if acc.lost_at is not None:
                    continue
                try:
                    reading = self.backend.read(acc.device)
                except DeviceLost as e:
                    self._lose(acc, t, str(e))
                    continue
                except Exception as e:  # an unexpected backend failure degrades, never raises
                    self._lose(acc, t, f"{type(e).__name__}: {e}")
                    continue
                acc.add(t, reading)
            if self.host is not None and (self._host_last_t is None or t - self._host_last_t >= 1.0):
                self._read_host(t)
            self.samples += 1
            self.last_t = t

    def _lose(self, acc: _DeviceAccumulator, t: float, why: str) -> None:
        acc.lost_at = t
        reason = f"device {acc.device.index} ({acc.device.uuid}) lost {t - self.start_t:.1f}s into the step: {why}"
        self._degraded.append(reason)
        log.warning("mlcost: %s; it is billed by allocation from here on", reason)

    def _read_host(self, t: float) -> None:
        try:
            reading = self.host.read()
        except Exception as e:
            log.debug("mlcost: host sample failed: %s", e)
            return
        cpu, rss = getattr(reading, "cpu_pct", None), getattr(reading, "rss_gb", None)
        if cpu is not None and self._host_last_t is not None:
            dt = t - self._host_last_t
            self._host_cpu_weighted += cpu * dt
            self._host_cpu_seconds += dt
            self._host_cpu_peak = cpu if self._host_cpu_peak is None else max(self._host_cpu_peak, cpu)
        if rss is not None:
            self._host_rss_peak = rss if self._host_rss_peak is None else max(self._host_rss_peak, rss)
        self._host_last_t = t

    # views ------------------------------------------------------------------------------------
    @property
    def elapsed_s(self) -> float:
        return self.last_t - self.start_t

    @property
    def devices(self) -> list[DeviceInfo]:
        return [a.device for a in self._devices]

    def idle_for_s(self) -> float | None:
        """How long every metered device has been below the idle threshold (None: not judged —
        no device, or a device whose utilisation cannot be read)."""
        live = [a for a in self._devices if a.lost_at is None]
        if not live or any(a.util_peak is None for a in live):
            return None
        if any(a.below_since is None for a in live):
            return 0.0
        return self.last_t - max(a.below_since for a in live)  # type: ignore[type-var]

    def usage(self) -> Usage:
        with self._lock:
            status = self.backend.status
            devices = [a.usage(self.start_t) for a in self._devices]
            reasons = list(dict.fromkeys([*status.degraded_reasons, *self._degraded]))
            methods = {d.energy_method for d in devices}
            host = HostUsage(
                cpu_mean_pct=self._host_cpu_weighted / self._host_cpu_seconds if self._host_cpu_seconds else None,
                cpu_peak_pct=self._host_cpu_peak,
                rss_peak_gb=self._host_rss_peak,
                cpu_count=getattr(self.host, "cpu_count", None),
            )
            return Usage(
                duration_s=self.elapsed_s,
                gpus_allocated=len(devices) if self._gpus_allocated is None else self._gpus_allocated,
                devices=devices,
                host=host,
                telemetry="degraded" if reasons else status.telemetry,
                simulated=status.telemetry == "simulated",
                util_signal=status.util_signal,
                energy_method=methods.pop() if len(methods) == 1 else ("mixed" if methods else ENERGY_NONE),
                degraded_reasons=reasons,
                samples=self.samples,
                idle_threshold_pct=self.idle_threshold_pct,
            )

    def series(self) -> dict[str, list[tuple[int, float]]]:
        """Downsampled per-device series keyed by their MLflow names (``gpu/<i>/util_pct`` ...)."""
        with self._lock:
            return {
                series_key(a.device.index, q): s.points(self._wall_offset)
                for a in self._devices
                for q, s in a.series.items()
                if len(s)
            }
