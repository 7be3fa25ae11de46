"""Thin Celery tasks: the batch row is the truth; the job runner claims it, so a redelivered message is a no-op."""

from __future__ import annotations

from celery import shared_task
from django.conf import settings


@shared_task(
    acks_late=True,
    soft_time_limit=settings.REPROCESS_TIME_LIMIT,
    time_limit=settings.REPROCESS_TIME_LIMIT + 120,
)
def reprocess_batch_execute_task(*, batch_id: int) -> None:
    from reprocess.services import reprocess_batch_execute

    reprocess_batch_execute(batch_id=batch_id)


@shared_task(ignore_result=True, soft_time_limit=300, time_limit=360)
def reprocess_batches_reap_task() -> None:
    """Periodic: end batches whose worker died or whose message was lost."""
    from reprocess.services import reprocess_batches_reap_stale

    reprocess_batches_reap_stale()
