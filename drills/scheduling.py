"""Scheduled drills: each datastore's drill schedule is one Celery beat entry, kept in step by the shared
scheduling module (dr_console/schedules.py), read in the datastore's schedule time zone."""

from __future__ import annotations

from dr_console.schedules import periodic_task_delete, periodic_task_sync
from inventory.models import Datastore

DRILL_TASK = "drills.tasks.drill_run_scheduled_task"


def drill_schedule_task_name(datastore_id: int) -> str:
    return f"datastore {datastore_id}: drill"


def drill_schedule_sync(*, datastore: Datastore) -> None:
    """Bring beat's drill entry in step with the datastore's drill schedule (none: the entry is disabled)."""
    periodic_task_sync(
        name=drill_schedule_task_name(datastore.pk),
        task=DRILL_TASK,
        task_kwargs={"datastore_id": datastore.pk},
        schedule=datastore.drill_cron,
        description=f"Restore drills of {datastore.name}",
    )


def drill_schedule_delete(*, datastore_id: int) -> None:
    periodic_task_delete(name=drill_schedule_task_name(datastore_id))


def on_datastore_configured(sender: object, *, datastore: Datastore, **kwargs: object) -> None:
    drill_schedule_sync(datastore=datastore)


def on_datastore_removed(sender: object, *, datastore_id: int, **kwargs: object) -> None:
    drill_schedule_delete(datastore_id=datastore_id)
