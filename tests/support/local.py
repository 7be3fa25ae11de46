"""Plumbing for what the tests run on this machine: a free port on 127.0.0.1 (for a server to take, or for a URL
nobody answers), a thread standing in for a second worker, and polling until a worker is done. Real threads and
real sockets, so the races the tests look for can happen."""

from __future__ import annotations

import socket
import threading
import time
from typing import Any


def free_port() -> int:
    """A port on 127.0.0.1 that nobody listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for(condition: Any, timeout: float = 120) -> None:
    """Poll `condition()` until it is true (a worker finishing a job), failing the test after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.2)


def start_thread(target: Any, **kwargs: Any) -> Any:
    """Run `target(**kwargs)` in a thread, as a second worker would, closing its own database connections after."""
    from django.db import connections

    def run() -> None:
        try:
            target(**kwargs)
        finally:
            connections.close_all()

    thread = threading.Thread(target=run)
    thread.start()
    return thread
