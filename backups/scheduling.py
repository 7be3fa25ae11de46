"""Scheduled backups: each datastore's cron schedule is one Celery beat entry (dr_console/schedules.py), and each
firing is a ScheduledBackup row saying what it started, or why it started nothing.

A firing whose previous backup is still running starts no second one (the database allows one active backup
per datastore anyway): it is recorded as skipped, on the datastore page and in the audit log. Fire times that
passed with no firing at all (beat was down) are counted on the next one and, until then, shown as missed.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.conf import settings
from django.db import IntegrityError, transaction
from django.utils import timezone
from django_celery_beat.models import PeriodicTask

from audit.models import AuditEvent
from audit.services import audit_record
from backups.models import BackupArtifact, ScheduledBackup
from dr_console.schedules import CronSchedule, periodic_task_delete, periodic_task_sync
from inventory.models import Datastore

logger = logging.getLogger(__name__)

BACKUP_TASK = "backups.tasks.backup_scheduled_task"
SCHEDULE_TRIGGER = "schedule"
# Beat's clock and the worker's may differ by a little: a firing received this much before its fire time still
# answers that fire time, not the previous one.
CLOCK_TOLERANCE = timedelta(seconds=5)
Outcome = ScheduledBackup.Outcome


def backup_schedule_task_name(datastore_id: int) -> str:
    return f"datastore {datastore_id}: backup"


def datastore_schedule_sync(*, datastore: Datastore) -> None:
    """Bring beat's entry in step with the datastore's backup schedule; runs when a datastore is saved
    (inventory.signals.datastore_configured; drills keep the drill schedule in step the same way).

    A new or changed schedule counts its runs from now (`backup_schedule_since`): fire times before it were not
    due, so they are never shown as missed.
    """
    name = backup_schedule_task_name(datastore.pk)
    before = PeriodicTask.objects.filter(name=name).values_list("crontab_id", "enabled").first()
    entry = periodic_task_sync(
        name=name,
        task=BACKUP_TASK,
        task_kwargs={"datastore_id": datastore.pk},
        schedule=datastore.backup_cron,
        description=f"Backups of {datastore.name}",
    )
    if entry is None or not entry.enabled:
        return
    if before != (entry.crontab_id, True) or datastore.backup_schedule_since is None:
        datastore.backup_schedule_since = timezone.now()
        Datastore.objects.filter(pk=datastore.pk).update(backup_schedule_since=datastore.backup_schedule_since)


def datastore_schedule_delete(*, datastore_id: int) -> None:
    periodic_task_delete(name=backup_schedule_task_name(datastore_id))


def backup_schedule_fire(*, datastore_id: int, task_id: str | None = None) -> ScheduledBackup | None:
    """What beat's entry runs at each fire time.

    1. Works out the fire time this firing answers (the latest one now) and how many fire times since the
       previous firing (or since the schedule was set) had none: beat was down then.
    2. Records the firing once: a redelivered message (same task id) finds it recorded and does nothing.
    3. Starts a backup; when the previous one is still running, starts nothing and records the skip (row and
       audit event). A backup that cannot be requested at all is recorded as refused, with the reason.
    """
    from backups.health import datastore_health_check
    from backups.services import BackupRefused, backup_artifact_request

    datastore = Datastore.objects.select_related("environment").filter(pk=datastore_id).first()
    schedule = datastore.backup_cron if datastore else None
    if datastore is None or schedule is None:
        logger.info("datastore %s has no backup schedule any more; nothing to do", datastore_id)
        return None
    # Just before the backup: a datastore a worker cannot reach shows as such, whatever the backup then says.
    datastore_health_check(datastore_ids=[datastore.pk])
    now = timezone.now()
    expected = schedule.previous_fire(now + CLOCK_TOLERANCE)
    previous = datastore.scheduled_backups.order_by("-expected_at").first()
    missed = len(_fires_without_run(schedule, datastore, previous, before=expected))
    with transaction.atomic():
        try:
            with transaction.atomic():
                run = ScheduledBackup.objects.create(
                    datastore=datastore,
                    expected_at=expected,
                    fired_at=now,
                    missed_before=missed,
                    outcome=Outcome.STARTED,
                    task_id=task_id,
                )
        except IntegrityError:
            logger.info("scheduled backup of %s (task %s) was already handled", datastore.name, task_id)
            return None
        running = datastore.artifacts.filter(status__in=BackupArtifact.ACTIVE).first()
        if running is None:
            try:
                run.artifact = backup_artifact_request(datastore=datastore, trigger=SCHEDULE_TRIGGER)
            except BackupRefused as exc:
                running = datastore.artifacts.filter(status__in=BackupArtifact.ACTIVE).first()  # lost a race?
                run.outcome, run.message = Outcome.REFUSED, str(exc)
        if running is not None:
            run.outcome = Outcome.SKIPPED
            run.message = f"backup #{running.pk} was still {running.status}"
            audit_record(
                action=AuditEvent.Action.BACKUP_SKIPPED,
                actor_label=SCHEDULE_TRIGGER,
                obj=datastore,
                details={"datastore": datastore.name, "running": running.pk, "expected_at": expected.isoformat()},
            )
        run.save()
    logger.info("scheduled backup of %s for %s: %s %s", datastore.name, expected, run.outcome, run.message)
    return run


def _fires_without_run(
    schedule: CronSchedule, datastore: Datastore, last_run: ScheduledBackup | None, *, before: datetime
) -> list[datetime]:
    """Fire times after the last firing (or the schedule's start) and before `before` that had no firing."""
    since = [t for t in (last_run.expected_at if last_run else None, datastore.backup_schedule_since) if t]
    if not since:
        return []
    return [fire for fire in schedule.fires_between(max(since), before) if fire < before]


@dataclass
class ScheduleState:
    """What the datastore page and the dashboard say about a datastore's backup schedule."""

    schedule: CronSchedule
    next_run: datetime
    last_run: ScheduledBackup | None
    missed: list[datetime]  # fire times past the grace period with no firing: beat was (or is) down

    @property
    def overdue(self) -> bool:
        return bool(self.missed)


def datastore_schedule_state(
    datastore: Datastore, last_run: ScheduledBackup | None, now: datetime | None = None
) -> ScheduleState | None:
    """None when the datastore has no schedule. `last_run` is its newest ScheduledBackup (the caller fetches it,
    so that a page of datastores costs one query)."""
    schedule = datastore.backup_cron
    if schedule is None:
        return None
    now = now or timezone.now()
    grace = timedelta(seconds=settings.SCHEDULE_MISSED_AFTER_SECONDS)
    return ScheduleState(
        schedule=schedule,
        next_run=schedule.next_fire(now),
        last_run=last_run,
        missed=_fires_without_run(schedule, datastore, last_run, before=now - grace),
    )


def on_datastore_configured(sender: object, *, datastore: Datastore, **kwargs: object) -> None:
    datastore_schedule_sync(datastore=datastore)


def on_datastore_removed(sender: object, *, datastore_id: int, **kwargs: object) -> None:
    datastore_schedule_delete(datastore_id=datastore_id)
