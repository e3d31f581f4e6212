"""GPU and host telemetry: pick a backend from the environment.

``import mlcost.telemetry`` stays cheap: pynvml and psutil are imported only when a backend is
opened. See docs/architecture.md and the README for ``MLCOST_GPU_BACKEND`` and the ``MLCOST_SIM_*`` variables.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping

from mlcost.errors import ConfigError
from mlcost.names import ENV_GPU_BACKEND, ENV_SIM_DEVICES, ENV_SIM_GPU, ENV_SIM_TRACE
from mlcost.telemetry.base import GpuBackend, NullBackend

log = logging.getLogger(__name__)

BACKENDS = ("nvml", "simulated", "none")

__all__ = ["BACKENDS", "GpuBackend", "NullBackend", "open_backend"]


def open_backend(env: Mapping[str, str] | None = None) -> GpuBackend:
    """The telemetry backend the environment asks for (not yet opened).

    Unset: NVML when the library loads and ``nvmlInit`` succeeds, else a :class:`NullBackend` that
    says why. The step is then priced by allocation; telemetry never breaks the job. The same holds
    for an explicit ``nvml``, only louder. ``simulated`` is a test and demo tool, so its bad
    settings raise :class:`~mlcost.errors.ConfigError`.
    """
    env = os.environ if env is None else env
    choice = (env.get(ENV_GPU_BACKEND) or "").strip().lower()
    if choice not in ("", *BACKENDS):
        raise ConfigError(f"{choice!r} is not a GPU backend; allowed: {', '.join(BACKENDS)}", field=ENV_GPU_BACKEND)
    visible = env.get("CUDA_VISIBLE_DEVICES")
    if choice == "none":
        return NullBackend()
    if choice == "simulated":
        return _simulated(env, visible)
    return _nvml(visible, explicit=choice == "nvml")


_warned_unknown = False  # the once-per-process warning of an unset backend without a driver


def _no_telemetry(reason: str, explicit: bool) -> NullBackend:
    """Say that the step is priced by allocation alone: loudly when NVML was asked for, and once
    per process when nothing was set (a CPU-only machine would otherwise repeat it every step)."""
    global _warned_unknown
    if explicit:
        log.warning("mlcost: no GPU telemetry: %s", reason)
    elif not _warned_unknown:
        _warned_unknown = True
        log.warning("mlcost: no GPU telemetry (%s): GPU usage is unknown and cost is the allocation only; "
                    "set %s=none to say that is intended", reason, ENV_GPU_BACKEND)
    else:
        log.info("mlcost: no GPU telemetry: %s", reason)
    return NullBackend(reason)


def _nvml(visible: str | None, *, explicit: bool, nvml: object = None) -> GpuBackend:
    """``nvml``: a module with pynvml's API (tests pass the simulated one to share this path)."""
    if nvml is None:
        try:
            import pynvml as nvml
        except ImportError as e:
            return _no_telemetry(f"nvidia-ml-py is not installed ({e}); pip install nvidia-ml-py", explicit)
    try:
        nvml.nvmlInit()
    except nvml.NVMLError as e:
        return _no_telemetry(f"NVML could not start ({type(e).__name__}: {e}); no NVIDIA driver on this machine?",
                             explicit)
    from mlcost.telemetry.nvml import NvmlBackend

    return NvmlBackend(nvml=nvml, visible_devices=visible, initialized=True)


def _simulated(env: Mapping[str, str], visible: str | None) -> GpuBackend:
    from mlcost.telemetry.nvml import NvmlBackend
    from mlcost.telemetry.simulated_nvml import SimulatedNVML
    from mlcost.telemetry.traces import GPU_SPECS, load_trace

    gpu = (env.get(ENV_SIM_GPU) or "H100").strip()
    if gpu not in GPU_SPECS:
        raise ConfigError(f"unknown simulated GPU {gpu!r}; allowed: {', '.join(GPU_SPECS)}", field=ENV_SIM_GPU)
    raw = (env.get(ENV_SIM_DEVICES) or "1").strip()
    if not raw.isdigit() or not 1 <= int(raw) <= 64:
        raise ConfigError(f"{raw!r} is not a device count; allowed: a whole number from 1 to 64", field=ENV_SIM_DEVICES)
    devices = int(raw)
    trace = load_trace((env.get(ENV_SIM_TRACE) or "busy").strip(), gpu_type=gpu, devices=devices)
    return NvmlBackend(nvml=SimulatedNVML(trace, gpu_type=gpu, devices=devices), visible_devices=visible,
                       telemetry="simulated")
