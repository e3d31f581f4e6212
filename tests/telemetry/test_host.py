"""The host sampler sees the job's whole process tree."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest

from mlcost.telemetry.host import HostSampler


@pytest.fixture
def busy_child():
    child = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    yield child
    child.kill()
    child.wait()


def test_a_busy_child_process_counts_as_the_jobs_cpu(busy_child):
    host = HostSampler(refresh_every=1)
    host.open()
    time.sleep(0.6)  # this process sleeps: any CPU seen is the child's
    reading = host.read()
    assert reading.cpu_pct is not None and reading.cpu_pct > 50
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
