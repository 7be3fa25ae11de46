#!/usr/bin/env python
"""Drill overhead benchmark: what a restore drill costs beyond the raw tools doing the same work, in one run.

1. Generates a source database of about `--size-mb` MiB (documents with text and bytea), unless it exists, and
   takes one backup of it with the console (`manage.py backup --inline`), so both sides restore the same archive.
2. Interleaves, `--repeat` times:
   raw     = CREATE DATABASE + `pg_restore --jobs 2 --no-owner --no-privileges` + DROP DATABASE;
   console = `manage.py drill --inline --json`: preflight, sha256 re-check, the same restore, SELECT 1,
             SELECT now(), exact row counts of every table, one probe, DROP DATABASE, events and audit rows.
3. Prints the medians, the console's measured RTO (its restore part alone), and the ratios console / raw.

    .venv/bin/python bench/drill_overhead.py --size-mb 256 --repeat 3

This is a script, not a test: it asserts nothing about wall-clock time.
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
ADMIN_URL = "postgresql://postgres@127.0.0.1:5432/postgres"


def admin(sql: str) -> None:
    with psycopg.connect(ADMIN_URL, autocommit=True) as conn:
        conn.execute(sql)


def make_source(name: str, size_mb: int) -> str:
    with psycopg.connect(ADMIN_URL, autocommit=True) as conn:
        exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone()
        if not exists:
            conn.execute(f'CREATE DATABASE "{name}"')
    url = f"postgresql://postgres@127.0.0.1:5432/{name}"
    if not exists:
        rows = size_mb * 1024 * 1024 // 700  # about 700 bytes a row on disk, half of it incompressible
        print(f"generating {name}: {rows:,} documents...")
        try:
            _fill(url, rows)
        except BaseException:
            admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')  # never leave a half-made source behind
            raise
    return url


def _fill(url: str, rows: int) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(
            "CREATE TABLE documents (id bigserial PRIMARY KEY, workspace int NOT NULL, title text, "
            "body text, raw bytea, created_at timestamptz DEFAULT now())"
        )
        conn.execute(
            "INSERT INTO documents (workspace, title, body, raw) SELECT i %% 97, 'Document ' || i, "
            "repeat(md5(i::text), 6), decode(md5(random()::text) || md5(random()::text) || md5(random()::text) "
            "|| md5(random()::text) || md5(random()::text) || md5(random()::text) || md5(random()::text) "
            "|| md5(random()::text), 'hex') FROM generate_series(1, %s) i",
            (rows,),
        )
        conn.execute("CREATE INDEX documents_workspace ON documents (workspace)")
        conn.execute("CREATE TABLE workspaces AS SELECT i AS id, 'ws ' || i AS name FROM generate_series(1, 97) i")
        conn.execute("VACUUM ANALYZE")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size-mb", type=int, default=256)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--jobs", type=int, default=2)
    args = parser.parse_args()

    source = f"bench_drill_src_{args.size_mb}m"
    source_url = make_source(source, args.size_mb)
    with psycopg.connect(ADMIN_URL) as conn:
        row = conn.execute("SELECT pg_size_pretty(pg_database_size(%s))", (source,)).fetchone()
    print(f"drill overhead benchmark, source {source} ({row and row[0]}), --jobs {args.jobs}, {os.cpu_count()} cores")

    work = Path(tempfile.mkdtemp(prefix="bench-drill-", dir=ROOT / "var"))
    console_db = "drc_bench_drill"
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
        "BENCH_SOURCE_URL": source_url,
        "RESTORE_JOBS": str(args.jobs),
    }
    config = work / "bench.toml"
    config.write_text(
        '[environments.bench]\n\n[[datastores]]\nname = "bench-source"\nenvironment = "bench"\nkind = "postgres"\n'
        'url_env = "BENCH_SOURCE_URL"\ndrill_probes = ["SELECT count(*) > 0 FROM documents"]\n'
    )
    try:
        for step in ([PYTHON, "manage.py", "migrate", "-v0"], [PYTHON, "manage.py", "loadconfig", str(config)]):
            result = subprocess.run(step, cwd=ROOT, env=env, capture_output=True, text=True, check=False)
            if result.returncode:
                sys.exit(f"{' '.join(step[1:3])} failed: {result.stderr.strip()}")
        result = subprocess.run(
            [PYTHON, "manage.py", "backup", "bench-source", "--inline", "--json"],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            check=False,
        )
        if result.returncode:
            sys.exit(f"backup failed: {result.stderr.strip()}")
        backup = json.loads(result.stdout)
        archive = work / "artifacts" / backup["storage_key"]
        print(f"  backup #{backup['id']}: {backup['size_bytes'] / 2**20:,.1f} MiB")

        raw_times: list[float] = []
        console_times: list[float] = []
        rtos: list[float] = []
        for round_no in range(1, args.repeat + 1):
            order = ["raw", "console"] if round_no % 2 else ["console", "raw"]
            print(f"  round {round_no}/{args.repeat} ({' then '.join(order)}):")
            for side in order:
                started = time.monotonic()
                if side == "raw":
                    name = f"bench_drill_raw_{round_no}"
                    admin(f'CREATE DATABASE "{name}" TEMPLATE template0')
                    result = subprocess.run(
                        [
                            "pg_restore",
                            f"--jobs={args.jobs}",
                            "--no-owner",
                            "--no-privileges",
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
                    admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
                else:
                    result = subprocess.run(
                        [PYTHON, "manage.py", "drill", "bench-source", "--inline", "--json"],
                        cwd=ROOT,
                        env=env,
                        capture_output=True,
                        text=True,
                        check=False,
                    )
                elapsed = time.monotonic() - started
                if result.returncode:
                    sys.exit(f"{side} failed: {(result.stderr or result.stdout).strip()[-500:]}")
                if side == "console":
                    summary = json.loads(result.stdout)
                    assert summary["scratch_dropped"] is True
                    rtos.append(summary["rto_seconds"])
                    console_times.append(elapsed)
                    print(f"    console {elapsed:7.2f} s   (measured RTO {summary['rto_seconds']:.2f} s)")
                else:
                    raw_times.append(elapsed)
                    print(f"    raw     {elapsed:7.2f} s")
    finally:
        admin(f'DROP DATABASE IF EXISTS "{console_db}" WITH (FORCE)')
        shutil.rmtree(work, ignore_errors=True)
    raw, console, rto = statistics.median(raw_times), statistics.median(console_times), statistics.median(rtos)
    print(
        f"=> raw createdb + pg_restore + dropdb median {raw:.2f} s; console drill (process start, checks, drop "
        f"included) median {console:.2f} s, ratio {console / raw:.3f}; measured RTO median {rto:.2f} s, "
        f"ratio to raw {rto / raw:.3f}"
    )
    print(f"   (the source database {source} is kept for the next run; drop it when done)")


if __name__ == "__main__":
    main()
