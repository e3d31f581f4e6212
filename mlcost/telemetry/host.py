"""Host usage of the job: CPU of its process tree and resident memory.

CPU is the job's process *and its children* (DataLoader workers, tokenizer pools), in percent of
one core like ``top`` (400% = four busy cores), so a data-starved GPU step can be told apart from
one whose input pipeline is saturating the host. Listing children walks all of /proc (2 ms on
a quiet container, far more on a busy node), so the list is refreshed only every
``refresh_every`` reads (30: half a minute at the Sampler's once-a-second host cadence; a worker
is counted from the refresh that finds it); the per-read cost is one ``cpu_times`` and one
``memory_info`` per known process. RSS is summed over the tree, so pages shared by forked workers
count more than once: it is an upper bound, cheaper than PSS.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class HostReading:
    cpu_pct: float | None  # of one core, summed over the process tree; None on the first read
    rss_gb: float | None


class HostSampler:
    """Reads the process tree rooted at ``pid`` (default: this process)."""

    def __init__(self, pid: int | None = None, *, refresh_every: int = 30,
                 clock: Callable[[], float] = time.monotonic) -> None:
        import psutil  # lazy: cheap import of mlcost

        self._psutil = psutil
        self._root = psutil.Process(pid or os.getpid())
        self.refresh_every = max(1, refresh_every)
        self.clock = clock
        self.cpu_count: int | None = psutil.cpu_count()
        self._procs: dict[int, Any] = {self._root.pid: self._root}
        self._cpu_s: dict[int, float] = {}
        self._last_t: float | None = None
        self._reads = 0

    def open(self) -> None:
        """Take the baseline, so the first :meth:`read` already has a CPU figure."""
        self._refresh()
        self._sample()
        self._last_t = self.clock()

    def _refresh(self) -> None:
        try:
            children = self._root.children(recursive=True)
        except self._psutil.Error as e:
            log.debug("mlcost: cannot list the children of pid %s: %s", self._root.pid, e)
            return
        known = self._procs
        self._procs = {self._root.pid: self._root}
        for child in children:  # keep the Process objects we know: pid reuse is checked by psutil
            self._procs[child.pid] = known.get(child.pid, child)

    def _sample(self) -> tuple[float | None, float]:
        """(CPU seconds used since the previous sample by processes seen both times, RSS bytes)."""
        used, rss, seen = 0.0, 0, {}
        for pid, proc in list(self._procs.items()):
            try:
                with proc.oneshot():
                    times = proc.cpu_times()
                    rss += proc.memory_info().rss
            except self._psutil.Error:  # exited between refreshes
                self._procs.pop(pid, None)
                continue
            seen[pid] = times.user + times.system
            if pid in self._cpu_s:  # a process seen for the first time only sets its baseline
                used += max(0.0, seen[pid] - self._cpu_s[pid])
        self._cpu_s = seen
        return used, rss

    def read(self) -> HostReading:
        self._reads += 1
        if self._reads % self.refresh_every == 0:
            self._refresh()
        t = self.clock()
        used, rss = self._sample()
        dt = None if self._last_t is None else t - self._last_t
        self._last_t = t
        cpu = used / dt * 100 if dt and dt > 0 else None
        return HostReading(cpu_pct=cpu, rss_gb=rss / 1e9)
