"""``mlcost budgets``: each budget window's spend, limit, share, forecast and state.

Exit 1 when a window is spent, so a CI job or a cron can page on it; ``--format json`` for Grafana
or a script (no prose in it).
"""

from __future__ import annotations

import argparse
import json
from datetime import datetime, timezone

from mlcost.exit_status import ExitStatus


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("budgets", help="show budget windows: spend, limit, forecast, state (exit 1 when one is spent)")
    p.add_argument("--ledger", help="ledger file or database URL (default: $MLCOST_LEDGER or ~/.mlcost/ledger.db)")
    p.add_argument("--policy", help="policy file (default: $MLCOST_POLICY, ./mlcost.toml, [tool.mlcost])")
    p.add_argument("--format", choices=("table", "json"), default="table")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from mlcost.ledger import open_ledger
    from mlcost.policy import Policy
    from mlcost.windows import STATE_SPENT, window_status

    policy = Policy.load(args.policy)
    if not policy.budgets.windows:
        if args.format == "json":
            print(json.dumps({"policy": policy.source, "windows": []}))
        else:
            print(f"No budget windows in {policy.source} (add [[budgets.windows]] to set one).")
        return ExitStatus.OK
    ledger = open_ledger(args.ledger)
    now = datetime.now(timezone.utc)
    statuses = [window_status(ledger.store, w, now) for w in policy.budgets.windows]
    if args.format == "json":
        print(json.dumps({"policy": policy.source, "ledger": ledger.where, "at": now.isoformat(),
                          "windows": [s.to_json() for s in statuses]}, indent=2))  # fmt: skip
    else:
        _print_table(statuses, policy.source, ledger.where)
    return ExitStatus.FAILED if any(s.state == STATE_SPENT for s in statuses) else ExitStatus.OK


def _print_table(statuses: list, source: str, where: str) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console()
    table = Table(title="Budget windows", caption=f"policy {source}; ledger {where}", title_justify="left")
    table.add_column("window", no_wrap=True)
    table.add_column("period")
    for col in ("spent $", "limit $", "share", "forecast $"):
        table.add_column(col, justify="right")
    table.add_column("state")
    colours = {"ok": "green", "warned": "yellow", "spent": "red"}
    for s in statuses:
        share = "∞" if s.share == float("inf") else f"{s.share:.0%}"
        table.add_row(
            s.name, f"{s.window.period} from {s.start:%m-%d}", f"{s.spent_usd:,.2f}", f"{s.limit_usd:,.2f}", share,
            f"{s.forecast_usd:,.2f}", f"[{colours[s.state]}]{s.state}[/]",
        )  # fmt: skip
    console.print(table)
