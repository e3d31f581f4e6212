"""Where the ledger is: a path (SQLite, the embedded default) or a SQLAlchemy URL (PostgreSQL).

Pure Python on purpose: a DAG file or a ``Meter`` decides where its ledger is without importing
SQLAlchemy; the engine is made (in :mod:`mlcost.ledger.store`) on the first read or write.

``MLCOST_LEDGER`` and every ``--ledger`` flag take:

- a path: ``~/.mlcost/ledger.db`` (the default), ``/data/ledger.db``;
- ``sqlite:///relative.db`` or ``sqlite:////absolute.db``;
- ``postgresql+psycopg://user:password@host:5432/db`` (``postgresql://`` and ``postgres://`` mean the
  same: psycopg 3 is the one PostgreSQL driver mlcost ships, in the ``mlcost[postgres]`` extra).

A URL's password is never shown: :attr:`Target.masked` replaces it with ``***`` and is what every
repr, log line and error message uses.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import parse_qsl, urlsplit

from mlcost.errors import ConfigError
from mlcost.names import ENV_LEDGER

ENV_OUTBOX = "MLCOST_OUTBOX"  # the local SQLite outbox when MLCOST_LEDGER is a shared database
SQLITE, POSTGRESQL = "sqlite", "postgresql"
_DRIVERS = {  # what a user may write -> the SQLAlchemy dialect+driver mlcost uses
    "sqlite": "sqlite+pysqlite",
    "sqlite+pysqlite": "sqlite+pysqlite",
    "postgresql": "postgresql+psycopg",
    "postgres": "postgresql+psycopg",
    "postgresql+psycopg": "postgresql+psycopg",
}
_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://")


def default_path() -> Path:
    """``~/.mlcost/ledger.db``, read when asked: a test or a worker may change HOME."""
    return Path.home() / ".mlcost" / "ledger.db"


def mask(url: str) -> str:
    """``url`` with any password (in the user-info or a ``password=`` query item) as ``***``."""
    masked = re.sub(r"^([A-Za-z][A-Za-z0-9+.-]*://[^:/@?#]*):[^@/?#]*@", r"\1:***@", url)
    return re.sub(r"(?i)([?&]password=)[^&#]*", r"\1***", masked)


@dataclass(frozen=True)
class Target:
    """One ledger location. ``url`` holds the real credentials: print :attr:`masked`, never it."""

    url: str = field(repr=False)  # SQLAlchemy URL with the driver spelled out
    backend: str  # SQLITE or POSTGRESQL
    path: Path | None  # the file, for SQLite
    field_name: str  # what named it ("--ledger", "MLCOST_LEDGER", "default"): errors name it

    @property
    def masked(self) -> str:
        return str(self.path) if self.path is not None else mask(self.url)

    @property
    def shared(self) -> bool:
        """A database server many machines write to; the local file is then the outbox."""
        return self.backend != SQLITE

    def __repr__(self) -> str:
        return f"Target({self.masked!r}, backend={self.backend!r})"

    def __str__(self) -> str:
        return self.masked


def resolve(spec: str | os.PathLike[str] | None = None, *, field_name: str = "--ledger") -> Target:
    """The ledger named by ``spec``, else ``$MLCOST_LEDGER``, else ``~/.mlcost/ledger.db``.

    A malformed URL or an unknown driver is a :class:`ConfigError` naming the flag or variable."""
    if spec is None or spec == "":
        env = os.environ.get(ENV_LEDGER)
        if env:
            return _parse(env, ENV_LEDGER)
        return _file(default_path(), "default")
    return _parse(os.fspath(spec), field_name)


def outbox_path() -> Path:
    """The local SQLite outbox a shared ledger's steps are written to first: ``$MLCOST_OUTBOX``,
    else ``~/.mlcost/ledger.db`` (the local ledger of a machine is its outbox)."""
    env = os.environ.get(ENV_OUTBOX)
    return Path(env).expanduser() if env else default_path()


def _file(path: Path, field_name: str) -> Target:
    path = path.expanduser()
    return Target(url=f"sqlite+pysqlite:///{path}", backend=SQLITE, path=path, field_name=field_name)


def _parse(spec: str, field_name: str) -> Target:
    match = _SCHEME.match(spec)
    if match is None:
        if "://" in spec or spec.startswith(("postgres:", "postgresql:", "postgresql+", "sqlite:")):
            raise ConfigError(f"malformed ledger URL {mask(spec)!r}; {_EXAMPLE}", field=field_name)
        return _file(Path(spec), field_name)
    scheme = match.group(1).lower()
    driver = _DRIVERS.get(scheme)
    if driver is None:
        raise ConfigError(
            f"unknown ledger driver {scheme!r} in {mask(spec)!r}; allowed: a file path, sqlite:///FILE, "
            "postgresql+psycopg://USER@HOST/DB (postgresql:// means the same)",
            field=field_name,
        )
    rest = spec[match.end() :]
    if driver.startswith("sqlite"):
        if not rest.startswith("/") or rest in ("/", "/:memory:"):
            raise ConfigError(
                f"malformed ledger URL {mask(spec)!r}: a SQLite ledger needs a file, sqlite:///FILE "
                "(an in-memory ledger would be lost when the step ends)",
                field=field_name,
            )
        return _file(Path(rest[1:].split("?", 1)[0]), field_name)
    try:
        parts = urlsplit(spec)
        parts.port  # noqa: B018 - raises ValueError on a port that is not a number
    except ValueError as e:
        raise ConfigError(f"malformed ledger URL {mask(spec)!r} ({e}); {_EXAMPLE}", field=field_name) from None
    query = dict(parse_qsl(parts.query))
    if not (parts.hostname or query.get("host")):
        raise ConfigError(f"malformed ledger URL {mask(spec)!r}: no host; {_EXAMPLE}", field=field_name)
    if not parts.path.strip("/"):
        raise ConfigError(f"malformed ledger URL {mask(spec)!r}: no database name; {_EXAMPLE}", field=field_name)
    return Target(url=driver + spec[match.end(1) :], backend=POSTGRESQL, path=None, field_name=field_name)


_EXAMPLE = "expected a path or a URL like postgresql+psycopg://USER:PASSWORD@HOST:5432/DB"
