"""The steps every restore takes, whatever the backup's format: the backup is still what was approved, the safety
backup of the target, and the checks that decide whether it succeeded."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

from backups.models import BackupArtifact
from backups.services import BackupRefused, backup_artifact_execute, backup_artifact_request
from backups.sources import NoUsableSource, ReadFile, artifact_read_file
from dr_console.jobs import JobContext, JobFailed
from restores.health import application_checks
from restores.models import RestoreRun

TargetKind = RestoreRun.TargetKind


def check_artifact_unchanged(run: RestoreRun) -> None:
    artifact = run.artifact
    if artifact.status != BackupArtifact.Status.SUCCEEDED or artifact.sha256 != run.artifact_sha256:
        raise JobFailed(f"backup #{artifact.pk} is no longer the succeeded backup this run was requested for")


@contextlib.contextmanager
def read_backup(run: RestoreRun, ctx: JobContext) -> Iterator[ReadFile]:
    """The run's backup as a checked local file, from the location the run asked for (or the primary), falling
    back to another copy when one cannot be used; the run's log says which was read and why the others were not."""
    prefer = str(run.options.get("location") or "") or None
    try:
        with artifact_read_file(run.artifact, prefer=prefer, checkpoint=ctx.check) as read:
            ctx.update(source_note=read.note())
            yield read
    except NoUsableSource as exc:
        raise JobFailed(f"{exc}; nothing was restored") from None


def checksum_mismatch(digest: str, run: RestoreRun) -> JobFailed:
    return JobFailed(
        f"checksum mismatch: the stored file hashes to {digest}, the run was requested for "
        f"{run.artifact_sha256}; nothing was restored"
    )


def take_safety_backup(run: RestoreRun) -> None:
    """Back up the target before overwriting it, under the run's own lock, and link it to the run."""
    datastore = run.target_datastore
    try:
        safety = backup_artifact_request(
            datastore=datastore, trigger=f"safety backup before restore #{run.pk}", enqueue=False
        )
    except BackupRefused as exc:
        raise JobFailed(f"cannot take the safety backup of {datastore.name}: {exc}; nothing was restored") from None
    RestoreRun.objects.filter(pk=run.pk).update(safety_backup=safety)
    backup_artifact_execute(artifact_id=safety.pk, verify_after=True, lock_held=True)
    safety.refresh_from_db()
    if safety.status != BackupArtifact.Status.SUCCEEDED:
        raise JobFailed(
            f"the safety backup of {datastore.name} (backup #{safety.pk}) failed: {safety.error}; nothing was restored"
        )


def record_checks(run: RestoreRun, checks: list[dict[str, Any]]) -> None:
    """Add the application's checks to the datastore's, record them all, and succeed only if every one passed."""
    api_url = run.target_datastore.environment.api_url
    if run.target_kind != TargetKind.NEW_DATABASE and api_url:  # the application does not use a new database
        checks = checks + application_checks(api_url)
    RestoreRun.objects.filter(pk=run.pk).update(checks=checks)
    failed = [check for check in checks if not check["ok"]]
    if failed:
        raise JobFailed("check failed: " + "; ".join(f"{c['name']}: {c['detail']}" for c in failed))
