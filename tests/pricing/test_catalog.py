import pytest

from mlcost import PriceCatalog
from mlcost.errors import ConfigError, UnknownGpuType


def test_builtin_catalog_prices_every_gpu_type_the_issue_names():
    catalog = PriceCatalog.load()
    for gpu in ("H100", "H200", "A100-80GB", "A100-40GB", "L40S", "L4", "A10G", "T4"):
        for pricing in ("on_demand", "spot", "reserved"):
            assert catalog.gpu_hour_usd(gpu, pricing) > 0
        assert catalog.gpu_hour_usd(gpu, "spot") < catalog.gpu_hour_usd(gpu, "on_demand")
        row = catalog.describe(gpu)
        assert row.source and row.as_of, f"{gpu} has no source/date"


def test_aliases_and_case_resolve_to_the_catalog_name():
    catalog = PriceCatalog.load()
    assert catalog.canonical("a100-sxm4-80gb") == "A100-80GB"
    assert catalog.canonical("nvidia_tesla_t4") == "T4"
    assert catalog.gpu_hour_usd("h100") == catalog.gpu_hour_usd("H100")


def test_mig_profile_is_priced_by_the_scarcer_of_compute_and_memory_share():
    catalog = PriceCatalog.load()
    h100 = catalog.gpu_hour_usd("H100")
    assert catalog.gpu_hour_usd("H100:1g.10gb") == pytest.approx(h100 / 7)  # 1/7 SMs > 10/80 memory
    assert catalog.gpu_hour_usd("H100:1g.20gb") == pytest.approx(h100 * 20 / 80)  # memory share wins
    assert catalog.gpu_hour_usd("H100:3g.40gb") == pytest.approx(h100 / 2)
    assert catalog.gpu_hour_usd("H100", mig_profile="7g.80gb") == pytest.approx(h100)
    assert catalog.memory_gb("A100-40GB:2g.10gb") == 10


def test_unknown_gpu_type_lists_the_known_ones():
    with pytest.raises(UnknownGpuType) as err:
        PriceCatalog.load().gpu_hour_usd("V100")
    message = str(err.value)
    assert "V100" in message and "H100" in message and "T4" in message
    with pytest.raises(UnknownGpuType, match=r"H100:1g\.10gb"):
        PriceCatalog.load().gpu_hour_usd("H100:9g.99gb")


def test_unknown_pricing_model_names_the_allowed_ones():
    with pytest.raises(ConfigError, match="on_demand, spot, reserved"):
        PriceCatalog.load().gpu_hour_usd("H100", "preemptible")


def test_user_catalog_overrides_one_field_and_extends_with_new_types(tmp_path, monkeypatch):
    prices = tmp_path / "prices.toml"
    prices.write_text(
        '[gpus.H100]\non_demand = 2.5\n\n[gpus.V100]\non_demand = 1.1\nmemory_gb = 32\n\n'
        "[energy]\nusd_per_kwh = 0.30\nincluded_in_gpu_price = false\n"
    )
    monkeypatch.setenv("MLCOST_PRICES", str(prices))
    catalog = PriceCatalog.load()
    assert catalog.gpu_hour_usd("H100") == 2.5
    assert catalog.gpu_hour_usd("H100", "spot") == 3.19  # untouched built-in field survives
    assert catalog.gpu_hour_usd("V100") == 1.1
    assert catalog.energy.usd_per_kwh == 0.30 and catalog.energy.included_in_gpu_price is False
    with pytest.raises(ConfigError, match=r"no spot price for V100"):
        catalog.gpu_hour_usd("V100", "spot")


def test_yaml_catalog_is_read_too(tmp_path):
    prices = tmp_path / "prices.yaml"
    prices.write_text("gpus:\n  L4:\n    on_demand: 0.5\n")
    assert PriceCatalog.load(prices).gpu_hour_usd("L4") == 0.5


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("[gpus.H100]\non_demand = -1\n", "gpus.H100.on_demand"),
        ("[gpus.H100]\nondemand = 3\n", "gpus.H100.ondemand: unknown key"),
        ("[gpus.H100\non_demand = 3\n", "not valid TOML"),
    ],
)
def test_malformed_catalog_names_the_file_and_the_field(tmp_path, text, expected):
    prices = tmp_path / "bad.toml"
    prices.write_text(text)
    with pytest.raises(ConfigError) as err:
        PriceCatalog.load(prices)
    assert str(prices) in str(err.value)
    assert expected in str(err.value)


def test_missing_catalog_file_is_a_clear_error(tmp_path):
    with pytest.raises(ConfigError, match="file not found"):
        PriceCatalog.load(tmp_path / "nope.toml")
