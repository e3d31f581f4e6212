"""Property: any price catalog is read and answered from, or refused with a ConfigError naming the
file; ``mlcost prices --mig`` exits 0 or 2 and never reports an unexpected error."""

from __future__ import annotations

import math

from fuzz_contract import holds
from fuzz_inputs import mutated, scalars, to_toml, values, write
from hypothesis import given
from hypothesis import strategies as st

from mlcost.cli import main
from mlcost.errors import ConfigError
from mlcost.pricing.catalog import PriceCatalog

GPU_KEYS = ["on_demand", "spot", "reserved", "memory_gb", "aliases", "source", "as_of", "note", "stray"]
NAMES = st.one_of(
    st.sampled_from(["H100", "X", "X:1g.5gb", "X:1g.0gb", "h100", "A100-80GB:3g.40gb", ":", "", "Y:2g.10gb"]),
    st.text(max_size=10),
)
PROFILES = st.one_of(st.sampled_from(["1g.10gb", "1g.0gb", "7g.80gb", "9g.1gb", "1g.5gb", "x"]), st.text(max_size=8))

catalogs = st.fixed_dictionaries(
    {},
    optional={
        "gpus": st.dictionaries(NAMES, st.dictionaries(st.sampled_from(GPU_KEYS), values, max_size=4), max_size=3),
        "mig_profiles": st.dictionaries(NAMES, st.one_of(st.lists(PROFILES, max_size=3), scalars), max_size=2),
        "energy": st.dictionaries(st.sampled_from(["usd_per_kwh", "included_in_gpu_price", "x"]), values, max_size=2),
    },
)
VALID = """[gpus.X]
on_demand = 2.5
spot = 1.0
memory_gb = 80
aliases = ["ex"]
[mig_profiles]
X = ["1g.10gb", "3g.40gb"]
[energy]
usd_per_kwh = 0.2
"""


def _answers(catalog: PriceCatalog, source: str) -> None:
    """Every question a report asks of a catalog: a price, a ConfigError, never another error."""
    for name in catalog.gpu_types:
        for pricing in ("on_demand", "spot", "reserved"):
            try:
                price = catalog.gpu_hour_usd(name, pricing)
            except ConfigError:
                continue
            assert math.isfinite(price) and price >= 0
        memory = catalog.memory_gb(name)
        assert memory is None or memory >= 0
        catalog.describe(name)
        catalog.mig_profiles(name)


def _check(path: str, capsys) -> None:
    catalog = holds(lambda: PriceCatalog.load(path), names=path)
    if catalog is not None:
        _answers(catalog, path)
    capsys.readouterr()
    assert main(["prices", "--mig", "--prices", path]) in (0, 2)
    assert "unexpected error" not in capsys.readouterr().err


@given(catalogs)
def test_any_catalog_shaped_file_is_priced_or_refused_naming_the_file(tmp_path_factory, capsys, data):
    _check(write(tmp_path_factory.mktemp("c") / "prices.toml", to_toml(data)), capsys)


@given(mutated(VALID))
def test_a_damaged_catalog_is_priced_or_refused_naming_the_file(tmp_path_factory, capsys, text):
    _check(write(tmp_path_factory.mktemp("c") / "prices.toml", text), capsys)


def test_the_reproducers_of_issue_16_exit_2_or_are_priced(tmp_path, capsys):
    zero = write(tmp_path / "zero.toml", '[gpus.X]\non_demand = 1\n[mig_profiles]\nX = ["1g.0gb"]\n')
    assert main(["prices", "--mig", "--prices", zero]) == 2
    assert "'1g.0gb' is not a MIG profile" in capsys.readouterr().err
    no_memory = write(tmp_path / "nomem.toml", '[gpus.X]\non_demand = 7\n[mig_profiles]\nX = ["1g.5gb"]\n')
    assert PriceCatalog.load(no_memory).gpu_hour_usd("X:1g.5gb") == 1.0  # 1 of 7 slices, memory share unknown
    row = write(tmp_path / "row.toml", '[gpus."X:1g.5gb"]\non_demand = 1\nmemory_gb = 5\n')
    assert main(["prices", "--mig", "--prices", row]) == 0
    assert "X:1g.5gb" in capsys.readouterr().out
    assert PriceCatalog.load(row).describe("X:1g.5gb").on_demand == 1
