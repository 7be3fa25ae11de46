"""Verifications: re-read a stored backup, compare its size and sha256 with the record, and have the format's reader
go through every block. Each is a job row (BackupVerification) run by the job framework; its outcome is
summarised on the backup, which is what restores, drills and the dashboard read.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator

from django.conf import settings
from django.contrib.auth.models import User
from django.db import IntegrityError, transaction
from django.utils import timezone
from django.utils.translation import gettext as _

from audit.models import AuditEvent
from audit.services import audit_job_finished, audit_record
from backups.methods import BACKUP_METHODS
from backups.models import BackupArtifact, BackupVerification
from backups.postgres import PostgresError
from backups.redis_snapshot import SnapshotCorrupt
from backups.sources import SourceReading, SourceUnusable, primary_source
from dr_console.jobs import (
    BrokerUnavailable,
    JobContext,
    JobFailed,
    JobOutcome,
    JobType,
    job_cancel,
    job_enqueue,
    job_run,
    jobs_reap,
)

logger = logging.getLogger(__name__)
Status = BackupVerification.Status
Summary = BackupArtifact.Verification


class VerificationRefused(Exception):
    """A verification that cannot be started or cancelled; nothing was changed."""


def backup_verification_request(
    *,
    artifact: BackupArtifact,
    requested_by: User | None = None,
    trigger: str = "",
    client_ip: str | None = None,
    enqueue: bool = True,
) -> BackupVerification:
    """Queue a verification of a succeeded backup (`enqueue=False`: the caller runs it, `manage.py verify --inline`)."""
    if artifact.status != BackupArtifact.Status.SUCCEEDED:
        raise VerificationRefused(
            _("backup #%(id)s is %(status)s; only a succeeded backup can be verified")
            % {"id": artifact.pk, "status": artifact.get_status_display().lower()}
        )
    try:
        with transaction.atomic():
            verification = BackupVerification.objects.create(
                artifact=artifact,
                triggered_by=requested_by,
                trigger=(trigger or (f"web:{requested_by.get_username()}" if requested_by else ""))[:120],
            )
            # The summary says verifying from now until the job ends, so every page follows it without a query.
            BackupArtifact.objects.filter(pk=artifact.pk).update(verification=Summary.VERIFYING)
            audit_record(
                action=AuditEvent.Action.VERIFY_REQUESTED,
                actor=requested_by,
                actor_label="" if requested_by else trigger,
                obj=artifact,
                details={"verification": verification.pk},
                client_ip=client_ip,
            )
            if enqueue:
                transaction.on_commit(lambda: _enqueue(verification.pk))
    except IntegrityError:  # the one-active-per-backup constraint
        raise VerificationRefused(_("backup #%(id)s is already being verified") % {"id": artifact.pk}) from None
    return verification


def backup_verification_request_after_backup(*, artifact_id: int) -> None:
    """The verification a finished backup asks for. The backup itself succeeded: a broker out of reach is logged
    (the verification failed and can be asked for again), not raised."""
    artifact = BackupArtifact.objects.get(pk=artifact_id)
    try:
        backup_verification_request(artifact=artifact, trigger="after backup")
    except (VerificationRefused, BrokerUnavailable) as exc:
        logger.warning("no verification of backup #%s after it was taken: %s", artifact_id, exc)


def _enqueue(verification_id: int) -> None:
    from backups.tasks import backup_verification_execute_task

    job_enqueue(
        backup_verification_execute_task, BackupVerification, pk=verification_id, verification_id=verification_id
    )


def backup_verification_execute(*, verification_id: int) -> None:
    job_run(VERIFICATION_JOB, pk=verification_id)


def backup_verification_cancel(
    *, verification_id: int, cancelled_by: User | None, client_ip: str | None = None
) -> bool:
    """Cancel a queued or running verification; its worker stops reading. False when it had already ended."""
    who = cancelled_by.get_username() if cancelled_by else "the console"
    cancelled = job_cancel(VERIFICATION_JOB, pk=verification_id, who=who)
    if cancelled:
        verification = BackupVerification.objects.get(pk=verification_id)
        audit_record(
            action=AuditEvent.Action.VERIFY_CANCELLED,
            actor=cancelled_by,
            obj=verification.artifact,
            details={"verification": verification_id},
            client_ip=client_ip,
        )
        _summarize(verification_id)
    return cancelled


def _verify(ctx: JobContext) -> JobOutcome:
    """Hash the whole stored file while the format's reader checks it; the checksum always covers every byte, even
    when the reader gave up early. A mismatch or an unreadable archive is CORRUPT; a storage that cannot be read
    right now FAILS the verification (the backup stays as it was)."""
    verification: BackupVerification = ctx.job
    artifact = BackupArtifact.objects.select_related("datastore").get(pk=verification.artifact_id)
    if artifact.status != BackupArtifact.Status.SUCCEEDED:
        raise JobFailed(f"backup #{artifact.pk} is {artifact.status}; only a succeeded backup can be verified")
    BackupArtifact.objects.filter(pk=artifact.pk).update(verification=Summary.VERIFYING)
    ctx.progress["bytes_done"] = 0
    size = 0

    def counted(chunks: Iterator[bytes]) -> Iterator[bytes]:
        nonlocal size
        for chunk in chunks:
            size += len(chunk)
            ctx.progress["bytes_done"] = size
            yield chunk

    # The primary file, as stored there (decrypted with its location's identity when encrypted): both checksums
    # cover every byte, even when the format's reader gave up early.
    reading = SourceReading(artifact, primary_source(artifact), checkpoint=ctx.check)
    chunks = counted(reading.chunks())
    unreadable = ""
    try:
        try:
            BACKUP_METHODS[BackupArtifact.Format(artifact.format)].read_through(artifact, chunks)
        except (PostgresError, SnapshotCorrupt) as exc:
            unreadable = str(exc)
        for _chunk in chunks:  # what the reader left unread still counts for the checksums
            pass
        reading.check()
    except SourceUnusable as exc:
        if exc.content and unreadable:
            return _corrupt(unreadable)  # the format's own reader says best what is wrong with the content
        if exc.corrupt:
            return _corrupt(str(exc).split(": ", 1)[-1])
        raise JobFailed(str(exc).split(": ", 1)[-1]) from None
    except OSError as exc:
        raise JobFailed(f"cannot read the stored file: {exc}") from None
    if unreadable:
        return _corrupt(unreadable)
    return JobOutcome(fields={"bytes_done": size})


def _corrupt(reason: str) -> JobOutcome:
    return JobOutcome(status=Status.CORRUPT, error=reason)


def _summarize(verification_id: int) -> None:
    """Bring the backup's summary in step with this verification's end (the newest one wins)."""
    verification = BackupVerification.objects.select_related("artifact").get(pk=verification_id)
    artifact = verification.artifact
    newer = artifact.verifications.filter(pk__gt=verification.pk).exists()
    if newer or verification.is_active:
        return
    summary = {
        Status.VERIFIED: (Summary.VERIFIED, ""),
        Status.CORRUPT: (Summary.CORRUPT, verification.error),
    }.get(
        Status(verification.status),
        # Could not tell (storage unreachable, a bug, cancelled, worker lost): not verified, and why.
        (Summary.UNVERIFIED, verification.error),
    )
    BackupArtifact.objects.filter(pk=artifact.pk).update(
        verification=summary[0], verification_error=summary[1], verified_at=timezone.now()
    )


def _finished(verification_id: int) -> None:
    """The summary on the backup and the audit event of an ended verification."""
    _summarize(verification_id)
    verification = BackupVerification.objects.select_related("artifact").get(pk=verification_id)
    audit_job_finished(
        action=AuditEvent.Action.VERIFY_FINISHED,
        job=verification,
        about=verification.artifact,  # the backup's history shows its verifications
        verification=verification.pk,
    )


VERIFICATION_JOB = JobType(
    name="verification",
    model=BackupVerification,
    work=_verify,
    running=Status.RUNNING,
    succeeded=Status.VERIFIED,
    time_limit=lambda: settings.BACKUP_TIME_LIMIT,
    time_limit_message="verification stopped: time limit of {seconds} s reached",
    stale_message="verification interrupted: worker lost",
    lost_message="the broker lost the message that hands this verification to a worker; ask for it again",
    on_finished=_finished,
)


def backup_verifications_reap_stale() -> int:
    return jobs_reap(VERIFICATION_JOB)


def backup_artifact_verify(*, artifact_id: int, trigger: str = "inline") -> str:
    """Verify a backup in this process (`manage.py backup --inline`, `verify --inline`, the benchmarks) and return
    the backup's verification summary afterwards ("verified", "corrupt", "unverified")."""
    artifact = BackupArtifact.objects.get(pk=artifact_id)
    verification = backup_verification_request(artifact=artifact, trigger=trigger, enqueue=False)
    backup_verification_execute(verification_id=verification.pk)
    return str(BackupArtifact.objects.values_list("verification", flat=True).get(pk=artifact_id))
