#!/usr/bin/env python
"""How fast the sample application accepts reprocess requests: a plain sequential httpx loop against 16 requests
in flight (httpx.AsyncClient and a semaphore, as the console's reprocess batches send them), in the same run.

Starts the real API and worker (`python -m sampleapp api --with-worker`) on a free port with its own PostgreSQL
database `drc_bench_sampleapp` (created and dropped) and the given EMPTY Redis database (flushed after).

    .venv/bin/python bench/sampleapp_api.py --redis-url redis://127.0.0.1:6379/12 --documents 4000

This is a script, not a test.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import time
from pathlib import Path

import httpx
import psycopg
import redis

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
DB = "drc_bench_sampleapp"
ADMIN = "postgresql://postgres@127.0.0.1:5432/postgres"
TOKEN = "bench-token"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--redis-url", required=True, help="an EMPTY Redis database; flushed at the end")
    parser.add_argument("--documents", type=int, default=4000, help="half sent one by one, half 16 at a time")
    parser.add_argument("--concurrency", type=int, default=16)
    args = parser.parse_args()

    connection = redis.Redis.from_url(args.redis_url)
    if connection.dbsize():
        sys.exit(f"{args.redis_url} is not empty; give an unused database number")
    with psycopg.connect(ADMIN, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{DB}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{DB}"')
    database_url = f"postgresql://postgres@127.0.0.1:5432/{DB}"
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
        headers = {"Authorization": f"Bearer {TOKEN}"}

        started = time.perf_counter()
        with httpx.Client(headers=headers, timeout=10) as client:
            for workspace_id, document_id in documents[:half]:
                reply = client.post(f"{url}/workspaces/{workspace_id}/documents/{document_id}/reprocess")
                assert reply.status_code == 202, reply.text
        sequential = half / (time.perf_counter() - started)

        async def concurrent() -> float:
            limit = asyncio.Semaphore(args.concurrency)
            limits = httpx.Limits(max_connections=args.concurrency)
            async with httpx.AsyncClient(headers=headers, timeout=10, limits=limits) as client:

                async def send(workspace_id: str, document_id: int) -> None:
                    async with limit:
                        reply = await client.post(f"{url}/workspaces/{workspace_id}/documents/{document_id}/reprocess")
                        assert reply.status_code == 202, reply.text

                started = time.perf_counter()
                await asyncio.gather(*(send(w, d) for w, d in documents[half:]))
                return (len(documents) - half) / (time.perf_counter() - started)

        parallel = asyncio.run(concurrent())
        print(
            f"sampleapp API, {len(documents):,} reprocess requests (all 202), worker running:\n"
            f"  sequential httpx loop:           {sequential:8,.0f} requests/s\n"
            f"  {args.concurrency} in flight (AsyncClient):      {parallel:8,.0f} requests/s  "
            f"ratio {parallel / sequential:.2f}"
        )
    finally:
        api.terminate()
        api.wait(timeout=30)
        connection.flushdb()
        with psycopg.connect(ADMIN, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{DB}" WITH (FORCE)')


if __name__ == "__main__":
    main()
