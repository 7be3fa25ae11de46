"""Backups: request one, take it (pg_dump or a Redis snapshot, streamed into storage), cancel it, end it. This is
where a backup happens.

The BackupArtifact row is the source of truth and the job framework (dr_console.jobs) runs it: a redelivered broker
message never starts a second pg_dump, a finished backup is never redone, and a backup whose worker died or whose
message was lost ends failed. What differs between datastore kinds is one `BackupMethod` per artifact format
(backups.methods); verifications are backups.verification.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging

from django.conf import settings
from django.contrib.auth.models import User
from django.db import IntegrityError, transaction
from django.utils.translation import gettext as _

from audit.models import AuditEvent
from audit.services import audit_job_finished, audit_record
from backups import artifacts
from backups.artifacts import DumpOutcome
from backups.encryption import EncryptionError
from backups.health import datastore_health_check_soon
from backups.locations import LocationUnavailable, location_get, locations_all
from backups.manifests import manifest_write
from backups.methods import BACKUP_METHODS, FORMAT_BY_KIND
from backups.models import ArtifactCopy, BackupArtifact
from backups.object_store import ObjectStoreError, abort_uploads, is_object_store
from dr_console.jobs import (
    JobContext,
    JobFailed,
    JobOutcome,
    JobType,
    job_cancel,
    job_enqueue,
    job_run,
    jobs_reap,
)
from dr_console.notifications import notify_job_failed
from inventory.identity import IdentityUnknown, identity_from_env
from inventory.locks import datastore_target_key, target_lock_held
from inventory.models import Datastore
from inventory.services import DatastoreRefused, datastore_check_target, datastore_identity

logger = logging.getLogger(__name__)
Status = BackupArtifact.Status


class BackupRefused(Exception):
    """A backup request that cannot be accepted; nothing was created."""


# --- requesting ---------------------------------------------------------------------------------------------------


def backup_artifact_request(
    *,
    datastore: Datastore,
    trigger: str,
    triggered_by: User | None = None,
    enqueue: bool = True,
    client_ip: str | None = None,
) -> BackupArtifact:
    """Create a pending backup of `datastore` and hand it to a worker once the row is committed
    (`enqueue=False`: the caller runs it itself, e.g. `manage.py backup --inline`)."""
    try:
        # Asked of the server when its URL is set here (a short wait at most), else what the health checks last
        # found; the worker asks again before it dumps.
        datastore_check_target(datastore, datastore_identity(datastore, timeout=1))
    except DatastoreRefused as exc:
        raise BackupRefused(str(exc)) from None
    level = datastore.compression_level
    try:
        with transaction.atomic():
            running = datastore.artifacts.filter(status__in=BackupArtifact.ACTIVE).first()
            if running:
                raise BackupRefused(
                    _("a backup of %(datastore)s is already %(status)s (#%(id)s)")
                    % {"datastore": datastore.name, "status": running.get_status_display().lower(), "id": running.pk}
                )
            artifact = BackupArtifact.objects.create(
                datastore=datastore,
                format=FORMAT_BY_KIND[Datastore.Kind(datastore.kind)],
                compression_level=settings.BACKUP_DEFAULT_COMPRESSION if level is None else level,
                trigger=trigger[:120],
                triggered_by=triggered_by,
            )
            audit_record(
                action=AuditEvent.Action.BACKUP_REQUESTED,
                actor=triggered_by,
                actor_label="" if triggered_by else trigger,
                obj=artifact,
                details={"datastore": datastore.name, "trigger": trigger},
                client_ip=client_ip,
            )
            if enqueue:
                transaction.on_commit(lambda: _enqueue(artifact.pk))
    except IntegrityError:  # another request won the race the check above could not see
        raise BackupRefused(_("a backup of %(datastore)s is already running") % {"datastore": datastore.name}) from None
    return artifact


def _enqueue(artifact_id: int) -> None:
    from backups.tasks import backup_artifact_execute_task

    job_enqueue(backup_artifact_execute_task, BackupArtifact, pk=artifact_id, artifact_id=artifact_id)


def backup_artifact_cancel(*, artifact_id: int, cancelled_by: User | None, client_ip: str | None = None) -> bool:
    """Cancel a pending or running backup: its worker stops pg_dump (or the snapshot) and deletes the temporary
    file. False when the backup had already ended."""
    who = cancelled_by.get_username() if cancelled_by else "the console"
    cancelled = job_cancel(BACKUP_JOB, pk=artifact_id, who=who)
    if cancelled:
        audit_record(
            action=AuditEvent.Action.BACKUP_CANCELLED,
            actor=cancelled_by,
            obj=BackupArtifact.objects.get(pk=artifact_id),
            client_ip=client_ip,
        )
    return cancelled


# --- taking the backup --------------------------------------------------------------------------------------------


def backup_artifact_execute(*, artifact_id: int, verify_after: bool | None = None, lock_held: bool = False) -> None:
    """Take the backup (the job framework's runner; safe to call twice).

    The job holds its datastore's target lock while it runs, so no restore touches the database meanwhile;
    `lock_held=True` is for a restore taking its safety backup under its own lock.
    """
    verify = settings.BACKUP_VERIFY_AFTER_DUMP if verify_after is None else verify_after

    def work(ctx: JobContext) -> JobOutcome:
        return _backup_work(ctx, verify_after=verify, lock_held=lock_held)

    job_run(dataclasses.replace(BACKUP_JOB, work=work), pk=artifact_id)


def _backup_work(ctx: JobContext, *, verify_after: bool, lock_held: bool) -> JobOutcome:
    artifact = BackupArtifact.objects.select_related("datastore__environment").get(pk=ctx.pk)
    ctx.progress["bytes_done"] = 0
    if lock_held:
        outcome = _take(artifact, ctx)
    else:
        with target_lock_held(
            target_key=_target_key(artifact.datastore),
            holder=artifact,
            target_label=artifact.datastore.name,
            nothing_done="try again when it ends",
        ):
            outcome = _take(artifact, ctx)

    storage = location_get(outcome.location).storage()
    return JobOutcome(
        fields=outcome.fields(),
        # Cancelled or reaped while finishing: the row does not say succeeded, so the file must not stay.
        on_lost=lambda: artifacts.delete_quietly(outcome.storage_key, storage),
        then=lambda: transaction.on_commit(
            lambda: backup_artifact_after_stored(artifact_id=artifact.pk, verify=verify_after)
        ),
    )


def backup_artifact_after_stored(*, artifact_id: int, verify: bool) -> None:
    """What a succeeded backup asks for (taken or imported, backups.imports): its manifest next to its file, its
    copies to each copy location, and its verification."""
    from backups.copies import CopyRefused, artifact_copies_request
    from backups.verification import backup_verification_request_after_backup

    artifact = BackupArtifact.objects.select_related("datastore__environment").get(pk=artifact_id)
    try:
        manifest_write(
            artifact,
            location_get(artifact.location),
            key=artifact.storage_key,
            sha256=artifact.sha256,
            size=artifact.size_bytes or 0,
            recipients=list(artifact.recipients),
        )
    except (OSError, LocationUnavailable, ObjectStoreError) as exc:
        # The backup is good; only `catalog rebuild` would not find it at this location.
        logger.warning("backup #%s: no manifest written next to its file: %s", artifact_id, exc)
    try:
        artifact_copies_request(artifact_id=artifact_id, trigger="after backup")
    except CopyRefused as exc:
        logger.warning("backup #%s: no copies: %s", artifact_id, exc)
    if verify:
        backup_verification_request_after_backup(artifact_id=artifact_id)


def _target_key(datastore: Datastore) -> str:
    """The lock of the database the datastore's URL reaches here (any record, any spelling of its URL), after
    refusing a datastore that reaches the console's own database or broker, or another datastore's database. When
    the server does not answer, the datastore's own key: the dump then fails and says why."""
    try:
        identity = identity_from_env(datastore.kind, datastore.url_env)
    except IdentityUnknown:
        return datastore_target_key(datastore.pk)
    try:
        datastore_check_target(datastore, identity)
    except DatastoreRefused as exc:
        raise JobFailed(f"{exc}; nothing was backed up") from None
    return identity.lock_key


def _take(artifact: BackupArtifact, ctx: JobContext) -> DumpOutcome:
    method = BACKUP_METHODS[BackupArtifact.Format(artifact.format)]
    try:
        return method.take(artifact, ctx)
    except OSError as exc:  # the storage, or the scratch directory: full, read-only, gone
        raise JobFailed(f"cannot write the artifact to storage: {exc}") from None
    except (LocationUnavailable, ObjectStoreError, EncryptionError) as exc:
        raise JobFailed(f"{exc}; nothing was backed up") from None


def _backup_finished(artifact_id: int) -> None:
    """The audit event of an ended backup, and a notification if it failed."""
    artifact = BackupArtifact.objects.select_related("datastore__environment", "triggered_by").get(pk=artifact_id)
    audit_job_finished(
        action=AuditEvent.Action.BACKUP_FINISHED, job=artifact, size_bytes=artifact.size_bytes, sha256=artifact.sha256
    )
    if artifact.status in (Status.FAILED, Status.ERRORED):
        backup_artifact_notify_failed(artifact)
        # Why did it fail: the datastore's health says whether it is the configuration, the server or the backup.
        datastore_health_check_soon(artifact.datastore_id)


def backup_artifact_notify_failed(artifact: BackupArtifact) -> None:
    datastore = artifact.datastore
    notify_job_failed(noun="backup", job=artifact, datastore_name=datastore.name, environment=datastore.environment)


def _backup_reaped(artifact: object) -> None:
    """A backup whose worker died: its temporary file goes (the final key is written only on success), and so does
    what the source's server still runs for it."""
    assert isinstance(artifact, BackupArtifact)
    backup_artifacts_delete_orphans()  # its own among them: the temporary key has a random part, found by listing
    artifact = BackupArtifact.objects.select_related("datastore").get(pk=artifact.pk)
    BACKUP_METHODS[BackupArtifact.Format(artifact.format)].reaped(artifact)


BACKUP_JOB = JobType(
    name="backup",
    model=BackupArtifact,
    work=lambda ctx: _backup_work(ctx, verify_after=settings.BACKUP_VERIFY_AFTER_DUMP, lock_held=False),
    running=Status.RUNNING,
    time_limit=lambda: settings.BACKUP_TIME_LIMIT,
    time_limit_message="time limit of {seconds} s reached; the backup was stopped",
    stale_message="worker lost: no heartbeat; the backup did not finish",
    lost_message="the broker lost the message that hands this backup to a worker; nothing was backed up",
    on_finished=_backup_finished,
    on_reaped=_backup_reaped,
)


# --- reaping ------------------------------------------------------------------------------------------------------


def backup_artifacts_reap_stale() -> int:
    """End backups whose worker died or whose message was lost, delete orphan temporary files. Returns how many
    backups it ended. (Their target locks are released by inventory's own beat task.)"""
    ended = jobs_reap(BACKUP_JOB)
    backup_artifacts_delete_orphans()
    return ended


def backup_artifacts_delete_orphans() -> None:
    """Temporary files of backups and copies that ended (their worker died), in every local-folder location; and
    the multipart uploads they left in object stores."""
    # Files and uploads are named by their backup's id, a copy's too: a backup's id is active while the backup or
    # one of its copies runs.
    active = {
        str(pk) for pk in BackupArtifact.objects.filter(status__in=BackupArtifact.ACTIVE).values_list("pk", flat=True)
    } | {
        str(pk)
        for pk in ArtifactCopy.objects.filter(status__in=ArtifactCopy.ACTIVE).values_list("artifact_id", flat=True)
    }
    for location in locations_all():
        try:
            storage = location.storage()
        except LocationUnavailable:
            continue
        if is_object_store(storage):
            with contextlib.suppress(ObjectStoreError):
                abort_uploads(storage, lambda upload: artifacts.backup_id_of_key(upload.key) not in active)
            continue
        try:
            _dirs, names = storage.listdir(artifacts.TMP_PREFIX.rstrip("/"))
        except (OSError, NotImplementedError):
            continue
        for name in names:
            if name.split("-", 1)[0] not in active:
                artifacts.delete_quietly(f"{artifacts.TMP_PREFIX}{name}", storage)
