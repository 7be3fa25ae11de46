"""What differs between backup formats when restoring: the options a request freezes, whether a new database can
be the target, the restore itself (restores.pg_restore, restores.redis_restore) and what the reaper cleans up after
a lost worker. The workflow around it is restores.services'."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from django.conf import settings
from django.utils.translation import gettext as _

from backups.models import BackupArtifact
from dr_console.jobs import JobContext
from restores import pg_restore, redis_restore
from restores.errors import RestoreRefused
from restores.models import RestoreRun


def _pg_options(*, jobs: int | None, no_owner: bool, replace: bool, key_pattern: str) -> dict[str, Any]:
    if replace or key_pattern:
        raise RestoreRefused(_("replacing keys and key patterns apply to Redis backups only"))
    jobs = settings.RESTORE_JOBS if jobs is None else jobs
    if not 1 <= jobs <= 64:
        raise RestoreRefused(_("--jobs must be between 1 and 64"))
    return {"jobs": jobs, "no_owner": no_owner}


def _redis_options(*, jobs: int | None, no_owner: bool, replace: bool, key_pattern: str) -> dict[str, Any]:
    if jobs is not None or no_owner:
        raise RestoreRefused(_("parallel jobs and --no-owner apply to PostgreSQL backups only"))
    if len(key_pattern) > 1000:
        raise RestoreRefused(_("the key pattern is longer than 1000 characters"))
    try:
        redis_restore.key_matcher(key_pattern)
    except redis_restore.KeyPatternError as exc:
        raise RestoreRefused(str(exc)) from None
    return {"replace": replace, "key_pattern": key_pattern}


@dataclass(frozen=True)
class RestoreMethod:
    """How backups of one format are restored: the options a request freezes, whether a new database can be the
    target, and the restore itself (preconditions, restore, checks)."""

    options: Callable[..., dict[str, Any]]
    execute: Callable[[RestoreRun, JobContext], None]
    new_database: bool
    reaped: Callable[[RestoreRun], None] = lambda run: None


RESTORE_METHODS: dict[BackupArtifact.Format, RestoreMethod] = {
    BackupArtifact.Format.PG_CUSTOM: RestoreMethod(
        options=_pg_options,
        execute=pg_restore.pg_restore_execute,
        new_database=True,
        reaped=pg_restore.pg_restore_reaped,
    ),
    BackupArtifact.Format.REDIS_SNAPSHOT: RestoreMethod(
        options=_redis_options, execute=redis_restore.redis_restore_execute, new_database=False
    ),
}
