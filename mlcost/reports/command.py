"""``mlcost report``, ``mlcost compare`` and ``mlcost export``.

    mlcost report  [--ledger PATH] [--since WHEN] [--until WHEN] [--by team,project,model,workload]
                   [--outcome NAME=COUNT ...] [--format terminal|markdown|html] [--output FILE]
                   [--validate [--docs-dir DIR]]
    mlcost compare --experiment NAME ... [--filter F] [--metric NAME] [--chart FILE.png] [--format ...]
    mlcost export  --focus [--ledger PATH] [--since WHEN] [--until WHEN] --output FILE.csv|FILE.parquet

Exit codes as everywhere in mlcost: 0 done, 1 the ledger failed validation (``--validate``),
2 bad input. Cheap to import: pandas, matplotlib, MLflow and Great Expectations load inside.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import Any

from mlcost.errors import ConfigError, MissingExtra
from mlcost.exit_status import ExitStatus
from mlcost.extras import require_extra


def register(subparsers: Any) -> None:
    r = subparsers.add_parser(
        "report", help="FinOps report from the ledger: chargeback, waste, right-sizing, anomalies"
    )
    _ledger_args(r)
    r.add_argument("--by", default="team,project,model,workload",
                   help="chargeback dimensions, comma-separated (default: all four, one table each)")  # fmt: skip
    r.add_argument("--outcome", action="append", metavar="NAME=COUNT",
                   help="a business outcome of the period, e.g. orders=120000: adds $ per outcome")  # fmt: skip
    r.add_argument("--format", choices=("terminal", "markdown", "html"), default="terminal")
    r.add_argument("--output", "-o", help="write the report to FILE (default: stdout)")
    r.add_argument("--validate", action="store_true",
                   help="validate the ledger with the Great Expectations suite first and build Data Docs")  # fmt: skip
    r.add_argument("--docs-dir", help="--validate: Data Docs folder (default: ./mlcost-data-docs)")
    r.set_defaults(func=run_report)

    c = subparsers.add_parser("compare", help="cost per model across MLflow runs, with a cost-vs-quality chart")
    c.add_argument("--experiment", action="append", default=[], required=True, metavar="NAME")
    c.add_argument("--filter", dest="filter_string", metavar="FILTER", help="MLflow search filter")
    c.add_argument("--tracking-uri", help="MLflow tracking URI (default: $MLFLOW_TRACKING_URI)")
    c.add_argument("--metric", help="quality metric logged on the runs (e.g. val_auc) for the table and chart")
    c.add_argument(
        "--min-quality", type=float, help="acceptable quality: the metric at least this (at most, for a loss)"
    )
    c.add_argument("--lower-is-better", action="store_true", help="the quality metric is a loss")
    c.add_argument("--chart", metavar="FILE.png", help="write the cost-vs-quality chart (PNG)")
    c.add_argument("--format", choices=("terminal", "markdown", "json"), default="terminal")
    c.set_defaults(func=run_compare)

    e = subparsers.add_parser("export", help="export the ledger as FinOps FOCUS 1.3 rows (CSV or Parquet)")
    _ledger_args(e)
    e.add_argument("--focus", action="store_true", required=True, help="FOCUS 1.3 columns (the only format)")
    e.add_argument("--output", "-o", required=True, help="FILE.csv, FILE.parquet, or - for CSV on stdout")
    e.add_argument("--provider", default="mlcost",
                   help="ServiceProviderName / InvoiceIssuerName (and the deprecated ProviderName / PublisherName)")
    e.add_argument("--host-provider", help="HostProviderName: who hosts the GPUs (default: --provider)")
    e.add_argument("--account-id", default="mlcost", help="BillingAccountId")
    e.add_argument("--region", help="RegionId")
    e.set_defaults(func=run_export)


def _ledger_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--ledger", help="ledger file (default: $MLCOST_LEDGER or ~/.mlcost/ledger.db)")
    p.add_argument("--since", help="start of the period: ISO date/time, or a span back from now (7d, 24h)")
    p.add_argument("--until", help="end of the period (exclusive), same forms")
    p.add_argument("--prices", help="price catalog file (default: $MLCOST_PRICES)")


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m mlcost.reports.command report ...`` (the same commands as ``mlcost``)."""
    parser = argparse.ArgumentParser(prog="mlcost")
    register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return args.func(args)


def _period(args: argparse.Namespace) -> Any:
    from mlcost.period import Period

    return Period.parse(args.since, args.until)


def _ledger(args: argparse.Namespace) -> Any:
    """The ledger of ``--ledger`` (else ``$MLCOST_LEDGER``, else the default), opened read-only and
    checked: a ConfigError (exit 2) when it is missing, not a ledger, or unreachable."""
    from mlcost.ledger.book import open_ledger

    return open_ledger(args.ledger)


def _guard(fn: Any) -> Any:
    def wrapped(args: argparse.Namespace) -> int:
        try:
            return fn(args)
        except (ConfigError, MissingExtra) as e:
            print(f"mlcost {getattr(args, 'command', '') or ''}: {e}".replace("  ", " "), file=sys.stderr)
            return ExitStatus.BAD_INPUT

    wrapped.__name__ = fn.__name__
    return wrapped


# report -----------------------------------------------------------------------------------------
def build_report(ledger: Any, period: Any, *, by: list[str], outcomes: dict[str, float], catalog: Any,
                 plots: bool = False) -> Any:  # fmt: skip
    from mlcost.reports import analysis as a
    from mlcost.reports.render import Report, bar_png, frame_section, num, pct, recommendations_section, usd

    report = Report("mlcost FinOps report", f"Ledger {ledger.where}, steps started {period.label()}."
                    + simulated_note(ledger, period))  # fmt: skip
    for dim in by:
        df = a.chargeback(ledger, period, by=(dim,))
        report.data[f"chargeback_{dim}"] = df
        lost = int(df["lost_steps"].sum()) if len(df) else 0
        report.sections.append(frame_section(f"Chargeback by {dim}", df, [
            (dim, dim, str), ("steps", "steps", str), ("gpu_hours", "GPU-h", num), ("total_usd", "cost", usd),
            ("idle_usd", "idle $", usd), ("share", "share", pct)],
            note=_lost_note(lost)))  # fmt: skip
    ue = a.unit_economics(ledger, period, outcomes)
    report.data["unit_economics"] = ue
    note = "; ".join(f"{usd(v['usd_per_unit'])} per {k} ({v['count']:,.0f} {k})" for k, v in
                     ue.attrs.get("outcomes", {}).items())  # fmt: skip
    report.sections.append(frame_section("Unit economics", ue, [
        ("model", "model", str), ("total_usd", "cost", usd), ("retrains", "retrains", str),
        ("usd_per_retrain", "$ / retrain", usd), ("usd_per_1k_inferences", "$ / 1k inferences", usd)],
        note=("Period cost per outcome: " + note) if note else ""))  # fmt: skip
    for by_ in ("team", "name"):
        df = a.idle_waste(ledger, period, by=by_)
        report.data[f"idle_{by_}"] = df
        label = "step" if by_ == "name" else by_
        report.sections.append(frame_section(f"Idle GPU waste by {label}", df.head(20), [
            (by_, label, str), ("idle_gpu_hours", "idle GPU-h", num), ("idle_usd", "idle $", usd),
            ("idle_share", "idle share of cost", pct)]))  # fmt: skip
    recs = a.rightsizing(ledger, period, catalog)
    report.data["rightsizing"] = recs
    report.sections.append(recommendations_section(recs))
    spot = a.spot_whatif(ledger, period)
    report.data["spot"] = spot
    report.sections.append(frame_section("Spot what-if (interruptible work bought on demand)", spot, [
        ("workload", "workload", str), ("team", "team", str), ("steps", "steps", str),
        ("on_demand_usd", "on demand", usd), ("spot_usd", "on spot", usd), ("saving_usd", "saving", usd)],
        note=f"Total possible saving: {usd(spot['saving_usd'].sum())}." if len(spot) else ""))  # fmt: skip
    an = a.anomalies(ledger, period)
    report.data["anomalies"] = an
    report.sections.append(frame_section("Anomalies", an, [
        ("name", "step", str), ("started_at", "started", str), ("step_id", "step id", lambda v: v[:12]),
        ("metric", "metric", str), ("value", "value", lambda v: num(v, ".4g")),
        ("median", "usual (median)", lambda v: num(v, ".4g")), ("z", "robust z", lambda v: num(v, ".1f")),
        ("cause", "likely cause", str)],
        note="" if len(an) else "No step's cost or GPU-hours is far outside its own history."))  # fmt: skip
    mismatched = _gpu_type_mismatches(ledger, period)
    if len(mismatched):  # issue 10 item 7: priced as declared, shown beside what ran
        report.sections.append(frame_section("Declared GPU type differs from the detected one", mismatched, [
            ("name", "step", str), ("gpu_type", "priced as", str), ("detected", "ran on", str),
            ("steps", "steps", str)]))  # fmt: skip
    if plots:
        first = by[0] if by else "team"
        cb = report.data.get(f"chargeback_{first}")
        if cb is not None and len(cb):
            report.plots.append((f"Cost by {first}", bar_png(list(cb[first].astype(str))[:15],
                                 list(cb["total_usd"])[:15], f"Cost by {first}")))  # fmt: skip
        idle = report.data["idle_team"]
        if len(idle):
            report.plots.append(("Idle GPU $ by team", bar_png(list(idle["team"].astype(str))[:15],
                                 list(idle["idle_usd"])[:15], "Idle GPU cost by team")))  # fmt: skip
    return report


def _gpu_type_mismatches(ledger: Any, period: Any) -> Any:
    """Steps whose declared gpu_type is not the GPU they ran on (the record's detected_gpu_type)."""
    from mlcost.ledger import queries as q
    from mlcost.reports.analysis import _frame, _read

    return _frame(_read(ledger, q.gpu_type_mismatches, period), ["name", "gpu_type", "detected", "steps"])


def _lost_note(lost: int) -> str:
    if not lost:
        return ""
    return (f"{lost} lost step{'s' * (lost != 1)} (died without a final record: no heartbeat for "
            "the lost limit) counted with the usage of their last checkpoint.")  # fmt: skip


def simulated_note(ledger: Any, period: Any) -> str:
    """Says so when steps of the period ran on the simulated GPU: their usage is not a real GPU's."""
    from mlcost.ledger import queries as q
    from mlcost.reports.analysis import _read

    n, sim = _read(ledger, q.simulated_steps, period)
    if not sim:
        return ""
    which = f"All {n}" if sim == n else f"{sim} of {n}"
    return f" SIMULATED GPU: {which} steps ran on a simulated GPU (MLCOST_GPU_BACKEND=simulated): not real usage."


@_guard
def run_report(args: argparse.Namespace) -> int:
    require_extra("reports", what="mlcost report")
    if args.validate:
        require_extra("gx", what="mlcost report --validate")
    from mlcost.pricing.catalog import PriceCatalog
    from mlcost.reports.analysis import DIMENSIONS, parse_outcomes
    from mlcost.reports.render import to_html, to_markdown, to_terminal

    ledger, period = _ledger(args), _period(args)
    by = [d.strip() for d in (args.by or "").split(",") if d.strip()]
    bad = [d for d in by if d not in DIMENSIONS]
    if bad:
        raise ConfigError(f"cannot group by {', '.join(bad)}; allowed: {', '.join(DIMENSIONS)}", field="--by")
    if args.validate:
        from mlcost.reports.validate import validate_ledger

        outcome = validate_ledger(ledger, docs_dir=args.docs_dir or "mlcost-data-docs")
        print(outcome.summary(), file=sys.stderr)
        if not outcome.success:
            print("hint: fix or remove the rows named above before trusting the report; "
                  f"Data Docs: {outcome.docs_index}", file=sys.stderr)  # fmt: skip
            return ExitStatus.INVALID
    report = build_report(ledger, period, by=by, outcomes=parse_outcomes(args.outcome),
                          catalog=PriceCatalog.load(args.prices), plots=args.format == "html")  # fmt: skip
    if args.format == "terminal":
        if args.output:
            from rich.console import Console

            with open(args.output, "w", encoding="utf-8") as fh:
                to_terminal(report, Console(file=fh, width=160))
        else:
            to_terminal(report)
        return ExitStatus.OK
    text = to_html(report) if args.format == "html" else to_markdown(report)
    if args.output:
        with open(args.output, "w", encoding="utf-8") as fh:
            fh.write(text)
        print(f"Wrote {args.format} report to {args.output}.", file=sys.stderr)
    else:
        sys.stdout.write(text)
    return ExitStatus.OK


# export -----------------------------------------------------------------------------------------
@_guard
def run_export(args: argparse.Namespace) -> int:
    require_extra("reports", what="mlcost export")
    from mlcost.pricing.catalog import PriceCatalog
    from mlcost.reports.focus import FOCUS_VERSION, focus_rows, write_focus

    ledger, period = _ledger(args), _period(args)
    df = focus_rows(ledger, period, PriceCatalog.load(args.prices), provider=args.provider,
                    account_id=args.account_id, region=args.region, host_provider=args.host_provider)  # fmt: skip
    kind = write_focus(df, args.output)
    if args.output != "-":
        print(f"Exported {len(df)} FOCUS {FOCUS_VERSION} row{'s' * (len(df) != 1)} ({kind}) to {args.output}.",
              file=sys.stderr)  # fmt: skip
    return ExitStatus.OK


# compare ----------------------------------------------------------------------------------------
@_guard
def run_compare(args: argparse.Namespace) -> int:
    import json

    require_extra("reports", what="mlcost compare")
    from mlcost.reports.compare import compare_models, cost_quality_png
    from mlcost.sinks.mlflow_reach import reading_mlflow

    with reading_mlflow(args.tracking_uri) as uri:  # required, probed, retries bounded: an outage is exit 2
        table = compare_models(args.experiment, args.filter_string, metric=args.metric, tracking_uri=uri,
                               min_quality=args.min_quality, lower_is_better=args.lower_is_better)  # fmt: skip
    if args.chart:
        with open(args.chart, "wb") as fh:
            fh.write(cost_quality_png(table, metric=args.metric, lower_is_better=args.lower_is_better))
    if args.format == "json":
        print(json.dumps(table.to_dict(orient="records"), indent=2, default=str))
        return ExitStatus.OK
    from mlcost.reports.render import Report, frame_section, num, pct, to_markdown, to_terminal, usd

    spec = [("model", "model", str), ("runs", "runs", str), ("median_usd", "median $/run", usd),
            ("usd_per_retrain", "$ / retrain", usd), ("usd_per_1k_inferences", "$ / 1k inferences", usd),
            ("util_pct", "GPU util", lambda v: num(v, ".0f") + ("%" if v == v and v is not None else "")),
            ("idle_share", "idle share", pct)]  # fmt: skip
    if args.metric:
        spec.append(("quality", args.metric, lambda v: num(v, ".4g")))
    best, cheapest = table.attrs.get("cheapest_acceptable"), table.attrs.get("cheapest")
    sim, runs = table.attrs.get("simulated_runs", 0), table.attrs.get("runs", 0)
    which = f"All {runs}" if sim == runs else f"{sim} of {runs}"
    simulated = f" SIMULATED GPU: {which} runs ran on a simulated GPU." if sim else ""
    report = Report("mlcost compare",
                    f"Cost per model across MLflow runs of {', '.join(args.experiment)}.{simulated}")  # fmt: skip
    if args.metric:
        note = f"Cheapest model at acceptable quality: {best}." if best else "No model reached the acceptable quality."
    else:  # no quality figure: say what is cheapest, claim nothing about quality
        note = f"Cheapest model per run: {cheapest}; quality not compared (pass --metric)." if cheapest else ""
    report.sections.append(frame_section("Cost per model", table, spec, note=note))
    if args.format == "markdown":
        sys.stdout.write(to_markdown(report))
    else:
        to_terminal(report)
    if args.chart:
        print(f"Wrote the cost-vs-quality chart to {args.chart}.", file=sys.stderr)
    return ExitStatus.OK


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
