"""Money from usage: pure functions of a Usage and a PriceCatalog.

Kept free of clocks, I/O and globals so that any recorded step can be re-priced later (other prices,
spot instead of on-demand) and so tests can check every figure by hand.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from mlcost.pricing.catalog import PriceCatalog
from mlcost.usage import Usage


@dataclass(frozen=True, slots=True)
class Cost:
    """The money lines of one step (USD)."""

    gpu_hour_usd: float  # the unit price applied
    compute_usd: float  # allocated GPU-hours × unit price
    idle_usd: float  # the share of compute_usd spent below the idle threshold
    energy_usd: float  # measured kWh × $/kWh (0 when no energy was measured)
    spot_whatif_usd: float | None  # the same allocation at spot prices
    total_usd: float  # compute, plus energy when the catalog says energy is billed apart

    @property
    def spot_saving_usd(self) -> float | None:
        return None if self.spot_whatif_usd is None else max(0.0, self.total_usd - self.spot_whatif_usd)


def allocated_cost(gpus: int, seconds: float, gpu_hour_usd: float) -> float:
    """GPUs × hours × price: the bill of an allocation, whatever it did. Used live by the budget
    guardrail and by preflight projections, so it must stay this cheap."""
    return gpus * seconds / 3600.0 * gpu_hour_usd


def device_type(device: Any) -> str | None:
    """A metered device's own catalog type: ``"H100"``, or ``"H100:1g.10gb"`` for a MIG instance."""
    if not device.gpu_type:
        return None
    return f"{device.gpu_type}:{device.mig_profile}" if device.mig_profile else device.gpu_type


def device_unit_prices(devices: Sequence[Any], catalog: PriceCatalog, pricing: str = "on_demand") -> list[float]:
    """Each device's own hourly price (every device must have a known type)."""
    return [catalog.gpu_hour_usd(device_type(d) or "", pricing) for d in devices]


def _unit(catalog: PriceCatalog, gpu_type: str, pricing: str, device_types: Sequence[str] | None) -> float:
    """The hourly price per allocated GPU: the mean of the devices' own prices when they differ
    (MIG instances of different profiles), so GPUs × hours × unit is the sum of each one's price."""
    if device_types:
        prices = [catalog.gpu_hour_usd(t, pricing) for t in device_types]
        return sum(prices) / len(prices)
    return catalog.gpu_hour_usd(gpu_type, pricing)


def price(
    usage: Usage, catalog: PriceCatalog, gpu_type: str, pricing: str = "on_demand",
    *, device_types: Sequence[str] | None = None,
) -> Cost:
    """Price one step's ``usage`` as ``gpu_type`` under ``pricing``; with ``device_types`` (one
    catalog type per device, when they differ) each device is priced as its own type."""
    unit = _unit(catalog, gpu_type, pricing, device_types)
    compute = allocated_cost(usage.gpus_allocated, usage.duration_s, unit)
    idle_fraction = usage.idle_fraction or 0.0
    energy_kwh = usage.energy_kwh or 0.0
    energy = energy_kwh * catalog.energy.usd_per_kwh
    total = compute if catalog.energy.included_in_gpu_price else compute + energy
    try:
        spot = allocated_cost(usage.gpus_allocated, usage.duration_s, _unit(catalog, gpu_type, "spot", device_types))
    except Exception:  # a user catalog row without a spot price: no what-if, not an error
        spot = None
    return Cost(
        gpu_hour_usd=unit,
        compute_usd=compute,
        idle_usd=compute * idle_fraction,
        energy_usd=energy,
        spot_whatif_usd=spot,
        total_usd=total,
    )
