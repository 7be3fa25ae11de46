"""Thin Celery tasks: load by id, call a service. The job row is the truth, so a redelivered message is a
no-op (the service claims the row first) and nothing here retries a backup behind the operator's back.
Beat's entries (dr_console/settings.py, CELERY_BEAT_SCHEDULE) run the periodic ones on the maintenance queue."""

from __future__ import annotations

from typing import Any

from celery import shared_task
from django.conf import settings


@shared_task(
    acks_late=True,  # safe because the job runner claims the row before doing anything
    soft_time_limit=settings.BACKUP_TIME_LIMIT,
    time_limit=settings.BACKUP_TIME_LIMIT + 120,
)
def backup_artifact_execute_task(*, artifact_id: int) -> None:
    from backups.services import backup_artifact_execute

    backup_artifact_execute(artifact_id=artifact_id)


@shared_task(
    acks_late=True,
    soft_time_limit=settings.BACKUP_TIME_LIMIT,
    time_limit=settings.BACKUP_TIME_LIMIT + 120,
)
def backup_verification_execute_task(*, verification_id: int) -> None:
    from backups.verification import backup_verification_execute

    backup_verification_execute(verification_id=verification_id)


@shared_task(
    acks_late=True,
    soft_time_limit=settings.BACKUP_TIME_LIMIT,
    time_limit=settings.BACKUP_TIME_LIMIT + 120,
)
def artifact_copy_execute_task(*, copy_id: int) -> None:
    from backups.copies import artifact_copy_execute

    artifact_copy_execute(copy_id=copy_id)


@shared_task(ignore_result=True, soft_time_limit=300, time_limit=360)
def backup_artifacts_reap_task() -> None:
    """Periodic: end backups, verifications and copies whose worker died or whose message was lost."""
    from backups.copies import artifact_copies_reap_stale
    from backups.services import backup_artifacts_reap_stale
    from backups.verification import backup_verifications_reap_stale

    backup_artifacts_reap_stale()
    backup_verifications_reap_stale()
    artifact_copies_reap_stale()


@shared_task(bind=True, ignore_result=True, soft_time_limit=60, time_limit=90)
def backup_scheduled_task(self: Any, *, datastore_id: int) -> None:
    """Run by beat at each fire time of the datastore's backup schedule (its PeriodicTask)."""
    from backups.scheduling import backup_schedule_fire

    backup_schedule_fire(datastore_id=datastore_id, task_id=self.request.id)


@shared_task(ignore_result=True, soft_time_limit=1800, time_limit=1900)
def retention_apply_task() -> None:
    """Periodic: expire the backups each datastore's retention policy does not keep."""
    from backups.retention import retention_apply_all

    retention_apply_all()


@shared_task(ignore_result=True, soft_time_limit=600, time_limit=660)
def datastore_health_check_task(*, datastore_id: int | None = None) -> None:
    """Periodic (every datastore) and on demand (one): can a worker reach the datastores as configured?"""
    from backups.health import datastore_health_check

    datastore_health_check(datastore_ids=None if datastore_id is None else [datastore_id])
