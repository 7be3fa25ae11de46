#!/usr/bin/env python
"""One page's server time on a database kept between runs, to compare two versions of the code on the same data
in the same minutes (this machine varies by ±30 % from one run to the next, so figures from different runs do not
compare). The database is created, filled like bench/pages.py's and vacuumed the first time, then kept.

    git worktree add --detach /work/before 85c1988 && ln -s "$PWD/.venv" /work/before/.venv
    for i in 1 2 3; do
        .venv/bin/python bench/page_ab.py --url / --code /work/before
        .venv/bin/python bench/page_ab.py --url /
    done
    .venv/bin/python bench/page_ab.py --drop

The database is migrated by the code measured: measure the newer code first, and the older code must not read a
column a later migration removed. This is a script, not a test."""

from __future__ import annotations

from pathlib import Path

from harness.core import ROOT, parser
from harness.inprocess import logged_in_client, plain_static_files, setup_django
from harness.measure import median_p95_ms, timed
from harness.pg import Pg

DB = "drc_bench_kept"


def main() -> None:
    cli = parser(__doc__)
    cli.add_argument("--url", default="/", help="the page, e.g. / or /datastores/db-3/ (default /)")
    cli.add_argument("--code", type=Path, default=ROOT, help="the checkout whose code serves it (default this one)")
    cli.add_argument("--repeat", type=int, default=30)
    cli.add_argument("--datastores", type=int, default=500)
    cli.add_argument("--artifacts", type=int, default=1_000_000)
    cli.add_argument("--db", default=DB, help=f"the kept database (default {DB})")
    cli.add_argument("--drop", action="store_true", help="drop the kept database and stop")
    args = cli.parse_args()
    pg = Pg()
    if args.drop:
        pg.drop(args.db)
        return
    if not pg.exists(args.db):
        pg.create(args.db)
    setup_django(
        args.code,
        DATABASE_URL=pg.url(args.db, scheme="postgres"),
        DJANGO_SECURE_SSL_REDIRECT="False",
        DJANGO_ALLOWED_HOSTS="testserver",
    )
    from django.contrib.auth.models import User
    from django.core.management import call_command
    from django.db import connection

    from inventory.models import Datastore

    call_command("migrate", verbosity=0)
    if not Datastore.objects.exists():
        import pages

        pages.fill(args.artifacts, args.datastores)
        with connection.cursor() as cursor:
            cursor.execute("VACUUM ANALYZE")
    User.objects.filter(username="vera").delete()
    client = logged_in_client("vera", ["viewer"])
    with plain_static_files():
        assert client.get(args.url).status_code == 200, args.url
        times = timed(lambda: client.get(args.url), args.repeat)
    median, p95 = median_p95_ms(times)
    print(f"{args.code}: {args.url} median {median:.1f} ms, p95 {p95:.1f} ms, min {min(times) * 1000:.1f} ms")


if __name__ == "__main__":
    main()
