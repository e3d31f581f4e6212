"""The reproducers of issue 16 through the real ``mlcost`` command, each in its own process:
exit 2 within 15 s, one message and no traceback on stderr, the YAML bomb under a 2 GB
address-space limit; and the CLI's one error boundary (an unexpected exception exits 2 with a hint,
``-v`` shows the traceback; exit 1 stays a breached policy)."""

from __future__ import annotations

import json
import subprocess
import sys
import time

import pytest
from fuzz_inputs import diamond_pipeline, write, yaml_bomb_pipeline

from mlcost.cli import main

ADDRESS_SPACE = 2 * 2**30
POLICY = '[budgets]\nrun_usd = 100\nmax_duration = "1h"\n[cluster]\nmax_gpus = 8\n'


def _limit_memory() -> None:  # runs in the child, before exec
    import resource

    resource.setrlimit(resource.RLIMIT_AS, (ADDRESS_SPACE, ADDRESS_SPACE))


def mlcost(*args: str, limit_memory: bool = False) -> tuple[int, str, float]:
    started = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-m", "mlcost.cli", *args],
        capture_output=True,
        text=True,
        timeout=60,
        preexec_fn=_limit_memory if limit_memory else None,
    )
    return done.returncode, done.stderr, time.monotonic() - started


def _refused(rc: int, stderr: str, elapsed: float, *, names: str) -> None:
    assert rc == 2, stderr
    assert elapsed < 15, f"took {elapsed:.1f} s"
    assert "Traceback" not in stderr and names in stderr, stderr


@pytest.mark.skipif(sys.platform != "linux", reason="RLIMIT_AS is what the issue measures, on Linux")
def test_a_yaml_bomb_pipeline_exits_2_fast_under_a_2gb_address_space(tmp_path):
    bomb = write(tmp_path / "bomb.yaml", yaml_bomb_pipeline())
    assert len(bomb) and (tmp_path / "bomb.yaml").stat().st_size < 6000
    policy = write(tmp_path / "mlcost.toml", POLICY)
    rc, err, elapsed = mlcost("gate", "--pipeline", bomb, "--policy", policy, "--no-history", limit_memory=True)
    _refused(rc, err, elapsed, names=bomb)
    assert "aliases" in err


def test_a_30_level_diamond_pipeline_is_answered_fast(tmp_path):
    diamond = write(tmp_path / "diamond.yaml", diamond_pipeline(30))
    policy = write(tmp_path / "mlcost.toml", POLICY)
    rc, err, elapsed = mlcost("gate", "--pipeline", diamond, "--policy", policy, "--no-history")
    _refused(rc, err, elapsed, names=diamond)
    assert "comp-x28" in err  # the shared sub-DAG is named


def test_a_12_level_diamond_is_inspected_and_breaches_the_policy(tmp_path, capsys):
    diamond = write(tmp_path / "diamond.yaml", diamond_pipeline(12))
    policy = write(tmp_path / "mlcost.toml", POLICY)
    assert main(["gate", "--pipeline", diamond, "--policy", policy, "--no-history", "--format", "json"]) == 1
    (pipeline,) = json.loads(capsys.readouterr().out)["pipelines"]
    assert len(pipeline["tasks"]) == 2048  # every path to the one GPU container is a run of it


@pytest.mark.parametrize(
    ("name", "content"),
    [
        ("latin1.toml", "[budgets]\njob_usd = 5 # café\n".encode("latin-1")),
        ("list.toml", "[budgets]\nmax_duration = [1, 2]\n"),
        ("deep.toml", "a = " + "[" * 1000 + "]" * 1000 + "\n"),
        ("digits.toml", "[budgets]\njob_usd = " + "9" * 5000 + "\n"),
    ],
)
def test_a_bad_policy_file_exits_2_not_1(tmp_path, capsys, name, content):
    policy = write(tmp_path / name, content)
    assert main(["gate", "--policy", policy, "--ledger", str(tmp_path / "ledger.db")]) == 2
    err = capsys.readouterr().err
    assert policy in err and "Traceback" not in err and "unexpected" not in err


def test_the_policy_reproducer_through_the_real_command(tmp_path):
    policy = write(tmp_path / "deep.toml", "a = " + "[" * 1000 + "]" * 1000 + "\n")
    rc, err, elapsed = mlcost("gate", "--policy", policy, "--ledger", str(tmp_path / "ledger.db"))
    _refused(rc, err, elapsed, names=policy)


def _explode(args):
    raise RuntimeError("a bug\nover two lines")


def test_an_unexpected_exception_exits_2_with_one_line_and_a_hint(monkeypatch, capsys):
    monkeypatch.setattr("mlcost.cli._prices", _explode)
    assert main(["prices"]) == 2
    err = capsys.readouterr().err
    assert "mlcost prices: unexpected error: RuntimeError: a bug over two lines" in err
    assert "mlcost -v prices" in err and "Traceback" not in err


def test_with_v_the_traceback_is_shown_and_the_exit_is_still_2(monkeypatch, capsys):
    monkeypatch.setattr("mlcost.cli._prices", _explode)
    assert main(["-v", "prices"]) == 2
    assert "Traceback" in capsys.readouterr().err


def test_an_mlcost_error_is_its_message_and_exit_2(monkeypatch, capsys):
    from mlcost.errors import ConfigError

    def refuse(args):
        raise ConfigError("is wrong", source="prices.toml", field="gpus.X")

    monkeypatch.setattr("mlcost.cli._prices", refuse)
    assert main(["prices"]) == 2
    assert capsys.readouterr().err.strip() == "mlcost prices: prices.toml: gpus.X: is wrong"
