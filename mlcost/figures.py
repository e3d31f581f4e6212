"""How figures are written for people: precision that fits the magnitude, one rule for every command.

A cost of $0.00015 is not "$0.0000" and a step of 0.0034 GPU-hours is not "0.00": below the usual
decimals, a figure keeps two significant digits.
"""

from __future__ import annotations

import math
from typing import Any


def decimals(v: float, significant: int = 2) -> int:
    """Decimals that show ``significant`` digits of a small ``v`` (0.0034 needs 4, not 2)."""
    return max(0, significant - 1 - math.floor(math.log10(abs(v))))


def usd(v: Any) -> str:
    """$1,234.50, $0.0266, $0.00015; "–" for no figure."""
    if v is None or v != v:  # None or NaN
        return "–"
    if abs(v) >= 1:
        return f"${v:,.2f}"
    if v == 0 or abs(v) >= 0.01:
        return f"${v:.4f}"
    return f"${v:.{decimals(v)}f}"


def num(v: Any, fmt: str = ".2f") -> str:
    """A figure; by default two decimals from 1 up and two significant digits below (GPU-h 0.0034)."""
    if v is None or v != v:
        return "–"
    if fmt == ".2f" and v and abs(v) < 1:
        return f"{v:.{max(2, decimals(v))}f}"
    return format(v, fmt)
