"""The fields and state sets every job row has (backup, verification, restore, drill, reprocess batch)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from django.db import models
from django.utils import timezone
from django.utils.translation import gettext_lazy as _


class JobModel(models.Model):
    """Fields every job row has. Subclasses define Status (TextChoices) with at least FAILED, ERRORED and
    CANCELLED, and the state sets below; dr_console.jobs only enforces them.

    - ACTIVE: not finished. TERMINAL: finished (a terminal state may still move on, e.g. succeeded -> expired).
    - QUEUED_STATES: handed to the broker, waiting for a worker (the reaper fails them if the message is lost).
    - RUNNING_STATES: a worker holds the job and keeps its heartbeat fresh.
    - TRANSITIONS: the one table of what may follow what.
    """

    ACTIVE: frozenset[str] = frozenset()
    TERMINAL: frozenset[str] = frozenset()
    QUEUED_STATES: frozenset[str] = frozenset()
    RUNNING_STATES: frozenset[str] = frozenset()
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
    task_id = models.CharField(
        _("task id"), max_length=64, blank=True, help_text=_("The broker message that hands it to a worker.")
    )
    process_host = models.CharField(
        _("process host"),
        max_length=200,
        blank=True,
        help_text=_("Where the job's tool runs: host name, boot and process namespace (see dr_console.jobs)."),
    )
    process_group = models.IntegerField(
        _("process group"), null=True, blank=True, help_text=_("The process group of the tool the job is running.")
    )
    cleanup_pending = models.BooleanField(
        _("cleanup pending"),
        default=False,
        help_text=_(
            "Its worker was lost and the reaper has not yet undone what it left (a database it created, sessions "
            "still writing): its target stays locked until then."
        ),
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

    @property
    def can_cancel(self) -> bool:
        return "cancelled" in self.TRANSITIONS.get(self.status, frozenset())


class JobEvent(models.Model):
    """One status change of a job. Append-only: the history an operator reads after an incident.
    Concrete subclasses add `job = ForeignKey(<job model>, related_name="events")`."""

    created_at = models.DateTimeField(default=timezone.now)
    old_status = models.CharField(max_length=24)
    new_status = models.CharField(max_length=24)
    message = models.TextField(blank=True)  # English, as logs and exports read it
    note = models.JSONField(default=dict, blank=True)  # {"code", "params"} of the console's own notes (jobs.notes)

    class Meta:
        abstract = True
        ordering = ["pk"]

    def __str__(self) -> str:
        return f"{self.old_status} -> {self.new_status}"


def newest_job_value(model: type[JobModel], condition: models.Q, value: Any = "pk", *, of: str = "datastore") -> Any:
    """For an annotation on the query of `of` (a datastore, by default): `value` (a field or an expression) of its
    newest job of `model` meeting `condition`. A walk down the job model's (`of`, -created_at) index (or a partial
    one for a rare condition) that stops at the first match: the cost of a fleet's dashboard row stays constant
    however long the history."""
    newest = model._default_manager.filter(condition, **{of: models.OuterRef("pk")}).order_by("-created_at", "-pk")
    return models.Subquery(newest.values_list(value)[:1])
