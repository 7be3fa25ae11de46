#!/usr/bin/env python
"""Backups list, dashboard and /metrics server time with 100,000 artifacts (and a drill per 20 of them): first
page, a deep page, filtered pages, the dashboard with its 30-day charts, a Prometheus scrape. Median and p95.

Runs the real view in-process (Django's test client: URL routing, middleware, queries, template rendering; no
network), against its own PostgreSQL database `drc_bench_pages`, which it creates, fills and drops.

    .venv/bin/python bench/pages.py --artifacts 100000 --repeat 40

Target (issue 4): p95 under 100 ms on this machine. This is a script, not a test.
"""

from __future__ import annotations

import argparse
import random
import time
from datetime import timedelta

from harness.core import parser
from harness.inprocess import django_database, logged_in_client, plain_static_files
from harness.measure import median_p95_ms, timed

DB = "drc_bench_pages"
METRICS_TOKEN = "bench-token"


def main() -> None:
    cli = parser(__doc__)
    cli.add_argument("--artifacts", type=int, default=100_000)
    cli.add_argument("--repeat", type=int, default=40)
    args = cli.parse_args()
    with django_database(
        DB,
        DJANGO_SECURE_SSL_REDIRECT="False",
        DJANGO_ALLOWED_HOSTS="testserver",
        METRICS_BEARER_TOKEN=METRICS_TOKEN,
    ):
        run(args)


def fill(count: int) -> tuple[list, list, int]:
    """`count` artifacts over 20 datastores in 3 environments, a drill for every 20 of them."""
    from django.utils import timezone

    from backups.models import BackupArtifact
    from drills.models import DrillRun
    from inventory.models import Datastore, Environment

    envs = [Environment.objects.create(name=name, protected=name == "prod") for name in ("prod", "staging", "dev")]
    stores = [
        Datastore.objects.create(environment=envs[i % 3], name=f"db-{i}", kind="postgres", url_env=f"DB{i}_URL")
        for i in range(20)
    ]
    rng = random.Random(7)
    now = timezone.now()
    batch: list[BackupArtifact] = []
    statuses = ["succeeded"] * 90 + ["failed"] * 9 + ["running"]
    seen_active: set[int] = set()
    for i in range(count):
        store = stores[i % 20]
        status = rng.choice(statuses)
        if status == "running" and store.pk in seen_active:  # one active backup per datastore (constraint)
            status = "succeeded"
        if status == "running":
            seen_active.add(store.pk)
        created = now - timedelta(minutes=(count - i) * 10)
        batch.append(
            BackupArtifact(
                datastore=store,
                status=status,
                created_at=created,
                started_at=created,
                finished_at=None if status == "running" else created + timedelta(minutes=3),
                duration=None if status == "running" else timedelta(minutes=3),
                size_bytes=rng.randint(10**6, 10**10),
                sha256=f"{i:064x}",
                storage_key=f"k/{i}.dump",
                verification=rng.choice(["verified", "verified", "unverified", "corrupt"]),
                row_counts={"public.documents": rng.randint(0, 10**6)},
                trigger="schedule",
            )
        )
        if len(batch) == 5000:
            BackupArtifact.objects.bulk_create(batch)
            batch = []
    BackupArtifact.objects.bulk_create(batch)
    drills = []
    for i in range(0, count, 20):  # a drill for every 20 backups, a tenth of them failed
        created = now - timedelta(minutes=(count - i) * 10 - 5)
        failed = rng.random() < 0.1
        drills.append(
            DrillRun(
                datastore=stores[(i // 20) % 20],
                status="failed" if failed else "succeeded",
                server_url_env="X",
                created_at=created,
                started_at=created,
                finished_at=created + timedelta(minutes=8),
                duration=timedelta(minutes=8),
                rto=timedelta(seconds=rng.randint(60, 900)),
                scratch_database=f"dr_drill_{i}",
                scratch_dropped=True,
            )
        )
    DrillRun.objects.bulk_create(drills, batch_size=5000)
    return envs, stores, len(drills)


def run(args: argparse.Namespace) -> None:
    from django.db import connection

    from backups.models import BackupArtifact
    from dr_console.history import page_cursor

    started = time.perf_counter()
    envs, stores, drills = fill(args.artifacts)
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE")
    print(
        f"{args.artifacts:,} artifacts and {drills:,} drills in 20 datastores created in "
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
        "dashboard (with 30-day charts)": "/",
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
