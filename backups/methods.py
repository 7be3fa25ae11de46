"""What differs between backup formats: how a backup is taken and how it is read back. One `BackupMethod` per
artifact format; the job around it (claim, lock, heartbeat, temporary key, promotion, audit, verification's
checksum) is the same for every format (backups.services, backups.verification)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

from backups.artifacts import DumpOutcome
from backups.models import BackupArtifact
from backups.pg_dump import pg_backup_read_through, pg_backup_reaped, pg_backup_take
from backups.redis_backup import redis_backup_read_through, redis_backup_take
from dr_console.jobs import JobContext
from inventory.models import Datastore


@dataclass(frozen=True)
class BackupMethod:
    take: Callable[[BackupArtifact, JobContext], DumpOutcome]
    read_through: Callable[[BackupArtifact, Iterator[bytes]], None]
    reaped: Callable[[BackupArtifact], None] = lambda artifact: None  # after a lost worker: what the server still runs


BACKUP_METHODS: dict[BackupArtifact.Format, BackupMethod] = {
    BackupArtifact.Format.PG_CUSTOM: BackupMethod(
        take=pg_backup_take, read_through=pg_backup_read_through, reaped=pg_backup_reaped
    ),
    BackupArtifact.Format.REDIS_SNAPSHOT: BackupMethod(take=redis_backup_take, read_through=redis_backup_read_through),
}
FORMAT_BY_KIND = {
    Datastore.Kind.POSTGRES: BackupArtifact.Format.PG_CUSTOM,
    Datastore.Kind.REDIS: BackupArtifact.Format.REDIS_SNAPSHOT,
}
