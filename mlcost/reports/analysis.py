"""The FinOps figures of ``mlcost report``, computed from the ledger with SQL and pandas.

Each function takes what it needs and returns a DataFrame (or a list of dataclasses), so tests
can check every figure by hand and the renderers (terminal, Markdown, HTML) stay dumb. Aggregation
that SQL can do runs in SQLite; per-row statistics (anomalies) read only the columns they need.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

from mlcost.errors import ConfigError
from mlcost.sinks.ledger import FIGURES_TABLE

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd

    from mlcost.pricing.catalog import PriceCatalog
    from mlcost.sinks.ledger import Ledger

DIMENSIONS = ("team", "project", "model", "workload")
INTERRUPTIBLE = ("training", "evaluation", "data")  # checkpointable work that can run on spot capacity
ANOMALY_Z = 3.5  # Iglewicz & Hoaglin's cut-off for the modified z-score
ANOMALY_MIN_HISTORY = 5
MEM_HEADROOM = 1.2  # recommend a GPU/MIG profile with 20% more memory than the peak seen
TARGET_UTIL = 0.8  # size compute so the new device would be ~80% busy
DATA_STARVED_GPU_UTIL = 50.0  # GPU below this ...
DATA_STARVED_HOST_CPU = 80.0  # ... while the job's process tree keeps at least ~one core this busy


@dataclass(frozen=True)
class Period:
    since: str | None = None  # ISO, inclusive
    until: str | None = None  # ISO, exclusive

    def where(self, extra: str = "") -> tuple[str, list[Any]]:
        clauses, args = ["status != 'running'"], []
        if self.since:
            clauses.append("started_at >= ?")
            args.append(self.since)
        if self.until:
            clauses.append("started_at < ?")
            args.append(self.until)
        if extra:
            clauses.append(extra)
        return "WHERE " + " AND ".join(clauses), args

    def label(self) -> str:
        """``from <since> to <until>``, reading naturally when either end is open."""
        return f"from {self.since or 'the first step'} to {self.until or 'now'}"


def _frame(ledger: Ledger, sql: str, args: list[Any]) -> pd.DataFrame:
    import pandas as pd

    with ledger.connect(bulk=True) as conn:
        return pd.read_sql_query(sql, conn, params=args)


# chargeback -------------------------------------------------------------------------------------
def chargeback(ledger: Ledger, period: Period, by: tuple[str, ...] = ("team",)) -> pd.DataFrame:
    """Cost per ``by`` (team / project / model / workload): steps, GPU-hours, $, idle $, share of $."""
    for dim in by:
        if dim not in DIMENSIONS:
            raise ConfigError(f"cannot group by {dim!r}; allowed: {', '.join(DIMENSIONS)}", field="--by")
    cols = ", ".join(f"COALESCE({d}, '(untagged)') AS {d}" for d in by)
    where, args = period.where()
    df = _frame(
        ledger,
        f"SELECT {cols}, COUNT(*) AS steps, SUM(gpu_hours) AS gpu_hours, SUM(total_usd) AS total_usd, "
        f"SUM(idle_usd) AS idle_usd FROM {FIGURES_TABLE} {where} GROUP BY {', '.join(by)} ORDER BY total_usd DESC",
        args,
    )
    total = df["total_usd"].sum()
    df["share"] = df["total_usd"] / total if total else 0.0
    return df


# idle waste -------------------------------------------------------------------------------------
def idle_waste(ledger: Ledger, period: Period, by: str = "team") -> pd.DataFrame:
    """Idle GPU-hours and idle $ per ``by`` (a dimension, or ``name`` for the step)."""
    if by not in (*DIMENSIONS, "name"):
        raise ConfigError(f"cannot group idle waste by {by!r}", field="--by")
    where, args = period.where()
    df = _frame(
        ledger,
        f"SELECT COALESCE({by}, '(untagged)') AS {by}, COUNT(*) AS steps, "
        "SUM(gpu_hours * COALESCE(idle_fraction, 0)) AS idle_gpu_hours, SUM(gpu_hours) AS gpu_hours, "
        f"SUM(idle_usd) AS idle_usd, SUM(total_usd) AS total_usd FROM {FIGURES_TABLE} {where} GROUP BY {by} "
        "ORDER BY idle_usd DESC",
        args,
    )
    df["idle_share"] = (df["idle_usd"] / df["total_usd"]).where(df["total_usd"] > 0, 0.0)
    return df


# unit economics ---------------------------------------------------------------------------------
def unit_economics(ledger: Ledger, period: Period, outcomes: dict[str, float] | None = None) -> pd.DataFrame:
    """Per model: cost per retrain (a training run: steps sharing a run key, or one step) and cost
    per 1k inferences (inference steps that carry an ``inferences`` tag or context value); plus the
    period's total cost per business outcome the user names (``outcomes={"orders": 120000}``)."""
    import pandas as pd

    where, args = period.where("model IS NOT NULL")
    df = _frame(
        ledger,
        "SELECT model, workload, COALESCE(run_key, step_id) AS run, total_usd, "
        "CAST(COALESCE(json_extract(record, '$.tags.inferences'), json_extract(record, '$.context.inferences')) "
        f"AS REAL) AS inferences FROM steps {where}",
        args,
    )
    rows = []
    for model, g in df.groupby("model", sort=True):
        train = g[g["workload"] == "training"]
        infer = g[(g["workload"] == "inference")]
        counted = infer[infer["inferences"].notna() & (infer["inferences"] > 0)]
        rows.append(
            {
                "model": model,
                "total_usd": g["total_usd"].sum(),
                "retrains": train["run"].nunique(),
                "usd_per_retrain": train["total_usd"].sum() / train["run"].nunique() if len(train) else None,
                "inferences": counted["inferences"].sum() if len(counted) else None,
                "usd_per_1k_inferences": (counted["total_usd"].sum() / counted["inferences"].sum() * 1000)
                if len(counted)
                else None,
            }
        )
    out = pd.DataFrame(rows, columns=["model", "total_usd", "retrains", "usd_per_retrain", "inferences",
                                      "usd_per_1k_inferences"])  # fmt: skip
    if outcomes:
        where, args = period.where()
        total = float(_frame(ledger, f"SELECT COALESCE(SUM(total_usd), 0) AS t FROM {FIGURES_TABLE} {where}",
                             args)["t"].iloc[0])  # fmt: skip
        for name, count in outcomes.items():
            out.attrs.setdefault("outcomes", {})[name] = {"count": count, "usd_per_unit": total / count}
    return out


def parse_outcomes(values: list[str] | None) -> dict[str, float]:
    """``["orders=120000", "signups=900"]`` -> ``{"orders": 120000.0, "signups": 900.0}``."""
    out: dict[str, float] = {}
    for v in values or []:
        name, sep, count = v.partition("=")
        try:
            n = float(count)
        except ValueError:
            n = -1.0
        if not sep or not name.strip() or n <= 0:
            raise ConfigError(f"expected NAME=COUNT with a positive count, got {v!r}", field="--outcome")
        out[name.strip()] = n
    return out


# spot what-if -----------------------------------------------------------------------------------
def spot_whatif(ledger: Ledger, period: Period) -> pd.DataFrame:
    """What interruptible work (training / evaluation / data) bought on demand would have cost on
    spot, per workload and team."""
    kinds = ", ".join(f"'{w}'" for w in INTERRUPTIBLE)
    where, args = period.where(f"pricing = 'on_demand' AND workload IN ({kinds}) AND spot_whatif_usd IS NOT NULL")
    df = _frame(
        ledger,
        "SELECT workload, COALESCE(team, '(untagged)') AS team, COUNT(*) AS steps, SUM(total_usd) AS on_demand_usd, "
        f"SUM(spot_whatif_usd) AS spot_usd FROM {FIGURES_TABLE} {where} GROUP BY workload, team "
        "ORDER BY on_demand_usd DESC",
        args,
    )
    df["saving_usd"] = (df["on_demand_usd"] - df["spot_usd"]).clip(lower=0)
    return df


# right-sizing -----------------------------------------------------------------------------------
@dataclass(frozen=True)
class Recommendation:
    step: str
    kind: str  # "mig" | "smaller_gpu" | "fewer_gpus" | "data_starved"
    current: str
    suggested: str
    runs: int
    cost_usd: float  # the step's cost over the period
    saving_usd: float | None  # estimated over the same period, None when it cannot be priced
    why: str

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def rightsizing(ledger: Ledger, period: Period, catalog: PriceCatalog) -> list[Recommendation]:
    """Per recurring step (same name): does its peak memory and utilisation fit a MIG profile or a
    smaller GPU, does it hold GPUs it never uses, or is it starved by its input pipeline?"""
    where, args = period.where("gpu_type IS NOT NULL AND gpus > 0")
    df = _frame(
        ledger,
        "SELECT name, gpu_type, gpus, COUNT(*) AS runs, SUM(total_usd) AS cost_usd, MAX(mem_peak_gb) AS mem_peak_gb, "
        "SUM(util_mean_pct * gpu_hours) / NULLIF(SUM(CASE WHEN util_mean_pct IS NOT NULL THEN gpu_hours END), 0) "
        "AS util_pct, AVG(host_cpu_mean_pct) AS host_cpu_pct, MAX(json_array_length(record, '$.devices')) AS seen "
        f"FROM steps {where} GROUP BY name, gpu_type, gpus ORDER BY cost_usd DESC",  # the record: devices seen
        args,
    )
    out: list[Recommendation] = []
    for r in df.itertuples(index=False):
        out += _recommend(r, catalog)
    return out


def _recommend(r: Any, catalog: PriceCatalog) -> list[Recommendation]:
    util = None if r.util_pct is None or math.isnan(r.util_pct) else float(r.util_pct)
    mem = None if r.mem_peak_gb is None or math.isnan(r.mem_peak_gb) else float(r.mem_peak_gb)
    host = None if r.host_cpu_pct is None or math.isnan(r.host_cpu_pct) else float(r.host_cpu_pct)
    current = f"{r.gpus}x {r.gpu_type}"
    out: list[Recommendation] = []

    def rec(kind: str, suggested: str, saving: float | None, why: str) -> None:
        out.append(Recommendation(r.name, kind, current, suggested, int(r.runs), float(r.cost_usd), saving, why))

    if util is not None and util < DATA_STARVED_GPU_UTIL and host is not None and host >= DATA_STARVED_HOST_CPU:
        rec(
            "data_starved", "feed the GPU faster", None,
            f"GPU util {util:.0f}% while the host CPU ran at {host:.0f}% of a core: the input pipeline is the "
            "bottleneck. Add DataLoader workers (num_workers), pin_memory and prefetch_factor, cache decoded data, "
            "or move decoding/augmentation to the GPU (e.g. DALI); then re-check the GPU size.",
        )  # fmt: skip
        return out
    seen = int(r.seen or 0)
    if r.gpus > 1 and 0 < seen < r.gpus:
        saving = float(r.cost_usd) * (1 - seen / r.gpus)
        rec("fewer_gpus", f"{seen}x {r.gpu_type}", saving,
            f"allocated {r.gpus} GPUs but only {seen} {'was' if seen == 1 else 'were'} ever used; "
            "the rest were billed idle")  # fmt: skip
        return out
    if util is None or mem is None or r.gpus != 1:
        return out
    parent = r.gpu_type.partition(":")[0]
    try:
        unit = catalog.gpu_hour_usd(r.gpu_type)
        profiles = [] if ":" in r.gpu_type else catalog.mig_profiles(parent)
    except ConfigError:
        return out
    need_mem = mem * MEM_HEADROOM
    need_slices = max(1, math.ceil(util / 100.0 * 7 / TARGET_UTIL - 1e-9))
    best: tuple[float, str] | None = None
    for p in profiles:
        slices, gb = int(p.partition("g.")[0]), float(p.partition("g.")[2].removesuffix("gb"))
        if slices >= need_slices and gb >= need_mem and slices < 7:
            price = catalog.gpu_hour_usd(f"{parent}:{p}")
            if best is None or price < best[0]:
                best = (price, p)
    if best is not None:
        price, p = best
        rec("mig", f"{parent}:{p}", float(r.cost_usd) * (1 - price / unit),
            f"peak memory {mem:.1f} GB of {catalog.memory_gb(parent):.0f} GB and {util:.0f}% util fit a {p} MIG "
            f"instance ({need_slices}/7 of the compute keeps it ~{TARGET_UTIL:.0%} busy, {need_mem:.1f} GB with "
            f"headroom); ${price:.2f}/h instead of ${unit:.2f}/h")  # fmt: skip
        return out
    if util < 30:
        cheaper = []
        for t in catalog.gpu_types:
            if ":" in t:
                continue
            try:
                gb, price = catalog.memory_gb(t), catalog.gpu_hour_usd(t)
            except ConfigError:
                continue
            if gb and gb >= need_mem and price < unit:
                cheaper.append((price, t))
        if cheaper:
            price, t = min(cheaper)
            rec("smaller_gpu", f"1x {t}", float(r.cost_usd) * (1 - price / unit),
                f"peak memory {mem:.1f} GB and {util:.0f}% util fit a {t} ({catalog.memory_gb(t):.0f} GB); "
                "check throughput before switching: a smaller GPU runs longer")  # fmt: skip
    return out


# anomalies --------------------------------------------------------------------------------------
ANOMALY_COLUMNS = "step_id, name, started_at, total_usd, gpu_hours, gpus, duration_s, gpu_type, pricing, idle_fraction"


def anomalies(
    ledger: Ledger,
    period: Period,
    *,
    z: float = ANOMALY_Z,
    min_history: int = ANOMALY_MIN_HISTORY,
    history: Period | None = None,
) -> pd.DataFrame:
    """Steps whose cost or GPU-hours are far above their own history (same step name), by the
    modified z-score 0.6745·(x − median)/MAD (Iglewicz & Hoaglin), with the likely cause.

    History is every sealed step of the name (``history`` narrows it); only steps in ``period``
    are reported. The MAD is floored at 1% of the median so a step that always costs exactly the
    same does not flag on a rounding difference. Only rises are flagged: a cheaper run is not a
    cost anomaly. For speed over millions of steps, the scan reads three columns; the details of
    the flagged steps, and a sample of their history for the cause, are fetched afterwards.
    """
    import numpy as np
    import pandas as pd

    cols = ["step_id", "name", "started_at", "metric", "value", "median", "z", "cause"]
    where, args = (history or Period()).where()
    in_period, p_args = "1", []
    if period.since or period.until:
        parts = []
        if period.since:
            parts.append("started_at >= ?")
            p_args.append(period.since)
        if period.until:
            parts.append("started_at < ?")
            p_args.append(period.until)
        in_period = "(" + " AND ".join(parts) + ")"
    with ledger.connect(bulk=True) as conn:
        rows = conn.execute(
            f"SELECT rowid, name, total_usd, gpu_hours, {in_period} FROM {FIGURES_TABLE} {where}", [*p_args, *args]
        ).fetchall()
    if not rows:
        return pd.DataFrame(columns=cols)
    # from plain tuples (bulk=True), from_records is the fastest way in (about half of zip + arrays)
    df = pd.DataFrame.from_records(rows, columns=["rid", "name", "total_usd", "gpu_hours", "in_period"])
    del rows
    df["total_usd"] = df["total_usd"].astype(float)  # a NULL cost arrives as None: NaN, not object
    df["gpu_hours"] = df["gpu_hours"].astype(float)
    codes, _ = pd.factorize(df["name"])
    count = df.groupby(codes)["total_usd"].transform("size")
    flagged = []
    for metric in ("total_usd", "gpu_hours"):
        values = df[metric].astype(float)
        med = values.groupby(codes).transform("median")
        mad = (values - med).abs().groupby(codes).transform("median")
        scale = np.maximum(mad, 0.01 * med.abs())
        score = pd.Series(np.where(scale > 0, 0.6745 * (values - med) / scale.where(scale > 0, 1), 0.0),
                          index=df.index)  # fmt: skip
        hit = (score > z) & (count >= min_history) & (df["in_period"] == 1)
        part = df.loc[hit, ["rid", "name"]].copy()
        part["metric"], part["value"], part["median"], part["z"] = metric, values[hit], med[hit], score[hit]
        flagged.append(part)
    out = pd.concat(flagged)
    if out.empty:
        return pd.DataFrame(columns=cols)
    # one line per step: its cost when the cost is flagged, else its GPU-hours; worst first
    out["_cost_first"] = out["metric"] != "total_usd"
    out = out.sort_values(["_cost_first", "z"], ascending=[True, False]).drop_duplicates("rid")
    out = out.sort_values("z", ascending=False)
    detail_cols = "rowid, step_id, name, started_at, gpus, duration_s, gpu_type, pricing, idle_fraction"
    hist_ids = df.loc[df["name"].isin(set(out["name"])), ["rid", "name"]].groupby("name").tail(50)["rid"]
    wanted = sorted(set(hist_ids) | set(out["rid"]))
    details = []
    with ledger.connect() as conn:
        for i in range(0, len(wanted), 900):
            chunk = wanted[i : i + 900]
            details += conn.execute(
                f"SELECT {detail_cols} FROM {FIGURES_TABLE} WHERE rowid IN ({','.join('?' * len(chunk))})", chunk
            ).fetchall()
    info = pd.DataFrame.from_records(details, columns=[c.strip() for c in detail_cols.split(",")]).set_index("rowid")
    hist = info.loc[info.index.isin(set(hist_ids))]
    typical = hist.groupby("name")[["gpus", "duration_s", "idle_fraction"]].median()
    for col in ("gpu_type", "pricing"):  # the most frequent value per step name
        counts = hist.groupby(["name", col]).size().reset_index(name="n").sort_values("n", ascending=False)
        typical[col] = counts.drop_duplicates("name").set_index("name")[col].reindex(typical.index)
    typical = typical.astype(object).where(typical.notna(), None)
    rows_ = info.loc[out["rid"]]
    out["step_id"] = rows_["step_id"].to_numpy()
    out["started_at"] = rows_["started_at"].to_numpy()
    usual = typical.to_dict("index")
    out["cause"] = [_cause(r, usual[r["name"]]) for r in rows_.to_dict("records")]
    return out[cols].reset_index(drop=True)


def _cause(row: Any, usual: Any) -> str:
    causes = []
    if usual["gpu_type"] and row["gpu_type"] != usual["gpu_type"]:
        causes.append(f"ran on {row['gpu_type']} instead of the usual {usual['gpu_type']}")
    if usual["pricing"] and row["pricing"] != usual["pricing"]:
        causes.append(f"priced {row['pricing']} instead of the usual {usual['pricing']}")
    if usual["gpus"] and row["gpus"] > usual["gpus"]:
        causes.append(f"{row['gpus']:.0f} GPUs instead of the usual {usual['gpus']:.0f}")
    if usual["duration_s"] and row["duration_s"] > 1.5 * usual["duration_s"]:
        causes.append(f"ran {row['duration_s'] / usual['duration_s']:.1f}x longer than usual")
    idle, usual_idle = row["idle_fraction"], usual["idle_fraction"]
    if idle is not None and not math.isnan(idle) and idle >= 0.3 and (usual_idle is None or math.isnan(usual_idle)
                                                                    or idle > usual_idle + 0.2):  # fmt: skip
        causes.append(f"GPUs idle {idle:.0%} of the time")
    return "; ".join(causes) or "same allocation and duration as usual: check the price catalog and the inputs"
