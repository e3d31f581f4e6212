"""Utilisation traces that drive the simulated NVML, and the exact truth tests compare against.

A trace is a step function per device: each row's values hold until the next row of the same
device, the first row also covers the time before it, and the last row holds forever (or, for a
periodic preset, until the period wraps). Because it is a step function, means, energy and idle
time over any window have exact closed forms, so a test can check a measurement against the truth
rather than against another measurement.

CSV columns: ``t_s,device,util_pct,mem_used_gb,power_w`` and, optionally, ``sm_active_pct`` and
``tensor_active_pct`` (what GPM reports; SM activity defaults to ``util_pct``, tensor activity to
"not available") and ``event`` (``lost``: the device stops answering from that row's time on).
"""

from __future__ import annotations

import bisect
import csv
import io
import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

from mlcost.errors import ConfigError, shown

PRESETS = ("busy", "idle", "bursty", "starved")
COLUMNS = ("t_s", "device", "util_pct", "mem_used_gb", "power_w")
_OPTIONAL = ("sm_active_pct", "tensor_active_pct", "event")
MAX_TRACE_BYTES = 256 * 2**20  # a week at one row per second and device is ~25 MB

# Board power (W) and memory (GB, as marketed) per catalog GPU type: finops-facts.md datasheets.
GPU_SPECS: dict[str, tuple[float, float]] = {
    "H100": (700.0, 80.0),
    "H200": (700.0, 141.0),
    "A100-80GB": (400.0, 80.0),
    "A100-40GB": (400.0, 40.0),
    "L40S": (350.0, 48.0),
    "L4": (72.0, 24.0),
    "A10G": (150.0, 24.0),
    "T4": (70.0, 16.0),
}


@dataclass(frozen=True, slots=True)
class TraceRow:
    t_s: float
    util_pct: float
    mem_used_gb: float
    power_w: float
    sm_active_pct: float | None = None
    tensor_active_pct: float | None = None

    @property
    def sm(self) -> float:
        return self.util_pct if self.sm_active_pct is None else self.sm_active_pct


# What to integrate: a row attribute (cached antiderivative) or any function of a row.
Value = str | Callable[[TraceRow], float | None]


@dataclass
class Trace:
    """Rows per device (sorted by time), optional loss times and an optional period (presets)."""

    rows: dict[int, list[TraceRow]]
    lost_at: dict[int, float] = field(default_factory=dict)
    period_s: float | None = None
    source: str = "<trace>"

    def __post_init__(self) -> None:
        self._times = {d: [r.t_s for r in rs] for d, rs in self.rows.items()}
        self._tables: dict[tuple[int, str], _Antiderivative] = {}
        self._current: dict[int, tuple[float, float, TraceRow]] = {}  # device -> [from, until) and its row

    def row_at(self, device: int, t: float) -> TraceRow | None:
        """The row in force at trace time ``t`` (None: the trace says nothing about ``device``).

        The simulated NVML asks several times per sample, nearly always for the row it got last
        time, so that row and its time span are kept and checked before bisecting."""
        if self.period_s:
            t = t % self.period_s
        current = self._current.get(device)
        if current is not None and current[0] <= t < current[1]:
            return current[2]
        rows = self.rows.get(device)
        if not rows:
            return None
        times = self._times[device]
        i = max(0, bisect.bisect_right(times, t) - 1)
        self._current[device] = (
            -math.inf if i == 0 else times[i],
            times[i + 1] if i + 1 < len(times) else math.inf,
            rows[i],
        )
        return rows[i]

    def integral(self, device: int, value: Value, t0: float, t1: float) -> float:
        """Exact integral of ``value`` over trace time [t0, t1].

        ``value`` is a row attribute (``"power_w"``, ``"sm"``...; ``None`` counts as 0), whose
        antiderivative is built once per device and reused: the simulated energy counter and GPM
        read it every sample, so a look-up must cost a bisection, not a walk over the trace. A
        callable is evaluated on the spot (the truth helpers' ad-hoc quantities).
        """
        rows = self.rows.get(device)
        if not rows:
            return 0.0
        if isinstance(value, str):
            table = self._tables.get((device, value))
            if table is None:
                table = self._tables[device, value] = _Antiderivative(rows, _attribute(value), self.period_s)
        else:
            table = _Antiderivative(rows, value, self.period_s)
        return table(t1) - table(t0)

    def row_throughout(self, device: int, t0: float, t1: float) -> TraceRow | None:
        """The one row in force over all of [t0, t1], or None when the window crosses a row change
        (or the trace says nothing about ``device``)."""
        row = self.row_at(device, t0)
        if row is None or (t1 > t0 and row is not self.row_at(device, t1)):
            return None
        p = self.period_s
        if p and t1 > t0 and (t1 - t0 >= p or t0 % p > t1 % p):  # wrapped round to the same row
            return None
        return row

    def mean(self, device: int, value: Value, t0: float, t1: float) -> float:
        """Time-weighted mean over [t0, t1]; the value in force when the window is empty or lies
        within one row (the common case for a sampling window, so it skips the integral)."""
        row = self.row_throughout(device, t0, t1) if t1 > t0 else self.row_at(device, t0)
        if row is not None:
            return (value(row) if callable(value) else getattr(row, value)) or 0.0
        if t1 <= t0:
            return 0.0
        return self.integral(device, value, t0, t1) / (t1 - t0)


def _attribute(name: str) -> Callable[[TraceRow], float | None]:
    return lambda row: getattr(row, name)


class _Antiderivative:
    """F(t) = integral of a step function from 0 to t, by bisection into prefix sums.

    The first row also covers the time before it and the last row holds forever, or, with a
    period, until the period wraps (F then adds whole periods).
    """

    __slots__ = ("_per_period", "_period", "_prefix", "_starts", "_values")

    def __init__(self, rows: list[TraceRow], value: Callable[[TraceRow], float | None], period: float | None) -> None:
        self._starts = [r.t_s for r in rows]
        self._values = [float(value(r) or 0.0) for r in rows]
        prefix = [self._values[0] * self._starts[0]]  # F at the first row's start
        for i in range(1, len(rows)):
            prefix.append(prefix[-1] + self._values[i - 1] * (self._starts[i] - self._starts[i - 1]))
        self._prefix = prefix
        self._period = period or None
        self._per_period = self._plain(period) if period else 0.0

    def _plain(self, t: float) -> float:
        i = max(0, bisect.bisect_right(self._starts, t) - 1)
        return self._prefix[i] + self._values[i] * (t - self._starts[i])

    def __call__(self, t: float) -> float:
        if self._period is None:
            return self._plain(t)
        n = math.floor(t / self._period)
        return n * self._per_period + self._plain(t - n * self._period)


@dataclass(frozen=True, slots=True)
class TraceTruth:
    util_mean_pct: float
    power_mean_w: float
    energy_j: float
    idle_seconds: float
    mem_peak_gb: float


def truth(trace: Trace, device: int, t0: float, t1: float, idle_threshold_pct: float = 5.0) -> TraceTruth:
    """What a perfect meter would report for ``device`` over trace time [t0, t1]."""
    energy = trace.integral(device, "power_w", t0, t1)
    idle = trace.integral(device, lambda r: float(r.util_pct < idle_threshold_pct), t0, t1)
    span = max(t1 - t0, 1e-12)
    p = trace.period_s

    def occurs(r: TraceRow) -> bool:  # does the row come into force inside (t0, t1]?
        first = r.t_s if not p else r.t_s + math.ceil((t0 - r.t_s) / p) * p
        return t0 < first <= t1

    rows = [trace.row_at(device, t0), *(r for r in trace.rows.get(device, []) if occurs(r))]
    return TraceTruth(
        util_mean_pct=trace.integral(device, "util_pct", t0, t1) / span,
        power_mean_w=energy / span,
        energy_j=energy,
        idle_seconds=idle,
        mem_peak_gb=max((r.mem_used_gb for r in rows if r is not None), default=0.0),
    )


def load_trace(spec: str | Path, *, gpu_type: str = "H100", devices: int = 1) -> Trace:
    """A preset name (``busy``, ``idle``, ``bursty``, ``starved``) or the path of a CSV trace."""
    if str(spec) in PRESETS:
        return preset(str(spec), gpu_type=gpu_type, devices=devices)
    return read_csv(Path(spec))


def read_csv(path: Path) -> Trace:
    """Parse a CSV trace; errors name the file, the line and the column.

    A trace that cannot be read (not UTF-8, a field longer than the csv module's limit of 131,072
    characters, over ``MAX_TRACE_BYTES``) is refused with a ConfigError naming the file, before
    the step's body runs, like any other bad trace: the trace is a fixture someone chose with
    ``MLCOST_SIM_TRACE``, and a step "measured" on telemetry other than the one asked for would
    make the test that chose it pass or fail for the wrong reason."""
    from mlcost.config_files import read_text

    source = str(path)
    try:
        text = read_text(path, what="trace", max_bytes=MAX_TRACE_BYTES)
    except ConfigError as e:
        hint = f"; give a CSV path or one of {', '.join(PRESETS)}" if "not found" in e.detail else ""
        raise ConfigError(e.detail + hint, source=source) from e
    try:
        return _parse_csv(text, source)
    except csv.Error as e:  # e.g. "field larger than field limit (131072)", a NUL byte
        raise ConfigError(f"not a readable CSV trace: {e}", source=source) from e


def _parse_csv(text: str, source: str) -> Trace:
    reader = csv.DictReader(io.StringIO(text, newline=""))
    header = [h.strip() for h in reader.fieldnames or []]
    missing = [c for c in COLUMNS if c not in header]
    if missing:
        raise ConfigError(f"line 1: missing column(s) {', '.join(missing)}; expected {','.join(COLUMNS)} "
                          f"(optional: {', '.join(_OPTIONAL)})", source=source, field=missing[0])
    rows: dict[int, list[TraceRow]] = {}
    lost: dict[int, float] = {}
    for raw in reader:
        line_no = reader.line_num
        rec = {k.strip(): (v or "").strip() for k, v in raw.items() if k is not None}

        def num(col: str, optional: bool = False, rec=rec, line_no=line_no) -> float | None:
            text = rec.get(col, "")
            if optional and text == "":
                return None
            try:
                value = float(text)
            except ValueError:
                value = math.nan
            if not math.isfinite(value) or value < 0 or (col.endswith("_pct") and value > 100):
                allowed = "a number from 0 to 100" if col.endswith("_pct") else "a non-negative number"
                raise ConfigError(f"line {line_no}: {shown(text)} is not {allowed}", source=source, field=col)
            return value

        device_f = num("device")
        if device_f != int(device_f):
            raise ConfigError(f"line {line_no}: device must be a whole number", source=source, field="device")
        device, t = int(device_f), num("t_s")
        event = rec.get("event", "")
        if event not in ("", "lost"):
            raise ConfigError(f"line {line_no}: unknown event {shown(event)}; allowed: lost", source=source,
                              field="event")
        if event == "lost":
            lost[device] = min(lost.get(device, math.inf), t)
            continue
        previous = rows.setdefault(device, [])
        if previous and t < previous[-1].t_s:
            raise ConfigError(f"line {line_no}: time goes backwards for device {device}", source=source, field="t_s")
        previous.append(TraceRow(t, num("util_pct"), num("mem_used_gb"), num("power_w"),
                                 num("sm_active_pct", True), num("tensor_active_pct", True)))
    if not rows:
        raise ConfigError("line 2: the trace has no rows", source=source, field="t_s")
    return Trace(rows, lost_at=lost, source=source)


def preset(name: str, *, gpu_type: str = "H100", devices: int = 1) -> Trace:
    """Periodic synthetic traces scaled to the GPU's board power and memory.

    busy: ~95% util near board power; idle: 0% util at ~12% of board power with weights held;
    bursty: 20 s busy then 20 s idle; starved: 2 s at 80% then 8 s at 10% (mean 24%), the shape of
    a GPU waiting on its input pipeline.
    """
    if name not in PRESETS:
        raise ConfigError(f"unknown trace preset {name!r}; allowed: {', '.join(PRESETS)}", field="MLCOST_SIM_TRACE")
    board, mem = GPU_SPECS.get(gpu_type, GPU_SPECS["H100"])
    idle_w = 0.12 * board

    def row(t: float, util: float, mem_share: float) -> TraceRow:
        power = idle_w + (0.92 * board - idle_w) * util / 100
        return TraceRow(t, util, round(mem * mem_share, 3), round(power, 3), util, round(util * 0.6, 3))

    shapes: dict[str, tuple[float, Iterable[TraceRow]]] = {
        "busy": (4.0, [row(0, 94, 0.85), row(1, 96, 0.86), row(2, 95, 0.85), row(3, 95, 0.84)]),
        "idle": (1.0, [row(0, 0, 0.1)]),
        "bursty": (40.0, [row(0, 95, 0.8), row(20, 0, 0.3)]),
        "starved": (10.0, [row(0, 80, 0.5), row(2, 10, 0.5)]),
    }
    period, pattern = shapes[name]
    pattern = list(pattern)
    return Trace({d: pattern for d in range(devices)}, period_s=period, source=f"preset:{name}")
