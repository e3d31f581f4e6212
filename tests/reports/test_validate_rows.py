"""The Great Expectations ledger suite checks rows across their columns, and names the broken row."""

from __future__ import annotations

import pytest

from mlcost.cli import main
from mlcost.reports.validate import validate_ledger


def _clean(mk, ledger):
    s = mk.step
    return mk.write(ledger, s("train", 12.29, idle_fraction=0.5), s("embed", 4.0, gpus=2, hours=0.5))


def test_a_consistent_ledger_passes_the_row_checks(ledger, mk):
    _clean(mk, ledger)
    outcome = validate_ledger(ledger)
    assert outcome.success, outcome.summary()


BROKEN = {
    # what is broken: (fields changed on an otherwise consistent step, the column the failure names)
    "idle above total": ({"idle_usd": 20.0}, "total_usd,idle_usd"),
    "parts do not add up": ({"compute_usd": 5.0, "idle_usd": 0.0}, "cost_parts_gap_usd"),
    "ends before it starts": ({"ended_at": "2025-06-10T09:00:00+00:00"}, "elapsed_s"),
    "gpu-hours not gpus x duration": ({"gpu_hours": 3.0}, "gpu_hours_error"),
}


@pytest.mark.parametrize("case", sorted(BROKEN))
def test_a_row_that_breaks_an_identity_fails_and_is_named(case, ledger, mk, tmp_path, capsys):
    _clean(mk, ledger)
    change, column = BROKEN[case]
    bad = mk.step("broken", 12.29).model_copy(update=change)
    mk.write(ledger, bad)
    docs = tmp_path / "docs"
    rc = main(["report", "--ledger", str(ledger.path), "--validate", "--docs-dir", str(docs), "--by", "team"])
    assert rc == 1
    err = capsys.readouterr().err
    (line,) = [line for line in err.splitlines() if f"on {column} " in line]
    assert f"in step {bad.step_id}" in line  # the row, by step id
    pages = [p.read_text(errors="replace") for p in docs.rglob("*.html") if p.name != "index.html"]
    assert any(bad.step_id in page for page in pages)  # the Data Docs show it too
