"""The inventory's beat task: release the target locks whose holder is gone."""

from __future__ import annotations

from celery import shared_task


@shared_task(ignore_result=True, soft_time_limit=120, time_limit=180)
def target_locks_release_stale_task() -> None:
    """Periodic: a lock whose holder ended, or lost its worker, and whose processes are gone is released."""
    from inventory.locks import target_locks_release_stale

    target_locks_release_stale()
