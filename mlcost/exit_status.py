"""The exit codes of every ``mlcost`` command, in one place (ruff's convention).

CI wires ``mlcost gate``, ``mlcost report --validate`` and ``mlcost sync`` into pipelines by their
exit codes, so the codes mean the same thing whichever command returns them.
"""

from __future__ import annotations

from enum import IntEnum


class ExitStatus(IntEnum):
    OK = 0  # done; within policy (warnings allowed)
    FAILED = 1  # the command ran and the answer is "no": a policy breached, the ledger invalid, steps unsynced
    BAD_INPUT = 2  # a file, policy, experiment or query is wrong: fix the input, retrying will not help;
    # also any unexpected error (mlcost.error_boundary), so that a crash never reads as FAILED

    BREACHED = 1  # the gate's name for FAILED
    INVALID = 1  # the ledger validation's name for FAILED
