"""Thin Celery tasks for restores. A restore is never retried automatically: not by Celery, not by a
redelivered message (the job runner claims the run first)."""

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


@shared_task(ignore_result=True, soft_time_limit=300, time_limit=360)
def restore_runs_reap_task() -> None:
    """Periodic: end restores whose worker died or whose message was lost; expire requests nobody launched."""
    from restores.services import restore_runs_expire, restore_runs_reap_stale

    restore_runs_reap_stale()
    restore_runs_expire()
