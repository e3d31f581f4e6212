"""`mlcost prices` in an 80-column terminal: whole GPU names, energy, the user's file as the source
of the prices it set, and a warning when spot or reserved ends up above on-demand."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest


def _prices(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    full = {**os.environ, "COLUMNS": "80", "NO_COLOR": "1", **(env or {})}
    return subprocess.run([sys.executable, "-m", "mlcost.cli", "prices", *args], capture_output=True, text=True,
                          env=full, timeout=120)  # fmt: skip


@pytest.mark.parametrize("mig", [False, True])
def test_prices_fit_80_columns_and_never_cut_a_gpu_name(mig):
    from mlcost.pricing.catalog import PriceCatalog

    out = _prices(*(["--mig"] if mig else []))
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert max(len(line) for line in lines) <= 80
    names = [n for n in PriceCatalog.load().gpu_types if mig or ":" not in n]
    assert any(":" in n for n in names) == mig
    for name in names:  # the key column, whole, on a row of its own
        assert any(line.startswith(f"│ {name} ") for line in lines), name
    assert "…" not in out.stdout


def test_prices_show_energy_and_cite_the_users_file_for_the_prices_it_set(tmp_path):
    user = tmp_path / "prices.toml"
    user.write_text('[gpus.L4]\non_demand = 0.70\n[energy]\nusd_per_kwh = 0.21\nincluded_in_gpu_price = false\n')
    out = _prices("--prices", str(user))
    assert out.returncode == 0, out.stderr
    l4 = next(line for line in out.stdout.splitlines() if line.startswith("│ L4 "))
    assert "0.700*" in l4 and "0.405 " in l4  # the user's on-demand price, the built-in spot price
    assert f"* set by your catalog {user}" in out.stdout
    assert f"Energy: $0.210/kWh, billed on top of the GPU price\n  from {user}\n" in out.stdout
    assert "warning" not in out.stderr
    builtin = _prices()
    assert "Energy: $0.130/kWh, included in the GPU price" in builtin.stdout and "*" not in builtin.stdout


def test_prices_warn_when_spot_or_reserved_is_above_on_demand(tmp_path):
    user = tmp_path / "prices.toml"
    user.write_text("[gpus.T4]\nspot = 0.90\n")  # on-demand stays 0.526
    out = _prices("--prices", str(user))
    assert out.returncode == 0
    assert f"warning: T4: spot $0.900 is above on-demand $0.526 (from {user})" in out.stderr
