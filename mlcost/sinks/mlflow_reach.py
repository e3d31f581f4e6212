"""Reaching an MLflow tracking server without waiting minutes for one that is down.

MLflow's HTTP client retries a failed request with exponential backoff (``MLFLOW_HTTP_REQUEST_*``):
against a closed port one call blocks for about four minutes. That is right for a long job that
can wait for a restarting server, wrong for a CI gate, a ``sync`` of a thousand steps or a step on
its way out. So:

- a command first :func:`probe`\\ s the server (one TCP connect, then one HTTP request, each within a
  few seconds) and stops with one line when nothing answers;
- while it talks to the server, :func:`bounded_http` caps MLflow's retries and timeout for the
  length of the call only (the variables the user set stay as they were; the others are restored);
- the meter probes with a TCP connect only: a refused connection is known at once, and only a
  server that accepts and then hangs makes the step wait out its timeout.

The ledger marks what it synced with :func:`sink_key`, which names the server (password removed),
so a sync to another server still sends everything.
"""

from __future__ import annotations

import os
import socket
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from mlcost.errors import ConfigError
from mlcost.names import ENV_MLFLOW_TRACKING_URI

SINK_PREFIX = "mlflow:"
PROBE_TIMEOUT_S = 5.0
# What a command allows MLflow per request while it runs (restored afterwards): one retry, short
# backoff, and a timeout that keeps a whole command well inside half a minute.
CLI_HTTP = {
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "1",
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",  # MLflow parses it as an int: "0.5" fails every call
    "MLFLOW_HTTP_REQUEST_BACKOFF_JITTER": "0",
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "10",
}


class TrackingServerUnreachable(ConfigError):
    """The tracking server did not answer: an outage, not a policy breach (the CLI exits 2)."""

    def __init__(self, uri: str, reason: str) -> None:
        self.uri = redact(uri)
        self.reason = reason
        super().__init__(
            f"MLflow tracking server {self.uri} is unreachable ({reason}); check --tracking-uri / "
            "MLFLOW_TRACKING_URI and that the server is up",
            field="--tracking-uri",
        )


def redact(uri: str) -> str:
    """``uri`` without a password (``https://user:secret@host`` -> ``https://user@host``)."""
    parts = urlsplit(uri)
    if parts.password is None:
        return uri
    host = parts.hostname or ""
    netloc = f"{parts.username}@{host}" if parts.username else host
    if parts.port:
        netloc += f":{parts.port}"
    return urlunsplit(parts._replace(netloc=netloc))


def sink_key(uri: str) -> str:
    """The ledger's ``synced.sink`` value for a step synced to ``uri``: ``mlflow:<server>``, with the
    password removed and a relative SQLite/file path made absolute, so one server has one key."""
    uri = redact(uri).rstrip("/")
    for prefix in ("sqlite:///", "file://"):
        if uri.startswith(prefix):
            path = uri[len(prefix) :]
            if path and not path.startswith("/") and ":memory:" not in path:
                uri = prefix + str(Path(path).resolve())
    if "://" not in uri and uri not in ("databricks",) and not uri.startswith("databricks"):
        uri = "file://" + str(Path(uri).expanduser().resolve())  # a bare path is a file store
    return SINK_PREFIX + uri


def resolve_tracking_uri(explicit: str | None, *, field: str = "--tracking-uri") -> str:
    """``explicit``, else ``$MLFLOW_TRACKING_URI``. Without either MLflow would quietly create
    ``./mlflow.db`` in the current folder, which is never the store a user meant: an error."""
    uri = (explicit or os.environ.get(ENV_MLFLOW_TRACKING_URI) or "").strip()
    if not uri:
        raise ConfigError(
            "no MLflow tracking server given; pass --tracking-uri URI or set MLFLOW_TRACKING_URI "
            "(e.g. http://127.0.0.1:5000 or sqlite:////path/to/mlflow.db)",
            field=field,
        )
    return uri


def _is_http(uri: str) -> bool:
    return urlsplit(uri).scheme in ("http", "https")


def probe(uri: str, *, timeout_s: float = PROBE_TIMEOUT_S, http: bool = True) -> str | None:
    """Why the server at ``uri`` cannot be reached, or ``None`` when it answers (or is not an HTTP
    server: a SQLite file or a folder needs no probe).

    One TCP connect (a refused connection returns at once), then, with ``http``, one GET of
    ``/health``: any HTTP answer, even an error status, counts as reachable; only silence does not."""
    if not _is_http(uri):
        return None
    parts = urlsplit(uri)
    host = parts.hostname or "localhost"
    port = parts.port or (443 if parts.scheme == "https" else 80)
    try:
        with socket.create_connection((host, port), timeout=timeout_s):
            pass
    except ConnectionRefusedError:
        return f"connection to {host}:{port} refused"
    except TimeoutError:
        return f"no TCP answer from {host}:{port} within {timeout_s:g}s"
    except OSError as e:
        return f"cannot connect to {host}:{port}: {e.strerror or e}"
    if not http:
        return None
    url = uri.rstrip("/") + "/health"
    try:
        with urllib.request.urlopen(url, timeout=timeout_s):
            return None
    except urllib.error.HTTPError:
        return None  # it answered
    except urllib.error.URLError as e:
        if "SSL" in type(e.reason).__name__ or "ssl" in str(e.reason).lower():
            return None  # TLS answered; certificates are MLflow's business (MLFLOW_TRACKING_*)
        if isinstance(e.reason, (socket.timeout, TimeoutError)):
            return f"no HTTP answer within {timeout_s:g}s"
        return f"{e.reason}"
    except TimeoutError:
        return f"no HTTP answer within {timeout_s:g}s"
    except OSError as e:
        return f"{e}"


@contextmanager
def bounded_http(settings: dict[str, str] | None = None) -> Iterator[None]:
    """Cap MLflow's HTTP retries and timeout for the length of the ``with`` block. A variable the
    user set is left alone (their choice wins); the ones set here are removed afterwards."""
    added = []
    for name, value in (settings or CLI_HTTP).items():
        if name not in os.environ:
            os.environ[name] = value
            added.append(name)
    try:
        yield
    finally:
        for name in added:
            os.environ.pop(name, None)


def unreachable_from(error: BaseException, uri: str) -> TrackingServerUnreachable | None:
    """The outage behind an MLflow client error, or ``None`` when it is another error (a bad
    filter, an unknown run). MLflow wraps a requests error as "API request to … failed with
    exception …"."""
    text = str(error)
    markers = ("failed with exception", "Max retries exceeded", "Connection refused", "timed out", "NewConnectionError")
    if any(m in text for m in markers):
        first = text.splitlines()[0] if text else type(error).__name__
        reason = "connection refused" if "refused" in text.lower() else first[:200]
        return TrackingServerUnreachable(uri, reason)
    return None


@contextmanager
def reading_mlflow(explicit_uri: str | None, *, field: str = "--tracking-uri") -> Iterator[str]:
    """A command's talk with MLflow: resolve the URI (required), probe it, bound MLflow's HTTP
    retries while the block runs, and turn an outage into :class:`TrackingServerUnreachable`
    (one line, exit 2), never a four-minute wait and a traceback. Yields the URI."""
    uri = resolve_tracking_uri(explicit_uri, field=field)
    reason = probe(uri)
    if reason:
        raise TrackingServerUnreachable(uri, reason)
    with bounded_http():
        try:
            yield uri
        except ConfigError as e:
            outage = unreachable_from(e, uri) if "MLflow" in str(e) else None
            if outage is not None:
                raise outage from e
            raise
        except Exception as e:
            outage = unreachable_from(e, uri)
            if outage is not None:
                raise outage from e
            raise
