"""Target locks: one job at a time touches a target database. The holder is a job row, named by model and id.

Only two things release a lock: the holder itself when its work has ended (its tool stopped), or the reaper once
the holder has ended or lost its worker *and* its processes are known to be gone (dr_console.jobs.reaper).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator

from django.apps import apps
from django.db import IntegrityError, transaction

from dr_console.jobs import JobFailed, JobModel, english_name, job_processes_gone, stale_cutoff
from inventory.models import TargetLock

logger = logging.getLogger(__name__)


def datastore_target_key(datastore_id: int) -> str:
    return f"datastore:{datastore_id}"


def _holder_model(job: JobModel) -> str:
    return job._meta.label_lower


def holder_label(lock: TargetLock) -> str:
    """ "restore #3", for messages."""
    try:
        model = apps.get_model(lock.holder_model)
    except LookupError:
        return f"{lock.holder_model} #{lock.holder_id}"
    return f"{english_name(model)} #{lock.holder_id}"


def target_lock_acquire(*, target_key: str, holder: JobModel) -> TargetLock | None:
    """Take the lock on a target database for `holder`. Returns None on success, else the lock another job holds."""
    try:
        with transaction.atomic():
            TargetLock.objects.create(target_key=target_key, holder_model=_holder_model(holder), holder_id=holder.pk)
        return None
    except IntegrityError:  # the unique key: another job got there first
        current = TargetLock.objects.filter(target_key=target_key).first()
        return current or TargetLock(target_key=target_key, holder_model="another job", holder_id=0)


def target_lock_release(*, target_key: str, holder: JobModel) -> None:
    TargetLock.objects.filter(target_key=target_key, holder_model=_holder_model(holder), holder_id=holder.pk).delete()


@contextlib.contextmanager
def target_lock_held(*, target_key: str, holder: JobModel, target_label: str, nothing_done: str) -> Iterator[None]:
    """Hold the lock for the body; refuse with JobFailed (naming the holder) when another job has it. Released
    when the body ends, by which time the job's tool has stopped."""
    current = target_lock_acquire(target_key=target_key, holder=holder)
    if current is not None:
        raise JobFailed(f"{holder_label(current)} is running against {target_label}; {nothing_done}")
    try:
        yield
    finally:
        target_lock_release(target_key=target_key, holder=holder)


def target_locks_release_stale() -> int:
    """Release the locks whose holder no longer runs (it ended, or its worker stopped heartbeating) and whose
    processes are known to be gone. Returns how many."""
    released = 0
    cutoff = stale_cutoff()
    for lock in TargetLock.objects.all():
        try:
            model = apps.get_model(lock.holder_model)
        except LookupError:
            model = None
        holder = model._default_manager.filter(pk=lock.holder_id).first() if model is not None else None
        if holder is not None:
            running = holder.status in holder.RUNNING_STATES
            if running and holder.heartbeat_at is not None and holder.heartbeat_at >= cutoff:
                continue  # alive
            if running or holder.cleanup_pending or not job_processes_gone(holder):
                continue  # the job reaper ends it and undoes what it left first, once its processes are gone
        released += TargetLock.objects.filter(pk=lock.pk).delete()[0]
        logger.info("released the lock on %s held by %s", lock.target_key, holder_label(lock))
    return released
