"""Property: any file given as ``--ledger`` (random bytes, a damaged SQLite file, a foreign SQLite
database, an impostor with some of the ledger's table names) makes every reader exit 0 (an
mlcost ledger) or 2 (anything else) with a message and no traceback, and is left byte for byte
as it was, with nothing written beside it."""

from __future__ import annotations

import hashlib
import sqlite3
from pathlib import Path

from fuzz_contract import TIME_BOUND_S
from hypothesis import given, settings
from hypothesis import strategies as st

from mlcost.cli import main

READERS = (["report"], ["export", "--focus", "--output", "-"], ["gate"], ["ledger", "info"])
SQLITE_HEADER = b"SQLite format 3\x00"
LEDGER_TABLES = ["step_figures", "step_records", "series", "synced", "mlcost_schema_version", "steps"]
NAMES = st.one_of(st.sampled_from([*LEDGER_TABLES, "users", "orders"]),
                  st.text(alphabet="abcdefghijklmnopqrstuvwxyz_", min_size=1, max_size=8))
COLUMNS = st.lists(st.one_of(st.sampled_from(["step_id", "record", "started_at", "version_num", "name", "status"]),
                             st.text(alphabet="abcdefghijklmnopqrstuvwxyz_", min_size=1, max_size=8)),
                   min_size=1, max_size=4, unique=True)
CELLS = st.one_of(st.none(), st.integers(-(2**63), 2**63 - 1), st.floats(), st.text(max_size=20),
                  st.sampled_from(["0001", "0003", "9999", "2026-01-01T00:00:00+00:00", "{", "{}", "succeeded"]))


@st.composite
def databases(draw: st.DrawFn) -> list[tuple[str, list[str], list[list[object]]]]:
    tables = draw(st.lists(NAMES, min_size=1, max_size=4, unique=True))
    out = []
    for name in tables:
        columns = draw(COLUMNS)
        rows = draw(st.lists(st.lists(CELLS, min_size=len(columns), max_size=len(columns)), max_size=3))
        out.append((name, columns, rows))
    return out


def _sqlite(path: Path, tables) -> None:
    conn = sqlite3.connect(path)
    with conn:
        for name, columns, rows in tables:
            conn.execute(f'CREATE TABLE "{name}" ({", ".join(f"{c!r}" for c in columns)})')
            conn.executemany(f'INSERT INTO "{name}" VALUES ({", ".join("?" * len(columns))})', rows)
    conn.close()


def _digest(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir())}


def _holds(folder: Path, path: Path, argv: list[str], capsys) -> None:
    import time

    before = _digest(folder)
    capsys.readouterr()
    started = time.perf_counter()
    code = main([*argv, "--ledger", str(path)])
    assert time.perf_counter() - started < TIME_BOUND_S * 2
    out = capsys.readouterr()
    text = out.err + out.out
    assert code in (0, 2), (argv, text)
    assert "Traceback" not in text and "unexpected error" not in text, (argv, text)
    if code == 2:
        assert str(path) in text or "--ledger" in text, (argv, text)
    assert _digest(folder) == before, f"{argv} wrote to the folder of {path}"


_FEW = settings(max_examples=max(10, settings.default.max_examples // 4))  # each example runs a command


@_FEW
@given(st.binary(max_size=2048), st.booleans(), st.sampled_from(READERS))
def test_any_bytes_as_a_ledger_exit_0_or_2_and_are_left_as_they_were(tmp_path_factory, capsys, content, header,
                                                                     argv):
    folder = tmp_path_factory.mktemp("l")
    path = folder / "ledger.db"
    path.write_bytes((SQLITE_HEADER if header else b"") + content)
    _holds(folder, path, argv, capsys)


@_FEW
@given(databases(), st.sampled_from(READERS), st.integers(0, 100))
def test_a_foreign_or_impostor_database_exits_0_or_2_and_is_left_as_it_was(tmp_path_factory, capsys, tables, argv,
                                                                           cut_pct):
    folder = tmp_path_factory.mktemp("l")
    path = folder / "app.db"
    _sqlite(path, tables)
    if cut_pct < 30:  # a damaged copy: the file cut short
        data = path.read_bytes()
        path.write_bytes(data[: len(data) * cut_pct // 30])
    _holds(folder, path, argv, capsys)
