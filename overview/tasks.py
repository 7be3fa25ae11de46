"""Thin Celery tasks of the overview. Beat's schedule (dr_console/settings.py) lists them and routes them to the
maintenance queue."""

from __future__ import annotations

from celery import shared_task


@shared_task(ignore_result=True, soft_time_limit=300, time_limit=360)
def objectives_check_task() -> None:
    """Periodic (beat): open and close RPO/RTO breaches; each is told once when it opens and once when it closes."""
    from overview.services import objectives_check

    objectives_check()
