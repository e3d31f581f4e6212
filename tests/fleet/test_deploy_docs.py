"""docs/deploy.md: every snippet that can run here runs, against the two-worker deployment.

Each fenced block in the page is preceded by a label: ``<!-- run -->`` (run here, as a worker
machine would: its HOME and environment), ``<!-- as started by the tests -->`` (a long-running
server: deployment.py must start it with the same flags) or ``<!-- not run here: why -->``.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PAGE = ROOT / "docs" / "deploy.md"
BLOCK = re.compile(r"(?:<!--\s*(?P<label>[^>]*?)\s*-->\s*\n)?```(?P<lang>\w*)\n(?P<body>.*?)\n```", re.S)


def blocks() -> list[tuple[str, str, str]]:
    return [(m["label"] or "", m["lang"], m["body"]) for m in BLOCK.finditer(PAGE.read_text())]


def test_every_block_is_labelled():
    found = blocks()
    assert len(found) >= 10
    for label, _, body in found:
        assert label == "run" or label == "as started by the tests" or label.startswith("not run here:"), body[:80]


def snippet_env(fleet, home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLCOST_", "MLFLOW_", "AIRFLOW"))}
    env.update(fleet.mlcost_env(fleet.worker("w1").home))
    assert fleet.pg is not None
    env.update(
        {
            "HOME": str(fleet.worker("w1").home),
            "PATH": f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}",
            "PGHOST": "127.0.0.1",
            "PGPORT": str(fleet.pg.tcp_port),
            "REDIS_HOST": "127.0.0.1",
            "REDIS_PORT": str(fleet.redis_port),
            "AIRFLOW_API": fleet.api_url,
            "MLFLOW_URL": fleet.mlflow_url,
            "AIRFLOW_HOME": str(home / "airflow"),
        }
    )
    return env


RUN = [(lang, body) for label, lang, body in blocks() if label == "run"]


@pytest.mark.parametrize(("lang", "body"), RUN, ids=[f"{lang}-{i}" for i, (lang, _) in enumerate(RUN)])
def test_snippet_runs(fleet, tmp_path, lang, body):
    env = snippet_env(fleet, tmp_path)
    if lang == "bash":
        argv = ["bash", "-euo", "pipefail", "-c", body]
    else:
        assert lang == "python"
        (tmp_path / "snippet.py").write_text(body + "\n")
        argv = [sys.executable, "snippet.py"]
    out = subprocess.run(argv, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=180)
    assert out.returncode == 0, f"{body}\n--- stdout\n{out.stdout[-3000:]}\n--- stderr\n{out.stderr[-3000:]}"
    if "airflow config get-value" in body:
        assert out.stdout.strip().endswith("CeleryExecutor")
    if "compile(pipeline" in body:
        spec = (tmp_path / "pipeline.yaml").read_text()
        assert "mlcost-ledger" in spec and "MLCOST_LEDGER" in spec  # the Secret reaches the component's pod


STARTED = [body for label, _, body in blocks() if label == "as started by the tests"]


@pytest.mark.parametrize("body", STARTED)
def test_server_commands_are_the_deployments(body):
    """The long-running commands of the page are the ones deployment.py starts (same program,
    subcommand and flags); values differ (ports, folders)."""
    source = (Path(__file__).parent / "deployment.py").read_text()
    words = shlex.split(body.replace("\\\n", " "))
    assert f'"{words[1]}"' in source, words[:2]
    for flag in (w for w in words if w.startswith("--")):
        assert f'"{flag}"' in source, flag
