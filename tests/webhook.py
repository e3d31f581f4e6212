"""A real HTTP webhook on loopback for alert tests: ``webhook`` yields ``(url, received, delay)``,
where ``received`` fills with each POSTed JSON body and ``delay["s"]`` slows every answer down.
Registered for every test in ``tests/conftest.py``. The URL's path looks like a Slack webhook's,
whose path is its secret (messages must not print it)."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest


@pytest.fixture
def webhook() -> Iterator[tuple[str, list[dict], dict[str, float]]]:
    received: list[dict] = []
    delay = {"s": 0.0}

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):
            body = self.rfile.read(int(self.headers["Content-Length"]))
            time.sleep(delay["s"])
            received.append(json.loads(body))
            self.send_response(204)
            self.end_headers()

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/hooks/T000/B000/secret", received, delay
    finally:
        server.shutdown()
        server.server_close()
