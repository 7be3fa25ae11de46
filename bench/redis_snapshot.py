#!/usr/bin/env python
"""Redis snapshot and restore benchmark: the console's logical snapshot against `redis-cli --rdb FILE`, and the
console's restore against `redis-cli --pipe` of the same RESTORE commands, on the same data, in one run.

1. Loads N small keys (strings of ~11 bytes, one in ten with a TTL) into a spare Redis database with
   `redis-cli --pipe` (refuses a database that is not empty, or is the console's broker).
2. Snapshot, raw: `redis-cli --rdb FILE`. It dumps the WHOLE server (every database, whatever else is in them),
   through the replication protocol, after the server's `repl-diskless-sync-delay` (up to 5 s by default on
   Redis 7): the script prints the command's time and the time from the server's start of the transfer.
   Snapshot, console: the backup job in this process (backup_artifact_execute: SCAN + pipelined DUMP/PTTL,
   checksummed records, sha256, temporary key, promotion), at each compression level asked for, with the
   process's RSS sampled every 10 ms (peak over the baseline: memory must stay flat whatever N).
   Verification (every record read back) is timed too.
3. Restore, raw: the same RESTORE ... ABSTTL commands the console sends, written to a RESP file beforehand
   (not timed) and fed with `redis-cli -n DB --pipe` into an empty second database. There is no faster raw
   baseline on a shared server: loading an RDB needs DEBUG RELOAD or a restart, which would hit every database.
   Restore, console: restore_run_execute into the same emptied database (file re-read and checked, RESTORE of every
   key, PING, restored = expected, an independent EXISTS count of every key).
4. Prints times, keys/s and the ratios console/raw; repeat with --sizes to show memory is flat.

    .venv/bin/python bench/redis_snapshot.py --sizes 100000,1000000 --db 7 --restore-db 6

This is a script, not a test: it asserts nothing about wall-clock time. Both databases are flushed (FLUSHDB on
their own numbers only) at the end.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import redis
from harness.clients import empty_redis
from harness.core import mib, parser, temporary_workdir
from harness.inprocess import django_database
from harness.measure import Laps, PeakRss, median

CONSOLE_DB = "drc_bench_redis"


def resp(*parts: bytes) -> bytes:
    out = [b"*%d\r\n" % len(parts)]
    for part in parts:
        out.append(b"$%d\r\n%s\r\n" % (len(part), part))
    return b"".join(out)


def redis_cli(url: str, *args: str, stdin: Any = None) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(["redis-cli", "-u", url, *args], stdin=stdin, capture_output=True, check=False)


def pipe_into(url: str, path: Path, what: str) -> None:
    """`redis-cli --pipe` of a file of commands; any error ends the script."""
    with path.open("rb") as handle:
        result = redis_cli(url, "--pipe", stdin=handle)
    if result.returncode or b"errors: 0" not in result.stdout:
        sys.exit(f"{what} failed: {(result.stdout + result.stderr).decode()[-300:]}")


def load_keys(url: str, start: int, stop: int, work: Path) -> None:
    """SET bench:key:N with a short value; every tenth key expires in an hour."""
    path = work / "load.resp"
    with path.open("wb") as out:
        for i in range(start, stop):
            key, value = b"bench:key:%07d" % i, b"v%010d" % i
            out.write(resp(b"SET", key, value, b"EX", b"3600") if i % 10 == 0 else resp(b"SET", key, value))
    pipe_into(url, path, "loading keys")
    path.unlink()


def rdb_dump(server: str, path: Path) -> tuple[float, float]:
    """`redis-cli --rdb PATH`: (the whole command's time, the time from the server's start of the transfer, which
    redis-cli announces with "SYNC sent to master" once the server's repl-diskless-sync-delay has passed)."""
    started = time.monotonic()
    transfer_started = started
    proc = subprocess.Popen(
        ["redis-cli", "-u", server, "--rdb", str(path)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )
    assert proc.stdout is not None
    output = b""
    for line in proc.stdout:
        output += line
        if b"SYNC sent" in line:
            transfer_started = time.monotonic()
    if proc.wait():
        sys.exit(f"redis-cli --rdb failed: {output.decode()[-300:]}")
    finished = time.monotonic()
    return finished - started, max(finished - transfer_started, 0.001)


def restore_phases(storage_key: str, target: redis.Redis, work: Path) -> str:
    """The restore's three passes over the file, timed one by one with the primitives the run uses."""
    from backups import artifacts, redis_snapshot
    from restores import redis_restore

    match = redis_restore.key_matcher("")

    def records() -> Any:
        return redis_snapshot.SnapshotReader(artifacts.iter_chunks(storage_key)).records()

    target.flushdb()
    lap = Laps()
    with lap("sha256 re-read"):
        redis_restore.redis_preflight(
            target, artifacts.iter_chunks(storage_key), match=match, check_conflicts=False, checkpoint=lambda: None
        )
    with lap("parse only"):
        parsed = sum(1 for _record in records())
    with lap("RESTORE pass"):
        result = redis_restore.redis_restore(target, records(), match=match, replace=False, checkpoint=lambda: None)
    with lap("checks pass"):
        redis_restore.redis_checks(target, records(), match=match, result=result, target_label="bench")
    with lap("conflict lookup (non-empty target)"):
        redis_restore.redis_preflight(
            target, artifacts.iter_chunks(storage_key), match=match, check_conflicts=True, checkpoint=lambda: None
        )
    target.flushdb()
    assert parsed == result.restored
    return lap.summary()


def main() -> None:
    cli = parser(__doc__)
    cli.add_argument("--sizes", default="1000000", help="key counts, comma-separated, loaded cumulatively")
    cli.add_argument("--server", default="redis://127.0.0.1:6379", help="Redis server (no database number)")
    cli.add_argument("--db", type=int, default=7, help="spare database to back up (must be empty)")
    cli.add_argument("--restore-db", type=int, default=6, help="spare database to restore into (must be empty)")
    cli.add_argument("--broker-db", type=int, default=8, help="broker database of the console in this process")
    cli.add_argument("--levels", default="1,0", help="compression levels of the console snapshot")
    cli.add_argument("--repeat", type=int, default=2, help="rounds per side at each size")
    args = cli.parse_args()
    source_url, target_url = f"{args.server}/{args.db}", f"{args.server}/{args.restore_db}"
    if len({args.db, args.restore_db, args.broker_db}) != 3:
        sys.exit("--db, --restore-db and --broker-db must be three different databases")
    with (
        empty_redis(source_url, target_url) as (source, target),
        temporary_workdir("bench-redis-") as work,
        django_database(
            CONSOLE_DB,
            quiet=True,
            DJANGO_DEBUG="True",
            CELERY_BROKER_URL=f"{args.server}/{args.broker_db}",
            ARTIFACT_DIR=str(work / "artifacts"),
            DR_SCRATCH_DIR=str(work / "scratch"),
            BACKUP_VERIFY_AFTER_DUMP="False",
        ),
    ):
        run(args, source_url, target_url, source, target, work)


def run(
    args: argparse.Namespace, source_url: str, target_url: str, source: redis.Redis, target: redis.Redis, work: Path
) -> None:
    from django.contrib.auth.models import User

    from backups import redis_snapshot
    from backups.models import BackupArtifact
    from backups.services import backup_artifact_execute, backup_artifact_request
    from backups.verification import backup_artifact_verify
    from inventory.models import Datastore, Environment
    from restores.models import RestoreRun
    from restores.services import restore_run_execute, restore_run_request

    os.environ["BENCH_SOURCE_URL"], os.environ["BENCH_TARGET_URL"] = source_url, target_url
    env = Environment.objects.create(name="bench")
    store = Datastore.objects.create(environment=env, name="bench-source", kind="redis", url_env="BENCH_SOURCE_URL")
    copy = Datastore.objects.create(environment=env, name="bench-target", kind="redis", url_env="BENCH_TARGET_URL")
    user = User.objects.create_superuser("bench", "", "x")
    delay = int(source.config_get("repl-diskless-sync-delay").get("repl-diskless-sync-delay") or 0)
    info = source.info()
    print(
        f"Redis {info['redis_version']} at {args.server}, databases {args.db} -> {args.restore_db}, "
        f"repl-diskless-sync-delay {delay} s, {os.cpu_count()} cores, hiredis {redis.utils.HIREDIS_AVAILABLE}"
    )
    loaded = 0
    for size in [int(s) for s in args.sizes.split(",")]:
        load_keys(source_url, loaded, size, work)
        loaded = size
        others = sum(v.get("keys", 0) for k, v in source.info("keyspace").items() if k != f"db{args.db}")
        print(f"\n== {size:,} keys in database {args.db} (the rest of the server holds {others:,} keys)")

        rdb = work / "dump.rdb"
        raw_times, net_times = [], []
        for _ in range(args.repeat):
            whole, transfer = rdb_dump(args.server, rdb)
            raw_times.append(whole)
            net_times.append(transfer)
        raw, raw_net = median(raw_times), median(net_times)
        print(
            f"  raw  redis-cli --rdb (whole server)  {raw:7.2f} s; {raw_net:6.2f} s from the server's start of the "
            f"transfer (after its up to {delay} s wait); {mib(rdb.stat().st_size)}"
        )

        artifact = None
        for level in [int(x) for x in args.levels.split(",")]:
            store.compression_level = level
            store.save()
            lap, peaks = Laps(), []
            for _ in range(args.repeat):
                artifact = backup_artifact_request(datastore=store, trigger="bench", enqueue=False)
                with PeakRss() as rss, lap("snapshot"):
                    backup_artifact_execute(artifact_id=artifact.pk, verify_after=False)
                peaks.append(rss.peak - rss.baseline)
                artifact.refresh_from_db()
                if artifact.status != BackupArtifact.Status.SUCCEEDED:
                    sys.exit(f"console snapshot failed: {artifact.error}")
            console = lap.median("snapshot")
            print(
                f"  console snapshot, zlib level {level}     {console:7.2f} s, {size / console:9,.0f} keys/s, "
                f"{mib(artifact.size_bytes or 0) if artifact else 0}, RSS +{mib(max(peaks))} at peak; "
                f"ratio console/raw {console / raw:.2f} (against the transfer alone {console / raw_net:.2f})"
            )
        assert artifact is not None
        lap = Laps()
        with lap("verify"):
            verdict = backup_artifact_verify(artifact_id=artifact.pk)
        print(f"  console verify (every record)      {lap.last('verify'):7.2f} s: {verdict}")

        # The raw restore's input: the very RESTORE commands the console sends, from the same snapshot.
        commands = work / "restore.resp"
        storage_path = work / "artifacts" / artifact.storage_key
        with commands.open("wb") as out, storage_path.open("rb") as stored:
            reader = redis_snapshot.SnapshotReader(iter(lambda: stored.read(1 << 20), b""))
            for record in reader.records():
                ttl = b"0" if record.expire_at_ms == redis_snapshot.NO_EXPIRY else b"%d" % record.expire_at_ms
                out.write(resp(b"RESTORE", record.key, ttl, record.payload, b"ABSTTL"))
        for _ in range(args.repeat):
            target.flushdb()
            with lap("raw"):
                pipe_into(target_url, commands, "redis-cli --pipe")
            target.flushdb()
            run_row = restore_run_request(
                artifact=artifact,
                target_kind=RestoreRun.TargetKind.DATASTORE,
                target_datastore=copy,
                requested_by=user,
                reason="benchmark",
                enqueue=False,
            )
            with lap("console"):
                restore_run_execute(run_id=run_row.pk)
            run_row.refresh_from_db()
            if run_row.status != RestoreRun.Status.SUCCEEDED:
                sys.exit(f"console restore failed: {run_row.error}")
        commands.unlink()
        raw_r, console_r = lap.median("raw"), lap.median("console")
        print(f"  raw  redis-cli --pipe of RESTOREs   {raw_r:7.2f} s, {size / raw_r:9,.0f} keys/s")
        print(
            f"  console restore (checks included)  {console_r:7.2f} s, {size / console_r:9,.0f} keys/s; "
            f"ratio console/raw {console_r / raw_r:.2f}"
        )
        print("  console restore, phase by phase:   " + restore_phases(artifact.storage_key, target, work))
        rdb.unlink(missing_ok=True)
        target.flushdb()


if __name__ == "__main__":
    main()
