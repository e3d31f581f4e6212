"""FinOps FOCUS 1.3 export: Usage rows for the ledger's sealed steps.

A step is one row for its GPU time and, when the price catalog bills energy apart from the GPU price,
one more for its energy (a charge with two prices is two rows); a step that consumed nothing (refused
at preflight) has none. Mandatory columns come first and are always filled (ChargeClass is null: no
row is a correction), 1.3's ServiceProviderName and HostProviderName among them, with the deprecated
ProviderName and PublisherName kept while 1.3 still asks for them; conditional columns that fit a GPU
step follow; mlcost's own columns come last with the ``x_`` prefix the specification reserves.
:func:`check_rows` checks rows against the specification's rules (the tests run it on every export).
"""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING, Any

from mlcost.errors import ConfigError

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd

    from mlcost.period import Period
    from mlcost.pricing.catalog import PriceCatalog

FOCUS_VERSION = "1.3"
MANDATORY = (
    "BilledCost", "EffectiveCost", "ListCost", "ContractedCost", "BillingCurrency", "BillingAccountId",
    "BillingAccountName", "BillingPeriodStart", "BillingPeriodEnd", "ChargePeriodStart", "ChargePeriodEnd",
    "ChargeCategory", "ChargeClass", "ChargeDescription", "PricingQuantity", "PricingUnit", "ServiceName",
    "ServiceCategory", "ServiceProviderName", "HostProviderName", "InvoiceIssuerName",
    "ProviderName", "PublisherName",  # deprecated in 1.3 but still mandatory there; dropped in 1.4
)  # fmt: skip
CONDITIONAL = (
    "ResourceId", "ResourceName", "ResourceType", "Tags", "ConsumedQuantity", "ConsumedUnit", "ListUnitPrice",
    "ContractedUnitPrice", "SkuId", "SkuPriceId", "PricingCategory", "SubAccountId", "SubAccountName", "RegionId",
)  # fmt: skip
CUSTOM = (
    "x_StepName", "x_Project", "x_Model", "x_Workload", "x_RunKey", "x_GpuType", "x_Gpus", "x_IdleCost",
    "x_GpuUtilMeanPct", "x_GpuIdleFraction", "x_EnergyKwh", "x_Telemetry", "x_Status", "x_JobId", "x_NodeRank",
)  # fmt: skip
COLUMNS = MANDATORY + CONDITIONAL + CUSTOM
PRICING_CATEGORY = {"on_demand": "Standard", "spot": "Dynamic", "reserved": "Committed"}


def _utc(iso: str | None, *, ceil: bool = False) -> str | None:
    """FOCUS's ``YYYY-MM-DDTHH:mm:ssZ``; a period's start is floored to the second and its end
    (``ceil``) raised to the next, so the period still covers the whole step."""
    if not iso:
        return None
    dt = datetime.fromisoformat(iso)
    dt = dt.replace(tzinfo=timezone.utc) if dt.tzinfo is None else dt.astimezone(timezone.utc)
    if ceil and dt.microsecond:
        dt = dt.replace(microsecond=0) + timedelta(seconds=1)
    return dt.strftime("%Y-%m-%dT%H:%M:%SZ")


def _plus_one_second(stamp: str) -> str:
    return (datetime.strptime(stamp, "%Y-%m-%dT%H:%M:%SZ") + timedelta(seconds=1)).strftime("%Y-%m-%dT%H:%M:%SZ")


def _month(iso: str) -> tuple[str, str]:
    dt = datetime.strptime(iso, "%Y-%m-%dT%H:%M:%SZ")
    start = dt.replace(day=1, hour=0, minute=0, second=0)
    end = start.replace(year=start.year + (start.month == 12), month=start.month % 12 + 1)
    return start.strftime("%Y-%m-%dT%H:%M:%SZ"), end.strftime("%Y-%m-%dT%H:%M:%SZ")


def focus_rows(
    ledger: Any,
    period: Period,
    catalog: PriceCatalog,
    *,
    provider: str = "mlcost",
    account_id: str = "mlcost",
    account_name: str = "mlcost GPU ledger",
    region: str | None = None,
    host_provider: str | None = None,
) -> pd.DataFrame:
    """The ledger's sealed steps in ``period`` as FOCUS rows (a DataFrame with :data:`COLUMNS`)."""
    import pandas as pd

    from mlcost.ledger.queries import reading, step_records

    with reading(ledger) as conn:
        rows = list(step_records(conn, period))  # counted steps: sealed, and lost ones (status "lost")
    out: list[dict[str, Any]] = []
    for r in rows:
        base = {"provider": provider, "host_provider": host_provider or provider, "account_id": account_id,
                "account_name": account_name, "region": region}  # fmt: skip
        out.extend(step_charges(r, catalog, **base))
    return pd.DataFrame(out, columns=list(COLUMNS))


def step_charges(
    r: dict[str, Any],
    catalog: PriceCatalog,
    *,
    provider: str,
    host_provider: str,
    account_id: str,
    account_name: str,
    region: str | None,
) -> list[dict[str, Any]]:
    """The FOCUS rows of one ledger record: its GPU time and, when the catalog bills energy apart
    from the GPU price, its energy, each with its own unit price and quantity (a charge with two
    prices is two rows). None for a step that consumed nothing (refused at preflight, an un-metered
    task's record): a $0 row would say it ran.

    Every cost is its unit price times its quantity, so the specification's identities hold
    exactly: ListCost = ListUnitPrice × PricingQuantity, ContractedCost = ContractedUnitPrice ×
    PricingQuantity, and on-demand EffectiveCost = ListCost."""
    hours = float(r.get("gpu_hours") or 0)
    compute = float(r.get("compute_usd") or 0)
    total = float(r.get("total_usd") or 0)
    energy_usd, kwh = float(r.get("energy_usd") or 0), float(r.get("energy_kwh") or 0)
    if hours <= 0 and total <= 0:
        return []
    start = _utc(r["started_at"])
    end = _utc(r.get("ended_at"), ceil=True) or start
    if end <= start:  # a step shorter than the format's second still takes a (half-open) period
        end = _plus_one_second(start)
    bp_start, bp_end = _month(start)
    tags = r.get("tags") or {}
    gpu_type, pricing = r.get("gpu_type"), r.get("pricing") or "on_demand"
    unit = r.get("gpu_hour_usd")
    if unit is None and hours > 0:
        unit = compute / hours  # the price applied, from the record's own figures
    elif unit and compute > 0:
        # the GPU-hours the step was billed for (its allocation over its duration): the sampler's
        # gpu_hours may differ from it by a sample's width, and BilledCost must be what was charged
        hours = compute / unit
    list_unit = unit if pricing == "on_demand" else _list_price(catalog, gpu_type)
    if list_unit is None:
        list_unit = unit
    contracted = unit * hours if unit is not None else compute
    common = {
        "BillingCurrency": "USD",
        "BillingAccountId": account_id,
        "BillingAccountName": account_name,
        "BillingPeriodStart": bp_start,
        "BillingPeriodEnd": bp_end,
        "ChargePeriodStart": start,
        "ChargePeriodEnd": end,
        "ChargeCategory": "Usage",
        "ChargeClass": None,
        "ServiceCategory": "AI and Machine Learning",
        "ServiceProviderName": provider,
        "HostProviderName": host_provider,
        "ProviderName": provider,  # deprecated in 1.3, still asked for; gone in 1.4
        "PublisherName": provider,  # idem
        "InvoiceIssuerName": provider,
        "ResourceId": r["step_id"],
        "ResourceName": r["name"],
        "ResourceType": "GPU step",
        "Tags": json.dumps(tags, sort_keys=True),
        "SubAccountId": tags.get("team"),
        "SubAccountName": tags.get("team"),
        "RegionId": region,
        "x_StepName": r["name"],
        "x_Project": tags.get("project"),
        "x_Model": tags.get("model"),
        "x_Workload": tags.get("workload"),
        "x_RunKey": r.get("run_key"),
        "x_GpuType": gpu_type,
        "x_Gpus": r.get("gpus"),
        "x_Telemetry": r.get("telemetry"),
        "x_Status": r.get("status"),
        "x_JobId": r.get("job_id"),  # a job across nodes: one row per node, the same x_JobId
        "x_NodeRank": r.get("node_rank"),
    }
    rows = [
        {
            **common,
            "BilledCost": contracted,
            "EffectiveCost": contracted,
            "ListCost": list_unit * hours if list_unit is not None else contracted,
            "ContractedCost": contracted,
            "ChargeDescription": f"{r.get('gpus', 0)}x {gpu_type or 'GPU'} {pricing} GPU time, step {r['name']}",
            "PricingQuantity": hours,
            "PricingUnit": "Hours",
            "ServiceName": "GPU Compute",
            "ConsumedQuantity": hours,
            "ConsumedUnit": "Hours",
            "ListUnitPrice": list_unit,
            "ContractedUnitPrice": unit,
            "SkuId": gpu_type,
            "SkuPriceId": f"{gpu_type}:{pricing}" if gpu_type else None,
            "PricingCategory": PRICING_CATEGORY.get(pricing, "Other"),
            "x_IdleCost": float(r.get("idle_usd") or 0),
            "x_GpuUtilMeanPct": r.get("util_mean_pct"),
            "x_GpuIdleFraction": r.get("idle_fraction"),
            "x_EnergyKwh": kwh if r.get("energy_kwh") is not None else None,
        }
    ]
    # Energy billed on top of the GPU price (total = compute + energy); included, it is in the price.
    # (a tolerance in cents read energy included in the price as billed apart on short steps)
    if kwh > 0 and energy_usd > 0 and abs(total - (compute + energy_usd)) < abs(total - compute):
        per_kwh = energy_usd / kwh
        rows.append(
            {
                **common,
                "BilledCost": per_kwh * kwh,
                "EffectiveCost": per_kwh * kwh,
                "ListCost": per_kwh * kwh,
                "ContractedCost": per_kwh * kwh,
                "ChargeDescription": f"energy of {r.get('gpus', 0)}x {gpu_type or 'GPU'}, step {r['name']}",
                "PricingQuantity": kwh,
                "PricingUnit": "kWh",
                "ServiceName": "GPU Energy",
                "ConsumedQuantity": kwh,
                "ConsumedUnit": "kWh",
                "ListUnitPrice": per_kwh,
                "ContractedUnitPrice": per_kwh,
                "SkuId": "energy",
                "SkuPriceId": "energy:kWh",
                "PricingCategory": "Standard",
                "x_IdleCost": None,
                "x_GpuUtilMeanPct": None,
                "x_GpuIdleFraction": None,
                "x_EnergyKwh": kwh,
            }
        )
    return rows


def _list_price(catalog: PriceCatalog, gpu_type: str | None) -> float | None:
    if not gpu_type:
        return None
    try:
        return catalog.gpu_hour_usd(gpu_type, "on_demand")
    except ConfigError:
        return None


def write_focus(df: pd.DataFrame, path: str) -> str:
    """Write ``df`` as CSV or Parquet, chosen by the file's suffix; returns the format written."""
    if path.endswith(".parquet"):
        import pyarrow as pa
        import pyarrow.parquet as pq

        schema = pa.schema(
            [
                (c, pa.float64())
                if c in _FLOATS
                else (c, pa.int64())
                if c in ("x_Gpus", "x_NodeRank")
                else (c, pa.timestamp("s", tz="UTC"))
                if c in _TIMES
                else (c, pa.string())
                for c in df.columns
            ]
        )
        table = df.copy()
        for c in _TIMES:
            table[c] = table[c].map(lambda v: datetime.strptime(v, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=timezone.utc))
        pq.write_table(pa.Table.from_pandas(table, schema=schema, preserve_index=False), path)
        return "parquet"
    if path == "-":
        import sys

        sys.stdout.write(df.to_csv(index=False))
        return "csv"
    if path.endswith(".csv"):
        df.to_csv(path, index=False)
        return "csv"
    raise ConfigError(f"cannot tell the format of {path!r}: use a .csv or .parquet file name", field="--output")


_FLOATS = {
    "BilledCost", "EffectiveCost", "ListCost", "ContractedCost", "PricingQuantity", "ConsumedQuantity",
    "ListUnitPrice", "ContractedUnitPrice", "x_IdleCost", "x_GpuUtilMeanPct", "x_GpuIdleFraction", "x_EnergyKwh",
}  # fmt: skip
_TIMES = {"BillingPeriodStart", "BillingPeriodEnd", "ChargePeriodStart", "ChargePeriodEnd"}
