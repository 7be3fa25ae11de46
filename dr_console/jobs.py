"""What every job row (backup artifact, restore run) shares: a status with explicit allowed transitions,
one compare-and-set function that moves it, an append-only event history and a heartbeat.

Each job model declares its own `Status`, `ACTIVE` and `TRANSITIONS`; this module only enforces them.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Mapping
from datetime import datetime, timedelta
from typing import Any, cast

from django.db import connection, models, transaction
from django.utils import timezone, translation

from dr_console.text import untrusted_data, untrusted_text

logger = logging.getLogger(__name__)


class IllegalTransition(Exception):
    """A status change that the model's TRANSITIONS table does not allow. Nothing was changed."""

    def __init__(self, obj_label: str, old: str, new: str) -> None:
        super().__init__(f"{obj_label} cannot go from {old} to {new}")
        self.old = old
        self.new = new


class JobModel(models.Model):
    """Fields every job row has. Subclasses define Status (TextChoices), ACTIVE and TRANSITIONS."""

    ACTIVE: frozenset[str] = frozenset()
    TERMINAL: frozenset[str] = frozenset()
    TRANSITIONS: Mapping[str, frozenset[str]] = {}

    status = models.CharField(max_length=16, db_index=True)  # each job model redefines it with its choices
    created_at = models.DateTimeField(default=timezone.now, db_index=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    duration = models.DurationField(null=True, blank=True)
    heartbeat_at = models.DateTimeField(null=True, blank=True)
    error = models.TextField(blank=True)
    stderr_tail = models.TextField(blank=True)
    triggered_by = models.ForeignKey(
        # PROTECT: who did what stays known; people who leave are deactivated, not deleted.
        "auth.User",
        models.PROTECT,
        null=True,
        blank=True,
        related_name="+",
        help_text="The user, if a person.",
    )
    trigger = models.CharField(
        max_length=120, blank=True, help_text='Who or what started it, e.g. "cli:alice", "admin:bob", "schedule".'
    )

    class Meta:
        abstract = True

    @property
    def is_active(self) -> bool:
        return self.status in self.ACTIVE

    @property
    def duration_seconds(self) -> float | None:
        return self.duration.total_seconds() if self.duration else None

    @property
    def is_finished(self) -> bool:
        return self.status in self.TERMINAL


class JobEvent(models.Model):
    """One status change of a job. Append-only: the history an operator reads after an incident.
    Concrete subclasses add `job = ForeignKey(<job model>, related_name="events")`."""

    created_at = models.DateTimeField(default=timezone.now)
    old_status = models.CharField(max_length=24)
    new_status = models.CharField(max_length=24)
    message = models.TextField(blank=True)

    class Meta:
        abstract = True
        ordering = ["pk"]

    def __str__(self) -> str:
        return f"{self.old_status} -> {self.new_status}"


def _english_name(model: type[models.Model]) -> str:
    """The model's name for log lines and internal errors: English, whatever language the request was in."""
    with translation.override("en"):
        return str(model._meta.verbose_name)


def job_transition(
    model: type[JobModel],
    *,
    pk: int,
    to: str,
    error: str = "",
    event_message: str = "",
    fields: Mapping[str, Any] | None = None,
) -> bool:
    """Move job `pk` to status `to`, with `fields` saved in the same UPDATE.

    1. Raises IllegalTransition (and changes nothing) when `to` is not allowed from the current status.
    2. Returns False when another process changed the status between our read and our write: the caller lost
       the race (e.g. a redelivered task meeting a job another worker already claimed).
    3. Otherwise records the change as an event row and returns True.
    """
    current = model._default_manager.filter(pk=pk).values_list("status", "started_at").first()
    if current is None:
        raise model.DoesNotExist(f"{model.__name__} {pk} does not exist")
    old, started_at = current
    if to not in model.TRANSITIONS.get(old, frozenset()):
        raise IllegalTransition(f"{_english_name(model)} #{pk}", old, to)
    now = timezone.now()
    # Errors and fields quote tools and servers (stderr, key names, HTTP bodies): escaped once more here, so that a
    # NUL in one never makes the failure itself fail (PostgreSQL refuses it in text and jsonb).
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
        event_model._default_manager.create(job_id=pk, old_status=old, new_status=to, message=message)
    logger.info("%s #%s: %s -> %s%s", _english_name(model), pk, old, to, f" ({error})" if error else "")
    return True


def job_heartbeat(model: type[JobModel], *, pk: int, running_states: frozenset[str], **progress: Any) -> bool:
    """Record that the job is alive. False means the job is no longer running (cancelled or reaped): stop."""
    alive = model._default_manager.filter(pk=pk, status__in=running_states)
    return alive.update(heartbeat_at=timezone.now(), **progress) == 1


def stale_cutoff(seconds: int) -> datetime:
    return timezone.now() - timedelta(seconds=seconds)


def jobs_reap_stale(
    model: type[JobModel],
    *,
    running_states: frozenset[str],
    to: str,
    error: str,
    on_reaped: Callable[[int], object] | None = None,
) -> int:
    """Move every job of `model` whose heartbeat is older than JOB_STALE_AFTER_SECONDS to `to` (its worker died).
    Never re-runs anything. `on_reaped(pk)` runs for each job this call moved (e.g. an audit event)."""
    from django.conf import settings

    cutoff = stale_cutoff(settings.JOB_STALE_AFTER_SECONDS)
    stale = model._default_manager.filter(status__in=running_states, heartbeat_at__lt=cutoff)
    reaped = 0
    for pk in stale.values_list("pk", flat=True):
        try:
            moved = job_transition(model, pk=pk, to=to, error=error)
        except IllegalTransition:  # it ended meanwhile
            continue
        if moved:
            reaped += 1
            if on_reaped is not None:
                on_reaped(pk)
    return reaped


class JobStopped(Exception):
    """The row left its running state under the job (cancelled, or reaped): stop working, record nothing more."""


class JobHeartbeat(threading.Thread):
    """Keeps a running job's lease fresh from a side thread, whatever the job's own thread is blocked on (pg_dump
    waiting for a lock writes nothing for minutes), and notices when the row leaves its running state: then it
    calls the `on_stop` callbacks once (e.g. to stop the job's subprocess).

    `beat()` records the heartbeat and returns False when the job should stop.
    """

    def __init__(self, beat: Callable[[], bool], interval: float) -> None:
        super().__init__(name="job-heartbeat", daemon=True)
        self._beat = beat
        self._interval = interval
        self._done = threading.Event()
        self._on_stop: list[Callable[[], None]] = []
        self._lock = threading.Lock()
        self.stopped = threading.Event()

    def on_stop(self, callback: Callable[[], None]) -> None:
        with self._lock:
            if self.stopped.is_set():
                callback()
            else:
                self._on_stop.append(callback)

    def check(self) -> None:
        """Raise JobStopped in the job's thread if the job was cancelled or reaped."""
        if self.stopped.is_set():
            raise JobStopped

    def run(self) -> None:
        try:
            while not self._done.wait(self._interval):
                try:
                    alive = self._beat()
                except Exception:  # a database hiccup must not kill the job; the next beat retries
                    logger.warning("heartbeat failed", exc_info=True)
                    continue
                if not alive:
                    with self._lock:
                        self.stopped.set()
                        callbacks, self._on_stop = self._on_stop, []
                    for callback in callbacks:
                        callback()
                    return
        finally:
            connection.close()  # this thread's own database connection

    def __enter__(self) -> JobHeartbeat:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._done.set()
        self.join(timeout=30)


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


def job_fail(model: type[JobModel], *, pk: int, to: str, label: str, error: str, **fields: Any) -> None:
    """Record the job's failure, unless it already ended (cancelled or reaped meanwhile): that outcome stands."""
    try:
        job_transition(model, pk=pk, to=to, error=error, fields=fields)
    except IllegalTransition:
        logger.info("%s already ended; not recording: %s", label, error)
