"""The one compare-and-set that moves a job row's status, with its event row, and what builds on it (claim,
heartbeat, recording a failure).

Each job model declares its own `Status`, state sets and `TRANSITIONS` (dr_console.jobs.models); this module only
enforces them.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Any, cast

from django.db import models, transaction
from django.utils import timezone, translation

from dr_console.jobs.models import JobModel
from dr_console.notes import Note
from dr_console.text import untrusted_data, untrusted_text

logger = logging.getLogger(__name__)


class IllegalTransition(Exception):
    """A status change that the model's TRANSITIONS table does not allow. Nothing was changed."""

    def __init__(self, obj_label: str, old: str, new: str) -> None:
        super().__init__(f"{obj_label} cannot go from {old} to {new}")
        self.old = old
        self.new = new


def english_name(model: type[models.Model]) -> str:
    """The model's name for log lines and internal errors: English, whatever language the request was in."""
    with translation.override("en"):
        return str(model._meta.verbose_name)


def active_job_labels(queryset: models.QuerySet[Any]) -> list[str]:
    """ "restore #5 (awaiting approval)" for each job of `queryset` that has not ended, for refusals that name them."""
    model = queryset.model
    with translation.override("en"):
        return [
            f"{english_name(model)} #{job.pk} ({job.get_status_display().lower()})"
            for job in queryset.filter(status__in=model.ACTIVE).order_by("pk")
        ]


def job_transition(
    model: type[JobModel],
    *,
    pk: int,
    to: str,
    error: str = "",
    event_message: str = "",
    event_note: Note | None = None,
    fields: Mapping[str, Any] | None = None,
) -> bool:
    """Move job `pk` to status `to`, with `fields` saved in the same UPDATE.

    1. Raises IllegalTransition (and changes nothing) when `to` is not allowed from the current status.
    2. Returns False when another process changed the status between our read and our write: the caller lost
       the race (e.g. a redelivered task meeting a job another worker already claimed).
    3. Otherwise records the change as an event row and returns True.

    `event_note` is the console's own note on the change, shown in each reader's language (its English text is
    the event's message unless `error` or `event_message` say otherwise).
    """
    current = model._default_manager.filter(pk=pk).values_list("status", "started_at").first()
    if current is None:
        raise model.DoesNotExist(f"{model.__name__} {pk} does not exist")
    old, started_at = current
    if to not in model.TRANSITIONS.get(old, frozenset()):
        raise IllegalTransition(f"{english_name(model)} #{pk}", old, to)
    now = timezone.now()
    # Errors and fields quote tools and servers (stderr, key names, HTTP bodies): escaped once more here, so that a
    # NUL in one never makes the failure itself fail (PostgreSQL refuses it in text and jsonb).
    if event_note is not None and not event_message:
        event_message = event_note.english()
    error, event_message = untrusted_text(error, multiline=True), untrusted_text(event_message, multiline=True)
    changes: dict[str, Any] = {"status": to, **untrusted_data(dict(fields or {}))}
    if to in model.TERMINAL:
        if old not in model.TERMINAL:  # a finished job moving on (succeeded -> expired) keeps its timings
            changes["finished_at"] = now
            if started_at is not None:
                changes["duration"] = now - started_at
        changes["heartbeat_at"] = None
        if error:
            changes["error"] = error
    else:
        changes.setdefault("heartbeat_at", now)  # a fresh state gets a fresh lease against the reaper
    with transaction.atomic():
        # Conditional UPDATE: of two processes racing for the same change, exactly one wins.
        if model._default_manager.filter(pk=pk, status=old).update(**changes) != 1:
            return False
        event_model: Any = cast(Any, model)._meta.get_field("events").related_model
        message = (error or event_message)[:2000]
        note = untrusted_data(event_note.as_json()) if event_note is not None else {}
        event_model._default_manager.create(job_id=pk, old_status=old, new_status=to, message=message, note=note)
    logger.info("%s #%s: %s -> %s%s", english_name(model), pk, old, to, f" ({error})" if error else "")
    return True


def job_heartbeat(model: type[JobModel], *, pk: int, **progress: Any) -> bool:
    """Record that the job is alive. False means the job is no longer running (cancelled or reaped): stop."""
    alive = model._default_manager.filter(pk=pk, status__in=model.RUNNING_STATES)
    return alive.update(heartbeat_at=timezone.now(), **progress) == 1


def stale_cutoff(seconds: int) -> datetime:
    return timezone.now() - timedelta(seconds=seconds)


def job_claim(model: type[JobModel], *, pk: int, to: str, label: str, **transition: Any) -> bool:
    """Take a job for this worker (e.g. QUEUED -> RUNNING). False, logged, when it is not this worker's to run:
    it is missing, it already left the state (a redelivered message), or another worker claimed it first."""
    try:
        claimed = job_transition(model, pk=pk, to=to, **transition)
    except IllegalTransition as exc:
        logger.info("%s not started: it is already %s", label, exc.old)
        return False
    except model.DoesNotExist:
        logger.warning("%s does not exist; nothing to do", label)
        return False
    if not claimed:
        logger.info("%s was claimed by another worker", label)
    return claimed


def job_fail(model: type[JobModel], *, pk: int, to: str, error: str, **fields: Any) -> bool:
    """Record the job's failure, unless it already ended (cancelled or reaped meanwhile): that outcome stands.
    Returns whether this call recorded it."""
    try:
        return job_transition(model, pk=pk, to=to, error=error, fields=fields)
    except IllegalTransition:
        logger.info("%s #%s already ended; not recording: %s", english_name(model), pk, error)
        return False


def job_advance(model: type[JobModel], *, pk: int, to: str, **transition: Any) -> None:
    """Move a running job on to its next step (restoring -> verifying). If it was cancelled or reaped meanwhile,
    raise JobStopped: the worker stops and records nothing more."""
    from dr_console.jobs.heartbeat import JobStopped

    try:
        moved = job_transition(model, pk=pk, to=to, **transition)
    except IllegalTransition:
        moved = False
    if not moved:
        raise JobStopped
