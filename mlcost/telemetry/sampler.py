"""The Sampler: one background thread that reads the job's devices at a fixed interval.

Samples go into running aggregates and a bounded series per quantity, never to disk or network:
per-sample cost is what we publish and beat peers on, and a week-long step at 10 Hz must use the
same memory as a short one. Aggregates are exact (time-weighted sums), only the series is
downsampled (bucket means, at most ``MAX_SERIES_POINTS`` per series).
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from mlcost.errors import DeviceLost
from mlcost.names import MAX_SERIES_POINTS, series_key
from mlcost.telemetry.base import (
    ENERGY_COUNTER,
    ENERGY_INTEGRATED,
    ENERGY_NONE,
    UTIL_SIGNAL_NONE,
    DeviceInfo,
    GpuBackend,
    NullBackend,
)
from mlcost.usage import DeviceUsage, HostUsage, Usage

log = logging.getLogger(__name__)

_MJ_PER_KWH = 3.6e9
_J_PER_KWH = 3.6e6
# Slow signals are read at most this often, and always on the first and the last sample: the
# energy counter only needs its ends (a device lost mid-step loses at most this much of it),
# memory is the caching allocator's reservation (held, not freed per batch), temperature and
# clocks change over seconds, and the host's process tree costs more to read than all GPUs.
SLOW_EVERY_S = 1.0


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


class _TimeWeighted:
    """The trapezoid integral of a signal read at irregular times: each span between two readings
    carries the mean of its two ends. Unbiased whether the source is a trailing-window average (NVML
    util, GPM) or instantaneous (power), and a reading missed (slow cadence, a failed call) only
    makes one span longer."""

    __slots__ = ("last", "last_t", "seconds", "weighted")

    def __init__(self) -> None:
        self.last: float | None = None
        self.last_t = self.weighted = self.seconds = 0.0

    def add(self, t: float, value: float) -> float:
        """Fold in a reading; returns the span it closed (0 for the first)."""
        span = 0.0
        if self.last is not None:
            span = t - self.last_t
            self.weighted += (self.last + value) / 2 * span
            self.seconds += span
        self.last, self.last_t = value, t
        return span

    @property
    def mean(self) -> float | None:
        return self.weighted / self.seconds if self.seconds > 0 else None


class _DeviceAccumulator:
    """Exact, time-weighted aggregates of one device (trapezoid rule between readings), peaks,
    the energy counter's ends and bounded series."""

    def __init__(self, device: DeviceInfo, start: float, interval: float, threshold: float) -> None:
        self.device, self.threshold = device, threshold
        self.last_t: float | None = None
        self.seconds = self.idle_seconds = 0.0
        self.util, self.nvml_util, self.sm, self.tensor, self.power = (_TimeWeighted() for _ in range(5))
        self.prev_below = False
        self.util_peak = self.mem_peak = self.power_peak = None
        self.energy_first = self.energy_last = None
        self.temperature_peak: float | None = None
        self.clock_sum, self.clock_reads = 0.0, 0
        self.samples = 0
        self.lost_at: float | None = None
        self.below_since: float | None = None  # for the idle-timeout guardrail
        self.util_series = BoundedSeries(start, interval)
        self.mem_series = BoundedSeries(start, interval)
        self.power_series = BoundedSeries(start, interval)

    @property
    def series(self) -> dict[str, BoundedSeries]:
        return {"util_pct": self.util_series, "mem_used_gb": self.mem_series, "power_w": self.power_series}

    def add(self, t: float, r: Any) -> None:
        """Fold one reading in (runs per device per sample: the hot loop the overhead benchmark
        measures). Each integrated quantity keeps the time of its own last reading."""
        dt = 0.0 if self.last_t is None else t - self.last_t
        self.last_t = t
        self.samples += 1
        self.seconds += dt
        util = r.util_pct
        if util is not None:
            below = util < self.threshold
            span = self.util.add(t, util)
            self.idle_seconds += span / 2 * (below + self.prev_below)  # the trapezoid rule for "idle"
            self.prev_below = below
            if not below:
                self.below_since = None
            elif self.below_since is None:
                self.below_since = t
            if self.util_peak is None or util > self.util_peak:
                self.util_peak = util
            self.util_series.add(t, util)
        if r.sm_active_pct is not None:
            self.sm.add(t, r.sm_active_pct)
        if r.tensor_active_pct is not None:
            self.tensor.add(t, r.tensor_active_pct)
        if r.nvml_util_pct is not None:
            self.nvml_util.add(t, r.nvml_util_pct)
        power = r.power_w
        if power is not None:
            self.power.add(t, power)
            if self.power_peak is None or power > self.power_peak:
                self.power_peak = power
            self.power_series.add(t, power)
        # the slow signals (memory, counter, temperature, clocks): None except on slow readings
        mem = r.mem_used_gb
        if mem is not None:
            if self.mem_peak is None or mem > self.mem_peak:
                self.mem_peak = mem
            self.mem_series.add(t, mem)
        if r.energy_mj is not None:
            if self.energy_first is None:
                self.energy_first = r.energy_mj
            self.energy_last = r.energy_mj
        if r.temperature_c is not None and (self.temperature_peak is None or r.temperature_c > self.temperature_peak):
            self.temperature_peak = r.temperature_c
        if r.sm_clock_mhz is not None:
            self.clock_sum += r.sm_clock_mhz
            self.clock_reads += 1

    def usage(self, start: float, util_signal: str) -> DeviceUsage:
        """``util_signal``: the device's signal as the backend chose it; "none" when no
        utilisation was ever read, so idle time reads as unknown rather than 0."""
        d = self.device
        if self.util.last is None:
            util_signal = UTIL_SIGNAL_NONE
        if self.energy_first is not None and self.energy_last is not None and self.seconds > 0:
            energy, method = (self.energy_last - self.energy_first) / _MJ_PER_KWH, ENERGY_COUNTER
        elif self.power.seconds > 0:
            energy, method = self.power.weighted / _J_PER_KWH, ENERGY_INTEGRATED
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
            util_signal=util_signal,
            util_mean_pct=self.util.mean,
            util_peak_pct=self.util_peak,
            nvml_util_mean_pct=self.nvml_util.mean,
            sm_active_mean_pct=self.sm.mean,
            tensor_active_mean_pct=self.tensor.mean,
            mem_peak_gb=self.mem_peak,
            mem_total_gb=d.mem_total_gb,
            power_mean_w=self.power.mean,
            power_peak_w=self.power_peak,
            energy_kwh=energy,
            energy_method=method,
            power_integrated_kwh=self.power.weighted / _J_PER_KWH if self.power.seconds > 0 else None,
            idle_seconds=self.idle_seconds,
            temperature_peak_c=self.temperature_peak,
            sm_clock_mean_mhz=self.clock_sum / self.clock_reads if self.clock_reads else None,
            lost_at_s=None if self.lost_at is None else self.lost_at - start,
        )


class Sampler:
    """Reads ``backend`` every ``interval`` seconds on a daemon thread until :meth:`stop`.

    ``on_sample`` runs on the sampler thread after each sample (the meter's live guardrails); it
    must be cheap. The util signal and power are read every sample; the slow signals (memory, the
    energy counter, temperature, clocks, NVML util beside GPM, the host's process tree) every
    :data:`SLOW_EVERY_S` and at the end.
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
        # Held while the step runs; stop() releases it. The thread waits on it with a timeout: one
        # C-level futex wait per interval, where Event.wait runs a Python Condition each time.
        self._running = threading.Lock()
        self._running.acquire()
        self._stopped = False
        self._thread: threading.Thread | None = None
        self._devices: list[_DeviceAccumulator] = []
        self._degraded: list[str] = []
        self._host_cpu_weighted = self._host_cpu_seconds = 0.0
        self._host_cpu_peak = self._host_rss_peak = None
        self._host_last_t: float | None = None
        self._slow_last_t: float | None = None
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
        if not self._stopped:
            self._stopped = True
            with contextlib.suppress(RuntimeError):  # a concurrent stop() (SIGTERM at exit) released it
                self._running.release()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=max(5.0, 2 * self.interval))
        self.sample_once(final=True)
        try:
            self.backend.close()
        except Exception as e:  # pragma: no cover - closing NVML must not fail the step
            log.debug("mlcost: closing telemetry failed: %s", e)
        return self.usage()

    def _run(self) -> None:
        next_t = self.clock() + self.interval
        while not self._running.acquire(timeout=max(0.0, next_t - self.clock())):
            next_t += self.interval
            self.sample_once()
            if self.on_sample is not None:
                try:
                    self.on_sample(self)
                except Exception:  # a guardrail bug must not kill the sampler
                    log.exception("mlcost: live guardrail check failed")

    # sampling ---------------------------------------------------------------------------------
    def sample_once(self, *, final: bool = False) -> None:
        """Read every live device once; ``final`` also reads the slow signals (the step's end)."""
        t = self.clock()
        with self._lock:
            slow = final or self._slow_last_t is None or t - self._slow_last_t >= SLOW_EVERY_S
            read = self.backend.read
            for acc in self._devices:
                if acc.lost_at is not None:
                    continue
                try:
                    reading = read(acc.device, slow=slow)
                except DeviceLost as e:
                    self._lose(acc, t, str(e))
                    continue
                except Exception as e:  # an unexpected backend failure degrades, never raises
                    self._lose(acc, t, f"{type(e).__name__}: {e}")
                    continue
                acc.add(t, reading)
            if slow:
                self._slow_last_t = t
                if self.host is not None:
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
            devices = [a.usage(self.start_t, status.device_signals.get(a.device.index, status.util_signal))
                       for a in self._devices]
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
