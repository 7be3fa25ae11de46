#!/usr/bin/env python
"""Restore overhead benchmark: raw `pg_restore --jobs 2` into a fresh database against the console's
`manage.py restore ID --new-database NAME --wait` of the same artifact (checks included), in one run.

1. Takes one backup of the source database with the console (`manage.py backup --inline`), so both sides
   restore the very same archive file.
2. Starts a real Celery worker (prefork, concurrency 1) with its own console database and broker number.
3. Interleaves, `--repeat` times: raw = `createdb` + `pg_restore --jobs 2 --dbname NEW FILE`; console = the
   restore command with --wait (sha256 re-check, pg_restore --clean --if-exists --jobs 2, SELECT 1,
   SELECT now(), exact row counts). Drops every database it made.
4. Prints the medians and the ratio console / raw.

    .venv/bin/python bench/restore_overhead.py --source-db bench_src_1g --repeat 3

The source database comes from bench/backup_overhead.py (which generates bench_src_<size>g). This is a script,
not a test: it asserts nothing about wall-clock time.
"""

from __future__ import annotations

import os
import sys

from harness.console import Console, Worker, purge_broker
from harness.core import mib, parser, say, temporary_workdir
from harness.measure import Laps, interleaved_rounds
from harness.pg import Pg

CONSOLE_DB = "drc_bench_restore"
BROKER_URL = "redis://127.0.0.1:6379/6"


def main() -> None:
    cli = parser(__doc__)
    cli.add_argument("--source-db", default="bench_src_1g")
    cli.add_argument("--repeat", type=int, default=3)
    cli.add_argument("--jobs", type=int, default=2)
    args = cli.parse_args()

    pg = Pg()
    size = pg.pretty_size(args.source_db)
    if size is None:
        sys.exit(f"source database {args.source_db} not found: run bench/backup_overhead.py first")
    say(f"restore overhead benchmark, source {args.source_db} ({size}), --jobs {args.jobs}, {os.cpu_count()} cores")

    lap = Laps()
    with temporary_workdir("bench-restore-") as work:
        env = {"RESTORE_JOBS": str(args.jobs)}
        console = Console(pg, CONSOLE_DB, BROKER_URL, work, source_db=args.source_db, extra_env=env)
        try:
            console.prepare()
            console.load_datastore("bench-source", environment={"protected": False})
            console.shell(
                "from django.contrib.auth.models import User; User.objects.create_superuser('bench', '', 'x')"
            )
            say("taking the backup both sides restore (console backup --inline)...")
            backup = console.backup_inline("bench-source")
            archive = console.artifact_dir / backup["storage_key"]
            say(f"  backup #{backup['id']}: {mib(backup['size_bytes'])} in {backup['duration_seconds']:.1f} s")

            purge_broker(BROKER_URL)
            with Worker(console, work / "worker.log"):
                for round_no, side in interleaved_rounds(args.repeat):
                    name = f"bench_restore_{side}_{round_no}"
                    pg.drop(name)
                    with lap(side):
                        if side == "raw":
                            result = pg.restore_into(name, archive, args.jobs)
                        else:
                            result = console.manage(
                                "restore",
                                str(backup["id"]),
                                *("--new-database", name, "--as", "bench", "--reason", "benchmark"),
                                *("--wait", "--json"),
                                check=False,
                            )
                    if result.returncode:
                        sys.exit(f"{side} restore failed: {(result.stderr or result.stdout).strip()[-500:]}")
                    say(f"    {side:8} {lap.last(side):7.2f} s")
                    pg.drop(name)
        finally:
            console.drop()
    raw, restore = lap.median("raw"), lap.median("console")
    say(
        f"=> raw pg_restore --jobs {args.jobs} median {raw:.2f} s, console restore --wait median {restore:.2f} s, "
        f"ratio {restore / raw:.3f} (target <= 1.10)"
    )


if __name__ == "__main__":
    main()
