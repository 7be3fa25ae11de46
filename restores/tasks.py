"""Thin Celery tasks for restores. A restore is never retried automatically: not by Celery, not by a
redelivered message (the service claims the run first)."""

from __future__ import annotations

from celery import shared_task
from django.conf import settings


@shared_task(
    acks_late=True,
    soft_time_limit=settings.RESTORE_TIME_LIMIT,
    time_limit=settings.RESTORE_TIME_LIMIT + 120,
)
def restore_run_execute_task(*, run_id: int) -> None:
    from restores.services import restore_run_execute

    restore_run_execute(run_id=run_id)
