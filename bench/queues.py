#!/usr/bin/env python
"""The RQ queue pages and reads with 100,000 failed jobs, against the raw rq reads of the same data.

Fills a Redis database with real rq jobs in a failed registry (rq's own Job.create + FailedJobRegistry.add,
pipelined), then times, in-process with Django's test client (routing, middleware, queries, Redis, template):
the environment page, the first and a deep page of failed jobs; against rq doing only the reads each page needs
(counts; one page of ids + Job.fetch_many). Then environment_failed_jobs over every job (jobs/s, peak Python
memory) and one "Requeue all" click (jobs/s) against a plain loop of FailedJobRegistry.requeue.

    .venv/bin/python bench/queues.py --redis-url redis://127.0.0.1:6379/12 --jobs 100000

The Redis database must be empty (the script refuses otherwise) and is flushed after. Its own PostgreSQL database
`drc_bench_queues` is created and dropped. This is a script, not a test.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from typing import Any

from harness.clients import empty_redis
from harness.core import parser
from harness.inprocess import django_database, logged_in_client, plain_static_files
from harness.measure import median, median_p95_ms, python_peak, timed

DB = "drc_bench_queues"
QUEUE = "documents"
JOB_FUNCTION = "sampleapp.jobs.reprocess_document"  # only its name and arguments are stored; nothing runs it


def main() -> None:
    cli = parser(__doc__)
    cli.add_argument("--redis-url", required=True, help="an EMPTY Redis database; flushed at the end")
    cli.add_argument("--jobs", type=int, default=100_000)
    cli.add_argument("--repeat", type=int, default=30)
    args = cli.parse_args()

    with (
        empty_redis(args.redis_url) as (connection,),
        django_database(
            DB,
            DJANGO_SECURE_SSL_REDIRECT="False",
            DJANGO_ALLOWED_HOSTS="testserver",
            CELERY_BROKER_URL="redis://127.0.0.1:6379/15",
            LOG_LEVEL="WARNING",
            BENCH_QUEUE_REDIS_URL=args.redis_url,
        ),
    ):
        run(args, connection)


def fill(connection: Any, count: int) -> None:
    from rq import Queue
    from rq.job import Job
    from rq.registry import FailedJobRegistry

    # The first enqueue registers the queue with rq; that job itself is not needed.
    Queue(QUEUE, connection=connection).enqueue(JOB_FUNCTION, "", 0).delete()
    registry = FailedJobRegistry(QUEUE, connection=connection)
    workspace = "0c466ada-10b8-5845-81d8-a9fa83d0c178"
    for start in range(0, count, 1000):
        with connection.pipeline() as pipe:
            for document_id in range(start, min(start + 1000, count)):
                job = Job.create(JOB_FUNCTION, args=(workspace, document_id), connection=connection, origin=QUEUE)
                registry.add(job, ttl=7 * 24 * 3600, exc_string=f"RuntimeError: document {document_id}", pipeline=pipe)
            pipe.execute()


def run(args: argparse.Namespace, connection: Any) -> None:
    from rq import Queue
    from rq.job import Job
    from rq.registry import FailedJobRegistry

    from inventory.models import Datastore, Environment
    from queues import services
    from queues.selectors import environment_failed_jobs

    environment = Environment.objects.create(name="prod")
    store = Datastore.objects.create(
        environment=environment, name="prod-redis", kind="redis", url_env="BENCH_QUEUE_REDIS_URL"
    )
    environment.redis_datastore = store
    environment.save()

    started = time.perf_counter()
    fill(connection, args.jobs)
    print(f"{args.jobs:,} failed rq jobs created in {time.perf_counter() - started:.1f} s")

    client = logged_in_client("olga", ["viewer", "operator"])
    registry = FailedJobRegistry(QUEUE, connection=connection)
    deep_page = args.jobs // 25 - 10

    def raw_counts() -> None:
        queue = Queue(QUEUE, connection=connection)
        assert queue.count >= 0
        for name in ("started_job_registry", "failed_job_registry", "deferred_job_registry", "scheduled_job_registry"):
            getattr(queue, name).get_job_count(cleanup=False)

    def raw_page(page: int) -> Callable[[], Any]:
        def read() -> None:
            ids = registry.get_job_ids((page - 1) * 25, page * 25 - 1, desc=True, cleanup=False)
            for job in Job.fetch_many(ids, connection=connection):
                job.func_name, job.args  # noqa: B018 (decode, as the page does)

        return read

    cases = [
        ("environment page (counts, workers)", "/queues/prod/", {}, raw_counts),
        ("failed jobs, first page (htmx)", f"/queues/prod/{QUEUE}/failed/", {"HX-Request": "true"}, raw_page(1)),
        (
            f"failed jobs, page {deep_page:,} (htmx)",
            f"/queues/prod/{QUEUE}/failed/?page={deep_page}",
            {"HX-Request": "true"},
            raw_page(deep_page),
        ),
    ]
    print(f"\nserver time per request, {args.repeat} requests each after 3 warm-ups (raw = rq alone, same reads):")
    print(f"{'page':42} {'median':>9} {'p95':>9} {'raw median':>11} {'ratio':>7} {'peak mem':>9}")
    with plain_static_files():
        for label, url, headers, raw in cases:
            response = client.get(url, headers=headers)
            assert response.status_code == 200, response.content[:300]
            get = lambda url=url, headers=headers: client.get(url, headers=headers)
            page_median, p95 = median_p95_ms(timed(get, args.repeat))
            raw_median = median(timed(raw, args.repeat)) * 1000
            peak = python_peak(get)
            print(
                f"{label:42} {page_median:8.1f}ms {p95:8.1f}ms {raw_median:10.1f}ms {page_median / raw_median:7.1f} "
                f"{peak / 2**20:7.1f}MiB"
            )

    read_all = lambda: sum(1 for _ in environment_failed_jobs(environment=environment))
    started = time.perf_counter()
    found = read_all()
    elapsed = time.perf_counter() - started
    peak = python_peak(read_all)  # a second pass for memory: tracing slows Python down several times
    started = time.perf_counter()
    raw_found = 0
    for offset in range(0, args.jobs, 500):
        ids = registry.get_job_ids(offset, offset + 499, cleanup=False)
        for job in Job.fetch_many(ids, connection=connection):
            job.args  # noqa: B018
            raw_found += 1
    raw_elapsed = time.perf_counter() - started
    print(
        f"\nenvironment_failed_jobs: {found:,} jobs in {elapsed:.2f} s ({found / elapsed:,.0f} jobs/s), "
        f"peak Python memory {peak / 2**20:.1f} MiB; raw rq chunked read {raw_elapsed:.2f} s "
        f"({raw_found / raw_elapsed:,.0f} jobs/s); ratio {elapsed / raw_elapsed:.2f}"
    )

    with plain_static_files():
        started = time.perf_counter()
        response = client.post(f"/queues/prod/{QUEUE}/failed/requeue/", headers={"HX-Request": "true"})
        elapsed = time.perf_counter() - started
    assert response.status_code == 200
    done = services.REQUEUE_ALL_LIMIT
    started = time.perf_counter()
    for job_id in registry.get_job_ids(0, done - 1, cleanup=False):
        registry.requeue(job_id)
    raw_elapsed = time.perf_counter() - started
    print(
        f"requeue all (one click, {done:,} jobs): {elapsed:.2f} s ({done / elapsed:,.0f} jobs/s); "
        f"raw FailedJobRegistry.requeue loop {raw_elapsed:.2f} s ({done / raw_elapsed:,.0f} jobs/s); "
        f"ratio {elapsed / raw_elapsed:.2f}"
    )


if __name__ == "__main__":
    main()
