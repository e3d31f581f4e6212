"""`python pipelines/training_pipeline.py run` as a user runs it: a cost summary like the demo's at the
end, the executor's JSON in a log file (shown with -v), and nothing of it left in the repository."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_the_example_ends_with_a_cost_summary_not_the_executor_log(tmp_path):
    env = {**os.environ, "COLUMNS": "80", "NO_COLOR": "1", "MLCOST_LEDGER": str(tmp_path / "ledger.db")}
    root = tmp_path / "kfp-local-outputs"
    out = subprocess.run([sys.executable, str(ROOT / "pipelines" / "training_pipeline.py"), "run",
                          "--pipeline-root", str(root)], capture_output=True, text=True, env=env, cwd=tmp_path,
                         timeout=400)  # fmt: skip
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    lines = out.stdout.splitlines()
    assert len(lines) < 25, out.stdout  # the summary, not hundreds of lines of executor JSON
    assert "executorInput" not in out.stdout + out.stderr
    assert lines[0].startswith("Cost of pipeline mlcost-training  [SIMULATED GPU]")
    for step in ("train_small", "train_large"):
        assert any(line.startswith(step + " ") for line in lines), step
    assert any(line.startswith("total ") for line in lines) and "best model: large" in lines
    assert max(len(line) for line in lines if not line.startswith("executor log:")) <= 80
    log = (root / "executor.log").read_text()
    assert "executorInput" in log or "Executing task" in log  # kept, behind -v
    assert "simulated (simulated)" not in log


def test_kfp_local_outputs_stay_out_of_the_repository():
    ignored = subprocess.run(["git", "check-ignore", "-q", "kfp-local-outputs/executor.log"], cwd=ROOT)
    assert ignored.returncode == 0
