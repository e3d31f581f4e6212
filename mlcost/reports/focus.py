"""FinOps FOCUS 1.2 export: one Usage row per sealed ledger step.

Mandatory columns come first in the specification's order and are always filled (ChargeClass is
null: no row is a correction); conditional columns that fit a GPU step follow; mlcost's own columns
come last with the ``x_`` prefix the specification reserves for custom columns.
"""

from __future__ import annotations

import json
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

from mlcost.errors import ConfigError

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd

    from mlcost.period import Period
    from mlcost.pricing.catalog import PriceCatalog

FOCUS_VERSION = "1.2"
MANDATORY = (
    "BilledCost", "EffectiveCost", "ListCost", "ContractedCost", "BillingCurrency", "BillingAccountId",
    "BillingAccountName", "BillingPeriodStart", "BillingPeriodEnd", "ChargePeriodStart", "ChargePeriodEnd",
    "ChargeCategory", "ChargeClass", "ChargeDescription", "PricingQuantity", "PricingUnit", "ServiceName",
    "ServiceCategory", "ProviderName", "PublisherName", "InvoiceIssuerName",
)  # fmt: skip
CONDITIONAL = (
    "ResourceId", "ResourceName", "ResourceType", "Tags", "ConsumedQuantity", "ConsumedUnit", "ListUnitPrice",
    "ContractedUnitPrice", "SkuId", "SkuPriceId", "PricingCategory", "SubAccountId", "SubAccountName", "RegionId",
)  # fmt: skip
CUSTOM = (
    "x_StepName", "x_Project", "x_Model", "x_Workload", "x_RunKey", "x_GpuType", "x_Gpus", "x_IdleCost",
    "x_GpuUtilMeanPct", "x_GpuIdleFraction", "x_EnergyKwh", "x_Telemetry", "x_Status",
)  # fmt: skip
COLUMNS = MANDATORY + CONDITIONAL + CUSTOM
PRICING_CATEGORY = {"on_demand": "Standard", "spot": "Dynamic", "reserved": "Committed"}


def _utc(iso: str | None) -> str | None:
    if not iso:
        return None
    dt = datetime.fromisoformat(iso)
    dt = dt.replace(tzinfo=timezone.utc) if dt.tzinfo is None else dt.astimezone(timezone.utc)
    return dt.strftime("%Y-%m-%dT%H:%M:%SZ")


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
) -> pd.DataFrame:
    """The ledger's sealed steps in ``period`` as FOCUS rows (a DataFrame with :data:`COLUMNS`)."""
    import pandas as pd

    from mlcost.ledger.queries import reading, step_records

    with reading(ledger) as conn:
        rows = list(step_records(conn, period))  # counted steps: sealed, and lost ones (status "lost")
    out: list[dict[str, Any]] = []
    for r in rows:
        start = _utc(r["started_at"])
        end = _utc(r.get("ended_at")) or start
        bp_start, bp_end = _month(start)
        tags = r.get("tags") or {}
        gpu_type, pricing, hours = r.get("gpu_type"), r.get("pricing") or "on_demand", float(r.get("gpu_hours") or 0)
        billed = float(r.get("total_usd") or 0)
        unit = r.get("gpu_hour_usd")
        list_unit = _list_price(catalog, gpu_type)
        list_cost = hours * list_unit if list_unit is not None else billed
        out.append(
            {
                "BilledCost": billed,
                "EffectiveCost": billed,
                "ListCost": max(list_cost, billed) if pricing == "on_demand" else list_cost,
                "ContractedCost": billed,
                "BillingCurrency": "USD",
                "BillingAccountId": account_id,
                "BillingAccountName": account_name,
                "BillingPeriodStart": bp_start,
                "BillingPeriodEnd": bp_end,
                "ChargePeriodStart": start,
                "ChargePeriodEnd": end,
                "ChargeCategory": "Usage",
                "ChargeClass": None,
                "ChargeDescription": f"{r.get('gpus', 0)}x {gpu_type or 'GPU'} {pricing} GPU time, step {r['name']}",
                "PricingQuantity": hours,
                "PricingUnit": "Hours",
                "ServiceName": "GPU Compute",
                "ServiceCategory": "AI and Machine Learning",
                "ProviderName": provider,
                "PublisherName": provider,
                "InvoiceIssuerName": provider,
                "ResourceId": r["step_id"],
                "ResourceName": r["name"],
                "ResourceType": "GPU step",
                "Tags": json.dumps(tags, sort_keys=True),
                "ConsumedQuantity": hours,
                "ConsumedUnit": "Hours",
                "ListUnitPrice": list_unit,
                "ContractedUnitPrice": unit,
                "SkuId": gpu_type,
                "SkuPriceId": f"{gpu_type}:{pricing}" if gpu_type else None,
                "PricingCategory": PRICING_CATEGORY.get(pricing, "Other"),
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
                "x_IdleCost": float(r.get("idle_usd") or 0),
                "x_GpuUtilMeanPct": r.get("util_mean_pct"),
                "x_GpuIdleFraction": r.get("idle_fraction"),
                "x_EnergyKwh": r.get("energy_kwh"),
                "x_Telemetry": r.get("telemetry"),
                "x_Status": r.get("status"),
            }
        )
    return pd.DataFrame(out, columns=list(COLUMNS))


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
                if c == "x_Gpus"
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
