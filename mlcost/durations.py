"""Human durations ("90s", "15m", "2h", "1h30m", "1d") to seconds, as policies and keywords use them."""

from __future__ import annotations

import math
import re

from mlcost.errors import ConfigError

_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d)")
_MAX_TEXT = 100  # characters; a longer "duration" is not one, and is not echoed back whole


def parse_duration(value: object, *, field: str = "duration") -> float | None:
    """Seconds for ``value``; numbers are already seconds. ``None`` stays ``None`` (no limit).

    Anything else (a list, a table, a date, NaN, infinity, a number too large for a float) is a
    ConfigError naming ``field``: a limit that silently becomes NaN would switch its guardrail off.
    """
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        shown = repr(value) if isinstance(value, bool) else f"a {type(value).__name__}"
        raise ConfigError(f"expected a duration such as '15m' or '2h', or seconds, got {shown}", field=field)
    if isinstance(value, (int, float)):
        try:
            seconds = float(value)
        except OverflowError:
            raise ConfigError("the number of seconds is too large", field=field) from None
    else:
        text = value.strip().lower().replace(" ", "")
        pos, seconds = 0, 0.0
        if len(text) <= _MAX_TEXT:
            for match in _PART.finditer(text):
                if match.start() != pos:
                    break
                seconds += float(match.group(1)) * _UNIT_SECONDS[match.group(2)]
                pos = match.end()
        if pos != len(text) or not text:
            shown = repr(value) if len(value) <= _MAX_TEXT else f"{value[:40]!r}... ({len(value)} characters)"
            raise ConfigError(
                f"cannot read {shown} as a duration; write a number with a unit: ms, s, m, h or d "
                "(e.g. '90s', '15m', '1h30m')",
                field=field,
            )
    if not math.isfinite(seconds):
        raise ConfigError(f"a duration must be a finite number of seconds, got {value!r}", field=field)
    if seconds < 0:
        raise ConfigError(f"a duration cannot be negative, got {value!r}", field=field)
    return seconds


def format_duration(seconds: float) -> str:
    """The short form a person reads in a message: 5400 -> '1h30m'."""
    seconds = round(seconds)
    if seconds < 60:
        return f"{seconds}s"
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    out = f"{hours}h" if hours else ""
    out += f"{minutes}m" if minutes else ""
    out += f"{secs}s" if secs and not hours else ""
    return out
