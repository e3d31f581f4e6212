"""`mlcost report`, `mlcost export --focus` and `mlcost report --validate` through the command line."""

from __future__ import annotations

import base64
import json
import re

import pyarrow.parquet as pq
import pytest

from mlcost.cli import main
from mlcost.reports.focus import COLUMNS, MANDATORY


def _ledger(ledger, mk):
    s = mk.step
    return mk.write(
        ledger,
        s("train", 12.29, idle_fraction=0.5, spot=3.19),  # idle $6.145
        s("embed", 12.29, util=20.0, mem_gb=8.0, team="ads", model="ctr"),  # MIG candidate
        s(
            "serve", 2.0, workload="inference", pricing="spot", gpu_type="L4", started="2025-06-11T10:00:00+00:00"
        ),
    )


def test_report_markdown_has_every_section_with_the_hand_computed_figures(ledger, mk, capsys):
    _ledger(ledger, mk)
    rc = main(["report", "--ledger", mk.spec(ledger), "--format", "markdown", "--by", "team",
               "--outcome", "orders=1000"])  # fmt: skip
    assert rc == 0
    out = capsys.readouterr().out
    for title in ("Chargeback by team", "Unit economics", "Idle GPU waste by team", "Right-sizing",
                  "Spot what-if", "Anomalies"):  # fmt: skip
        assert f"## {title}" in out
    assert "| search | 2 | 2.00 | $14.29 | $6.14 | 54% |" in out  # 12.29 + 2.00; idle 12.29 x 0.5
    assert "| ads | 1 | 1.00 | $12.29 | $0.0000 | 46% |" in out
    assert "H100:2g.20gb" in out and "$8.78" in out  # 12.29 x 5/7 saved
    assert "$9.10" in out  # spot what-if of the on-demand training step: 12.29 - 3.19
    assert "$0.0266 per orders" in out  # (12.29 + 12.29 + 2) / 1000


def test_report_html_is_self_contained_with_embedded_png_plots(ledger, mk, tmp_path):
    _ledger(ledger, mk)
    out = tmp_path / "report.html"
    assert main(["report", "--ledger", mk.spec(ledger), "--format", "html", "-o", str(out)]) == 0
    text = out.read_text()
    images = re.findall(r"src='data:image/png;base64,([A-Za-z0-9+/=]+)'", text)
    assert len(images) == 2
    assert all(base64.b64decode(i).startswith(b"\x89PNG") for i in images)
    assert "<script" not in text and "http" not in text.replace("http-equiv", "")


def test_report_terminal_and_period(ledger, mk, capsys):
    _ledger(ledger, mk)
    assert main(["report", "--ledger", mk.spec(ledger), "--since", "2025-06-11", "--by", "team"]) == 0
    out = capsys.readouterr().out
    assert "Chargeback by team" in out and "$2.00" in out and "$14.29" not in out


def test_report_bad_input_exits_2(ledger, mk, tmp_path, capsys):
    _ledger(ledger, mk)
    assert main(["report", "--ledger", str(tmp_path / "none.db")]) == 2
    assert main(["report", "--ledger", mk.spec(ledger), "--by", "colour"]) == 2
    assert main(["report", "--ledger", mk.spec(ledger), "--since", "last tuesday"]) == 2
    assert main(["report", "--ledger", mk.spec(ledger), "--outcome", "orders"]) == 2
    assert "--by" in capsys.readouterr().err
    assert main(["report", "--ledger", mk.spec(ledger), "--since", "3000000d"]) == 2  # not OverflowError
    assert main(["export", "--focus", "--ledger", mk.spec(ledger), "--since", "3000000d", "-o", "-"]) == 2
    assert main(["export", "--focus", "--ledger", mk.spec(ledger), "--until", "garbage", "-o", "-"]) == 2
    err = capsys.readouterr().err
    assert "--since: the span '3000000d' reaches before year 1" in err and "--until: expected an ISO" in err


def test_focus_export_csv_and_parquet(ledger, mk, tmp_path):
    steps = _ledger(ledger, mk)
    csv, parquet = tmp_path / "focus.csv", tmp_path / "focus.parquet"
    assert main(["export", "--focus", "--ledger", mk.spec(ledger), "-o", str(csv)]) == 0
    assert main(["export", "--focus", "--ledger", mk.spec(ledger), "-o", str(parquet), "--provider", "AWS"]) == 0
    import pandas as pd

    df = pd.read_csv(csv)
    assert list(df.columns) == list(COLUMNS)
    first_custom = next(i for i, c in enumerate(df.columns) if c.startswith("x_"))
    assert all(c.startswith("x_") for c in df.columns[first_custom:])  # custom columns come last
    assert all(c in df.columns[:first_custom] for c in MANDATORY)
    for col in MANDATORY:
        if col != "ChargeClass":  # null: no row is a correction
            assert df[col].notna().all(), col
    assert df["ChargeClass"].isna().all()
    row = df.set_index("ResourceId").loc[steps[0].step_id]
    assert row["BilledCost"] == pytest.approx(12.29) and row["EffectiveCost"] == pytest.approx(12.29)
    assert row["ChargeCategory"] == "Usage" and row["BillingCurrency"] == "USD"
    assert row["ChargePeriodStart"] == "2025-06-10T10:00:00Z" and row["ChargePeriodEnd"] == "2025-06-10T11:00:00Z"
    assert row["BillingPeriodStart"] == "2025-06-01T00:00:00Z" and row["BillingPeriodEnd"] == "2025-07-01T00:00:00Z"
    assert row["PricingQuantity"] == pytest.approx(1.0) and row["PricingUnit"] == "Hours"
    assert row["PricingCategory"] == "Standard" and row["ServiceCategory"] == "AI and Machine Learning"
    assert json.loads(row["Tags"])["team"] == "search" and row["x_IdleCost"] == pytest.approx(6.145)
    spot = df.set_index("ResourceId").loc[steps[2].step_id]
    assert spot["PricingCategory"] == "Dynamic"
    assert spot["ListCost"] == pytest.approx(0.8048)  # 1 L4-hour at the on-demand list price
    table = pq.read_table(parquet)
    assert table.column_names == list(COLUMNS)
    assert str(table.schema.field("ChargePeriodStart").type).endswith("tz=UTC]")  # a real UTC timestamp
    assert table.column("ProviderName").to_pylist() == ["AWS"] * 3


def test_validate_passes_a_clean_ledger_and_fails_a_corrupt_one(ledger, mk, tmp_path, capsys):
    s = mk.step
    _ledger(ledger, mk)
    docs = tmp_path / "docs"
    assert main(["report", "--ledger", mk.spec(ledger), "--validate", "--docs-dir", str(docs), "--by", "team"]) == 0
    assert (docs / "index.html").is_file()
    assert "Ledger valid" in capsys.readouterr().err
    dup = s("train", 1.0)
    mk.write(
        ledger,
        s("neg", -3.0),  # negative cost
        s("hot", 1.0, util=140.0),  # util out of range
        s("odd", 1.0, gpu_type="Z9000"),  # unknown GPU type
        dup, dup.model_copy(update={"step_id": "copy-of-" + dup.step_id}),  # the same step recorded twice
        s("back", 1.0).model_copy(update={"ended_at": "2025-06-10T09:00:00+00:00"}),  # ends before it starts
    )  # fmt: skip
    rc = main(["report", "--ledger", mk.spec(ledger), "--validate", "--docs-dir", str(docs)])
    assert rc == 1
    err = capsys.readouterr().err
    for what in ("total_usd", "util_mean_pct", "gpu_type", "name,started_at,run_key", "elapsed_s"):
        assert what in err, what
    assert "Z9000" in err and "-3.0" in err
