#!/usr/bin/env python
"""Reprocess throughput: the console's batch task against a plain sequential httpx loop, in the same run.

The application is a stub on 127.0.0.1 (its own process) that answers every reprocess call after 10 ms, like a
real API doing a lookup and an enqueue. The batch runs in this process exactly as the Celery task runs it
(reprocess_batch_execute: asyncio, httpx.AsyncClient, bulk writes to PostgreSQL), with its own database
`drc_bench_reprocess`, created and dropped here.

    .venv/bin/python bench/reprocess_throughput.py --items 10000

Then a second batch where 20% of the documents first answer 503: every item must still end accepted.
Target (issue 5): the batch at least 8 times the sequential rate. This is a script, not a test.
"""

from __future__ import annotations

import hashlib
import multiprocessing
import time
from typing import Any

from harness.clients import TOKEN, sequential_rate
from harness.core import parser
from harness.inprocess import django_database

DB = "drc_bench_reprocess"


def documents(items: int) -> list[tuple[str, str]]:
    return [(f"ws-{i % 7}", str(i)) for i in range(items)]


def serve_stub(port_queue: Any, latency: float, fail_percent: int) -> None:
    """The stand-in application, on asyncio so that it costs little CPU next to what it measures: every call
    answers after `latency`; with fail_percent, that share of documents answers 503 once, then 202."""
    import asyncio

    failed_once: set[str] = set()

    def status_for(head: bytes) -> int:
        request_line, _, headers = head.partition(b"\r\n")
        if f"authorization: bearer {TOKEN}".encode() not in headers.lower():
            return 401
        document = request_line.split(b" ")[1].rsplit(b"/", 2)[-2].decode()
        unlucky = int(hashlib.md5(document.encode()).hexdigest(), 16) % 100 < fail_percent
        if unlucky and document not in failed_once:
            failed_once.add(document)
            return 503
        return 202

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                await asyncio.sleep(latency)
                status = status_for(head)
                writer.write(f"HTTP/1.1 {status} X\r\nContent-Length: 0\r\n\r\n".encode())
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            writer.close()

    async def serve() -> None:
        server = await asyncio.start_server(handle, "127.0.0.1", 0, backlog=256)
        port_queue.put(server.sockets[0].getsockname()[1])
        await server.serve_forever()

    asyncio.run(serve())


def start_stub(latency: float, fail_percent: int = 0) -> tuple[multiprocessing.Process, str]:
    ports: Any = multiprocessing.Queue()
    process = multiprocessing.Process(target=serve_stub, args=(ports, latency, fail_percent), daemon=True)
    process.start()
    return process, f"http://127.0.0.1:{ports.get(timeout=10)}"


def batch_run(url: str, items: int, concurrency: int) -> tuple[float, Any]:
    from inventory.models import Environment
    from reprocess.models import ReprocessBatch
    from reprocess.services import reprocess_batch_create, reprocess_batch_execute, reprocess_batch_send

    env, _ = Environment.objects.update_or_create(
        name="bench",
        defaults={"api_url": url, "api_token_env": "BENCH_APP_TOKEN", "reprocess_concurrency": concurrency},
    )
    batch = reprocess_batch_create(environment=env, documents=documents(items), source="csv", requested_by=None)
    reprocess_batch_send(batch=batch, requested_by=None, enqueue=False)
    started, cpu_started = time.perf_counter(), time.process_time()
    reprocess_batch_execute(batch_id=batch.pk)
    elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu_started
    print(f"  (batch of {items}: {elapsed:.1f} s, console CPU {cpu / items * 1000:.2f} ms per item)")
    return items / elapsed, ReprocessBatch.objects.get(pk=batch.pk)


def main() -> None:
    cli = parser(__doc__)
    cli.add_argument("--items", type=int, default=10_000)
    cli.add_argument("--sequential-items", type=int, default=2_000, help="the sequential loop's sample")
    cli.add_argument("--latency-ms", type=float, default=10)
    cli.add_argument("--concurrency", type=int, default=16)
    args = cli.parse_args()
    latency = args.latency_ms / 1000

    with django_database(DB, quiet=True, BENCH_APP_TOKEN=TOKEN, REPROCESS_BACKOFF_MS="50"):
        stub, url = start_stub(latency)
        sequential = sequential_rate(url, documents(args.sequential_items))
        rate, batch = batch_run(url, args.items, args.concurrency)
        stub.terminate()
        print(f"stub latency {args.latency_ms:g} ms, concurrency {args.concurrency}")
        print(f"sequential httpx loop: {sequential:8.1f} items/s ({args.sequential_items} items)")
        print(
            f"console batch:         {rate:8.1f} items/s ({batch.accepted}/{batch.total} accepted, "
            f"{batch.sent} requests, status {batch.status})"
        )
        print(f"ratio batch/sequential: {rate / sequential:.1f}x (target >= 8x)")

        stub, url = start_stub(latency, fail_percent=20)
        rate, batch = batch_run(url, args.items, args.concurrency)
        stub.terminate()
        print(
            f"with 20% first answering 503: {rate:8.1f} items/s, {batch.accepted}/{batch.total} accepted, "
            f"{batch.failed} failed, {batch.sent} requests ({batch.sent - batch.total} retries), status {batch.status}"
        )


if __name__ == "__main__":
    main()
