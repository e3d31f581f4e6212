"""Alerts: a window crossing a threshold, a step stopped or refused by a guardrail, a cost spike.

Each alert has a de-duplication key (one per window, threshold and period, or one per step), which
is claimed in the ledger before anything is sent: with a shared ledger, the first machine to claim
it sends it and every other machine stays quiet. Delivery runs on a daemon thread with a bounded
timeout and a few retries, so a webhook that is down or slow never fails or stalls a step; what
could not be delivered stays in the ledger as undelivered, and ``mlcost sync`` retries it.
"""

from __future__ import annotations

import atexit
import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

log = logging.getLogger(__name__)

KIND_WINDOW_WARN = "window_warn"
KIND_WINDOW_SPENT = "window_spent"
KIND_GUARDRAIL = "guardrail"
KIND_PREFLIGHT = "preflight"
KIND_SPIKE = "spike"

_EXIT_WAIT_S = 3.0  # how long a finishing process waits for alerts still in flight
_pending: list[threading.Thread] = []
_pending_lock = threading.Lock()


@dataclass(frozen=True, slots=True)
class Alert:
    kind: str
    key: str  # de-duplication key: the same key is sent once, from whichever machine claims it first
    text: str  # what a person reads in Slack
    fields: dict[str, Any] = field(default_factory=dict)

    def body(self) -> dict[str, Any]:
        """The JSON a webhook receives: Slack's ``text`` plus the figures for a machine reader."""
        return {"text": self.text, "mlcost": {"kind": self.kind, "key": self.key, **self.fields}}


class AlertBook(Protocol):
    """Where alerts are de-duplicated and their delivery recorded (the ledger)."""

    def claim_alert(self, alert: Alert) -> bool: ...

    def record_alert_delivery(self, key: str, *, delivered: bool, error: str | None) -> None: ...


def post_json(url: str, body: dict[str, Any], *, timeout_s: float) -> None:
    """POST ``body`` to ``url``; raises on a transport error or a non-2xx answer."""
    import httpx

    response = httpx.post(url, json=body, timeout=timeout_s)
    response.raise_for_status()


def deliver(
    alert: Alert,
    webhooks: Sequence[str],
    *,
    timeout_s: float = 5.0,
    retries: int = 2,
    post: Callable[..., None] = post_json,
) -> str | None:
    """Send ``alert`` to every webhook, retrying each a few times; the last error, or None when all
    received it. Runs on the caller's thread: :func:`send` puts it off the step's path."""
    error = None
    for url in webhooks:
        for attempt in range(retries + 1):
            try:
                post(url, alert.body(), timeout_s=timeout_s)
                break
            except Exception as e:  # any failure of a webhook is the webhook's, never the step's
                error = f"{_redact(url)}: {type(e).__name__}: {e}"
                if attempt < retries:
                    time.sleep(min(0.5 * 2**attempt, 2.0))
        else:
            log.warning("mlcost: alert %s could not be delivered (%s); `mlcost sync` retries it", alert.key, error)
    return error


def send(
    alert: Alert,
    book: AlertBook,
    webhooks: Sequence[str],
    *,
    timeout_s: float = 5.0,
    retries: int = 2,
) -> threading.Thread | None:
    """Claim ``alert`` in ``book`` and deliver it in the background. None when it was already
    claimed (another machine or an earlier step sent it) or when nothing could claim it."""
    try:
        if not book.claim_alert(alert):
            return None
    except Exception as e:  # a ledger that cannot record the alert must not fail the step either
        log.warning("mlcost: could not record alert %s: %s", alert.key, e)
        return None
    if not webhooks:
        return None

    def run() -> None:
        error = deliver(alert, webhooks, timeout_s=timeout_s, retries=retries)
        try:
            book.record_alert_delivery(alert.key, delivered=error is None, error=error)
        except Exception as e:
            log.warning("mlcost: could not record the delivery of alert %s: %s", alert.key, e)

    thread = threading.Thread(target=run, name=f"mlcost-alert-{alert.kind}", daemon=True)
    with _pending_lock:
        _pending[:] = [t for t in _pending if t.is_alive()]
        _pending.append(thread)
    thread.start()
    return thread


def wait(timeout_s: float = _EXIT_WAIT_S) -> bool:
    """Wait up to ``timeout_s`` for the deliveries in flight; True when none is left."""
    deadline = time.monotonic() + timeout_s
    with _pending_lock:
        threads = list(_pending)
    for thread in threads:
        thread.join(max(0.0, deadline - time.monotonic()))
    return not any(t.is_alive() for t in threads)


@atexit.register
def _drain_at_exit() -> None:
    """A short script's last step should still alert: wait a little for deliveries in flight.
    What does not finish in time is in the ledger, undelivered, for ``mlcost sync``."""
    wait(_EXIT_WAIT_S)


def _redact(url: str) -> str:
    """A webhook URL's path is often its secret (Slack's are): show the host only."""
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.hostname}{':' + str(parts.port) if parts.port else ''}/…"


def retry_undelivered(
    book: Any, webhooks: Sequence[str], *, timeout_s: float = 5.0, retries: int = 2
) -> tuple[int, int]:
    """Send again every alert the ledger holds as undelivered (``mlcost sync``): (delivered, failed)."""
    delivered = failed = 0
    for key, kind, body in book.undelivered_alerts():
        alert = Alert(kind, key, body.get("text", key), {k: v for k, v in body.get("mlcost", {}).items()
                                                        if k not in ("kind", "key")})  # fmt: skip
        error = deliver(alert, webhooks, timeout_s=timeout_s, retries=retries)
        book.record_alert_delivery(key, delivered=error is None, error=error)
        delivered, failed = (delivered + 1, failed) if error is None else (delivered, failed + 1)
    return delivered, failed
