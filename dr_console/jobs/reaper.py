"""Ending the jobs nobody will end otherwise. Never re-runs anything: a job whose worker died, or whose message was
lost, ends FAILED with the reason and its type's hooks (audit event, notification, cleanup).

For each job type, every run of its reaper:
1. running rows whose heartbeat is older than JOB_STALE_AFTER_SECONDS (their worker died): kill the recorded tool's
   process group if it survived and this process can see it, then FAILED with `cleanup_pending` set (its target
   stays locked), `on_reaped` (drop what it created, end its database sessions), clear `cleanup_pending`,
   `on_finished`; a cleanup that fails is tried again at the next run;
2. queued rows older than the stale window whose message the broker no longer holds (lost): FAILED, `on_finished`;
3. ended rows that still record a live process group (a worker killed while stopping a cancelled tool): kill it.

Target locks are released by inventory.locks once their holder is known to be gone; it asks `job_processes_gone`.
"""

from __future__ import annotations

import contextlib
import logging
import re
from datetime import datetime, timedelta
from pathlib import Path

from django.conf import settings
from django.db.models import Q
from django.utils import timezone

from dr_console.jobs import processes
from dr_console.jobs.broker import broker_has_message
from dr_console.jobs.models import JobModel
from dr_console.jobs.runner import JobType
from dr_console.jobs.transitions import IllegalTransition, job_transition

logger = logging.getLogger(__name__)


def stale_cutoff(seconds: int | None = None) -> datetime:
    return timezone.now() - timedelta(seconds=settings.JOB_STALE_AFTER_SECONDS if seconds is None else seconds)


def job_processes_gone(job: JobModel) -> bool:
    """Whether the tool the job recorded is known to be gone: none recorded, or its group is empty. A group
    recorded in another process namespace (another host or container) cannot be checked from here: the tool was
    started to die with its worker (PR_SET_PDEATHSIG), and the row's stale heartbeat says the worker is gone."""
    if job.process_group is None:
        return True
    if not processes.same_namespace(job.process_host):
        return True
    return not processes.process_group_alive(job.process_group)


def job_session_name(job: JobModel) -> str:
    """The application_name of the database sessions the job's current run opened (processes.session_name): an
    `on_reaped` hook ends those still running on the job's servers."""
    return processes.session_name(f"{job._meta.label_lower}-{job.pk}", job.started_at)


def job_processes_kill(job: JobModel) -> bool:
    """Kill the job's recorded process group if it is still alive here. True when it is known to be gone."""
    if job.process_group is None:
        return True
    if not processes.same_namespace(job.process_host):
        logger.warning(
            "%s #%s: its tool ran on %s; it cannot be checked from here and is trusted to have died with its worker",
            job._meta.model_name,
            job.pk,
            job.process_host.split(" ", 1)[0] or "another host",
        )
        return True
    gone = processes.process_group_kill(job.process_group)
    if gone:
        type(job)._default_manager.filter(pk=job.pk, process_group=job.process_group).update(process_group=None)
    else:
        logger.error("%s #%s: process group %s survived SIGKILL", job._meta.model_name, job.pk, job.process_group)
    return gone


def jobs_reap(job_type: JobType) -> int:
    """The three steps of the module's text for one job type. Returns how many rows it ended."""
    model = job_type.model
    cutoff = stale_cutoff()
    ended = 0
    for job in model._default_manager.filter(status__in=model.RUNNING_STATES, heartbeat_at__lt=cutoff):
        if not job_processes_kill(job):
            continue  # the lock stays, and the next run tries again
        # Ended and marked in one UPDATE: until its cleanup is done the target's lock stays (inventory.locks).
        if _end(job_type, job, job_type.stale_message, cleanup_pending=True):
            ended += 1
            _clean_up(job_type, job.pk)
            job_type.on_finished(job.pk)
    # A row created in its queued state (a backup, a verification, a drill) has no heartbeat yet: its age counts
    # from its creation.
    waiting_since = Q(heartbeat_at__lt=cutoff) | Q(heartbeat_at__isnull=True, created_at__lt=cutoff)
    queued = model._default_manager.filter(waiting_since, status__in=model.QUEUED_STATES)
    for job in queued.only("pk", "status", "task_id"):
        if broker_has_message(job.task_id):
            continue  # waiting for a free worker
        if _end(job_type, job, job_type.lost_message):
            ended += 1
            job_type.on_finished(job.pk)
    leftovers = model._default_manager.filter(status__in=model.TERMINAL, process_group__isnull=False)
    for job in leftovers:
        job_processes_kill(job)
    # A cleanup that failed last time (the server was unreachable) is tried again until it succeeds.
    for pk in model._default_manager.filter(status__in=model.TERMINAL, cleanup_pending=True).values_list(
        "pk", flat=True
    ):
        _clean_up(job_type, pk)
    scratch_sweep(model)
    return ended


def scratch_sweep(model: type[JobModel]) -> int:
    """Delete the scratch files (passfiles, local copies of backups: production data) that jobs of `model` left in
    DR_SCRATCH_DIR and no longer use: their job ended, or does not exist. Returns how many."""
    folder = Path(settings.DR_SCRATCH_DIR)
    label = model._meta.label_lower
    pattern = re.compile(rf"^dr-[a-z]+-{re.escape(label)}-(\d+)--")
    try:
        entries = list(folder.iterdir())
    except OSError:
        return 0
    found: dict[int, list[Path]] = {}
    for path in entries:
        match = pattern.match(path.name)
        if match:
            found.setdefault(int(match.group(1)), []).append(path)
    if not found:
        return 0
    active = set(model._default_manager.filter(pk__in=found, status__in=model.ACTIVE).values_list("pk", flat=True))
    deleted = 0
    for pk, paths in found.items():
        if pk in active:
            continue
        for path in paths:
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
                deleted += 1
                logger.info("deleted %s, left behind by %s #%s", path.name, label, pk)
    return deleted


def _clean_up(job_type: JobType, pk: int) -> None:
    """Undo what a job whose worker was lost left behind (`on_reaped`); only then may its lock go."""
    job = job_type.model._default_manager.get(pk=pk)
    try:
        job_type.on_reaped(job)
    except Exception:
        logger.exception("%s: cleaning up after the lost worker failed; the next run tries again", job_type.label(pk))
        return
    job_type.model._default_manager.filter(pk=pk).update(cleanup_pending=False)


def _end(job_type: JobType, job: JobModel, message: str, **fields: object) -> bool:
    try:
        return job_transition(job_type.model, pk=job.pk, to=job_type.failed, error=message, fields=fields or None)
    except IllegalTransition:  # it ended meanwhile
        return False
