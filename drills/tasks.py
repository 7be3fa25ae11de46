"""Thin Celery tasks for drills. A drill is never retried automatically; the next scheduled one is the retry."""

from __future__ import annotations

from celery import shared_task
from django.conf import settings


@shared_task(
    acks_late=True,  # safe because drill_run_execute claims the row before doing anything
    soft_time_limit=settings.RESTORE_TIME_LIMIT,
    time_limit=settings.RESTORE_TIME_LIMIT + 120,
)
def drill_run_execute_task(*, run_id: int) -> None:
    from drills.services import drill_run_execute

    drill_run_execute(run_id=run_id)


@shared_task(ignore_result=True, soft_time_limit=300, time_limit=360)
def drill_run_scheduled_task(*, datastore_id: int) -> None:
    """Beat's entry for a datastore's drill schedule (dr_console.schedules keeps it in step)."""
    from drills.services import drill_run_scheduled

    drill_run_scheduled(datastore_id=datastore_id)


@shared_task(ignore_result=True, soft_time_limit=300, time_limit=360)
def drill_runs_reap_stale_task() -> None:
    """Periodic (beat): fail drills whose worker died and drop the scratch databases drills left behind."""
    from drills.services import drill_runs_reap_stale

    drill_runs_reap_stale()
