"""The one place where a command's failure becomes an exit code and a message.

Why one boundary: a raw traceback exits 1, which for ``mlcost gate`` means "a policy is breached",
so bad input read as a cost breach in CI. Here every mlcost error (``MlcostError``: a bad file,
argument, ledger or query) is printed as its message and exits 2, and anything else (a bug, a
``MemoryError``, a ``RecursionError`` from a hostile file) is printed as one line with a hint to
re-run with ``-v`` for the traceback, and also exits 2. Exit 1 stays the answer "no" that a
command returns on purpose (a breached policy, an invalid ledger, steps left unsynced).
"""

from __future__ import annotations

import logging
import sys
import traceback
from collections.abc import Callable
from typing import Any

from mlcost.errors import MlcostError
from mlcost.exit_status import ExitStatus

log = logging.getLogger(__name__)


def run_command(name: str, func: Callable[[], Any], *, verbose: bool = False) -> int:
    """Run ``func`` (a command's body returning its exit code) inside the boundary.

    ``name`` is what the message starts with (``mlcost gate``). With ``verbose`` an unexpected
    exception also prints its traceback; without, one line and the hint."""
    try:
        return int(func())
    except ModuleNotFoundError as e:  # an optional module imported past a require_extra check
        from mlcost.errors import MissingExtra
        from mlcost.extras import extra_for

        extra = extra_for(e.name or "")
        if extra is None:
            return _unexpected(name, e, verbose)
        print(f"{name}: {MissingExtra(extra, [e.name or ''])}", file=sys.stderr)
        return int(ExitStatus.BAD_INPUT)
    except MlcostError as e:
        print(f"{name}: {e}", file=sys.stderr)
        if verbose:
            traceback.print_exc(file=sys.stderr)
        return int(ExitStatus.BAD_INPUT)
    except KeyboardInterrupt:
        print(f"{name}: interrupted", file=sys.stderr)
        return 130
    except Exception as e:  # the boundary: a bug or an exhausted resource, never a breach
        return _unexpected(name, e, verbose)


def _unexpected(name: str, e: BaseException, verbose: bool) -> int:
    message = " ".join(str(e).split())[:300] or "(no message)"
    print(f"{name}: unexpected error: {type(e).__name__}: {message}", file=sys.stderr)
    if verbose:
        traceback.print_exc(file=sys.stderr)
    else:
        command = name.partition(" ")[2] or "..."
        print(f"{name}: re-run as `mlcost -v {command} ...` for the traceback", file=sys.stderr)
    return int(ExitStatus.BAD_INPUT)
