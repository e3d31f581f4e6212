"""``mlcost compare``: cost per model across MLflow runs, and a cost-vs-quality chart."""

from __future__ import annotations

import io
import statistics
from collections import defaultdict
from typing import Any

from mlcost import names


def compare_models(
    experiments: list[str],
    filter_string: str | None = None,
    *,
    metric: str | None = None,
    tracking_uri: str | None = None,
    min_quality: float | None = None,
    lower_is_better: bool = False,
) -> Any:
    """One row per model (``mlcost.model`` tag): runs, median cost per run, $ per retrain, $ per 1k
    inferences (runs that log an ``inferences`` metric or tag), mean GPU util, idle share of cost, and
    the median of the quality ``metric``. ``attrs["cheapest_acceptable"]`` names the model with the
    lowest median cost among those whose quality is acceptable (at least ``min_quality``, or at
    most it when ``lower_is_better``; any quality when no threshold is given)."""
    import pandas as pd
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    from mlcost.errors import ConfigError
    from mlcost.gate.records import experiment_ids

    client = MlflowClient(tracking_uri=tracking_uri)
    ids = experiment_ids(client, experiments)
    query = " and ".join(c for c in (f"metrics.{names.COST_USD} >= 0", (filter_string or "").strip()) if c)
    try:
        runs = client.search_runs(ids, filter_string=query, max_results=50000)
        quality_runs = []
        if metric:  # the quality metric is often logged on a parent/evaluation run of the same model
            quality_runs = client.search_runs(ids, filter_string=f"metrics.`{metric}` > -1e300", max_results=50000)
    except MlflowException as e:
        raise ConfigError(f"MLflow rejected the filter {filter_string!r}: {e.message}", field="--filter") from e

    per_run: dict[str, dict[str, dict[str, Any]]] = defaultdict(dict)  # model -> run group -> figures
    simulated = counted = 0
    for r in runs:
        model = r.data.tags.get(names.TAG_MODEL)
        if not model or r.data.tags.get(names.TAG_KIND) == names.KIND_DAG_RUN:  # a total, not a run of the model
            continue
        counted += 1
        simulated += r.data.tags.get("mlcost.simulated") == "true"
        m, t = r.data.metrics, r.data.tags
        group = t.get("mlcost.run_key") or r.info.run_id
        g = per_run[model].setdefault(group, {"cost": 0.0, "idle": 0.0, "util": [], "inferences": 0.0, "train": False})
        g["cost"] += m.get(names.COST_USD, 0.0)
        g["idle"] += m.get(names.IDLE_COST_USD, 0.0)
        if names.GPU_UTIL_MEAN_PCT in m:
            g["util"].append(m[names.GPU_UTIL_MEAN_PCT])
        inf = m.get("inferences", t.get("mlcost.inferences"))
        if inf is not None:
            g["inferences"] += float(inf)
        g["train"] |= t.get(names.TAG_WORKLOAD) == "training"
    quality: dict[str, list[float]] = defaultdict(list)
    for r in quality_runs:
        model = r.data.tags.get(names.TAG_MODEL)
        if model and metric in r.data.metrics:
            quality[model].append(r.data.metrics[metric])

    rows = []
    for model, groups in sorted(per_run.items()):
        g = list(groups.values())
        cost = sum(x["cost"] for x in g)
        train = [x["cost"] for x in g if x["train"]]
        inf_cost = sum(x["cost"] for x in g if x["inferences"] > 0)
        inferences = sum(x["inferences"] for x in g)
        utils = [u for x in g for u in x["util"]]
        rows.append(
            {
                "model": model,
                "runs": len(g),
                "median_usd": statistics.median(x["cost"] for x in g),
                "total_usd": cost,
                "usd_per_retrain": sum(train) / len(train) if train else None,
                "usd_per_1k_inferences": inf_cost / inferences * 1000 if inferences else None,
                "util_pct": statistics.fmean(utils) if utils else None,
                "idle_share": sum(x["idle"] for x in g) / cost if cost else None,
                "quality": statistics.median(quality[model]) if quality.get(model) else None,
            }
        )
    df = pd.DataFrame(rows, columns=["model", "runs", "median_usd", "total_usd", "usd_per_retrain",
                                     "usd_per_1k_inferences", "util_pct", "idle_share", "quality"])  # fmt: skip
    df = df.sort_values("median_usd").reset_index(drop=True)
    best = None
    if metric:  # without a quality metric nothing says what is acceptable: no such claim
        ok = df[df["quality"].notna()]
        if min_quality is not None:
            ok = ok[ok["quality"] <= min_quality] if lower_is_better else ok[ok["quality"] >= min_quality]
        best = None if ok.empty else str(ok.iloc[0]["model"])
    df.attrs["cheapest_acceptable"] = best
    df.attrs["cheapest"] = None if df.empty else str(df.iloc[0]["model"])
    df.attrs["metric"] = metric
    df.attrs["min_quality"] = min_quality
    df.attrs["simulated_runs"], df.attrs["runs"] = simulated, counted
    return df


def cost_quality_png(df: Any, *, metric: str | None, lower_is_better: bool = False) -> bytes:
    """:func:`cost_quality_figure` as PNG bytes."""
    fig = cost_quality_figure(df, metric=metric, lower_is_better=lower_is_better)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90)
    return buf.getvalue()


def cost_quality_figure(df: Any, *, metric: str | None, lower_is_better: bool = False) -> Any:
    """Median cost per run (x) against quality (y), one labelled point per model; the acceptable
    quality (``df.attrs["min_quality"]``) is a dashed line, and the cheapest acceptable model is drawn
    in its own colour. Without a metric: a bar chart of cost per model."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    fig = Figure(figsize=(7, 4.5))
    ax = fig.add_subplot()
    best = df.attrs.get("cheapest_acceptable")
    min_quality = df.attrs.get("min_quality")
    if metric and df["quality"].notna().any():
        d = df[df["quality"].notna()]
        colors = ["#dd8452" if m == best else "#4c72b0" for m in d["model"]]
        ax.scatter(d["median_usd"], d["quality"], c=colors, s=60)
        for r in d.itertuples():
            ax.annotate(r.model + ("  ← cheapest acceptable" if r.model == best else ""), (r.median_usd, r.quality),
                        textcoords="offset points", xytext=(6, 4), fontsize=8)  # fmt: skip
        if min_quality is not None:
            side = "at most" if lower_is_better else "at least"
            ax.axhline(min_quality, color="#c44e52", linestyle="--", linewidth=1,
                       label=f"acceptable: {metric} {side} {min_quality:g}")  # fmt: skip
            ax.legend(loc="best", fontsize=8)
        ax.set_xlabel("median cost per run (USD)")
        ax.set_ylabel(f"{metric} ({'lower' if lower_is_better else 'higher'} is better)")
        ax.set_title("Cost vs quality per model")
    else:
        ax.barh(list(df["model"])[::-1], list(df["median_usd"])[::-1], color="#4c72b0")
        ax.set_xlabel("median cost per run (USD)")
        ax.set_title("Cost per model")
    fig.tight_layout()
    return fig
