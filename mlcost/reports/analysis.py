"""The FinOps figures of ``mlcost report``, from the ledger's one query layer.

Each function takes what it needs and returns a DataFrame (or a list of dataclasses), so tests
can check every figure by hand and the renderers (terminal, Markdown, HTML) stay dumb. The SQL,
the period filter and the aggregation live in :mod:`mlcost.ledger.queries` and run in the database
(SQLite or PostgreSQL); this module shapes a few grouped rows. Anomalies are the exception: a
robust statistic per step over its own past, computed with numpy from a narrow scan.

Steps reported ``lost`` (died without sealing their row) are counted with their last checkpoint's
usage: money spent is spent. Steps refused at preflight ($0, ``breached``) are records of what a
policy stopped, not runs: unit economics and right-sizing leave them out.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

from mlcost.errors import ConfigError
from mlcost.names import USER_TAG_KEYS
from mlcost.period import Period

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd

    from mlcost.pricing.catalog import PriceCatalog

__all__ = ["DIMENSIONS", "Period"]
DIMENSIONS = USER_TAG_KEYS  # team, project, model, workload
INTERRUPTIBLE = ("training", "evaluation", "data")  # checkpointable work that can run on spot capacity
ANOMALY_Z = 3.5  # Iglewicz & Hoaglin's cut-off for the modified z-score
ANOMALY_MIN_HISTORY = 5
ANOMALY_WINDOW = 30  # a run is compared with at most this many runs of its step before it
CAUSE_HISTORY = 10  # the runs before a flagged one that its "usual" allocation is read from
MEM_HEADROOM = 1.2  # recommend a GPU/MIG profile with 20% more memory than the peak seen
TARGET_UTIL = 0.8  # size compute so the new device would be ~80% busy
IDLE_UTIL_PCT = 5.0  # a device (or a step) below this mean util did nothing: the meter's idle threshold
DATA_STARVED_GPU_UTIL = 50.0  # GPU below this ...
DATA_STARVED_HOST_CPU = 80.0  # ... while the job's process tree keeps at least ~one core this busy


def _frame(rows: list[dict[str, Any]], columns: list[str]) -> pd.DataFrame:
    import pandas as pd

    return pd.DataFrame(rows, columns=columns)


def _read(ledger: Any, fn: Any, *args: Any, **kw: Any) -> Any:
    from mlcost.ledger.queries import reading

    with reading(ledger) as conn:
        return fn(conn, *args, **kw)


# chargeback -------------------------------------------------------------------------------------
def chargeback(ledger: Any, period: Period, by: tuple[str, ...] = ("team",)) -> pd.DataFrame:
    """Cost per ``by`` (team / project / model / workload): steps (and how many of them were lost),
    GPU-hours, $, idle $, share of $."""
    from mlcost.ledger import queries as q

    rows = _read(ledger, q.chargeback, period, by)
    df = _frame(rows, [*by, "steps", "lost_steps", "gpu_hours", "total_usd", "idle_usd"])
    total = df["total_usd"].sum()
    df["share"] = df["total_usd"] / total if total else 0.0
    return df


# idle waste -------------------------------------------------------------------------------------
def idle_waste(ledger: Any, period: Period, by: str = "team") -> pd.DataFrame:
    """Idle GPU-hours and idle $ per ``by`` (a dimension, or ``name`` for the step)."""
    from mlcost.ledger import queries as q

    if by not in (*DIMENSIONS, "name"):
        raise ConfigError(f"cannot group idle waste by {by!r}", field="--by")
    df = _frame(_read(ledger, q.idle_waste, period, by), [by, "idle_gpu_hours", "idle_usd", "total_usd"])
    df["idle_share"] = (df["idle_usd"] / df["total_usd"]).where(df["total_usd"] > 0, 0.0)
    return df


# unit economics ---------------------------------------------------------------------------------
def unit_economics(ledger: Any, period: Period, outcomes: dict[str, float] | None = None) -> pd.DataFrame:
    """Per model: cost per retrain (a training run: steps sharing a run key, or one step) and cost
    per 1k inferences (inference steps that carry an ``inferences`` tag or context value); plus the
    period's total cost per business outcome the user names (``outcomes={"orders": 120000}``).
    A step refused at preflight is not a retrain."""
    from mlcost.ledger import queries as q
    from mlcost.ledger.queries import reading

    with reading(ledger) as conn:
        rows = q.unit_economics(conn, period)
        total = q.total_usd(conn, period) if outcomes else 0.0
    out_rows = [
        {
            "model": r["model"],
            "total_usd": r["total_usd"],
            "retrains": int(r["retrains"] or 0),
            "usd_per_retrain": r["training_usd"] / r["retrains"] if r["retrains"] else None,
            "inferences": r["inferences"] or None,
            "usd_per_1k_inferences": (r["inference_usd"] or 0.0) / r["inferences"] * 1000 if r["inferences"] else None,
        }
        for r in rows
    ]
    out = _frame(out_rows, ["model", "total_usd", "retrains", "usd_per_retrain", "inferences",
                            "usd_per_1k_inferences"])  # fmt: skip
    for name, count in (outcomes or {}).items():
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
        if not sep or not name.strip() or not n > 0 or math.isinf(n):
            raise ConfigError(f"expected NAME=COUNT with a positive count, got {v!r}", field="--outcome")
        out[name.strip()] = n
    return out


# spot what-if -----------------------------------------------------------------------------------
def spot_whatif(ledger: Any, period: Period) -> pd.DataFrame:
    """What interruptible work (training / evaluation / data) bought on demand would have cost on
    spot, per workload and team."""
    from mlcost.ledger import queries as q

    rows = _read(ledger, q.spot_whatif, period, INTERRUPTIBLE)
    df = _frame(rows, ["workload", "team", "steps", "on_demand_usd", "spot_usd"])
    df["saving_usd"] = (df["on_demand_usd"] - df["spot_usd"]).clip(lower=0)
    return df


# right-sizing -----------------------------------------------------------------------------------
@dataclass(frozen=True)
class Recommendation:
    step: str
    kind: str  # "idle" | "fewer_gpus" | "mig" | "smaller_gpu" | "data_starved"
    current: str
    suggested: str
    runs: int
    cost_usd: float  # the step's cost over the period
    saving_usd: float | None  # estimated over the same period, None when it cannot be priced
    why: str

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def rightsizing(ledger: Any, period: Period, catalog: PriceCatalog) -> list[Recommendation]:
    """Per recurring step (same name, GPU type and count): is it idle, does it hold GPUs it never
    uses (per device: a GPU at 0% while another works is billed idle), do its peak memory and
    utilisation fit a MIG profile or a smaller GPU, or is it starved by its input pipeline?"""
    from mlcost.ledger import queries as q

    rows = _read(ledger, q.rightsizing_groups, period, IDLE_UTIL_PCT)
    out: list[Recommendation] = []
    for r in rows:
        out += _recommend(r, catalog)
    return out


def _num(v: Any) -> float | None:
    return None if v is None or (isinstance(v, float) and math.isnan(v)) else float(v)


def _recommend(r: dict[str, Any], catalog: PriceCatalog) -> list[Recommendation]:
    util, mem, host = _num(r["util_pct"]), _num(r["mem_peak_gb"]), _num(r["host_cpu_pct"])
    name, gpus, gpu_type = r["name"], int(r["gpus"]), r["gpu_type"]
    cost, runs = float(r["cost_usd"]), int(r["runs"])
    current = f"{gpus}x {gpu_type}"
    out: list[Recommendation] = []

    def rec(kind: str, suggested: str, saving: float | None, why: str) -> None:
        out.append(Recommendation(name, kind, current, suggested, runs, cost, saving, why))

    if util is not None and util < DATA_STARVED_GPU_UTIL and host is not None and host >= DATA_STARVED_HOST_CPU:
        rec(
            "data_starved", "feed the GPU faster", None,
            f"GPU util {util:.0f}% while the host CPU ran at {host:.0f}% of a core: the input pipeline is the "
            "bottleneck. Add DataLoader workers (num_workers), pin_memory and prefetch_factor, cache decoded data, "
            "or move decoding/augmentation to the GPU (e.g. DALI); then re-check the GPU size.",
        )  # fmt: skip
        return out
    if util is not None and util < IDLE_UTIL_PCT:
        rec("idle", "stop it, or shrink it", cost,
            f"GPU util {util:.1f}% over {runs} run{'s' * (runs != 1)}: the GPUs sat idle (a sleep, a wait on "
            "a queue or a download, a model on the CPU). Stop the step or shrink it before choosing a smaller "
            "GPU or a MIG slice")  # fmt: skip
        return out
    busy = int(r["busy"] or 0)
    if gpus > 1 and 0 < busy < gpus:
        rec("fewer_gpus", f"{busy}x {gpu_type}", cost * (1 - busy / gpus),
            f"allocated {gpus} GPUs but at most {busy} {'was' if busy == 1 else 'were'} busy (util ≥ "
            f"{IDLE_UTIL_PCT:.0f}%) in any run; the rest were billed idle")  # fmt: skip
        return out
    if util is None or mem is None or gpus != 1:
        return out
    parent = gpu_type.partition(":")[0]
    try:
        unit = catalog.gpu_hour_usd(gpu_type)
        profiles = [] if ":" in gpu_type else catalog.mig_profiles(parent)
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
        rec("mig", f"{parent}:{p}", cost * (1 - price / unit),
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
            rec("smaller_gpu", f"1x {t}", cost * (1 - price / unit),
                f"peak memory {mem:.1f} GB and {util:.0f}% util fit a {t} ({catalog.memory_gb(t):.0f} GB); "
                "check throughput before switching: a smaller GPU runs longer")  # fmt: skip
    return out


# anomalies --------------------------------------------------------------------------------------
def anomalies(
    ledger: Any,
    period: Period,
    *,
    z: float = ANOMALY_Z,
    min_history: int = ANOMALY_MIN_HISTORY,
    history: Period | None = None,
    window: int = ANOMALY_WINDOW,
) -> pd.DataFrame:
    """Steps whose cost or GPU-hours are far above their own past, by the modified z-score
    0.6745·(x − median)/MAD (Iglewicz & Hoaglin), with the likely cause.

    A step's past is the runs before it (at most ``window``, the most recent) of the same step:
    the same name *and* the same tags (team, project, model, workload), so two teams' ``train``
    steps are two histories, and a run is never judged by runs that came after it (a step that got
    cheaper does not make its earlier, ordinary runs anomalous). ``history`` narrows the past that
    is read; only steps in ``period`` are reported, and only with ``min_history`` runs before them.
    The MAD is floored at 1% of the median so a step that always costs exactly the same does not
    flag on a rounding difference. Only rises are flagged: a cheaper run is not a cost anomaly.
    """
    import numpy as np
    import pandas as pd

    from mlcost.ledger import queries as q

    cols = ["step_id", "name", "started_at", "metric", "value", "median", "z", "cause"]
    with q.reading(ledger) as conn:
        histories = q.anomaly_scan(conn, history or Period(), period)
        if not histories:
            return pd.DataFrame(columns=cols)
        # one history after another, each in start order
        columns = {
            "total_usd": np.concatenate([np.fromstring(h[1], sep=",") for h in histories]),  # NULL: NaN, no run
            "gpu_hours": np.concatenate([np.fromstring(h[2], sep=",") for h in histories]),
        }
        sizes = np.array([h[0].count(q.ID_SEP) + 1 for h in histories])
        runs = int(sizes.sum())
        starts = np.r_[0, np.cumsum(sizes)[:-1]]
        if any(len(v) != runs for v in columns.values()):  # a figure numpy could not read
            raise ValueError("the ledger's anomaly scan returned figures that do not parse as numbers")
        ids = _StepIds([h[0] for h in histories], starts)
        in_period = (
            np.concatenate([np.fromstring(h[3], sep=",", dtype=np.int8) for h in histories])
            if histories[0][3] is not None
            else np.ones(runs, dtype=np.int8)
        )
        prior = np.arange(runs) - np.repeat(starts, sizes)  # each run's runs before it
        candidates = np.flatnonzero((in_period == 1) & (prior >= min_history))
        flagged = []
        for metric, values in columns.items():
            rows_ = _could_be_anomalous(values, candidates, prior, window, z)
            med, mad, known = _trailing_median_mad(values, rows_, prior, window)
            scale = np.maximum(mad, 0.01 * np.abs(med))
            x = values[rows_]
            with np.errstate(invalid="ignore", divide="ignore"):
                score = np.where(scale > 0, 0.6745 * (x - med) / np.where(scale > 0, scale, 1.0), 0.0)
            hit = (score > z) & (known >= min_history)  # NULL figures are no history
            flagged.append(pd.DataFrame({"pos": rows_[hit], "metric": metric, "value": x[hit],
                                         "median": med[hit], "z": score[hit]}))  # fmt: skip
        out = pd.concat(flagged)
        if out.empty:
            return pd.DataFrame(columns=cols)
        # one line per step: its cost when the cost is flagged, else its GPU-hours; worst first
        out["_cost_first"] = out["metric"] != "total_usd"
        out = out.sort_values(["_cost_first", "z"], ascending=[True, False]).drop_duplicates("pos")
        out = out.sort_values("z", ascending=False)
        positions = out["pos"].to_numpy()
        # the usual allocation, for the cause: the latest CAUSE_HISTORY runs before each flagged one
        past = {p: range(max(p - CAUSE_HISTORY, p - int(prior[p])), p) for p in positions}
        wanted = sorted({ids[i] for p in positions for i in (*past[p], p)})
        info = {d["step_id"]: d for d in q.step_details(conn, wanted)}
    rows_ = [info[ids[p]] for p in positions]
    out["step_id"] = [r["step_id"] for r in rows_]
    out["name"] = [r["name"] for r in rows_]
    out["started_at"] = [r["started_at"] for r in rows_]
    out["cause"] = [_cause(info[ids[p]], _usual([info[ids[i]] for i in past[p]])) for p in positions]
    return out[cols].reset_index(drop=True)


class _StepIds:
    """The step id at a position of the concatenated histories; a history's ids are split from
    its text only when one of them is asked for (most histories have no anomaly)."""

    def __init__(self, texts: list[str], starts: Any) -> None:
        self._texts, self._starts, self._split = texts, starts, {}

    def __getitem__(self, position: Any) -> str:
        import numpy as np

        g = int(np.searchsorted(self._starts, position, side="right")) - 1
        if g not in self._split:
            from mlcost.ledger.queries import ID_SEP

            self._split[g] = self._texts[g].split(ID_SEP)
        return self._split[g][int(position) - int(self._starts[g])]


def _could_be_anomalous(values: Any, rows: Any, prior: Any, window: int, z: float) -> Any:
    """The ``rows`` that can score above ``z``: the exact statistic (a sort of every window) is
    then computed for these only, often under half of them.

    The MAD is floored at 1% of the median, so a run scores above ``z`` only if it exceeds the
    median of its window by ``z``·1%/0.6745 of it. That median comes from pandas' rolling median
    (a skip list: one pass, no sort per row) for rows with a full window; rows nearer the start of
    their history are all kept. The margin is halved, so rounding can never drop a run that the
    exact statistic flags."""
    import numpy as np
    import pandas as pd

    before = np.r_[np.nan, pd.Series(values).rolling(window, min_periods=1).median().to_numpy()[:-1]]
    med = before[rows]
    full = prior[rows] >= window
    with np.errstate(invalid="ignore"):
        above = values[rows] > med + 0.5 * z * 0.01 * np.abs(med) / 0.6745
    return rows[~full | above | np.isnan(med)]


def _trailing_median_mad(values: Any, rows: Any, prior: Any, window: int) -> tuple[Any, Any, Any]:
    """Median and MAD of the up to ``window`` values before each of ``rows`` in its group (rows are
    sorted by group, then time; ``prior[i]`` counts the group's rows before row ``i``). NaN
    (a NULL figure) is no run; the third array counts the values each statistic rests on.
    Vectorised in chunks: a million rows in about a second."""
    import numpy as np
    from numpy.lib.stride_tricks import sliding_window_view

    med = np.empty(len(rows))
    mad = np.empty(len(rows))
    known = np.empty(len(rows), dtype=np.int64)
    # windows[i] = the ``window`` values before row i (a view: NaN before the first row)
    windows = sliding_window_view(np.concatenate([np.full(window, np.nan), values]), window)
    back = window - np.arange(window)  # how many rows back each column of a window is
    for c in range(0, len(rows), 65536):
        r = rows[c : c + 65536]
        win = windows[r]  # a copy, sorted in place below
        win[back[None, :] > prior[r][:, None]] = np.nan  # rows of another step are no history
        win.sort(axis=1)  # NaN last
        k = (~np.isnan(win)).sum(axis=1)
        m = _sorted_median(win, k)
        dev = np.abs(win - m[:, None])
        dev.sort(axis=1)
        med[c : c + len(r)], mad[c : c + len(r)], known[c : c + len(r)] = m, _sorted_median(dev, k), k
    return med, mad, known


def _sorted_median(sorted_rows: Any, k: Any) -> Any:
    """Per row, the median of its first ``k`` values (rows sorted, NaN last); NaN where k is 0."""
    import numpy as np

    i = np.arange(len(k))
    lo, hi = np.maximum((k - 1) // 2, 0), np.maximum(k // 2, 0)
    hi = np.minimum(hi, sorted_rows.shape[1] - 1)
    m = (sorted_rows[i, lo] + sorted_rows[i, hi]) / 2
    return np.where(k > 0, m, np.nan)


def _usual(past: list[dict[str, Any]]) -> dict[str, Any]:
    """The typical allocation of a step's past runs: medians, and the most frequent type and pricing."""
    import statistics
    from collections import Counter

    def median(key: str) -> float | None:
        values = [float(p[key]) for p in past if p[key] is not None and p[key] == p[key]]
        return statistics.median(values) if values else None

    def mode(key: str) -> Any:
        found = Counter(p[key] for p in past if p[key] is not None).most_common(1)
        return found[0][0] if found else None

    return {"gpus": median("gpus"), "duration_s": median("duration_s"), "idle_fraction": median("idle_fraction"),
            "gpu_type": mode("gpu_type"), "pricing": mode("pricing")}  # fmt: skip


def _cause(row: Any, usual: Any) -> str:
    causes = []
    if usual["gpu_type"] and row["gpu_type"] != usual["gpu_type"]:
        causes.append(f"ran on {row['gpu_type']} instead of the usual {usual['gpu_type']}")
    if usual["pricing"] and row["pricing"] != usual["pricing"]:
        causes.append(f"priced {row['pricing']} instead of the usual {usual['pricing']}")
    if usual["gpus"] and (row["gpus"] or 0) > usual["gpus"]:
        causes.append(f"{row['gpus']:.0f} GPUs instead of the usual {usual['gpus']:.0f}")
    if usual["duration_s"] and (row["duration_s"] or 0) > 1.5 * usual["duration_s"]:
        causes.append(f"ran {row['duration_s'] / usual['duration_s']:.1f}x longer than usual")
    idle, usual_idle = row["idle_fraction"], usual["idle_fraction"]
    if idle is not None and not math.isnan(idle) and idle >= 0.3 and (usual_idle is None or math.isnan(usual_idle)
                                                                    or idle > usual_idle + 0.2):  # fmt: skip
        causes.append(f"GPUs idle {idle:.0%} of the time")
    return "; ".join(causes) or "same allocation and duration as usual: check the price catalog and the inputs"
