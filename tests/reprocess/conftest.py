"""A real HTTP server on 127.0.0.1 standing in for the application's reprocess endpoint, with the behaviours the
sender must cope with: slow answers, 503 before success, 429 with Retry-After, refusals."""

from __future__ import annotations

import re
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from typing import Any

import pytest

from tests.support.http import http_serve

PATH_RE = re.compile(r"^/workspaces/([^/]+)/documents/([^/]+)/reprocess$")


@dataclass
class ReprocessStub:
    url: str = ""
    token: str = "stub-token-7f3a"
    latency: float = 0.0
    # document_id -> statuses answered in turn before 202 (e.g. [503] = one 503, then accepted)
    script: dict[str, list[int]] = field(default_factory=dict)
    refuse: dict[str, int] = field(default_factory=dict)  # document_id -> permanent status (404, 409...)
    retry_after: str = ""
    refusal_body: bytes = b'{"error": "nope"}'  # the body of every answer but 202
    calls: Counter[str] = field(default_factory=Counter)
    accepted: Counter[str] = field(default_factory=Counter)
    idempotency_keys: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def answer(self, document_id: str) -> int:
        with self.lock:
            self.calls[document_id] += 1
            if document_id in self.refuse:
                return self.refuse[document_id]
            pending = self.script.get(document_id)
            if pending:
                return pending.pop(0)
            self.accepted[document_id] += 1
            return 202


@pytest.fixture
def reprocess_stub() -> Iterator[ReprocessStub]:
    stub = ReprocessStub()

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_POST(self) -> None:
            match = PATH_RE.match(self.path)
            if self.headers.get("Authorization") != f"Bearer {stub.token}":
                status = 401
            elif not match:
                status = 404
            else:
                if stub.latency:
                    time.sleep(stub.latency)
                stub.idempotency_keys.append(self.headers.get("Idempotency-Key", ""))
                status = stub.answer(match.group(2))
            body = b'{"status": "queued"}' if status == 202 else stub.refusal_body
            self.send_response(status)
            if status == 429 and stub.retry_after:
                self.send_header("Retry-After", stub.retry_after)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    with http_serve(Handler) as url:
        stub.url = url
        yield stub
