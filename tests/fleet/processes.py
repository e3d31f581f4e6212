"""Start server processes by PID and stop them by PID, proving that nothing was left running.

Each process starts in its own session (``start_new_session``), so its PID is also the id of its
process group: a SIGTERM to the group reaches the forks a server makes (Celery's pool, uvicorn's
workers, Airflow's task supervisors) without a broad kill by name. Descendants are snapshot before
the stop, so one that left the group (a new session of its own) is still found and stopped by PID.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import psutil

log = logging.getLogger(__name__)


def free_port() -> int:
    """A TCP port free on 127.0.0.1 now (the server that takes it is started right after)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class DeploymentError(RuntimeError):
    """A component did not come up, or did not go away."""


@dataclass
class Proc:
    """One started server: its PID, what it runs and where its output goes."""

    name: str
    popen: subprocess.Popen
    log_path: Path
    seen: dict[int, float] = field(default_factory=dict)  # pid -> create_time, every process ever seen

    @property
    def pid(self) -> int:
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None

    def log_tail(self, chars: int = 3000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except OSError:
            return ""

    def remember_family(self) -> None:
        """Note the process and all its descendants now, for the leftover check after stopping."""
        try:
            root = psutil.Process(self.pid)
            for p in [root, *root.children(recursive=True)]:
                self.seen.setdefault(p.pid, p.create_time())
        except psutil.Error:
            pass


def _still_running(pid: int, created: float) -> bool:
    """True when ``pid`` is the same process as before (not a reused PID) and not a zombie."""
    try:
        p = psutil.Process(pid)
        return abs(p.create_time() - created) < 0.01 and p.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


class Processes:
    """Every server a deployment started, in start order; stopped in reverse order."""

    def __init__(self, logs: Path) -> None:
        self.logs = logs
        self.logs.mkdir(parents=True, exist_ok=True)
        self.procs: list[Proc] = []
        self.stopped: list[Proc] = []

    def start(self, name: str, argv: Sequence[str], *, env: Mapping[str, str], cwd: Path) -> Proc:
        log_path = self.logs / f"{name}.log"
        out = open(log_path, "ab")  # noqa: SIM115 (the child keeps it; closed when the Popen is gone)
        try:
            popen = subprocess.Popen(
                list(argv), env=dict(env), cwd=cwd, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
            )
        finally:
            out.close()
        proc = Proc(name, popen, log_path)
        proc.remember_family()
        self.procs.append(proc)
        log.info("fleet: started %s (pid %d)", name, popen.pid)
        return proc

    def stop(self, proc: Proc, *, timeout: float = 20.0) -> None:
        self.stop_many([proc], timeout=timeout)

    def stop_many(self, procs: Sequence[Proc], *, timeout: float = 20.0) -> None:
        """SIGTERM each process group at once, wait up to ``timeout`` for all of them, then SIGKILL
        whatever remains of any of them (stragglers of the group, descendants that left it)."""
        for proc in procs:
            proc.remember_family()
            if proc.alive():
                _signal_group(proc.pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        for proc in procs:
            try:
                proc.popen.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                log.warning("fleet: %s (pid %d) ignored SIGTERM for %.0fs; killing it", proc.name, proc.pid, timeout)
        for proc in procs:
            _signal_group(proc.pid, signal.SIGKILL)
            for pid, created in proc.seen.items():
                if _still_running(pid, created):
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(pid, signal.SIGKILL)
            proc.popen.wait(10)
        wait_until(lambda: not self.leftovers(procs), timeout=10, what="the stopped processes to exit")
        for proc in procs:
            if proc in self.procs:
                self.procs.remove(proc)
            self.stopped.append(proc)

    def stop_all(self) -> None:
        if self.procs:
            self.stop_many(list(reversed(self.procs)))

    def leftovers(self, procs: Sequence[Proc] | None = None) -> list[str]:
        """``name:pid`` of every process ever seen that still runs."""
        found = []
        for proc in procs if procs is not None else [*self.procs, *self.stopped]:
            found += [f"{proc.name}:{pid}" for pid, created in proc.seen.items() if _still_running(pid, created)]
        return found


def _signal_group(pgid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


def wait_until(check: Callable[[], object], *, timeout: float, what: str, every: float = 0.1) -> object:
    """Poll ``check`` until it returns something truthy (a readiness check, never a fixed sleep);
    an exception inside ``check`` counts as not ready yet."""
    deadline = time.monotonic() + timeout
    last: BaseException | None = None
    while True:
        try:
            value = check()
            if value:
                return value
        except Exception as e:
            last = e
        if time.monotonic() > deadline:
            why = f" (last: {last})" if last else ""
            raise DeploymentError(f"timed out after {timeout:.0f}s waiting for {what}{why}")
        time.sleep(every)
