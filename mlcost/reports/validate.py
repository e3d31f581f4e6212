"""The Great Expectations suite that the ledger must pass before a report or gate trusts it.

Expectations: costs and GPU-hours are non-negative; utilisation and idle share are within range;
time runs forward (a step ends at or after it starts, durations are non-negative); GPU types are
ones the price catalog knows; no step is recorded twice (same step id, or same name, start and run).
Validation writes Data Docs, so the result can be browsed and shared like any other GX suite.
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
            lines.append(f"  {f['expectation']} on {f['column']}: e.g. {f['examples']}")
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
    return df


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
    return suite


def run_suite(df: Any, make_suite: Any, *, docs_dir: str | None, name: str) -> tuple[Any, str | None]:
    """Validate ``df`` with the suite ``make_suite()`` builds (GX needs its context first) as a GX
    checkpoint; returns (validation result, Data Docs index)."""
    import great_expectations as gx
    from great_expectations.checkpoint import UpdateDataDocsAction

    ctx = ephemeral_context(docs_dir)
    batch = ctx.data_sources.add_pandas(name).add_dataframe_asset(name).add_batch_definition_whole_dataframe(name)
    suite = ctx.suites.add(make_suite())
    vd = ctx.validation_definitions.add(gx.ValidationDefinition(name=name, data=batch, suite=suite))
    actions = [UpdateDataDocsAction(name="docs", site_names=["mlcost"])] if docs_dir else []
    cp = ctx.checkpoints.add(gx.Checkpoint(name=name, validation_definitions=[vd], actions=actions))
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
                "column": kw.get("column") or ",".join(kw.get("column_list") or []),
                "examples": (r.result or {}).get("partial_unexpected_list", [])[:5],
                "unexpected_count": (r.result or {}).get("unexpected_count"),
                "meta": dict(cfg.meta or {}),
                "severity": str(getattr(cfg, "severity", "critical")),
            }
        )
    return out


def validate_ledger(ledger: Any, *, docs_dir: str | None = None, catalog: Any = None) -> ValidationOutcome:
    """Run the ledger suite; Data Docs go to ``docs_dir`` when given."""
    from mlcost.pricing.catalog import PriceCatalog

    catalog = catalog or PriceCatalog.load()
    df = ledger_frame(ledger)
    vr, index = run_suite(df, lambda: ledger_suite(catalog.gpu_types), docs_dir=docs_dir, name=SUITE)
    return ValidationOutcome(
        success=bool(vr.success),
        evaluated=int(vr.statistics["evaluated_expectations"]),
        failed=_failures(vr),
        docs_index=index,
        rows=len(df),
    )
