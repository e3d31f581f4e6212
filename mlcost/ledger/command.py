"""``mlcost ledger info`` and ``mlcost ledger upgrade``: what a ledger is, and bringing it to head.

    mlcost ledger info    [--ledger PATH|URL]   backend, masked URL, schema state, rows, outbox
    mlcost ledger upgrade [--ledger PATH|URL]   create or migrate the schema (take a backup first)

Exit codes as everywhere: 0 done, 1 ``info`` found a ledger that needs ``upgrade``, 2 bad input
(not a ledger, newer than this mlcost, unreachable, malformed URL).
"""

from __future__ import annotations

import argparse

from mlcost.exit_status import ExitStatus


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("ledger", help="the ledger's schema: info, upgrade")
    sub = p.add_subparsers(dest="ledger_command", metavar="ACTION", required=True)
    help_ledger = "ledger path or database URL (default: $MLCOST_LEDGER or ~/.mlcost/ledger.db)"
    info = sub.add_parser("info", help="backend, location (password masked), schema revision, row counts")
    info.add_argument("--ledger", help=help_ledger)
    info.set_defaults(func=_info)
    up = sub.add_parser("upgrade", help="create the ledger or migrate it to this mlcost's schema")
    up.add_argument("--ledger", help=help_ledger)
    up.set_defaults(func=_upgrade)


def _store(args: argparse.Namespace, *, readonly: bool):  # -> Store
    from mlcost.ledger.store import Store
    from mlcost.ledger.target import resolve

    return Store(resolve(args.ledger), readonly=readonly)


def _unavailable(e: Exception, field: str):  # -> ConfigError
    from mlcost.errors import ConfigError

    return ConfigError(f"cannot reach the ledger: {e}", field=field)


def _info(args: argparse.Namespace) -> int:
    from mlcost.ledger import migrate
    from mlcost.ledger.store import LedgerUnavailable, check_file
    from mlcost.ledger.target import outbox_path

    store = _store(args, readonly=True)
    t = store.target
    print(f"ledger:   {t.masked}")
    print(f"backend:  {t.backend}" + (" (shared; the local file is the outbox)" if t.shared else ""))
    if t.path is not None:
        if not t.path.exists():
            print("state:    no file yet (a step's first write, or `mlcost ledger upgrade`, creates it)")
            print(f"hint: run `mlcost ledger upgrade --ledger {t.masked}`")
            return ExitStatus.FAILED
        check_file(t, must_exist=True)
    try:
        with store._errors(), store.engine.connect() as conn:
            st = migrate.state(conn)
    except LedgerUnavailable as e:
        raise _unavailable(e, t.field_name) from None
    migrate.refuse(st, t.masked, t.field_name)  # foreign, newer: exit 2 naming it
    print(f"state:    {st.describe()}")
    print(f"revision: {st.revision or '-'} (this mlcost: {migrate.HEAD})")
    if st.current:
        store._ready = True
        for table, n in store.counts().items():
            print(f"rows:     {table:<13}{n:>10,}")
    if t.shared:
        from mlcost.ledger.book import Ledger

        outbox = outbox_path()
        if outbox.exists():
            from mlcost.ledger.outbox import pending_count

            print(f"outbox:   {outbox}: {pending_count(Ledger(args.ledger))} step(s) not delivered yet")
        else:
            print(f"outbox:   {outbox} (none on this machine)")
    if st.kind == "empty" or not st.current:
        print(f"hint: run `mlcost ledger upgrade --ledger {t.masked}` (take a backup first)")
        return ExitStatus.FAILED
    return ExitStatus.OK


def _upgrade(args: argparse.Namespace) -> int:
    from mlcost.ledger import migrate
    from mlcost.ledger.store import LedgerUnavailable

    store = _store(args, readonly=False)
    try:
        before = store.open()
    except LedgerUnavailable as e:
        raise _unavailable(e, store.target.field_name) from None
    if before.current:
        print(f"Ledger {store.target.masked} is at revision {migrate.HEAD} already; nothing to do.")
    else:
        print(f"Ledger {store.target.masked}: {before.describe()} -> revision {migrate.HEAD}.")
    return ExitStatus.OK
