"""GPM (GPU Performance Monitoring, Hopper+): SM and tensor activity over a window.

GPM metrics are differences between two samples, so a window keeps its last sample: each read
takes a new one and measures the interval since the previous read (the first interval starts when
the window is opened). SM activity, the share of SMs busy, is what DCGM calls ``SM_ACTIVE``; it is
a truer "is the GPU used" signal than NVML's "a kernel was running".

Vendor errors propagate: the caller (``nvml.NvmlBackend``) maps them in one place.
"""

from __future__ import annotations

from typing import Any


class GpmWindow:
    """GPM samples of one device (``gpu_instance_id`` set: one MIG GPU instance of ``parent``)."""

    def __init__(self, nvml: Any, parent: Any, gpu_instance_id: int | None = None) -> None:
        self._nvml, self._parent, self._gi = nvml, parent, gpu_instance_id
        self._samples = [nvml.nvmlGpmSampleAlloc(), nvml.nvmlGpmSampleAlloc()]
        self._take(self._samples[0])
        # one request struct for the window's life: building a ctypes struct per read is most of a read
        self._request = request = nvml.c_nvmlGpmMetricsGet_t()
        request.version, request.numMetrics = nvml.NVML_GPM_METRICS_GET_VERSION, 2

    def _take(self, sample: Any) -> None:
        if self._gi is not None:
            self._nvml.nvmlGpmMigSampleGet(self._parent, self._gi, sample)
        else:
            self._nvml.nvmlGpmSampleGet(self._parent, sample)

    def read(self) -> tuple[float | None, float | None]:
        """(SM activity %, tensor activity %) since the previous read; None for a metric the device
        refuses (its per-metric return code), while a failing call raises."""
        nvml = self._nvml
        previous, spare = self._samples
        self._take(spare)
        mg = self._request
        mg.sample1, mg.sample2 = previous, spare
        mg.metrics[0].metricId = nvml.NVML_GPM_METRIC_SM_UTIL
        mg.metrics[1].metricId = nvml.NVML_GPM_METRIC_ANY_TENSOR_UTIL
        nvml.nvmlGpmMetricsGet(mg)
        self._samples = [spare, previous]
        sm, tensor, ok = mg.metrics[0], mg.metrics[1], nvml.NVML_SUCCESS
        return (
            float(sm.value) if sm.nvmlReturn == ok else None,
            float(tensor.value) if tensor.nvmlReturn == ok else None,
        )

    def free(self) -> None:
        samples, self._samples = self._samples, []
        for sample in samples:
            self._nvml.nvmlGpmSampleFree(sample)
