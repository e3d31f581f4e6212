"""The host sampler sees the job's whole process tree."""

from __future__ import annotations

import subprocess
import sys
import time

import psutil
import pytest

from mlcost.telemetry.host import HostSampler


@pytest.fixture
def busy_child():
    child = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    yield child
    child.kill()
    child.wait()


def test_a_busy_child_process_counts_as_the_jobs_cpu(busy_child):
    child = psutil.Process(busy_child.pid)
    time.sleep(0.1)  # let the interpreter start
    host = HostSampler(refresh_every=1)
    host.open()
    before, started = sum(child.cpu_times()[:2]), time.monotonic()
    time.sleep(0.6)  # this process sleeps: nearly all CPU in the tree is the child's
    reading = host.read()
    child_pct = (sum(child.cpu_times()[:2]) - before) / (time.monotonic() - started) * 100
    assert child_pct > 10  # the child really ran (even on a loaded two-core runner)
    assert reading.cpu_pct is not None and reading.cpu_pct >= 0.8 * child_pct
    assert reading.rss_gb > 0 and host.cpu_count >= 1


def test_children_are_listed_only_every_n_reads(monkeypatch):
    host = HostSampler(refresh_every=5)
    host.open()
    listed = []
    original = host._root.children
    monkeypatch.setattr(host._root, "children", lambda **kw: listed.append(1) or original(**kw))
    for _ in range(10):
        host.read()
    assert len(listed) == 2
