"""Real HTTP servers on 127.0.0.1, never a mocked client: `http_serve` runs any request handler on a free port in a
thread, and `http_stub` is the protected application's health endpoints plus a webhook receiver, recording what
the console asked for (`webhook_env` names a variable holding the receiver's URL)."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest


@contextlib.contextmanager
def http_serve(handler: type[BaseHTTPRequestHandler]) -> Iterator[str]:
    """Serve `handler` on a free port of 127.0.0.1 (a thread per request) until the block ends; yields its base
    URL, e.g. http://127.0.0.1:41234."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


@dataclass
class HttpStub:
    url: str
    statuses: dict[str, int]
    posts: list[tuple[str, bytes]]
    gets: list[str]
    bodies: dict[str, bytes] = field(default_factory=dict)  # path -> the body to answer instead of the default


@pytest.fixture
def http_stub() -> Iterator[HttpStub]:
    stub = HttpStub(url="", statuses={"/healthz": 200, "/readyz": 200}, posts=[], gets=[])

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            stub.gets.append(self.path)
            status = stub.statuses.get(self.path, 404)
            body = stub.bodies.get(self.path) or (
                b'{"status": "ok"}' if status < 400 else b'{"status": "redis unreachable"}'
            )
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_POST(self) -> None:
            stub.posts.append((self.path, self.rfile.read(int(self.headers.get("Content-Length", 0)))))
            self.send_response(stub.statuses.get(self.path, 200))
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, format: str, *args: Any) -> None:
            pass

    with http_serve(Handler) as url:
        stub.url = url
        yield stub


WEBHOOK_ENV = "TEST_WEBHOOK_URL"


@pytest.fixture
def webhook_env(http_stub: HttpStub, monkeypatch: pytest.MonkeyPatch) -> str:
    """The name of a variable holding the URL of `http_stub`'s /hook, for an environment's webhook_url_env."""
    monkeypatch.setenv(WEBHOOK_ENV, f"{http_stub.url}/hook")
    return WEBHOOK_ENV
