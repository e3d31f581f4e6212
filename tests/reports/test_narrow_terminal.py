"""`mlcost report` and `mlcost gate` in an 80-column terminal (COLUMNS=80): nothing wider, the key
column of every table whole, figures with the digits their magnitude needs, simulated data said."""

from __future__ import annotations

import os
import re
import subprocess
import sys

LONG = "validate_training_data_for_ranker"  # a step name longer than a folded column


def _run(*args: str, cwd, tty: bool = False) -> subprocess.CompletedProcess:
    env = {**os.environ, "COLUMNS": "80", "NO_COLOR": "1"}
    if tty:
        env.update(TTY_COMPATIBLE="1", TTY_INTERACTIVE="0")
    return subprocess.run([sys.executable, "-m", "mlcost.cli", *args], capture_output=True, text=True, env=env,
                          cwd=cwd, timeout=180)  # fmt: skip


def _plain(text: str) -> str:
    return re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", text)


def _ledger(ledger, mk):
    s = mk.step
    return mk.write(
        ledger,
        s(LONG, 12.29, idle_fraction=0.5, gpus=4, util=20.0),
        s("embed", 0.0418, hours=0.0034, util=90.0, team="ads", model="ctr"),  # 0.0034 GPU-h
        s("serve", 2.0, workload="inference", pricing="spot", gpu_type="L4", started="2025-06-11T10:00:00+00:00"),
    )


def test_report_fits_80_columns_keeps_step_names_whole_and_says_simulated(ledger, mk, tmp_path):
    _ledger(ledger, mk)
    out = _run("report", "--ledger", str(ledger.path), "--outcome", "orders=1000000", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert max(len(line) for line in lines) <= 80, [line for line in lines if len(line) > 80]
    assert any(line.startswith(LONG + " ") for line in lines)  # the key column, whole
    assert "SIMULATED GPU: All 3 steps ran on a simulated GPU" in " ".join(out.stdout.split())
    assert re.search(r"^ads\s+1\s+0\.0034\s", out.stdout, re.M)  # GPU-h with the digits it needs, not 0.00
    per_order = re.search(r"\$(\S+) per orders", " ".join(out.stdout.split()))
    assert per_order and float(per_order.group(1)) > 0  # $14.33 / 1e6 orders: $0.000014, not $0.0000


def test_report_without_simulated_steps_says_nothing_of_it(ledger, mk, tmp_path):
    mk.write(ledger, mk.step("real", 1.0).model_copy(update={"simulated": False, "telemetry": "nvml"}))
    out = _run("report", "--ledger", str(ledger.path), cwd=tmp_path)
    assert out.returncode == 0 and "SIMULATED" not in out.stdout


def test_gate_on_a_terminal_fits_80_columns_and_keeps_the_policy_whole(ledger, mk, tmp_path):
    _ledger(ledger, mk)
    policy = tmp_path / "p.toml"
    policy.write_text("[budgets]\njob_usd = 1\n[idle]\nmax_fraction = 0.25\n")
    out = _run("gate", "--ledger", str(ledger.path), "--policy", str(policy), cwd=tmp_path, tty=True)
    assert out.returncode == 1, out.stderr
    lines = _plain(out.stdout).splitlines()
    set_in = [line for line in lines if line.startswith("  set in ")]
    assert set_in and all(str(policy) in line for line in set_in)  # a path is never broken
    assert max(len(line) for line in lines if line not in set_in) <= 80
    for key in ("budgets.job_usd", "idle.max_fraction"):
        assert any(line.startswith(key + " ") for line in lines), key
    assert "Found 3 policy breaches." in lines[-1]
    piped = _run("gate", "--ledger", str(ledger.path), "--policy", str(policy), cwd=tmp_path)
    assert piped.stdout.startswith("## mlcost gate")  # a pipe or CI log still gets the Markdown
