#!/usr/bin/env python
"""Backups list, dashboard and /metrics server time with 100,000 artifacts (and a drill per 20 of them) over 20
datastores, or any other scale: first page, a deep page, filtered pages, the dashboard (whole, one environment,
what needs attention), a datastore page, a Prometheus scrape. Median and p95.

Runs the real view in-process (Django's test client: URL routing, middleware, queries, template rendering; no
network), against its own PostgreSQL database `drc_bench_pages`, which it creates, fills and drops.

    .venv/bin/python bench/pages.py --artifacts 100000 --repeat 40
    .venv/bin/python bench/pages.py --datastores 500 --artifacts 1000000 --repeat 40

Target (issue 4): p95 under 100 ms on this machine. This is a script, not a test.
"""

from __future__ import annotations

import argparse
import time

from harness.core import parser
from harness.inprocess import django_database, logged_in_client, plain_static_files
from harness.measure import median_p95_ms, timed

DB = "drc_bench_pages"
METRICS_TOKEN = "bench-token"


def main() -> None:
    cli = parser(__doc__)
    cli.add_argument("--artifacts", type=int, default=100_000)
    cli.add_argument("--datastores", type=int, default=20)
    cli.add_argument("--repeat", type=int, default=40)
    cli.add_argument("--db", default=DB, help=f"the bench's own database (default {DB}), created and dropped")
    args = cli.parse_args()
    with django_database(
        args.db,
        DJANGO_SECURE_SSL_REDIRECT="False",
        DJANGO_ALLOWED_HOSTS="testserver",
        METRICS_BEARER_TOKEN=METRICS_TOKEN,
    ):
        run(args)


def fill(count: int, datastore_count: int) -> tuple[list, list, int]:
    """`count` artifacts over `datastore_count` datastores in 3 environments (plus one per 50 datastores beyond
    100), a drill for every 20 backups. The artifacts and drills are written by PostgreSQL itself
    (generate_series): a million rows in seconds, where the ORM takes minutes. A tenth of the datastores end in a
    failed backup, so the dashboard has problems to put first."""
    from django.db import connection
    from django.utils import timezone

    from inventory.models import Datastore, Environment

    names = ["prod", "staging", "dev", *(f"team-{i}" for i in range(max(0, datastore_count - 100) // 50))]
    envs = [Environment.objects.create(name=name, protected=name == "prod") for name in names]
    stores = Datastore.objects.bulk_create(
        Datastore(environment=envs[i % len(envs)], name=f"db-{i}", kind="postgres", url_env=f"DB{i}_URL")
        for i in range(datastore_count)
    )
    ids = [store.pk for store in stores]
    now = timezone.now()
    with connection.cursor() as cursor:
        # Artifact i belongs to datastore i % N, taken (count - i) * 10 minutes ago; 1 in 11 failed, a quarter
        # corrupt or unverified; the newest of every tenth datastore failed; one running per datastore at most.
        cursor.execute(
            """
            INSERT INTO backups_backupartifact (
                created_at, started_at, finished_at, duration, error, stderr_tail, trigger, task_id, process_host,
                cleanup_pending, datastore_id, status, verification, verification_error, format, bytes_done,
                size_bytes, sha256, storage_key, tool_version, server_version, row_counts, pin_reason)
            SELECT t, t, t + interval '3 minutes', interval '3 minutes',
                   CASE WHEN st = 'failed' THEN 'pg_dump exited with status 1' ELSE '' END, '', 'schedule', '', '',
                   false, ids[1 + i %% n], st,
                   CASE WHEN st <> 'succeeded' THEN 'unverified'
                        WHEN i %% 4 = 0 THEN 'corrupt' WHEN i %% 4 = 1 THEN 'unverified' ELSE 'verified' END,
                   '', 'pg_custom', 0, 1000000 + (i::bigint * 7919) %% 1000000000, lpad(to_hex(i), 64, '0'),
                   'k/' || i || '.dump', 'pg_dump (PostgreSQL) 15', 'PostgreSQL 15',
                   jsonb_build_object('public.documents', i %% 1000000), ''
            FROM (
                SELECT i, %(now)s::timestamptz - (%(count)s - i) * interval '10 minutes' AS t,
                       CASE WHEN i >= %(count)s - %(n)s AND (i %% %(n)s) %% 10 = 0 THEN 'failed'
                            WHEN i %% 11 = 0 THEN 'failed' ELSE 'succeeded' END AS st,
                       %(ids)s::bigint[] AS ids, %(n)s AS n
                FROM generate_series(0, %(count)s - 1) AS i
            ) AS rows
            """,
            {"now": now, "count": count, "ids": ids, "n": len(ids)},
        )
        cursor.execute(
            """
            INSERT INTO drills_drillrun (
                created_at, started_at, finished_at, duration, rto, error, stderr_tail, trigger, task_id,
                process_host, cleanup_pending, datastore_id, status, server_url_env, scratch_database,
                scratch_dropped, checks)
            SELECT t, t, t + interval '8 minutes', interval '8 minutes', (60 + i %% 840) * interval '1 second',
                   '', '', 'schedule', '', '', false, ids[1 + (i / 20) %% n],
                   CASE WHEN i %% 200 = 0 THEN 'failed' ELSE 'succeeded' END, 'X', 'dr_drill_' || i, true, '[]'
            FROM (
                SELECT i, %(now)s::timestamptz - ((%(count)s - i) * 10 - 5) * interval '1 minute' AS t,
                       %(ids)s::bigint[] AS ids, %(n)s AS n
                FROM generate_series(0, %(count)s - 1, 20) AS i
            ) AS rows
            """,
            {"now": now, "count": count, "ids": ids, "n": len(ids)},
        )
        drills = cursor.rowcount
    return envs, stores, drills


def run(args: argparse.Namespace) -> None:
    from django.db import connection

    from backups.models import BackupArtifact
    from dr_console.history import page_cursor

    started = time.perf_counter()
    envs, stores, drills = fill(args.artifacts, args.datastores)
    with connection.cursor() as cursor:
        # What autovacuum does after a million inserts: statistics, and the visibility map index-only scans need.
        cursor.execute("VACUUM ANALYZE")
    print(
        f"{args.artifacts:,} artifacts and {drills:,} drills in {len(stores)} datastores created in "
        f"{time.perf_counter() - started:.1f} s"
    )

    client = logged_in_client("vera", ["viewer"])
    # A page among the oldest: the far end of the history.
    deep_cursor = page_cursor(BackupArtifact.objects.order_by("created_at", "pk")[1000])
    store = stores[3]
    cases = {
        "first page": "/backups/",
        "deep page (oldest)": f"/backups/?before={deep_cursor}",
        "filtered: datastore + succeeded": f"/backups/?datastore={store.pk}&status=succeeded",
        "filtered: environment + corrupt": f"/backups/?environment={envs[1].pk}&verification=corrupt",
        "filtered, htmx rows partial": f"/backups/?datastore={store.pk}&status=failed",
        "dashboard": "/",
        "dashboard: one environment listed": f"/?environment={envs[1].name}",
        "dashboard: needing attention": "/?state=attention",
        "datastore page (with its chart)": f"/datastores/{store.name}/",
        "metrics (Prometheus scrape)": "/metrics",
    }
    print(f"server time per request, {args.repeat} requests each (after 3 warm-ups):")
    worst = 0.0
    with plain_static_files():
        for label, url in cases.items():
            headers = {"HX-Request": "true"} if "htmx" in label else {}
            if "metrics" in label:
                headers = {"Authorization": f"Bearer {METRICS_TOKEN}"}

            def get(url: str = url, headers: dict[str, str] = headers) -> None:
                response = client.get(url, headers=headers)
                assert response.status_code == 200, (url, response.status_code)

            median, p95 = median_p95_ms(timed(get, args.repeat))
            worst = max(worst, p95)
            print(f"  {label:36} median {median:6.1f} ms   p95 {p95:6.1f} ms")
    print(f"=> worst p95 {worst:.1f} ms (target < 100 ms)")


if __name__ == "__main__":
    main()
