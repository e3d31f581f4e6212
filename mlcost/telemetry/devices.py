"""Which devices belong to the job: ``CUDA_VISIBLE_DEVICES`` resolved the way CUDA resolves it.

CUDA's rules, kept here: unset means every device; an empty value means none; otherwise a comma
list of indices, ``GPU-<uuid>`` (any unambiguous prefix) or ``MIG-<uuid>`` (also the old
``MIG-GPU-<uuid>/<gi>/<ci>`` form), read left to right and cut at the first entry that is invalid,
ambiguous or repeated (so ``-1`` hides everything). Order is NVML's (PCI bus) order, which is CUDA's
under ``CUDA_DEVICE_ORDER=PCI_BUS_ID`` and on nodes of identical GPUs.

A physical GPU with MIG mode on is never metered whole. Its index selects its first MIG instance
(NVML's MIG index 0), as CUDA does: a CUDA process enumerates one MIG device (the MIG user guide,
"CUDA Device Enumeration"; nvitop's parser models CUDA the same way). Its GPU UUID, or no
``CUDA_VISIBLE_DEVICES`` at all, selects every instance: the meter may wrap a launcher whose
workers each get one, so the job's devices are all it was given. Each is metered as its slice.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class MigSlot:
    uuid: str
    handle: Any
    gpu_instance_id: int | None = None
    compute_instance_id: int | None = None


@dataclass
class PhysicalGpu:
    index: int
    uuid: str
    handle: Any
    mig: list[MigSlot] | None = None  # None: MIG off (or not supported)


@dataclass(frozen=True)
class Selected:
    """One job device: a whole GPU, or one MIG instance of ``gpu``."""

    gpu: PhysicalGpu
    mig: MigSlot | None = None
    notes: list[str] = field(default_factory=list, compare=False)

    @property
    def uuid(self) -> str:
        return self.mig.uuid if self.mig else self.gpu.uuid


def resolve_visible(spec: str | None, gpus: Sequence[PhysicalGpu]) -> list[Selected]:
    """The job's devices, in job order (``cuda:0`` first), from a ``CUDA_VISIBLE_DEVICES`` value."""
    if spec is None:
        return [s for g in gpus for s in _expand(g)]
    chosen: list[Selected] = []
    seen: set[str] = set()
    for raw in spec.split(","):
        entry = raw.strip()
        found = _lookup(entry, gpus)
        if found is None or any(s.uuid in seen for s in found):
            if entry:
                log.info("mlcost: CUDA_VISIBLE_DEVICES entry %r is invalid here; CUDA ignores it and the rest", entry)
            break
        seen.update(s.uuid for s in found)
        chosen.extend(found)
    return chosen


def _expand(gpu: PhysicalGpu) -> list[Selected]:
    return [Selected(gpu, m) for m in gpu.mig] if gpu.mig is not None else [Selected(gpu)]


def _unique(matches: list[Any]) -> Any | None:
    return matches[0] if len(matches) == 1 else None


def _lookup(entry: str, gpus: Sequence[PhysicalGpu]) -> list[Selected] | None:
    low = entry.lower()
    if low.startswith("gpu-"):
        gpu = _unique([g for g in gpus if g.uuid.lower().startswith(low)])
        return _expand(gpu) if gpu else None
    if low.startswith("mig-gpu-"):  # pre-R470 form: MIG-GPU-<uuid>/<gpu instance>/<compute instance>
        parts = low[4:].split("/")
        if len(parts) != 3 or not all(p.isdigit() for p in parts[1:]):
            return None
        gpu = _unique([g for g in gpus if g.uuid.lower() == parts[0]])
        slots = list(gpu.mig or []) if gpu else []
        wanted = (int(parts[1]), int(parts[2]))
        slot = _unique([m for m in slots if (m.gpu_instance_id, m.compute_instance_id) == wanted])
        return [Selected(gpu, slot)] if gpu and slot else None
    if low.startswith("mig-"):
        hits = [(g, m) for g in gpus for m in (g.mig or []) if m.uuid.lower().startswith(low)]
        hit = _unique(hits)
        return [Selected(*hit)] if hit else None
    if entry.isdigit() and int(entry) < len(gpus):
        gpu = gpus[int(entry)]
        if gpu.mig is not None:  # CUDA: the index of a MIG-enabled GPU means its first instance
            return [Selected(gpu, gpu.mig[0])] if gpu.mig else None
        return [Selected(gpu)]
    return None


def enumerate_gpus(nvml: Any, call: Callable[..., Any]) -> list[PhysicalGpu]:
    """Every physical GPU with its MIG instances. ``call(fn, *args)`` is the backend's error-mapping
    wrapper: it returns None for a call the device does not support (MIG on a non-MIG GPU)."""
    gpus = []
    for i in range(nvml.nvmlDeviceGetCount()):
        handle = nvml.nvmlDeviceGetHandleByIndex(i)
        gpu = PhysicalGpu(i, nvml.nvmlDeviceGetUUID(handle), handle)
        mode = call(nvml.nvmlDeviceGetMigMode, handle)
        if mode is not None and mode[0] == nvml.NVML_DEVICE_MIG_ENABLE:
            gpu.mig = []
            for j in range(call(nvml.nvmlDeviceGetMaxMigDeviceCount, handle) or 0):
                mig = call(nvml.nvmlDeviceGetMigDeviceHandleByIndex, handle, j, missing_ok=True)
                if mig is None:  # an empty slot: NVML_ERROR_NOT_FOUND
                    continue
                gpu.mig.append(MigSlot(
                    nvml.nvmlDeviceGetUUID(mig), mig,
                    call(nvml.nvmlDeviceGetGpuInstanceId, mig), call(nvml.nvmlDeviceGetComputeInstanceId, mig),
                ))
        gpus.append(gpu)
    return gpus


def mig_profile_name(gi_slices: int, ci_slices: int | None, mem_share: float, nominal_gb: float) -> str:
    """NVIDIA's profile name from what NVML reports about an instance.

    ``Ng`` is the GPU instance's slice count (N/7 of the SMs). Memory comes in eighths of the board,
    so ``mem_share`` (instance total ÷ parent total, both from nvmlDeviceGetMemoryInfo) is rounded to
    eighths and scaled by the board's marketed size: 1/8 of an 80 GB H100 is "10gb", 4/8 of a 141 GB
    H200 is "71gb". A compute instance smaller than its GPU instance gets NVIDIA's ``Mc.`` prefix.
    """
    eighths = max(1, min(8, int(mem_share * 8 + 0.5)))
    name = f"{gi_slices}g.{int(nominal_gb * eighths / 8 + 0.5)}gb"
    return f"{ci_slices}c.{name}" if ci_slices and ci_slices < gi_slices else name
