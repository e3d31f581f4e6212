"""Alert delivery to a real HTTP server on loopback: once per key, never on the step's path."""

from __future__ import annotations

import time

from mlcost.alerts import Alert, deliver, send


class MemoryBook:
    def __init__(self) -> None:
        self.claimed: set[str] = set()
        self.deliveries: dict[str, tuple[bool, str | None]] = {}

    def claim_alert(self, alert: Alert) -> bool:
        if alert.key in self.claimed:
            return False
        self.claimed.add(alert.key)
        return True

    def record_alert_delivery(self, key: str, *, delivered: bool, error: str | None) -> None:
        self.deliveries[key] = (delivered, error)


def test_a_key_is_sent_once(webhook):
    url, received, _ = webhook
    book = MemoryBook()
    alert = Alert("window_warn", "w:search-monthly:80:2026-11-01", "search-monthly passed 80%", {"pct": 80})
    first = send(alert, book, [url])
    assert first is not None
    first.join(10)
    assert send(alert, book, [url]) is None
    assert len(received) == 1
    assert received[0]["text"] == "search-monthly passed 80%"
    assert received[0]["mlcost"]["kind"] == "window_warn"
    assert book.deliveries[alert.key] == (True, None)


def test_a_slow_webhook_does_not_stall_the_caller(webhook):
    url, received, delay = webhook
    delay["s"] = 2.0
    book = MemoryBook()
    started = time.monotonic()
    thread = send(Alert("spike", "spike:1", "a spike"), book, [url], timeout_s=5)
    assert time.monotonic() - started < 0.5
    thread.join(10)
    assert len(received) == 1


def test_a_dead_webhook_is_recorded_undelivered():
    book = MemoryBook()
    # port 9 (discard) on loopback: nothing listens, the connection is refused at once
    error = deliver(Alert("spike", "s", "t"), ["http://127.0.0.1:9/x"], timeout_s=1, retries=1)
    assert error is not None and "127.0.0.1:9" in error and "/x" not in error  # the path may be a secret
    thread = send(Alert("spike", "s2", "t"), book, ["http://127.0.0.1:9/x"], timeout_s=1, retries=0)
    thread.join(10)
    assert book.deliveries["s2"][0] is False
