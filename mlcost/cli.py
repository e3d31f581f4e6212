"""The ``mlcost`` command line.

Each subcommand lives beside the code it drives and registers itself here; heavy imports happen
inside the command, so ``mlcost --help`` is instant. Exit codes follow ruff and are the same for
every command (:class:`mlcost.exit_status.ExitStatus`): 0 ok / within policy, 1 the answer is no
(policy breached, ledger invalid, steps left unsynced), 2 bad input (file, policy, query).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence
from importlib import import_module
from typing import Any

from mlcost import __version__
from mlcost.exit_status import ExitStatus

# Modules that add subcommands through `register(subparsers)`; absent ones are skipped.
_COMMAND_MODULES = (
    "mlcost.gate.command",
    "mlcost.reports.command",
    "mlcost.ledger.command",
    "mlcost.budget_command",
)


def _sync(args: argparse.Namespace) -> int:
    from rich.console import Console

    from mlcost.sinks.ledger import Ledger
    from mlcost.sinks.mlflow_reach import resolve_tracking_uri
    from mlcost.sync import sync

    ledger = Ledger(args.ledger)
    if not ledger.path.exists() and ledger.shared:  # the outbox is made by this machine's first step
        Console().print(f"Nothing to sync: no step has run on this machine yet (no outbox at {ledger.path}).")
        return ExitStatus.OK
    if not ledger.path.exists():
        Console(stderr=True).print(f"[red]no ledger at {ledger.path}[/red] (set MLCOST_LEDGER or --ledger)")
        return ExitStatus.BAD_INPUT
    ledger.local.open()  # a file that is not a ledger, or one newer than this mlcost: refused, untouched
    console = Console()
    from mlcost.ledger.outbox import sync_outbox

    line, delivered = sync_outbox(ledger)  # a shared ledger: its outbox first
    if line:
        console.print(line, highlight=False)
    _retry_alerts(ledger, console)
    if ledger.remote is not None and not (args.tracking_uri or os.environ.get("MLFLOW_TRACKING_URI")):
        return ExitStatus.OK if delivered else ExitStatus.FAILED  # a shared ledger and no MLflow: done
    uri = resolve_tracking_uri(args.tracking_uri)  # none: an error, never a stray ./mlflow.db
    result = _with_progress(console, lambda on_step: sync(ledger, tracking_uri=uri, experiment=args.experiment,
                                                         on_step=on_step))  # fmt: skip
    for step_id, why in result.failed.items():
        console.print(f"[red]failed[/red] {step_id}: {why}", soft_wrap=True)
    plural = "s" * (result.kept != 1)
    if result.unreachable:
        Console(stderr=True).print(
            f"mlcost sync: gave up on {result.server} ({result.unreachable}); synced {len(result.synced)}, "
            f"kept {result.kept} step{plural} for the next `mlcost sync`",
            soft_wrap=True,
        )
        return ExitStatus.FAILED
    console.print(
        f"Synced {len(result.synced)} step{'s' * (len(result.synced) != 1)} to MLflow {result.server}"
        + (f", {len(result.failed)} failed (kept for the next `mlcost sync`)" if result.failed else "."),
        soft_wrap=True,
    )
    return ExitStatus.OK if not result.failed and delivered else ExitStatus.FAILED


def _with_progress(console: Any, work: Any) -> Any:
    """Run ``work(on_step)`` with a rich progress bar on a terminal (none in a pipe or a log)."""
    if not console.is_terminal:
        return work(None)
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    with Progress(TextColumn("syncing"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                  console=console, transient=True) as bar:  # fmt: skip
        task = bar.add_task("sync", total=None)
        return work(lambda done, total: bar.update(task, completed=done, total=total))


def _retry_alerts(ledger: object, console: object) -> None:
    """Alerts that no webhook took when they were raised go out again (the policy's webhooks)."""
    from mlcost.alerts import retry_undelivered
    from mlcost.policy import Policy

    hooks = Policy.load().alerts
    if hooks.webhooks:
        sent, failed = retry_undelivered(ledger, hooks.webhooks, timeout_s=hooks.timeout_s, retries=hooks.retries)
        if sent or failed:
            console.print(f"Alerts: {sent} delivered, {failed} still undelivered.")  # type: ignore[attr-defined]


def _prices(args: argparse.Namespace) -> int:
    from rich.console import Console

    from mlcost.pricing.catalog import PriceCatalog
    from mlcost.pricing.show import print_prices

    print_prices(PriceCatalog.load(args.prices), mig=args.mig, console=Console(), errors=Console(stderr=True))
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
    from mlcost.error_boundary import run_command  # every failure: a message and exit 2, never exit 1

    return run_command(f"mlcost {args.command}", lambda: args.func(args), verbose=args.verbose)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
