"""The gate as a Great Expectations checkpoint, and `mlcost compare`, over the same real MLflow store."""

from __future__ import annotations

import io
import json
import statistics
from contextlib import redirect_stdout

import pytest

from mlcost.cli import main


def _run(*argv: str) -> tuple[int, str]:
    buf = io.StringIO()
    with redirect_stdout(buf):
        rc = main(list(argv))
    return rc, buf.getvalue()


def test_gx_engine_agrees_with_python_engine_and_writes_data_docs(store, tmp_path):
    limit = (max(store.others("slow")) + min(store.costs["slow"])) / 2
    assert max(store.others("slow")) < limit
    policy = tmp_path / "mlcost.toml"
    policy.write_text(
        f"[budgets]\njob_usd = {limit}\n"
        f'[[models]]\nname = "embedder"\nmax_cost_per_run_usd = {max(store.costs["dag"])}\n'
        "[warn.cluster]\nmax_gpus = 24\n"
    )
    common = ["gate", "--policy", str(policy), "--tracking-uri", store.uri, "--experiment", "ranker-ci",
              "--format", "json"]  # fmt: skip
    rc_py, out_py = _run(*common)
    docs = tmp_path / "docs"
    rc_gx, out_gx = _run(*common, "--engine", "gx", "--docs-dir", str(docs))
    assert rc_py == rc_gx == 1
    py, gx = json.loads(out_py), json.loads(out_gx)
    key = lambda f: (f["policy"], tuple(sorted(f["runs"])))  # noqa: E731
    assert sorted(map(key, gx["findings"])) == sorted(map(key, py["findings"]))
    assert {r for f in gx["findings"] if f["policy"] == "budgets.job_usd" for r in f["runs"]} == set(store.ids["slow"])
    assert {f["policy"] for f in gx["findings"]} == {
        "budgets.job_usd",
        "models.embedder.max_cost_per_run_usd",
        "warn.cluster.max_gpus",
    }
    assert (docs / "index.html").is_file()
    validations = list((docs / "validations").rglob("*.html"))
    assert validations and "mlcost_gate" in validations[0].read_text()


def test_gx_engine_within_policy_exits_0(store, tmp_path):
    policy = tmp_path / "mlcost.toml"
    policy.write_text("[budgets]\njob_usd = 10\n[cluster]\nmax_gpus = 64\n")
    rc, out = _run("gate", "--policy", str(policy), "--tracking-uri", store.uri, "--experiment", "ranker-ci",
                   "--engine", "gx", "--docs-dir", str(tmp_path / "d"), "--format", "json")  # fmt: skip
    assert rc == 0 and json.loads(out)["findings"] == []


@pytest.fixture(scope="module")
def quality(store):
    """Evaluation results logged beside the cost: ranker 0.80 AUC, embedder 0.75."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=store.uri)
    for run_id in store.ids["main"]:
        client.log_metric(run_id, "val_auc", 0.80)
    for run_id in store.ids["dag"]:
        client.log_metric(run_id, "val_auc", 0.75)


def test_compare_table_and_cheapest_acceptable_model(store, quality, tmp_path):
    chart = tmp_path / "cost_quality.png"
    base = [
        "compare",
        "--tracking-uri",
        store.uri,
        "--experiment",
        "ranker-ci",
        "--metric",
        "val_auc",
        "--format",
        "json",
    ]
    rc, out = _run(*base, "--chart", str(chart))
    assert rc == 0
    rows = {r["model"]: r for r in json.loads(out)}
    ranker_costs = [c for k in ("main", "ok", "slow", "wide", "idle") for c in store.costs[k]]
    assert rows["ranker"]["runs"] == 11
    assert rows["ranker"]["median_usd"] == pytest.approx(statistics.median(ranker_costs))
    assert rows["embedder"]["runs"] == 1  # two steps of one pipeline run
    assert rows["embedder"]["median_usd"] == pytest.approx(sum(store.costs["dag"]))
    assert rows["ranker"]["quality"] == pytest.approx(0.80) and rows["embedder"]["quality"] == pytest.approx(0.75)
    # mean of the steps: nine at 100%, the wide one 50% (1 of 2 GPUs busy), the idle one 0%
    assert rows["ranker"]["util_pct"] == pytest.approx((9 * 100 + 50 + 0) / 11, abs=1)
    assert chart.read_bytes().startswith(b"\x89PNG")

    rc, text = _run(*base[:-2], "--format", "markdown")
    assert "Cheapest model at acceptable quality: embedder." in text  # cheaper, any quality accepted
    rc, text = _run(*base[:-2], "--format", "markdown", "--min-quality", "0.78")
    assert "Cheapest model at acceptable quality: ranker." in text


def test_compare_unknown_experiment_exits_2(store):
    assert main(["compare", "--tracking-uri", store.uri, "--experiment", "nope"]) == 2


def test_compare_without_a_metric_claims_nothing_about_quality_and_says_simulated(store):
    rc, text = _run("compare", "--tracking-uri", store.uri, "--experiment", "ranker-ci", "--format", "markdown")
    assert rc == 0
    assert "acceptable quality" not in text
    assert "Cheapest model per run: embedder; quality not compared (pass --metric)." in text
    assert "SIMULATED GPU: All 13 runs ran on a simulated GPU." in text  # the store's steps are simulated


def test_the_chart_draws_the_min_quality_line(store, quality):
    from mlcost.reports.compare import compare_models, cost_quality_figure

    table = compare_models(["ranker-ci"], metric="val_auc", tracking_uri=store.uri, min_quality=0.78)
    (ax,) = cost_quality_figure(table, metric="val_auc").axes
    lines = [line for line in ax.get_lines() if set(line.get_ydata()) == {0.78}]
    assert len(lines) == 1 and "at least 0.78" in lines[0].get_label()
    assert table.attrs["cheapest_acceptable"] == "ranker"
