"""Redis backups: a logical snapshot (SCAN + DUMP, docs/redis-snapshot-format.md) streamed into storage, and read
back record by record for verification. The backup job around it is backups.services'; the format itself is
backups.redis_snapshot."""

from __future__ import annotations

from collections.abc import Iterator

import redis

from backups import artifacts, redis_snapshot
from backups.artifacts import DumpOutcome
from backups.locations import datastore_primary_location
from backups.models import BackupArtifact
from dr_console.jobs import JobContext


def redis_backup_take(artifact: BackupArtifact, ctx: JobContext) -> DumpOutcome:
    """Stream a logical snapshot of the Redis database into storage (backups/redis_snapshot.py).

    Published once the end record is written (artifacts.StagedWrite); on any failure (Redis gone, a cancel
    noticed between batches, storage full) nothing is left at the location: a failed job leaves no artifact.
    """
    target = redis_snapshot.redis_target_from_env(artifact.datastore.url_env)
    location = datastore_primary_location(artifact.datastore)
    client = target.client()
    try:
        version = redis_snapshot.server_version(client)
        info = client.info("keyspace")
    except redis.RedisError as exc:
        raise target.error("cannot read the Redis server", exc) from None
    database = client.connection_pool.connection_kwargs.get("db", 0)
    writer = redis_snapshot.SnapshotWriter(
        meta={
            "redis_version": version.removeprefix("Redis "),
            "db": database,
            "keys_at_start": (info.get(f"db{database}") or {}).get("keys", 0),
            "source": artifact.datastore.name,
        },
        compression_level=artifact.compression_level or 0,
    )
    reader = artifacts.HashingChunkReader(
        redis_snapshot.snapshot_chunks(client, writer, checkpoint=ctx.check), ctx.progress
    )
    try:
        stored = artifacts.stream_to_location(artifact, location, reader, at_end=ctx.check)
        try:
            ctx.check()
            storage_key = stored.staged.publish()
        except BaseException:
            stored.staged.discard()
            raise
    except redis.RedisError as exc:
        raise target.error("the snapshot failed", exc) from None
    finally:
        client.close()
    stats = writer.stats
    notes = []
    if stats.vanished:
        notes.append(f"{stats.vanished} keys vanished during the scan (deleted or expired before DUMP): skipped")
    if stats.repeats:
        notes.append(f"{stats.repeats} repeated keys returned by SCAN were written once")
    return DumpOutcome(
        storage_key=storage_key,
        tool_version=f"DR Console Redis snapshot format {redis_snapshot.FORMAT_VERSION} (redis-py {redis.__version__})",
        server_version=version,
        archive_entries=stats.keys,
        row_counts=stats.types(),
        stderr_tail="\n".join(notes),
        **stored.outcome_fields(),  # type: ignore[arg-type]
    )


def redis_backup_read_through(artifact: BackupArtifact, chunks: Iterator[bytes]) -> None:
    """Every record's checksum, and the end record's count against the keys the backup recorded."""
    redis_snapshot.snapshot_check(chunks, expected_keys=artifact.archive_entries)
