import pytest

from mlcost import PriceCatalog
from mlcost.pricing.cost import price
from mlcost.usage import DeviceUsage, Usage


def _usage(**kw):
    base = dict(duration_s=3600.0, gpus_allocated=4, devices=[
        DeviceUsage(index=0, seconds=3600.0, util_mean_pct=80.0, idle_seconds=900.0, energy_kwh=0.5)
    ])
    base.update(kw)
    return Usage(**base)


def test_allocation_is_billed_and_untouched_gpus_count_as_idle():
    catalog = PriceCatalog.load()
    usage = _usage()
    cost = price(usage, catalog, "H100", "on_demand")
    assert cost.compute_usd == pytest.approx(4 * 12.29)
    # one device idle 900 s of 3600, three allocated GPUs never touched: (900 + 3*3600) / (4*3600)
    assert usage.idle_fraction == pytest.approx((900 + 3 * 3600) / (4 * 3600))
    assert cost.idle_usd == pytest.approx(4 * 12.29 * usage.idle_fraction)
    assert usage.util_mean_pct == pytest.approx(80.0 / 4)
    assert cost.total_usd == cost.compute_usd  # cloud prices include power
    assert cost.energy_usd == pytest.approx(0.5 * 0.13)
    assert cost.spot_whatif_usd == pytest.approx(4 * 3.19)


def test_energy_is_added_when_the_catalog_bills_it_apart(tmp_path):
    prices = tmp_path / "p.toml"
    prices.write_text("[energy]\nusd_per_kwh = 0.2\nincluded_in_gpu_price = false\n")
    cost = price(_usage(), PriceCatalog.load(prices), "H100")
    assert cost.total_usd == pytest.approx(4 * 12.29 + 0.5 * 0.2)


def test_no_telemetry_leaves_idle_and_util_unknown_not_zero():
    usage = Usage(duration_s=1800.0, gpus_allocated=2, telemetry="none")
    cost = price(usage, PriceCatalog.load(), "L4", "spot")
    assert cost.total_usd == pytest.approx(2 * 0.5 * 0.405)
    assert usage.idle_fraction is None and usage.util_mean_pct is None and usage.energy_kwh is None
    assert cost.idle_usd == 0.0


def test_repricing_the_same_usage_is_pure():
    usage = _usage()
    catalog = PriceCatalog.load()
    assert price(usage, catalog, "A100-80GB", "reserved") == price(usage, catalog, "A100-80GB", "reserved")
    assert price(usage, catalog, "A100-80GB", "reserved").total_usd < price(usage, catalog, "A100-80GB").total_usd
