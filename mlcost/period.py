"""The one period of every reader: ``--since/--until`` of report, export and ``gate --ledger``, and
the Cost view's ``since`` query parameter, parsed by one function.

A period is half-open, [since, until), over the time a step started, in UTC. Each end is an ISO
date/time (UTC when it has no zone) or a span back from now (``7d``, ``24h``, ``1h30m``). A value
that is neither, or a span reaching before year 1, is a :class:`~mlcost.errors.ConfigError` naming
the flag: before this, ``gate --ledger L --since garbage`` compared the text ``garbage`` with the
ledger's timestamps as strings, matched nothing and passed, and ``--since 3000000d`` raised a raw
``OverflowError``.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

from mlcost.durations import parse_duration
from mlcost.errors import ConfigError

_FORMS = "an ISO date/time (2025-06-01, 2025-06-01T12:00:00+02:00) or a span back from now (7d, 24h, 1h30m)"


def parse_when(value: str | datetime | None, *, field: str, now: datetime | None = None) -> datetime | None:
    """``value`` as an aware UTC datetime; ``None`` or ``""`` stays ``None`` (an open end)."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    if isinstance(value, datetime):
        dt = value
    else:
        if not isinstance(value, str):
            raise ConfigError(f"expected {_FORMS}, got {value!r}", field=field)
        text = value.strip()
        try:
            dt = datetime.fromisoformat(text)
        except ValueError:
            try:
                seconds = parse_duration(text, field=field) or 0.0
            except ConfigError:
                raise ConfigError(f"expected {_FORMS}, got {value!r}", field=field) from None
            now = now or datetime.now(timezone.utc)
            try:
                dt = now - timedelta(seconds=seconds)
            except (OverflowError, ValueError):
                raise ConfigError(
                    f"the span {value!r} reaches before year 1; give a shorter span or a date", field=field
                ) from None
    try:
        dt = dt.replace(tzinfo=timezone.utc) if dt.tzinfo is None else dt.astimezone(timezone.utc)
    except (OverflowError, ValueError):  # e.g. 0001-01-01T00:00-01:00 is before year 1 in UTC
        raise ConfigError(f"{value!r} is out of the range of dates", field=field) from None
    return dt


def _check_order(since: datetime | None, until: datetime | None, since_field: str, until_field: str) -> None:
    if since is not None and until is not None and until <= since:
        raise ConfigError(
            f"the period is empty: {until_field} ({until.isoformat()}) is not after {since_field} "
            f"({since.isoformat()})",
            field=until_field,
        )


@dataclass(frozen=True)
class Period:
    """[since, until) in UTC; either end may be open. Strings are parsed by :func:`parse_when`
    (``Period("2025-06-01")`` works), so a Period is valid once it exists."""

    since: datetime | str | None = None
    until: datetime | str | None = None

    def __post_init__(self) -> None:
        since = parse_when(self.since, field="--since")
        until = parse_when(self.until, field="--until")
        _check_order(since, until, "--since", "--until")
        object.__setattr__(self, "since", since)
        object.__setattr__(self, "until", until)

    @classmethod
    def parse(
        cls,
        since: str | None,
        until: str | None,
        *,
        since_field: str = "--since",
        until_field: str = "--until",
        now: datetime | None = None,
    ) -> Period:
        """From a command's flags or a request's query parameters; errors name ``*_field``."""
        now = now or datetime.now(timezone.utc)
        start, end = parse_when(since, field=since_field, now=now), parse_when(until, field=until_field, now=now)
        _check_order(start, end, since_field, until_field)
        return cls(start, end)

    @property
    def bounded(self) -> bool:
        return self.since is not None or self.until is not None

    @property
    def since_iso(self) -> str | None:
        return None if self.since is None else self.since.isoformat()  # type: ignore[union-attr]

    @property
    def until_iso(self) -> str | None:
        return None if self.until is None else self.until.isoformat()  # type: ignore[union-attr]

    def label(self) -> str:
        """``from <since> to <until>``, reading naturally when either end is open."""
        return f"from {self.since_iso or 'the first step'} to {self.until_iso or 'now'}"
