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
import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

from mlcost.errors import ConfigError

PRESETS = ("busy", "idle", "bursty", "starved")
COLUMNS = ("t_s", "device", "util_pct", "mem_used_gb", "power_w")
_OPTIONAL = ("sm_active_pct", "tensor_active_pct", "event")

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


@dataclass
class Trace:
    """Rows per device (sorted by time), optional loss times and an optional period (presets)."""

    rows: dict[int, list[TraceRow]]
    lost_at: dict[int, float] = field(default_factory=dict)
    period_s: float | None = None
    source: str = "<trace>"

    def __post_init__(self) -> None:
        self._times = {d: [r.t_s for r in rs] for d, rs in self.rows.items()}

    def row_at(self, device: int, t: float) -> TraceRow | None:
        """The row in force at trace time ``t`` (None: the trace says nothing about ``device``)."""
        rows = self.rows.get(device)
        if not rows:
            return None
        if self.period_s:
            t = t % self.period_s
        return rows[max(0, bisect.bisect_right(self._times[device], t) - 1)]

    def integral(self, device: int, value: Callable[[TraceRow], float], t0: float, t1: float) -> float:
        """Exact integral of ``value(row)`` over trace time [t0, t1]."""
        if self.period_s and t1 - t0 > 0:
            p = self.period_s

            def cumulative(t: float) -> float:
                n = math.floor(t / p)
                return n * self._plain(device, value, 0.0, p) + self._plain(device, value, 0.0, t - n * p)

            return cumulative(t1) - cumulative(t0)
        return self._plain(device, value, t0, t1)

    def _plain(self, device: int, value: Callable[[TraceRow], float], t0: float, t1: float) -> float:
        rows = self.rows.get(device) or []
        total = 0.0
        for i, row in enumerate(rows):
            start = -math.inf if i == 0 else row.t_s
            end = rows[i + 1].t_s if i + 1 < len(rows) else math.inf
            lo, hi = max(start, t0), min(end, t1)
            if hi > lo:
                total += value(row) * (hi - lo)
        return total

    def mean(self, device: int, value: Callable[[TraceRow], float], t0: float, t1: float) -> float:
        if t1 <= t0:
            row = self.row_at(device, t0)
            return value(row) if row else 0.0
        return self.integral(device, value, t0, t1) / (t1 - t0)


@dataclass(frozen=True, slots=True)
class TraceTruth:
    util_mean_pct: float
    power_mean_w: float
    energy_j: float
    idle_seconds: float
    mem_peak_gb: float


def truth(trace: Trace, device: int, t0: float, t1: float, idle_threshold_pct: float = 5.0) -> TraceTruth:
    """What a perfect meter would report for ``device`` over trace time [t0, t1]."""
    energy = trace.integral(device, lambda r: r.power_w, t0, t1)
    idle = trace.integral(device, lambda r: float(r.util_pct < idle_threshold_pct), t0, t1)
    span = max(t1 - t0, 1e-12)
    p = trace.period_s

    def occurs(r: TraceRow) -> bool:  # does the row come into force inside (t0, t1]?
        first = r.t_s if not p else r.t_s + math.ceil((t0 - r.t_s) / p) * p
        return t0 < first <= t1

    rows = [trace.row_at(device, t0), *(r for r in trace.rows.get(device, []) if occurs(r))]
    return TraceTruth(
        util_mean_pct=trace.integral(device, lambda r: r.util_pct, t0, t1) / span,
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
    """Parse a CSV trace; errors name the file, the line and the column."""
    source = str(path)
    try:
        text = path.read_text()
    except OSError as e:
        raise ConfigError(f"cannot read the trace ({e.strerror}); give a CSV path or one of {', '.join(PRESETS)}",
                          source=source) from e
    reader = csv.DictReader(text.splitlines())
    header = [h.strip() for h in reader.fieldnames or []]
    missing = [c for c in COLUMNS if c not in header]
    if missing:
        raise ConfigError(f"line 1: missing column(s) {', '.join(missing)}; expected {','.join(COLUMNS)} "
                          f"(optional: {', '.join(_OPTIONAL)})", source=source, field=missing[0])
    rows: dict[int, list[TraceRow]] = {}
    lost: dict[int, float] = {}
    for line_no, raw in enumerate(reader, start=2):
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
                raise ConfigError(f"line {line_no}: {text!r} is not {allowed}", source=source, field=col)
            return value

        device_f = num("device")
        if device_f != int(device_f):
            raise ConfigError(f"line {line_no}: device must be a whole number", source=source, field="device")
        device, t = int(device_f), num("t_s")
        event = rec.get("event", "")
        if event not in ("", "lost"):
            raise ConfigError(f"line {line_no}: unknown event {event!r}; allowed: lost", source=source, field="event")
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
