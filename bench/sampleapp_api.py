#!/usr/bin/env python
"""How fast the sample application accepts reprocess requests: a plain sequential httpx loop against 16 requests
in flight (httpx.AsyncClient and a semaphore, as the console's reprocess batches send them), in the same run.

Starts the real API and worker (`python -m sampleapp api --with-worker`) on a free port with its own PostgreSQL
database `drc_bench_sampleapp` (created and dropped) and the given EMPTY Redis database (flushed after).

    .venv/bin/python bench/sampleapp_api.py --redis-url redis://127.0.0.1:6379/12 --documents 4000

This is a script, not a test.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time

import httpx
import psycopg
from harness.clients import TOKEN, empty_redis, reprocess_path, sequential_rate
from harness.core import ROOT, parser
from harness.pg import Pg

DB = "drc_bench_sampleapp"


async def concurrent_rate(url: str, documents: list[tuple[str, int]], concurrency: int) -> float:
    """The same calls, `concurrency` in flight (one AsyncClient, a semaphore): calls a second."""
    limit = asyncio.Semaphore(concurrency)
    limits = httpx.Limits(max_connections=concurrency)
    headers = {"Authorization": f"Bearer {TOKEN}"}
    async with httpx.AsyncClient(base_url=url, headers=headers, timeout=10, limits=limits) as client:

        async def send(workspace_id: str, document_id: int) -> None:
            async with limit:
                reply = await client.post(reprocess_path(workspace_id, document_id))
                assert reply.status_code == 202, reply.text

        started = time.perf_counter()
        await asyncio.gather(*(send(w, d) for w, d in documents))
        return len(documents) / (time.perf_counter() - started)


def main() -> None:
    cli = parser(__doc__)
    cli.add_argument("--redis-url", required=True, help="an EMPTY Redis database; flushed at the end")
    cli.add_argument("--documents", type=int, default=4000, help="half sent one by one, half 16 at a time")
    cli.add_argument("--concurrency", type=int, default=16)
    args = cli.parse_args()

    with empty_redis(args.redis_url), Pg().scratch(DB) as database_url:
        env = {
            **os.environ,
            "SAMPLEAPP_DATABASE_URL": database_url,
            "SAMPLEAPP_REDIS_URL": args.redis_url,
            "SAMPLEAPP_TOKEN": TOKEN,
        }
        api = subprocess.Popen(
            [sys.executable, "-m", "sampleapp", "api", "--port", "0", "--with-worker", "--seed", str(args.documents)],
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            text=True,
        )
        try:
            assert api.stdout is not None
            url = next(line for line in api.stdout if "listening on" in line).strip().rsplit(" ", 1)[-1]
            with psycopg.connect(database_url) as conn:
                documents = conn.execute("SELECT workspace_id::text, id FROM documents ORDER BY id").fetchall()
            half = len(documents) // 2
            sequential = sequential_rate(url, documents[:half])
            parallel = asyncio.run(concurrent_rate(url, documents[half:], args.concurrency))
            print(
                f"sampleapp API, {len(documents):,} reprocess requests (all 202), worker running:\n"
                f"  sequential httpx loop:           {sequential:8,.0f} requests/s\n"
                f"  {args.concurrency} in flight (AsyncClient):      {parallel:8,.0f} requests/s  "
                f"ratio {parallel / sequential:.2f}"
            )
        finally:
            api.terminate()
            api.wait(timeout=30)


if __name__ == "__main__":
    main()
