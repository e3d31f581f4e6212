"""The Great Expectations suite that the ledger must pass before a report or gate trusts it.

Expectations, per column: costs and GPU-hours are non-negative; utilisation and idle share are within
range; durations are non-negative; GPU types are ones the price catalog knows; no step is recorded
twice (same step id, or same name, start and run). Across the columns of each row: idle cost is part
of the compute cost and so at most the total; the cost parts add up (total = compute, which holds
the idle share, plus energy when the catalog bills it apart, within a cent); a step ends at or after
it starts; GPU-hours are the GPUs times the duration (within 1%). Every failure names its rows by
step id, in the summary and in the Data Docs that validation writes.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

SUITE = "mlcost_ledger"


@dataclass
class ValidationOutcome:
    success: bool
    evaluated: int
    failed: list[dict[str, Any]] = field(default_factory=list)  # expectation, column, examples
    docs_index: str | None = None
    rows: int = 0

    def summary(self) -> str:
        if self.success:
            return f"Ledger valid: {self.evaluated} expectations passed over {self.rows} steps."
        lines = [f"Ledger invalid: {len(self.failed)} of {self.evaluated} expectations failed over {self.rows} steps."]
        for f in self.failed:
            rows = f.get("step_ids") or []
            where = f" in step{'s' * (len(rows) != 1)} {', '.join(rows[:5])}" if rows else ""
            lines.append(f"  {f['expectation']} on {f['column']}{where}: e.g. {f['examples']}")
        return "\n".join(lines)


def ledger_frame(ledger: Any) -> Any:
    """The counted steps' flat figures (sealed ones and lost ones), from the query layer."""
    import pandas as pd

    from mlcost.ledger.queries import VALIDATION_COLUMNS, reading, validation_rows

    with reading(ledger) as conn:
        df = pd.DataFrame.from_records(validation_rows(conn), columns=list(VALIDATION_COLUMNS))
    start = pd.to_datetime(df["started_at"], utc=True, format="ISO8601")
    end = pd.to_datetime(df["ended_at"], utc=True, format="ISO8601")
    df["elapsed_s"] = (end - start).dt.total_seconds()
    df["run_key"] = df["run_key"].fillna("")
    return with_row_checks(df)


def with_row_checks(df: Any) -> Any:
    """The derived columns the cross-column expectations read: how far each row is from its own
    identities (GX compares a column with constants or one other column, not with a formula)."""
    total, compute = df["total_usd"].fillna(0), df["compute_usd"].fillna(0)
    energy = df["energy_usd"].fillna(0)
    # total = compute (+ energy when billed apart): the smaller of the two gaps
    df["cost_parts_gap_usd"] = pd_min((total - compute).abs(), (total - compute - energy).abs())
    expected = df["gpus"].fillna(0) * df["duration_s"].fillna(0) / 3600.0
    hours = df["gpu_hours"].fillna(0)
    scale = pd_max(hours, expected).clip(lower=1e-6)
    df["gpu_hours_error"] = (hours - expected).abs() / scale
    return df


def pd_min(a: Any, b: Any) -> Any:
    return a.where(a <= b, b)


def pd_max(a: Any, b: Any) -> Any:
    return a.where(a >= b, b)


def ephemeral_context(docs_dir: str | None) -> Any:
    """A GX context kept in memory, with a Data Docs site in ``docs_dir`` when given."""
    import great_expectations as gx
    from great_expectations.data_context.types.base import ProgressBarsConfig

    ctx = gx.get_context(mode="ephemeral")
    ctx.variables.progress_bars = ProgressBarsConfig(globally=False)
    if docs_dir:
        ctx.add_data_docs_site(
            site_name="mlcost",
            site_config={
                "class_name": "SiteBuilder",
                "store_backend": {
                    "class_name": "TupleFilesystemStoreBackend",
                    "base_directory": os.path.abspath(docs_dir),
                },
                "site_index_builder": {"class_name": "DefaultSiteIndexBuilder"},
            },
        )
    return ctx


def ledger_suite(known_gpu_types: list[str]) -> Any:
    import great_expectations as gx
    import great_expectations.expectations as gxe

    suite = gx.ExpectationSuite(name=SUITE)
    for col in ("total_usd", "idle_usd", "compute_usd", "gpu_hours", "duration_s", "gpus"):
        suite.add_expectation(gxe.ExpectColumnValuesToBeBetween(column=col, min_value=0, mostly=1.0))
    suite.add_expectation(gxe.ExpectColumnValuesToBeBetween(column="util_mean_pct", min_value=0, max_value=100))
    suite.add_expectation(gxe.ExpectColumnValuesToBeBetween(column="idle_fraction", min_value=0, max_value=1))
    suite.add_expectation(gxe.ExpectColumnValuesToBeBetween(column="elapsed_s", min_value=0))  # ends after start
    suite.add_expectation(gxe.ExpectColumnValuesToNotBeNull(column="started_at"))
    suite.add_expectation(gxe.ExpectColumnValuesToBeInSet(column="gpu_type", value_set=known_gpu_types))
    suite.add_expectation(gxe.ExpectColumnValuesToBeUnique(column="step_id"))
    suite.add_expectation(gxe.ExpectCompoundColumnsToBeUnique(column_list=["name", "started_at", "run_key"]))
    # across the columns of a row
    for bigger, smaller in (("total_usd", "idle_usd"), ("compute_usd", "idle_usd")):
        suite.add_expectation(gxe.ExpectColumnPairValuesAToBeGreaterThanB(
            column_A=bigger, column_B=smaller, or_equal=True, ignore_row_if="either_value_is_missing",
            meta={"rule": f"{smaller} <= {bigger}: idle time is a share of the compute bill"}))  # fmt: skip
    parts = "total_usd = compute_usd (idle included) + energy_usd when billed apart, within a cent"
    suite.add_expectation(gxe.ExpectColumnValuesToBeBetween(column="cost_parts_gap_usd", max_value=0.01,
                                                            meta={"rule": parts}))  # fmt: skip
    # a step ends at or after it starts: elapsed_s >= 0 above (from parsed UTC times, not strings)
    hours = "gpu_hours = gpus x duration_s / 3600, within 1%"
    suite.add_expectation(gxe.ExpectColumnValuesToBeBetween(column="gpu_hours_error", max_value=0.01,
                                                            meta={"rule": hours}))  # fmt: skip
    return suite


def run_suite(
    df: Any, make_suite: Any, *, docs_dir: str | None, name: str, id_column: str | None = None
) -> tuple[Any, str | None]:
    """Validate ``df`` with the suite ``make_suite()`` builds (GX needs its context first) as a GX
    checkpoint; returns (validation result, Data Docs index). With ``id_column``, each failure lists
    the ids of its rows (and the Data Docs show them)."""
    import great_expectations as gx
    from great_expectations.checkpoint import UpdateDataDocsAction

    ctx = ephemeral_context(docs_dir)
    batch = ctx.data_sources.add_pandas(name).add_dataframe_asset(name).add_batch_definition_whole_dataframe(name)
    suite = ctx.suites.add(make_suite())
    vd = ctx.validation_definitions.add(gx.ValidationDefinition(name=name, data=batch, suite=suite))
    actions = [UpdateDataDocsAction(name="docs", site_names=["mlcost"])] if docs_dir else []
    result_format: Any = "SUMMARY"
    if id_column:
        result_format = {"result_format": "COMPLETE", "unexpected_index_column_names": [id_column],
                         "partial_unexpected_count": 20}  # fmt: skip
    cp = ctx.checkpoints.add(
        gx.Checkpoint(name=name, validation_definitions=[vd], actions=actions, result_format=result_format)
    )
    result = cp.run(batch_parameters={"dataframe": df})
    (vr,) = result.run_results.values()
    index = os.path.join(os.path.abspath(docs_dir), "index.html") if docs_dir else None
    return vr, index


def _failures(vr: Any) -> list[dict[str, Any]]:
    out = []
    for r in vr.results:
        if r.success:
            continue
        cfg = r.expectation_config
        kw = cfg.kwargs
        out.append(
            {
                "expectation": cfg.type,
                "column": kw.get("column")
                or ",".join(kw.get("column_list") or [c for c in (kw.get("column_A"), kw.get("column_B")) if c]),
                "examples": [_plain(v) for v in (r.result or {}).get("partial_unexpected_list", [])[:5]],
                "step_ids": _ids((r.result or {}).get("unexpected_index_list") or []),
                "unexpected_count": (r.result or {}).get("unexpected_count"),
                "meta": dict(cfg.meta or {}),
                "severity": str(getattr(cfg, "severity", "critical")),
            }
        )
    return out


def _plain(value: Any) -> Any:
    """A value as a person reads it (``12.29``, not ``np.float64(12.29)``)."""
    if isinstance(value, (tuple, list)):
        return tuple(_plain(v) for v in value)
    return value.item() if hasattr(value, "item") else value


def _ids(index_list: list[Any]) -> list[str]:
    """The step ids of GX's ``unexpected_index_list`` (dicts keyed by the id column), in order, once."""
    out: list[str] = []
    for item in index_list:
        sid = item.get("step_id") if isinstance(item, dict) else None
        if sid is not None and str(sid) not in out:
            out.append(str(sid))
    return out


def validate_ledger(ledger: Any, *, docs_dir: str | None = None, catalog: Any = None) -> ValidationOutcome:
    """Run the ledger suite; Data Docs go to ``docs_dir`` when given."""
    from mlcost.pricing.catalog import PriceCatalog

    catalog = catalog or PriceCatalog.load()
    df = ledger_frame(ledger)
    vr, index = run_suite(
        df, lambda: ledger_suite(catalog.gpu_types), docs_dir=docs_dir, name=SUITE, id_column="step_id"
    )
    return ValidationOutcome(
        success=bool(vr.success),
        evaluated=int(vr.statistics["evaluated_expectations"]),
        failed=_failures(vr),
        docs_index=index,
        rows=len(df),
    )
