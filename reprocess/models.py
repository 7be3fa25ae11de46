"""Bulk reprocessing: after the application's Redis lost its queue, re-send each lost document to the
application's reprocess endpoint. A batch is built (and shown) first, then sent; sending it again sends only the
items the application has not accepted yet."""

from __future__ import annotations

from django.db import models
from django.utils.translation import gettext_lazy as _
from django.utils.translation import pgettext_lazy

from dr_console.jobs import JobEvent, JobModel
from dr_console.notes import Note
from inventory.models import Environment


class ReprocessBatch(JobModel):
    """One set of documents to re-send, and the runs that send them. Never deleted: it is the record of recovery."""

    class Status(models.TextChoices):
        # A context of their own: in Spanish a batch ("lote") takes another gender than a backup or a restore.
        DRAFT = "draft", pgettext_lazy("reprocess batch", "Draft")  # built and shown, nothing sent yet
        QUEUED = "queued", pgettext_lazy("reprocess batch", "Queued")
        RUNNING = "running", pgettext_lazy("reprocess batch", "Running")
        SUCCEEDED = "succeeded", pgettext_lazy("reprocess batch", "Succeeded")  # every item accepted
        FAILED = "failed", pgettext_lazy("reprocess batch", "Failed")  # items not accepted, or could not run
        ERRORED = "errored", pgettext_lazy("reprocess batch", "Errored")  # a bug in the console (see the log)
        CANCELLED = "cancelled", pgettext_lazy("reprocess batch", "Cancelled")
        DISCARDED = "discarded", pgettext_lazy("reprocess batch", "Discarded")  # a draft nobody sent

    class Source(models.TextChoices):
        QUERY = "query", _("Documents from the environment's query")
        CSV = "csv", _("A CSV list")
        FAILED_JOBS = "failed_jobs", _("Failed RQ jobs")

    ACTIVE = frozenset({Status.QUEUED, Status.RUNNING})
    TERMINAL = frozenset({Status.SUCCEEDED, Status.FAILED, Status.ERRORED, Status.CANCELLED, Status.DISCARDED})
    TRANSITIONS = {
        Status.DRAFT: frozenset({Status.QUEUED, Status.DISCARDED}),
        Status.QUEUED: frozenset({Status.RUNNING, Status.FAILED, Status.ERRORED, Status.CANCELLED}),
        Status.RUNNING: frozenset({Status.SUCCEEDED, Status.FAILED, Status.ERRORED, Status.CANCELLED}),
        # Sending again sends only what was not accepted.
        Status.FAILED: frozenset({Status.QUEUED}),
        Status.ERRORED: frozenset({Status.QUEUED}),
        Status.CANCELLED: frozenset({Status.QUEUED}),
    }
    QUEUED_STATES = frozenset({Status.QUEUED})
    RUNNING_STATES = frozenset({Status.RUNNING})

    environment = models.ForeignKey(
        Environment, models.PROTECT, related_name="reprocess_batches", verbose_name=_("environment")
    )
    status = models.CharField(_("status"), max_length=16, choices=Status.choices, default=Status.DRAFT, db_index=True)
    source = models.CharField(_("source"), max_length=16, choices=Source.choices)
    source_detail = models.CharField(
        _("source detail"),
        max_length=200,
        blank=True,
        help_text=_("e.g. the CSV file's name, or which query built the batch."),
    )
    total = models.PositiveIntegerField(_("documents"), default=0)
    accepted = models.PositiveIntegerField(_("accepted documents"), default=0)
    failed = models.PositiveIntegerField(
        _("failed documents"), default=0, help_text=_("Items refused, or still failing after retries.")
    )
    sent = models.PositiveIntegerField(
        _("requests sent"), default=0, help_text=_("Requests sent in all runs, retries included.")
    )
    runs = models.PositiveSmallIntegerField(_("runs"), default=0)
    run_started_at = models.DateTimeField(_("run started at"), null=True, blank=True)
    run_accepted = models.PositiveIntegerField(
        _("accepted by the run"), default=0, help_text=_("Items accepted by the current or last run.")
    )

    class Meta:
        verbose_name = _("reprocess batch")
        verbose_name_plural = _("reprocess batches")
        ordering = ["-created_at", "-pk"]
        constraints = [
            # Two batches sending to one application at once would send the same documents twice.
            models.UniqueConstraint(
                fields=["environment"],
                condition=models.Q(status__in=["queued", "running"]),
                name="reprocessbatch_one_active_per_environment",
            )
        ]

    def __str__(self) -> str:
        return f"reprocess batch #{self.pk}"

    def audit_note(self) -> Note:
        return Note("reprocess_batch", {"id": str(self.pk)})

    @property
    def remaining(self) -> int:
        return max(self.total - self.accepted - self.failed, 0)

    @property
    def not_accepted(self) -> int:
        return max(self.total - self.accepted, 0)

    @property
    def can_send(self) -> bool:
        return self.status in (self.Status.DRAFT, self.Status.FAILED, self.Status.ERRORED, self.Status.CANCELLED) and (
            self.accepted < self.total
        )


class ReprocessItem(models.Model):
    """One document to re-send. `accepted` is final: an accepted item is never sent again."""

    class Status(models.TextChoices):
        PENDING = "pending", pgettext_lazy("reprocess document", "Not sent yet")
        ACCEPTED = "accepted", pgettext_lazy("reprocess document", "Accepted")
        FAILED = "failed", pgettext_lazy("reprocess document", "Failed")

    batch = models.ForeignKey(ReprocessBatch, models.CASCADE, related_name="items", verbose_name=_("batch"))
    workspace_id = models.CharField(_("workspace id"), max_length=64)
    document_id = models.CharField(_("document id"), max_length=64)
    status = models.CharField(_("status"), max_length=16, choices=Status.choices, default=Status.PENDING)
    attempts = models.PositiveSmallIntegerField(_("attempts"), default=0)
    last_status_code = models.PositiveSmallIntegerField(_("last status code"), null=True, blank=True)
    last_error = models.CharField(_("last error"), max_length=500, blank=True)
    accepted_at = models.DateTimeField(_("accepted at"), null=True, blank=True)

    class Meta:
        verbose_name = _("reprocess document")
        verbose_name_plural = _("reprocess documents")
        ordering = ["pk"]
        constraints = [
            models.UniqueConstraint(
                fields=["batch", "workspace_id", "document_id"], name="reprocessitem_once_per_batch"
            )
        ]
        indexes = [models.Index(fields=["batch", "status"])]

    def __str__(self) -> str:
        return f"{self.workspace_id}/{self.document_id}"


class ReprocessBatchEvent(JobEvent):
    """A status change of a reprocess batch."""

    job = models.ForeignKey(ReprocessBatch, models.CASCADE, related_name="events", verbose_name=_("reprocess batch"))

    class Meta(JobEvent.Meta):
        verbose_name = _("reprocess batch event")
        verbose_name_plural = _("reprocess batch events")
