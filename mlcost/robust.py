"""The robust statistic that flags a cost far above its own history, shared by the anomaly report
and the spike alert at a step's end, so the two never disagree about what is unusual.

The modified z-score 0.6745·(x − median)/MAD (Iglewicz & Hoaglin), with the MAD floored at 1% of
the median so a step that always costs exactly the same does not flag on a rounding difference.
Only rises count: a cheaper run is not a cost anomaly.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence

ANOMALY_Z = 3.5  # Iglewicz & Hoaglin's cut-off for the modified z-score
ANOMALY_MIN_HISTORY = 5  # fewer earlier runs than this say nothing about what is usual
MAD_FLOOR = 0.01  # the MAD's floor, as a share of the median


def modified_z(value: float, history: Sequence[float]) -> float | None:
    """How far ``value`` sits above ``history``, in robust standard deviations; None when the
    history is too short to say."""
    if len(history) < ANOMALY_MIN_HISTORY:
        return None
    med = statistics.median(history)
    mad = statistics.median(abs(h - med) for h in history)
    scale = max(mad, MAD_FLOOR * abs(med))
    if scale <= 0:
        return 0.0 if value <= med else float("inf")
    return 0.6745 * (value - med) / scale
