"""Bad ledgers and bad URLs: a clear error naming the flag or variable, exit 2, never a traceback, never
a hang, and nothing written where it does not belong (issue 9's bad input; issue 16 item 5)."""

from __future__ import annotations

import hashlib
import os
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from mlcost.cli import main
from mlcost.ledger import Ledger, mask, resolve

READERS = (  # every command that reads a ledger, as argv without --ledger
    ["report"],
    ["export", "--focus", "--output", "-"],
    ["gate"],
    ["ledger", "info"],
)


def _run(argv, capsys) -> tuple[int, str]:
    code = main(argv)
    captured = capsys.readouterr()
    assert "Traceback" not in captured.err + captured.out
    return int(code), captured.err + captured.out


# URLs -------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("spec", "says"),
    [
        ("postgresql://u:pw@db.example:notaport/ledger", "malformed ledger URL"),
        ("postgresql://u:pw@db.example:5432", "no database name"),
        ("postgresql:///ledger", "no host"),
        ("postgresql:/ledger", "malformed ledger URL"),
        ("mysql://u:pw@db.example/ledger", "unknown ledger driver 'mysql'"),
        ("postgresql+psycopg2://u:pw@db.example/ledger", "unknown ledger driver 'postgresql+psycopg2'"),
        ("sqlite://", "a SQLite ledger needs a file"),
    ],
)
def test_a_bad_url_names_the_flag_or_the_variable(spec, says, capsys, monkeypatch):
    code, out = _run(["report", "--ledger", spec], capsys)
    assert code == 2 and "--ledger" in out and says in out and ":pw@" not in out
    monkeypatch.setenv("MLCOST_LEDGER", spec)
    code, out = _run(["report"], capsys)
    assert code == 2 and "MLCOST_LEDGER" in out and says in out


def test_postgresql_urls_mean_psycopg_3_and_passwords_are_masked():
    t = resolve("postgresql://alice:s3cr%40t@db.example:5432/ledger?sslmode=require")
    assert t.url.startswith("postgresql+psycopg://alice:s3cr%40t@") and t.backend == "postgresql" and t.shared
    assert "s3cr" not in repr(t) + str(t) + t.masked + repr(Ledger(t.url)) + Ledger(t.url).where
    assert t.masked == "postgresql+psycopg://alice:***@db.example:5432/ledger?sslmode=require"
    assert mask("postgres://bob:pw@h/db?password=pw2") == "postgres://bob:***@h/db?password=***"
    assert resolve("postgres://u@h/db").url == "postgresql+psycopg://u@h/db"
    assert resolve("sqlite:////data/l.db").path == Path("/data/l.db") and not resolve("sqlite:////data/l.db").shared


def test_a_wrong_password_names_the_flag_and_never_shows_the_password(pg_server, capsys):
    from pg_server import PASSWORD_USER

    url = pg_server.url("postgres", user=PASSWORD_USER, password="Hunter2xyz")
    code, out = _run(["report", "--ledger", url], capsys)
    assert code == 2 and "--ledger" in out and "password authentication failed" in out
    assert "Hunter2xyz" not in out and "***" in out


def test_an_unreachable_host_fails_fast_naming_the_flag(capsys, monkeypatch, caplog, tmp_path):
    monkeypatch.setenv("MLCOST_OUTBOX", str(tmp_path / "outbox.db"))
    url = "postgresql://u:pw@10.255.255.1:5432/ledger"  # a blackhole: no answer at all
    t0 = time.monotonic()
    code, out = _run(["report", "--ledger", url], capsys)
    assert code == 2 and "--ledger" in out and "cannot reach the ledger" in out and ":pw@" not in out
    assert time.monotonic() - t0 < 8  # connect_timeout is 3 s


# files that are not ledgers (issue 16 item 5) ------------------------------------------------------
def _not_ledgers(tmp_path: Path) -> dict[str, Path]:
    good = tmp_path / "good.db"
    Ledger(good).write(_a_step())
    truncated = tmp_path / "truncated.db"
    data = good.read_bytes()
    truncated.write_bytes(data[: len(data) // 2])
    (tmp_path / "text.db").write_text("step_id,cost\na,1\n")
    (tmp_path / "random.db").write_bytes(os.urandom(8192))
    (tmp_path / "header_only.db").write_bytes(b"SQLite format 3\x00" + os.urandom(4000))
    (tmp_path / "a_directory").mkdir()
    return {p.name: p for p in tmp_path.iterdir() if p.name != "good.db" and not p.name.startswith("good.db-")}


def _a_step(step_id: str = "a"):
    from mlcost.step import StepCost

    return StepCost(step_id=step_id, name="train", status="succeeded", started_at="2026-01-01T00:00:00+00:00",
                    total_usd=1.0, tags={"team": "search"})  # fmt: skip


def test_a_file_that_is_not_a_ledger_gets_a_clear_error_in_every_reader(tmp_path, capsys):
    bad = _not_ledgers(tmp_path)
    for name, path in bad.items():
        for argv in READERS:
            code, out = _run([*argv, "--ledger", str(path)], capsys)
            assert code == 2, (name, argv, out)
            assert str(path) in out and "--ledger" in out, (name, argv, out)


def _foreign(tmp_path: Path) -> Path:
    path = tmp_path / "app.db"
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE users (id INTEGER PRIMARY KEY, name TEXT)")
        conn.execute("CREATE TABLE orders (id INTEGER PRIMARY KEY, user_id INTEGER)")
        conn.execute("INSERT INTO users (name) VALUES ('ada')")
    conn.close()
    return path


def _digest(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir())}


def test_a_foreign_sqlite_file_is_refused_and_left_byte_for_byte_as_it_was(
    tmp_path, capsys, monkeypatch, caplog, mlflow_uri
):
    folder = tmp_path / "app"
    folder.mkdir()
    path = _foreign(folder)
    before = _digest(folder)
    for argv in [*READERS, ["ledger", "upgrade"], ["sync"]]:
        code, out = _run([*argv, "--ledger", str(path)], capsys)
        assert code == 2, (argv, out)
        assert _digest(folder) == before, argv
        assert "not an mlcost ledger" in out and "orders, users" in out, (argv, out)
    # a metered step pointed at it still runs, and writes nothing there
    monkeypatch.setenv("MLCOST_LEDGER", str(path))
    import mlcost

    with mlcost.meter("train", gpus=0, interval=0.05) as m:
        pass
    assert m.cost is not None and m.cost.status == "succeeded"
    assert "not an mlcost ledger" in caplog.text
    assert _digest(folder) == before


def test_a_read_only_ledger_can_be_reported_on_by_an_unprivileged_user(tmp_path):
    if os.geteuid() != 0:
        pytest.skip("needs root to run the reader as another user")
    interpreter = Path(os.path.realpath(sys.executable))
    hidden = [str(d) for d in interpreter.parents if not d.stat().st_mode & 0o001]
    if hidden:  # e.g. a pyenv Python under /root (mode 700): no other user can start it
        pytest.skip(f"the interpreter {interpreter} is not reachable by another user (no o+x on {hidden[0]})")
    folder = Path(tempfile.mkdtemp(prefix="mlro", dir="/tmp"))
    try:
        path = folder / "ledger.db"
        Ledger(path).write(_a_step("a"))
        Ledger(path).write(_a_step("b"))
        from mlcost.ledger.store import dispose_all

        dispose_all()
        assert sorted(p.name for p in folder.iterdir()) == ["ledger.db"]  # WAL checkpointed away
        folder.chmod(0o755)
        path.chmod(0o644)
        before = _digest(folder)
        home = Path(tempfile.mkdtemp(prefix="mlhome", dir="/tmp"))
        home.chmod(0o777)
        env = {**os.environ, "HOME": str(home), "MLCOST_LEDGER": str(path), "MLCOST_POLICY": ""}
        env.pop("MLCOST_POLICY")

        def as_nobody() -> None:
            os.setgid(65534)
            os.setuid(65534)

        for argv in (["report"], ["export", "--focus", "--output", "-"], ["ledger", "info"]):
            proc = subprocess.run(
                [sys.executable, "-m", "mlcost.cli", *argv], env=env, cwd=home, capture_output=True, text=True,
                timeout=120, preexec_fn=as_nobody,
            )  # fmt: skip
            assert proc.returncode == 0, (argv, proc.stderr)
            assert "Traceback" not in proc.stderr
        assert "2" in proc.stdout.split("step_figures")[1]
        assert _digest(folder) == before
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def test_a_database_with_other_tables_is_refused_and_nothing_is_created_in_it(
    pg_server, pg_url, capsys, tmp_path, monkeypatch
):
    monkeypatch.setenv("MLCOST_OUTBOX", str(tmp_path / "outbox.db"))
    from urllib.parse import urlsplit

    db = urlsplit(pg_url).path.lstrip("/")
    pg_server.execute("CREATE TABLE users (id integer primary key, name text)", db=db)
    tables = "SELECT tablename FROM pg_tables WHERE schemaname = 'public' ORDER BY 1"
    for argv in [*READERS, ["ledger", "upgrade"]]:
        code, out = _run([*argv, "--ledger", pg_url], capsys)
        assert code == 2 and "not an mlcost ledger" in out and "users" in out, (argv, out)
    Ledger(pg_url).write(_a_step())  # a step is refused there too (logged), and still runs
    assert pg_server.execute(tables, db=db) == [("users",)]
