"""The deployment's process handling: stopped by PID, nothing left, even a child in its own session."""

from __future__ import annotations

import os
import sys

import psutil
import pytest
from processes import DeploymentError, Processes, wait_until

# a parent that ignores SIGTERM, with one child in its group and one that left it (setsid)
TREE = """
import os, signal, subprocess, sys, time
signal.signal(signal.SIGTERM, signal.SIG_IGN)
subprocess.Popen([sys.executable, "-c", "import time; time.sleep(300)"])
subprocess.Popen([sys.executable, "-c", "import time; time.sleep(300)"], start_new_session=True)
print("ready", flush=True)
time.sleep(300)
"""


def test_stop_leaves_nothing_running(tmp_path):
    procs = Processes(tmp_path / "logs")
    proc = procs.start("tree", [sys.executable, "-c", TREE], env=dict(os.environ), cwd=tmp_path)
    try:
        wait_until(lambda: "ready" in proc.log_tail() and len(psutil.Process(proc.pid).children()) == 2,
                   timeout=30, what="the process tree")  # fmt: skip
        family = [proc.pid, *(c.pid for c in psutil.Process(proc.pid).children())]
        procs.stop(proc, timeout=1.0)  # SIGTERM is ignored: the stop must escalate
    finally:
        procs.stop_all()
    assert procs.leftovers() == []
    assert not any(psutil.pid_exists(pid) and psutil.Process(pid).status() != psutil.STATUS_ZOMBIE for pid in family)


def test_wait_until_names_what_it_waited_for():
    with pytest.raises(DeploymentError, match="the moon"):
        wait_until(lambda: False, timeout=0.2, what="the moon")
