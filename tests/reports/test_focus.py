"""FOCUS 1.3 export: every row checked against the specification's rules, on steps metered for real
(simulated GPU), with energy billed apart, spot and reserved pricing, and a step refused at preflight."""

from __future__ import annotations

import math
import time

import pandas as pd
import pytest

from mlcost import meter
from mlcost.cli import main
from mlcost.errors import PreflightRefused
from mlcost.reports.focus import COLUMNS, FOCUS_VERSION, MANDATORY
from mlcost.reports.focus_rules import check_rows
from mlcost.sinks.ledger import Ledger


@pytest.fixture
def metered(simulated_gpu, tmp_path, monkeypatch):
    """Three metered steps (on-demand H100 ×2, spot L4, reserved A100) with energy billed apart,
    and one step refused at preflight."""
    prices = tmp_path / "prices.toml"
    prices.write_text("[energy]\nusd_per_kwh = 0.25\nincluded_in_gpu_price = false\n")
    monkeypatch.setenv("MLCOST_PRICES", str(prices))
    steps = []
    for name, gpu, devices, pricing in (("train", "H100", 2, "on_demand"), ("serve", "L4", 1, "spot"),
                                        ("eval", "A100-80GB", 1, "reserved")):  # fmt: skip
        simulated_gpu("busy", gpu=gpu, devices=devices)
        with meter(name, gpu_type=gpu, pricing=pricing, interval=0.02, tags={"team": "search"}) as m:
            time.sleep(0.25)
        steps.append(m.cost)
    with pytest.raises(PreflightRefused), meter("huge", gpus=8, gpu_type="H100", budget_usd=1, max_duration="2h"):
        pass  # pragma: no cover
    return steps


def _export(tmp_path, *extra: str) -> pd.DataFrame:
    out = tmp_path / "focus.csv"
    assert main(["export", "--focus", "-o", str(out), *extra]) == 0
    return pd.read_csv(out)


def test_every_row_keeps_the_focus_1_3_rules(metered, tmp_path):
    assert FOCUS_VERSION == "1.3"
    df = _export(tmp_path, "--provider", "Lambda", "--host-provider", "Equinix")
    assert check_rows(df) == []
    assert list(df.columns) == list(COLUMNS)
    assert {"ServiceProviderName", "HostProviderName", "ProviderName", "PublisherName"} <= set(MANDATORY)
    assert set(df["ServiceProviderName"]) == {"Lambda"} and set(df["HostProviderName"]) == {"Equinix"}
    assert set(df["ProviderName"]) == {"Lambda"}  # deprecated in 1.3, kept while 1.3 asks for it


def test_cost_identities_hold_with_energy_on_its_own_row(metered, tmp_path):
    df = _export(tmp_path)
    for r in df.to_dict(orient="records"):
        assert math.isclose(r["ListCost"], r["ListUnitPrice"] * r["PricingQuantity"], rel_tol=1e-9)
        assert math.isclose(r["ContractedCost"], r["ContractedUnitPrice"] * r["PricingQuantity"], rel_tol=1e-9)
        if r["PricingCategory"] == "Standard":
            assert r["EffectiveCost"] <= r["ListCost"] + 1e-12
    for step in metered:
        rows = df[df["ResourceId"] == step.step_id].set_index("PricingUnit")
        assert set(rows.index) == {"Hours", "kWh"}  # GPU time and energy: two prices, two rows
        assert rows.loc["Hours", "PricingQuantity"] == pytest.approx(step.gpu_hours)
        assert rows.loc["kWh", "PricingQuantity"] == pytest.approx(step.energy_kwh)
        assert rows.loc["kWh", "ListUnitPrice"] == pytest.approx(0.25)
        assert rows["BilledCost"].sum() == pytest.approx(step.total_usd)  # the rows add up to the step
    spot = df[(df["x_StepName"] == "serve") & (df["PricingUnit"] == "Hours")].iloc[0]
    assert spot["PricingCategory"] == "Dynamic" and spot["EffectiveCost"] < spot["ListCost"]
    assert spot["ListUnitPrice"] == pytest.approx(0.8048)  # the L4's on-demand list price


def test_no_row_for_a_step_that_was_never_metered(metered, tmp_path):
    refused = [s for s in Ledger().steps() if s.name == "huge"]
    assert refused and refused[0].status == "breached"
    df = _export(tmp_path)
    assert "huge" not in set(df["x_StepName"]) and (df["BilledCost"] > 0).all()


def test_the_rules_catch_a_broken_row(metered, tmp_path):
    df = _export(tmp_path)
    broken = df.copy()
    broken.loc[0, "ListCost"] = broken.loc[0, "ListCost"] * 2
    broken.loc[1, "ChargeCategory"] = "Spend"
    broken.loc[2, "ChargePeriodEnd"] = broken.loc[2, "ChargePeriodStart"]
    found = check_rows(broken)
    assert any(p.startswith("row 0") and "ListCost" in p for p in found)
    assert any(p.startswith("row 1") and "ChargeCategory" in p for p in found)
    assert any(p.startswith("row 2") and "ChargePeriodEnd" in p for p in found)
