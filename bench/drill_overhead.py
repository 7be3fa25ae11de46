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

import json
import os
import subprocess
import sys
from pathlib import Path

import psycopg
from harness.console import Console
from harness.core import mib, parser, say, temporary_workdir
from harness.measure import Laps, interleaved_rounds, median
from harness.pg import Pg

CONSOLE_DB = "drc_bench_drill"
BROKER_URL = "redis://127.0.0.1:6379/6"


def make_source(pg: Pg, name: str, size_mb: int) -> None:
    """The source database, generated unless it exists (never left half-made)."""
    if pg.exists(name):
        return
    pg.create(name)
    rows = size_mb * 1024 * 1024 // 700  # about 700 bytes a row on disk, half of it incompressible
    say(f"generating {name}: {rows:,} documents...")
    try:
        _fill(pg.url(name), rows)
    except BaseException:
        pg.drop(name)
        raise


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


def raw_drill(pg: Pg, name: str, archive: Path, jobs: int) -> subprocess.CompletedProcess[str]:
    """What a drill does, with the raw tools: CREATE DATABASE, pg_restore, DROP DATABASE."""
    try:
        return pg.restore_into(name, archive, jobs, "--no-owner", "--no-privileges")
    finally:
        pg.drop(name)


def main() -> None:
    cli = parser(__doc__)
    cli.add_argument("--size-mb", type=int, default=256)
    cli.add_argument("--repeat", type=int, default=3)
    cli.add_argument("--jobs", type=int, default=2)
    args = cli.parse_args()

    pg = Pg()
    source = f"bench_drill_src_{args.size_mb}m"
    make_source(pg, source, args.size_mb)
    say(
        f"drill overhead benchmark, source {source} ({pg.pretty_size(source)}), --jobs {args.jobs}, "
        f"{os.cpu_count()} cores"
    )

    lap = Laps()
    rtos: list[float] = []
    with temporary_workdir("bench-drill-") as work:
        console = Console(
            pg, CONSOLE_DB, BROKER_URL, work, source_db=source, extra_env={"RESTORE_JOBS": str(args.jobs)}
        )
        try:
            console.prepare()
            console.load_datastore("bench-source", drill_probes=["SELECT count(*) > 0 FROM documents"])
            backup = console.backup_inline("bench-source")
            archive = console.artifact_dir / backup["storage_key"]
            say(f"  backup #{backup['id']}: {mib(backup['size_bytes'])}")

            for round_no, side in interleaved_rounds(args.repeat):
                with lap(side):
                    if side == "raw":
                        result = raw_drill(pg, f"bench_drill_raw_{round_no}", archive, args.jobs)
                    else:
                        result = console.manage("drill", "bench-source", "--inline", "--json", check=False)
                if result.returncode:
                    sys.exit(f"{side} failed: {(result.stderr or result.stdout).strip()[-500:]}")
                if side == "console":
                    summary = json.loads(result.stdout)
                    assert summary["scratch_dropped"] is True
                    rtos.append(summary["rto_seconds"])
                    say(f"    console {lap.last(side):7.2f} s   (measured RTO {summary['rto_seconds']:.2f} s)")
                else:
                    say(f"    raw     {lap.last(side):7.2f} s")
        finally:
            console.drop()
    raw, drill, rto = lap.median("raw"), lap.median("console"), median(rtos)
    say(
        f"=> raw createdb + pg_restore + dropdb median {raw:.2f} s; console drill (process start, checks, drop "
        f"included) median {drill:.2f} s, ratio {drill / raw:.3f}; measured RTO median {rto:.2f} s, "
        f"ratio to raw {rto / raw:.3f}"
    )
    say(f"   (the source database {source} is kept for the next run; drop it when done)")


if __name__ == "__main__":
    main()
