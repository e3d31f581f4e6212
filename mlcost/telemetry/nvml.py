"""GPU telemetry from NVML (``nvidia-ml-py``), for the job's devices only.

Each capability is probed once per device in :meth:`NvmlBackend.open`; one the device does not
support is dropped with one warning and reads as ``None`` from then on, never retried per sample.
Vendor errors are mapped in one place (:func:`_kind`): a device that stops answering raises
:class:`~mlcost.errors.DeviceLost`, anything else degrades a field, never the job.

MIG instances: NVML has no per-instance power or energy, so an instance is attributed its parent's
power and energy in proportion to its GPU-instance slices (N/7, N/4 on A30); utilisation comes from
GPM on Hopper+ (``nvmlGpmMigSampleGet``), as NVML's util is not supported on instance handles.
"""

from __future__ import annotations

import logging
import os
import re
from dataclasses import dataclass, field
from typing import Any

from mlcost.errors import DeviceLost, TelemetryError
from mlcost.telemetry import base
from mlcost.telemetry.base import BackendStatus, DeviceInfo, DeviceReading
from mlcost.telemetry.devices import Selected, enumerate_gpus, mig_profile_name, resolve_visible
from mlcost.telemetry.gpm import GpmWindow

log = logging.getLogger(__name__)

# NVML return codes (stable ABI values, so pynvml need not be imported to classify them).
_LOST_CODES = {1, 9, 15, 16, 18, 28, 999, 6}  # uninitialized, driver gone, GPU lost, reset, RM mismatch, not found
_UNSUPPORTED_CODES = {3, 4, 13, 25, 26}  # not supported, no permission, function missing, version, deprecated
_FROM_ENV = object()
_FIGURES = {"util", "gpm_sm", "memory", "power", "energy"}  # what a dropped capability degrades; not
# temperature, clocks or tensor activity, which no cost figure depends on
_NOMINAL_GB = {"H100": 80, "H200": 141, "A100-80GB": 80, "A100-40GB": 40, "L40S": 48, "L4": 24, "A10G": 24, "T4": 16}
_GPU_PATTERNS = (
    (r"\bH200\b", "H200"), (r"\bH100\b", "H100"), (r"\bA100\b.*80\s*GB", "A100-80GB"),
    (r"\bA100\b.*40\s*GB", "A100-40GB"), (r"\bL40S\b", "L40S"), (r"\bL4\b", "L4"), (r"\bA10G\b", "A10G"),
    (r"\bT4\b", "T4"),
)


def gpu_type_from_name(name: str, mem_total_gb: float | None = None) -> str | None:
    """The price-catalog key for an NVML device name (None when unknown, so nobody is mis-priced).
    An A100 whose name omits its size is told apart by its memory."""
    for pattern, key in _GPU_PATTERNS:
        if re.search(pattern, name, re.IGNORECASE):
            return key
    if re.search(r"\bA100\b", name, re.IGNORECASE) and mem_total_gb:
        return "A100-80GB" if mem_total_gb > 50 else "A100-40GB"
    return None


def _kind(e: BaseException) -> str:
    """The one mapping of vendor errors: ``lost``, ``unsupported`` or ``transient``."""
    if isinstance(e, AttributeError):  # an older pynvml without the function
        return "unsupported"
    code = getattr(e, "value", None)
    return "lost" if code in _LOST_CODES else "unsupported" if code in _UNSUPPORTED_CODES else "transient"


@dataclass
class _Device:
    info: DeviceInfo
    handle: Any
    parent: Any
    share: float = 1.0  # of the parent's power and energy
    gi_id: int | None = None
    caps: set[str] = field(default_factory=set)
    gpm: GpmWindow | None = None
    util_signal: str = base.UTIL_SIGNAL_NONE
    lost: str | None = None


class NvmlBackend:
    """:class:`~mlcost.telemetry.base.GpuBackend` over ``pynvml`` (or a module with its API, such as
    :class:`~mlcost.telemetry.simulated_nvml.SimulatedNVML`)."""

    def __init__(
        self, nvml: Any = None, visible_devices: Any = _FROM_ENV, telemetry: str = "nvml", *, initialized: bool = False
    ) -> None:
        """``visible_devices`` defaults to ``CUDA_VISIBLE_DEVICES``; ``initialized`` says that the
        caller already ran ``nvmlInit`` (to test that NVML works), so :meth:`open` does not init
        twice and :meth:`close` balances it with one ``nvmlShutdown``."""
        self._nvml = nvml
        self._initialized = initialized
        if visible_devices is _FROM_ENV:
            visible_devices = os.environ.get("CUDA_VISIBLE_DEVICES")
        self.visible_devices: str | None = visible_devices
        self.status = BackendStatus(telemetry=telemetry)
        self._devices: dict[int, _Device] = {}
        self._warned: set[tuple[str, str]] = set()

    # vendor calls ---------------------------------------------------------------------------------
    def _call(self, fn: Any, *args: Any, missing_ok: bool = False) -> Any:
        """Call NVML for discovery: None when unsupported (or absent, with ``missing_ok``)."""
        try:
            return fn(*args)
        except (self._nvml.NVMLError, AttributeError) as e:
            kind = _kind(e)
            if kind == "unsupported" or (missing_ok and getattr(e, "value", None) == 6):
                return None
            raise (DeviceLost if kind == "lost" else TelemetryError)(f"{getattr(fn, '__name__', fn)}: {e}") from e

    def _read(self, dev: _Device, cap: str, fn_name: str, *args: Any) -> Any:
        """One per-sample reading (the caller checked ``cap``); vendor errors mapped as in :func:`_kind`."""
        try:
            return getattr(self._nvml, fn_name)(*args)
        except (self._nvml.NVMLError, AttributeError) as e:
            kind = _kind(e)
            if kind == "lost":
                raise DeviceLost(f"device {dev.info.index} ({dev.info.uuid}) stopped answering {fn_name}: {e}") from e
            if kind == "unsupported":
                self._drop(dev, cap, f"{fn_name}: {e}")
            elif (cap, type(e).__name__) not in self._warned:
                self._warned.add((cap, type(e).__name__))
                log.debug("mlcost: %s failed on device %s: %s; reading None this time", fn_name, dev.info.index, e)
            return None

    def _drop(self, dev: _Device, cap: str, why: str) -> None:
        dev.caps.discard(cap)
        message = f"device {dev.info.index} ({dev.info.name}): {cap} not available ({why}); it reads as None"
        self.status.warnings.append(message)
        if cap in _FIGURES:  # a figure the record carries is missing or estimated: say so on it
            self.status.degraded_reasons.append(message)
        log.warning("mlcost: %s", message)
        if cap in ("gpm_sm", "util"):
            self._update_signals()

    # lifecycle ------------------------------------------------------------------------------------
    def open(self) -> list[DeviceInfo]:
        if self._nvml is None:
            import pynvml  # lazy: importing mlcost must not need the driver

            self._nvml = pynvml
        nvml = self._nvml
        try:
            if not self._initialized:
                nvml.nvmlInit()
                self._initialized = True
        except nvml.NVMLError as e:
            raise TelemetryError(f"NVML could not start: {e}") from e
        try:
            gpus = enumerate_gpus(nvml, self._call)
        except (nvml.NVMLError, DeviceLost) as e:
            raise TelemetryError(f"NVML could not list the GPUs: {e}") from e
        for index, sel in enumerate(resolve_visible(self.visible_devices, gpus)):
            try:
                self._devices[index] = dev = self._describe(index, sel)
            except (nvml.NVMLError, TelemetryError) as e:  # unreadable from the start: not metered
                reason = f"device {index} ({sel.uuid}) could not be read at start: {e}"
                self.status.degraded_reasons.append(reason)
                log.warning("mlcost: %s", reason)
                continue
            try:
                self._probe(dev)
            except DeviceLost as e:
                dev.lost = str(e)
        self._update_signals()
        return [d.info for d in self._devices.values()]

    def _describe(self, index: int, sel: Selected) -> _Device:
        nvml, parent = self._nvml, sel.gpu.handle
        handle = sel.mig.handle if sel.mig else parent
        name = nvml.nvmlDeviceGetName(parent)
        mem = self._call(nvml.nvmlDeviceGetMemoryInfo, handle)
        parent_mem = self._call(nvml.nvmlDeviceGetMemoryInfo, parent) if sel.mig else mem
        gpu_type = gpu_type_from_name(name, parent_mem.total / 1e9 if parent_mem else None)
        limit = self._call(nvml.nvmlDeviceGetEnforcedPowerLimit, parent)
        share, profile, gi_id = 1.0, None, None
        if sel.mig:
            attrs = self._call(nvml.nvmlDeviceGetAttributes, handle)
            slices = attrs.gpuInstanceSliceCount if attrs else 1
            share = slices / (4 if "A30" in name else 7)
            mem_share = mem.total / parent_mem.total if mem and parent_mem else 1 / 8
            nominal = _NOMINAL_GB.get(gpu_type or "", (parent_mem.total / 1e9) if parent_mem else 80)
            profile = mig_profile_name(slices, attrs.computeInstanceSliceCount if attrs else None, mem_share, nominal)
            gi_id = sel.mig.gpu_instance_id
        info = DeviceInfo(
            index=index, nvml_index=sel.gpu.index, uuid=sel.uuid,
            name=f"{name} MIG {profile}" if profile else name, gpu_type=gpu_type,
            mem_total_gb=mem.total / 1e9 if mem else None, mig_profile=profile,
            power_limit_w=limit / 1000 * share if limit else None,
        )
        return _Device(info, handle, parent, share, gi_id)

    def _probe(self, dev: _Device) -> None:
        nvml, h, p = self._nvml, dev.handle, dev.parent
        mig = dev.gi_id is not None
        probes = {
            "util": (h, "nvmlDeviceGetUtilizationRates"), "memory": (h, "nvmlDeviceGetMemoryInfo"),
            "power": (p, "nvmlDeviceGetPowerUsage"), "energy": (p, "nvmlDeviceGetTotalEnergyConsumption"),
            "temperature": (p, "nvmlDeviceGetTemperature", nvml.NVML_TEMPERATURE_GPU),
            "sm_clock": (p, "nvmlDeviceGetClockInfo", nvml.NVML_CLOCK_SM),
        }
        missing = []
        for cap, (target, fn_name, *args) in probes.items():
            if self._call(getattr(nvml, fn_name, None) or _absent(fn_name), target, *args) is None:
                missing.append(cap)
            else:
                dev.caps.add(cap)
        support = self._call(getattr(nvml, "nvmlGpmQueryDeviceSupport", None) or _absent("GPM"), p)
        if support is not None and support.isSupportedDevice:
            try:
                dev.gpm = GpmWindow(nvml, p, dev.gi_id)
                dev.caps |= {"gpm_sm", "gpm_tensor"}
            except nvml.NVMLError as e:
                if _kind(e) == "lost":
                    raise DeviceLost(f"device {dev.info.index} ({dev.info.uuid}) stopped answering GPM: {e}") from e
            sm, tensor = self._gpm_metrics(dev, probing=True)
            missing += [c for c, v in (("gpm_sm", sm), ("gpm_tensor", tensor)) if v is None]
            dev.caps -= set(missing)
        if mig and "util" in missing and "gpm_sm" in dev.caps:
            missing.remove("util")  # expected on an instance handle, and GPM covers it
        for cap in missing:
            dev.caps.add(cap)
            self._drop(dev, cap, "not supported by this device or driver")

    def _gpm_metrics(self, dev: _Device, probing: bool = False) -> tuple[float | None, float | None]:
        if dev.gpm is None or not dev.caps & {"gpm_sm", "gpm_tensor"}:
            return None, None
        try:
            values = dev.gpm.read()
        except (self._nvml.NVMLError, AttributeError) as e:
            if _kind(e) == "lost":
                raise DeviceLost(f"device {dev.info.index} ({dev.info.uuid}) stopped answering GPM: {e}") from e
            if _kind(e) == "unsupported" and not probing:
                self._drop(dev, "gpm_sm", f"GPM: {e}")
                dev.caps.discard("gpm_tensor")
            return None, None
        if not probing:
            for cap, v in zip(("gpm_sm", "gpm_tensor"), values, strict=True):
                if v is None and cap in dev.caps:
                    self._drop(dev, cap, "GPM metric not supported")
        return values

    def _update_signals(self) -> None:
        for index, dev in self._devices.items():
            dev.util_signal = (base.UTIL_SIGNAL_GPM_SM if "gpm_sm" in dev.caps
                               else base.UTIL_SIGNAL_NVML if "util" in dev.caps else base.UTIL_SIGNAL_NONE)
            self.status.device_signals[index] = dev.util_signal
        devs = list(self._devices.values())
        signals = {d.util_signal for d in devs}
        self.status.util_signal = signals.pop() if len(signals) == 1 else (
            base.UTIL_SIGNAL_NVML if base.UTIL_SIGNAL_NVML in signals else base.UTIL_SIGNAL_NONE)
        if devs and all("energy" in d.caps for d in devs):
            self.status.energy_method = base.ENERGY_COUNTER
        elif devs and all(d.caps & {"energy", "power"} for d in devs):
            self.status.energy_method = base.ENERGY_INTEGRATED
        else:
            self.status.energy_method = base.ENERGY_NONE

    # reading --------------------------------------------------------------------------------------
    def read(self, device: DeviceInfo, *, slow: bool = True) -> DeviceReading:
        dev = self._devices[device.index]
        if dev.lost:
            raise DeviceLost(dev.lost)
        h, p, share, caps = dev.handle, dev.parent, dev.share, dev.caps
        r = DeviceReading()
        gpm_primary = dev.util_signal == base.UTIL_SIGNAL_GPM_SM
        # NVML's util is itself a trailing-window average: beside GPM it is a cross-check, read slowly
        if (slow or not gpm_primary) and "util" in caps and (
            u := self._read(dev, "util", "nvmlDeviceGetUtilizationRates", h)
        ) is not None:
            r.nvml_util_pct = float(u.gpu)
        if dev.gpm is not None:
            r.sm_active_pct, r.tensor_active_pct = self._gpm_metrics(dev)
        r.util_pct = r.sm_active_pct if gpm_primary else r.nvml_util_pct
        # every sample even beside an energy counter: it is the energy where the counter is missing,
        # and the integration is kept as the counter's cross-check
        if "power" in caps and (mw := self._read(dev, "power", "nvmlDeviceGetPowerUsage", p)) is not None:
            r.power_w = mw / 1000 * share
        if slow:
            self._read_slow(dev, r)
        return r

    def _read_slow(self, dev: _Device, r: DeviceReading) -> None:
        """Signals that a once-a-second read loses nothing of: counters, and memory, which is what
        the CUDA caching allocator has reserved (it grows in steps and is held, not freed per batch)."""
        nvml, p, caps = self._nvml, dev.parent, dev.caps
        if "memory" in caps and (m := self._read(dev, "memory", "nvmlDeviceGetMemoryInfo", dev.handle)) is not None:
            r.mem_used_gb = m.used / 1e9
        if "energy" in caps and (mj := self._read(dev, "energy", "nvmlDeviceGetTotalEnergyConsumption", p)) is not None:
            r.energy_mj = mj * dev.share
        if "temperature" in caps and (
            c := self._read(dev, "temperature", "nvmlDeviceGetTemperature", p, nvml.NVML_TEMPERATURE_GPU)
        ) is not None:
            r.temperature_c = float(c)
        if "sm_clock" in caps and (
            mhz := self._read(dev, "sm_clock", "nvmlDeviceGetClockInfo", p, nvml.NVML_CLOCK_SM)
        ) is not None:
            r.sm_clock_mhz = float(mhz)

    def close(self) -> None:
        nvml = self._nvml
        if nvml is None:
            return
        for dev in self._devices.values():
            if dev.gpm is not None:
                try:
                    dev.gpm.free()
                except Exception as e:  # closing must never fail the step
                    log.debug("mlcost: freeing GPM samples failed: %s", e)
                dev.gpm = None
        try:
            nvml.nvmlShutdown()
        except Exception as e:
            log.debug("mlcost: nvmlShutdown failed: %s", e)


def _absent(name: str) -> Any:
    def missing(*_args: Any) -> Any:
        raise AttributeError(f"this pynvml has no {name}")

    return missing
