"""Spare Redis databases, and the reprocess calls both reprocess benchmarks send to an application."""

from __future__ import annotations

import contextlib
import sys
import time
from collections.abc import Iterator, Sequence
from typing import Any

TOKEN = "bench-token"


@contextlib.contextmanager
def empty_redis(*urls: str) -> Iterator[list[Any]]:
    """Clients of Redis databases that must be empty (the script refuses them otherwise); flushed at the end
    (FLUSHDB on their own numbers only)."""
    import redis

    clients = [redis.Redis.from_url(url) for url in urls]
    for url, client in zip(urls, clients):
        if client.dbsize():
            sys.exit(f"{url} is not empty; give an unused database number (this script flushes it)")
    try:
        yield clients
    finally:
        for client in clients:
            client.flushdb()


def reprocess_path(workspace: str, document: object) -> str:
    return f"/workspaces/{workspace}/documents/{document}/reprocess"


def sequential_rate(url: str, documents: Sequence[tuple[str, object]], token: str = TOKEN) -> float:
    """Reprocess calls sent one after the other with one httpx.Client, each expecting 202: calls a second."""
    import httpx

    started = time.perf_counter()
    with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {token}"}, timeout=10) as client:
        for workspace, document in documents:
            reply = client.post(reprocess_path(workspace, document))
            assert reply.status_code == 202, (reply.status_code, reply.text)
    return len(documents) / (time.perf_counter() - started)
