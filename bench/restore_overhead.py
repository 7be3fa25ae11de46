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

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psycopg

ROOT = Path(__file__).resolve().parent.parent
PYTHON = str(ROOT / ".venv" / "bin" / "python")
CELERY = str(ROOT / ".venv" / "bin" / "celery")
ADMIN_URL = "postgresql://postgres@127.0.0.1:5432/postgres"


def admin(sql: str) -> None:
    with psycopg.connect(ADMIN_URL, autocommit=True) as conn:
        conn.execute(sql)


def run(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, cwd=ROOT, env=env, capture_output=True, text=True, check=False)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--source-db", default="bench_src_1g")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--jobs", type=int, default=2)
    args = parser.parse_args()

    with psycopg.connect(ADMIN_URL) as conn:
        row = conn.execute(
            "SELECT pg_size_pretty(pg_database_size(%s)), pg_database_size(%s)", (args.source_db, args.source_db)
        ).fetchone()
    if row is None:
        sys.exit(f"source database {args.source_db} not found: run bench/backup_overhead.py first")
    print(f"restore overhead benchmark, source {args.source_db} ({row[0]}), --jobs {args.jobs}, {os.cpu_count()} cores")

    work = Path(tempfile.mkdtemp(prefix="bench-restore-", dir=ROOT / "var"))
    console_db = "drc_bench_restore"
    admin(f'DROP DATABASE IF EXISTS "{console_db}" WITH (FORCE)')
    admin(f'CREATE DATABASE "{console_db}"')
    env = {
        **os.environ,
        "DJANGO_DEBUG": "True",
        "DATABASE_URL": f"postgres://postgres@127.0.0.1:5432/{console_db}",
        "CELERY_BROKER_URL": "redis://127.0.0.1:6379/6",
        "ARTIFACT_DIR": str(work / "artifacts"),
        "DR_SCRATCH_DIR": str(work / "scratch"),
        "BACKUP_VERIFY_AFTER_DUMP": "False",
        "BENCH_SOURCE_URL": f"postgresql://postgres@127.0.0.1:5432/{args.source_db}",
        "RESTORE_JOBS": str(args.jobs),
    }
    config = work / "bench.toml"
    config.write_text(
        '[environments.bench]\nprotected = false\n\n[[datastores]]\nname = "bench-source"\n'
        'environment = "bench"\nkind = "postgres"\nurl_env = "BENCH_SOURCE_URL"\n'
    )
    for step in (
        [PYTHON, "manage.py", "migrate", "-v0"],
        [PYTHON, "manage.py", "loadconfig", str(config)],
        [
            PYTHON,
            "manage.py",
            "shell",
            "-c",
            "from django.contrib.auth.models import User; User.objects.create_superuser('bench', '', 'x')",
        ],
    ):
        result = run(step, env)
        if result.returncode:
            sys.exit(f"{' '.join(step[1:3])} failed: {result.stderr.strip()}")
    print("taking the backup both sides restore (console backup --inline)...")
    result = run([PYTHON, "manage.py", "backup", "bench-source", "--inline", "--json"], env)
    if result.returncode:
        sys.exit(f"backup failed: {result.stderr.strip()}")
    backup = json.loads(result.stdout)
    archive = work / "artifacts" / backup["storage_key"]
    print(f"  backup #{backup['id']}: {backup['size_bytes'] / 2**20:,.1f} MiB in {backup['duration_seconds']:.1f} s")

    subprocess.run(["redis-cli", "-n", "6", "FLUSHDB"], capture_output=True, check=False)
    worker = subprocess.Popen(
        [CELERY, "-A", "dr_console", "worker", "--pool=prefork", "--concurrency=1", "-l", "warning"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    time.sleep(5)
    raw_times: list[float] = []
    console_times: list[float] = []
    try:
        for round_no in range(1, args.repeat + 1):
            order = ["raw", "console"] if round_no % 2 else ["console", "raw"]
            print(f"  round {round_no}/{args.repeat} ({' then '.join(order)}):")
            for side in order:
                name = f"bench_restore_{side}_{round_no}"
                admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
                started = time.monotonic()
                if side == "raw":
                    admin(f'CREATE DATABASE "{name}" TEMPLATE template0')
                    result = subprocess.run(
                        [
                            "pg_restore",
                            f"--jobs={args.jobs}",
                            "--no-password",
                            "-h",
                            "127.0.0.1",
                            "-U",
                            "postgres",
                            f"--dbname={name}",
                            str(archive),
                        ],
                        capture_output=True,
                        text=True,
                        check=False,
                    )
                else:
                    result = run(
                        [
                            PYTHON,
                            "manage.py",
                            "restore",
                            str(backup["id"]),
                            "--new-database",
                            name,
                            "--as",
                            "bench",
                            "--reason",
                            "benchmark",
                            "--wait",
                            "--json",
                        ],
                        env,
                    )
                elapsed = time.monotonic() - started
                if result.returncode:
                    sys.exit(f"{side} restore failed: {(result.stderr or result.stdout).strip()[-500:]}")
                (raw_times if side == "raw" else console_times).append(elapsed)
                print(f"    {side:8} {elapsed:7.2f} s")
                admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        os.killpg(worker.pid, 15)
        worker.wait(timeout=60)
        admin(f'DROP DATABASE IF EXISTS "{console_db}" WITH (FORCE)')
        shutil.rmtree(work, ignore_errors=True)
    raw, console = statistics.median(raw_times), statistics.median(console_times)
    print(
        f"=> raw pg_restore --jobs {args.jobs} median {raw:.2f} s, console restore --wait median {console:.2f} s, "
        f"ratio {console / raw:.3f} (target <= 1.10)"
    )


if __name__ == "__main__":
    main()
