"""The FOCUS 1.3 rules a row of :mod:`mlcost.reports.focus` must keep, checked row by row.

Not a column list: the value rules a FinOps tool relies on when it ingests the file — the cost
identities (ListCost = ListUnitPrice × PricingQuantity, ContractedCost = ContractedUnitPrice ×
PricingQuantity, EffectiveCost ≤ ListCost for on-demand usage), the allowed values, the half-open
UTC periods, units that go with quantities, and custom columns after the specification's own.
"""

from __future__ import annotations

import json
import math
import re
from typing import Any

CHARGE_CATEGORIES = {"Usage", "Purchase", "Tax", "Credit", "Adjustment"}
PRICING_CATEGORIES = {"Standard", "Dynamic", "Committed", "Other"}
SERVICE_CATEGORIES = {
    "AI and Machine Learning", "Analytics", "Business Applications", "Compute", "Databases", "Developer Tools",
    "Multicloud", "Identity", "Integration", "Internet of Things", "Management and Governance", "Media",
    "Migration", "Mobile", "Networking", "Security", "Storage", "Web", "Other",
}  # fmt: skip
NOT_NULL = (
    "BilledCost", "EffectiveCost", "ListCost", "ContractedCost", "BillingCurrency", "BillingAccountId",
    "BillingPeriodStart", "BillingPeriodEnd", "ChargePeriodStart", "ChargePeriodEnd", "ChargeCategory",
    "ChargeDescription", "ServiceName", "ServiceCategory", "ServiceProviderName", "HostProviderName",
    "InvoiceIssuerName",
)  # fmt: skip
_STAMP = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}Z$")


def _null(v: Any) -> bool:
    return v is None or (isinstance(v, float) and math.isnan(v))


def _same(a: float, b: float) -> bool:
    return math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-9)


def check_rows(df: Any, columns: list[str] | None = None) -> list[str]:
    """Every broken rule, as ``row N (ResourceId): what``; an empty list when the rows keep them all."""
    from mlcost.reports.focus import MANDATORY

    problems: list[str] = []
    cols = list(columns or df.columns)
    missing = [c for c in MANDATORY if c not in cols]
    if missing:
        problems.append(f"mandatory columns missing: {', '.join(missing)}")
    custom = [i for i, c in enumerate(cols) if c.startswith("x_")]
    if custom and any(not c.startswith("x_") for c in cols[custom[0] :]):
        problems.append("custom x_ columns must follow the specification's columns")
    for i, row in enumerate(df.to_dict(orient="records")):
        who = f"row {i} ({row.get('ResourceId')})"
        problems += [f"{who}: {p}" for p in _row_problems(row)]
    return problems


def _row_problems(r: dict[str, Any]) -> list[str]:
    out = [f"{c} is null" for c in NOT_NULL if c in r and _null(r[c])]
    if out:
        return out
    if not re.fullmatch(r"[A-Z]{3}", str(r["BillingCurrency"])):
        out.append(f"BillingCurrency {r['BillingCurrency']!r} is not an ISO 4217 code")
    stamps = ("BillingPeriodStart", "BillingPeriodEnd", "ChargePeriodStart", "ChargePeriodEnd")
    bad = [c for c in stamps if not _STAMP.match(str(r[c]))]
    out += [f"{c} {r[c]!r} is not YYYY-MM-DDTHH:mm:ssZ" for c in bad]
    if not bad:  # the format sorts as text
        if not r["ChargePeriodStart"] < r["ChargePeriodEnd"]:
            out.append("ChargePeriodEnd is not after ChargePeriodStart (the end is exclusive)")
        if not r["BillingPeriodStart"] < r["BillingPeriodEnd"]:
            out.append("BillingPeriodEnd is not after BillingPeriodStart")
        if not (r["BillingPeriodStart"] <= r["ChargePeriodStart"] and r["ChargePeriodEnd"] <= r["BillingPeriodEnd"]):
            out.append("the charge period is not inside the billing period")
    if r["ChargeCategory"] not in CHARGE_CATEGORIES:
        out.append(f"ChargeCategory {r['ChargeCategory']!r} not in {sorted(CHARGE_CATEGORIES)}")
    if not _null(r.get("ChargeClass")) and r["ChargeClass"] != "Correction":
        out.append(f"ChargeClass {r['ChargeClass']!r} is neither null nor 'Correction'")
    if r["ServiceCategory"] not in SERVICE_CATEGORIES:
        out.append(f"ServiceCategory {r['ServiceCategory']!r} is not an allowed value")
    if not _null(r.get("PricingCategory")) and r["PricingCategory"] not in PRICING_CATEGORIES:
        out.append(f"PricingCategory {r['PricingCategory']!r} not in {sorted(PRICING_CATEGORIES)}")
    qty = r.get("PricingQuantity")
    if r["ChargeCategory"] in ("Usage", "Purchase") and _null(qty):
        out.append("PricingQuantity is null on a Usage charge")
    for q, unit in (("PricingQuantity", "PricingUnit"), ("ConsumedQuantity", "ConsumedUnit")):
        if not _null(r.get(q)) and _null(r.get(unit)):
            out.append(f"{q} without {unit}")
    if r["ChargeCategory"] == "Usage" and _null(r.get("ConsumedQuantity")):
        out.append("ConsumedQuantity is null on a Usage charge")
    if r["ChargeCategory"] == "Usage":
        out += [f"{c} is negative on a Usage charge" for c in ("BilledCost", "EffectiveCost", "ListCost",
                "ContractedCost", "PricingQuantity", "ListUnitPrice", "ContractedUnitPrice")
                if not _null(r.get(c)) and float(r[c]) < 0]  # fmt: skip
    correction = r.get("ChargeClass") == "Correction"
    if not correction and not _null(qty):
        for cost, unit in (("ListCost", "ListUnitPrice"), ("ContractedCost", "ContractedUnitPrice")):
            if not _null(r.get(unit)) and not _same(float(r[cost]), float(r[unit]) * float(qty)):
                out.append(f"{cost} {r[cost]} != {unit} {r[unit]} × PricingQuantity {qty}")
    if r.get("PricingCategory") == "Standard" and float(r["EffectiveCost"]) > float(r["ListCost"]) + 1e-9:
        out.append(f"EffectiveCost {r['EffectiveCost']} > ListCost {r['ListCost']} on on-demand usage")
    if not _null(r.get("Tags")):
        try:
            tags = json.loads(r["Tags"]) if isinstance(r["Tags"], str) else r["Tags"]
        except ValueError:
            tags = None
        if not isinstance(tags, dict) or not all(isinstance(k, str) for k in tags):
            out.append("Tags is not a JSON object")
    return out
