"""The ``mlcost`` command line.

Each subcommand lives beside the code it drives and registers itself here; heavy imports happen
inside the command, so ``mlcost --help`` is instant. Exit codes follow ruff and are the same for
every command (:class:`mlcost.exit_status.ExitStatus`): 0 ok / within policy, 1 the answer is no
(policy breached, ledger invalid, steps left unsynced), 2 bad input (file, policy, query).
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from importlib import import_module

from mlcost import __version__
from mlcost.errors import ConfigError
from mlcost.exit_status import ExitStatus

# Modules that add subcommands through `register(subparsers)`; absent ones are skipped.
_COMMAND_MODULES = ("mlcost.gate.command", "mlcost.reports.command", "mlcost.ledger.command")


def _sync(args: argparse.Namespace) -> int:
    from rich.console import Console

    from mlcost.sinks.ledger import Ledger
    from mlcost.sync import sync

    ledger = Ledger(args.ledger)
    if not ledger.path.exists() and ledger.shared:  # the outbox is made by this machine's first step
        Console().print(f"Nothing to sync: no step has run on this machine yet (no outbox at {ledger.path}).")
        return ExitStatus.OK
    if not ledger.path.exists():
        Console(stderr=True).print(f"[red]no ledger at {ledger.path}[/red] (set MLCOST_LEDGER or --ledger)")
        return ExitStatus.BAD_INPUT
    console = Console()
    from mlcost.ledger.outbox import sync_outbox

    line, delivered = sync_outbox(ledger)  # a shared ledger: its outbox first
    if line:
        console.print(line, highlight=False)
    result = sync(ledger, tracking_uri=args.tracking_uri, experiment=args.experiment)
    for step_id, why in result.failed.items():
        console.print(f"[red]failed[/red] {step_id}: {why}")
    console.print(
        f"Synced {len(result.synced)} step{'s' * (len(result.synced) != 1)} to MLflow"
        + (
            f", {len(result.failed)} failed (run `mlcost sync` again when MLflow is reachable)"
            if result.failed
            else "."
        )
    )
    return ExitStatus.OK if not result.failed and delivered else ExitStatus.FAILED


def _prices(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.table import Table

    from mlcost.pricing.catalog import PriceCatalog

    catalog = PriceCatalog.load(args.prices)
    table = Table(title=f"GPU prices, USD per GPU-hour ({'; '.join(catalog.sources)})")
    for col in ("GPU", "on-demand", "spot", "reserved", "memory GB", "source", "as of"):
        table.add_column(col)
    for name in catalog.gpu_types:
        if ":" in name and not args.mig:
            continue
        row = catalog.describe(name)

        def fmt(pricing: str, name: str = name) -> str:
            try:
                return f"{catalog.gpu_hour_usd(name, pricing):.3f}"
            except ConfigError:
                return "-"

        table.add_row(
            name,
            fmt("on_demand"),
            fmt("spot"),
            fmt("reserved"),
            f"{catalog.memory_gb(name) or '-'}",
            row.source or "",
            row.as_of or "",
        )
    Console().print(table)
    return ExitStatus.OK


def _demo(args: argparse.Namespace) -> int:
    from mlcost.demo import run_demo

    return run_demo(args)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mlcost", description="Cost-aware MLOps: meter, price and guard GPU steps.")
    parser.add_argument("--version", action="version", version=f"mlcost {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log what mlcost does")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    demo = sub.add_parser("demo", help="run the example DAG end to end on embedded defaults")
    demo.add_argument("--home", help="folder for the demo's Airflow home, MLflow store and ledger (default: temp)")
    demo.set_defaults(func=_demo)

    sync = sub.add_parser("sync", help="replay ledger steps that MLflow missed (idempotent)")
    sync.add_argument("--ledger", help="ledger file or database URL; a URL's outbox is drained into it first "
                      "(default: $MLCOST_LEDGER or ~/.mlcost/ledger.db)")
    sync.add_argument("--tracking-uri", help="MLflow tracking URI (default: $MLFLOW_TRACKING_URI)")
    sync.add_argument("--experiment", help="experiment for steps that had no run (default: mlcost)")
    sync.set_defaults(func=_sync)

    prices = sub.add_parser("prices", help="show the price catalog in force")
    prices.add_argument("--prices", help="price catalog file (default: $MLCOST_PRICES)")
    prices.add_argument("--mig", action="store_true", help="include MIG profiles")
    prices.set_defaults(func=_prices)

    for module_name in _COMMAND_MODULES:
        try:
            module = import_module(module_name)
        except ImportError:
            continue
        module.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(message)s")
    if not getattr(args, "func", None):
        parser.print_help()
        return ExitStatus.BAD_INPUT
    try:
        return int(args.func(args))
    except ConfigError as e:
        print(f"mlcost {args.command}: {e}", file=sys.stderr)
        return ExitStatus.BAD_INPUT


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
