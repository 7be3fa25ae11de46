from __future__ import annotations

from django.db import models
from django.utils import timezone
from django.utils.translation import gettext_lazy as _
from django.utils.translation import pgettext_lazy

from backups.models import BackupArtifact
from dr_console.jobs import JobEvent, JobModel
from dr_console.notes import Note
from inventory.models import Datastore


class DrillRun(JobModel):
    """One restore drill: a datastore's newest backup restored into a scratch database, checked, and dropped.
    Its restore duration is the datastore's measured RTO."""

    class Status(models.TextChoices):
        # A context of their own: in Spanish a drill ("simulacro") takes another gender than a backup or a restore.
        QUEUED = "queued", pgettext_lazy("drill", "Queued")
        RUNNING = "running", pgettext_lazy("drill", "Restoring")
        CHECKING = "checking", pgettext_lazy("drill", "Checking")
        SUCCEEDED = "succeeded", pgettext_lazy("drill", "Succeeded")
        FAILED = "failed", pgettext_lazy("drill", "Failed")
        ERRORED = "errored", pgettext_lazy("drill", "Errored")  # a bug in the console; the traceback is in the log
        CANCELLED = "cancelled", pgettext_lazy("drill", "Cancelled")

    ACTIVE = frozenset({Status.QUEUED, Status.RUNNING, Status.CHECKING})
    TERMINAL = frozenset({Status.SUCCEEDED, Status.FAILED, Status.ERRORED, Status.CANCELLED})
    TRANSITIONS = {
        Status.QUEUED: frozenset({Status.RUNNING, Status.FAILED, Status.ERRORED, Status.CANCELLED}),
        Status.RUNNING: frozenset({Status.CHECKING, Status.FAILED, Status.ERRORED, Status.CANCELLED}),
        Status.CHECKING: frozenset({Status.SUCCEEDED, Status.FAILED, Status.ERRORED, Status.CANCELLED}),
    }
    QUEUED_STATES = frozenset({Status.QUEUED})
    RUNNING_STATES = frozenset({Status.RUNNING, Status.CHECKING})

    datastore = models.ForeignKey(Datastore, models.PROTECT, related_name="drill_runs")
    artifact = models.ForeignKey(
        BackupArtifact,
        models.PROTECT,
        null=True,
        blank=True,
        related_name="drill_runs",
        help_text=_("The backup restored: the datastore's newest succeeded backup when the drill was requested."),
    )
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.QUEUED, db_index=True)
    server_url_env = models.CharField(
        max_length=128, help_text=_("The environment variable naming the server the scratch database was made on.")
    )
    scratch_database = models.CharField(max_length=63, blank=True)
    source_note = models.TextField(
        _("read from"), blank=True, help_text=_("Which file of the backup was read, and why others were not.")
    )
    scratch_dropped = models.BooleanField(
        null=True, blank=True, help_text=_("Whether the scratch database was dropped again (empty: never created).")
    )
    rto = models.DurationField(
        _("measured RTO"),
        null=True,
        blank=True,
        help_text=_("Fetching the backup, creating the database and pg_restore: how long a recovery takes."),
    )
    exit_code = models.IntegerField(null=True, blank=True)
    checks = models.JSONField(default=list, blank=True, help_text=_("Checks on the restored copy: name, ok, detail."))

    class Meta:
        ordering = ["-created_at", "-pk"]
        verbose_name = _("drill run")
        verbose_name_plural = _("drill runs")
        constraints = [
            models.UniqueConstraint(
                fields=["datastore"],
                condition=models.Q(status__in=["queued", "running", "checking"]),
                name="drillrun_one_active_per_datastore",
            ),
        ]
        indexes = [
            models.Index(fields=["datastore", "-created_at", "-id"]),
            # /metrics counts failed drills per datastore at every scrape (overview.metrics).
            models.Index(fields=["datastore"], condition=models.Q(status="failed"), name="drillrun_failed_idx"),
        ]

    def __str__(self) -> str:
        return f"drill #{self.pk} of {self.datastore_id and self.datastore.name}"

    def audit_note(self) -> Note:
        return Note("drill_of", {"id": str(self.pk), "datastore": self.datastore.name})

    @property
    def rto_seconds(self) -> float | None:
        return self.rto.total_seconds() if self.rto is not None else None


class DrillRunEvent(JobEvent):
    """A status change of a drill run."""

    job = models.ForeignKey(DrillRun, models.CASCADE, related_name="events")


class ObjectiveBreach(models.Model):
    """A datastore missing one of its recovery objectives, from when it was noticed until it recovered. One open
    breach per datastore and objective: it is notified once when it opens and once when it closes."""

    class Objective(models.TextChoices):
        RPO = "rpo", _("RPO")
        RTO = "rto", _("RTO")

    datastore = models.ForeignKey(Datastore, models.CASCADE, related_name="objective_breaches")
    objective = models.CharField(max_length=8, choices=Objective.choices)
    reason = models.TextField(help_text=_("What was wrong when the breach opened."))
    opened_at = models.DateTimeField(default=timezone.now)
    closed_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-opened_at", "-pk"]
        verbose_name = _("objective breach")
        verbose_name_plural = _("objective breaches")
        constraints = [
            models.UniqueConstraint(
                fields=["datastore", "objective"],
                condition=models.Q(closed_at__isnull=True),
                name="objectivebreach_one_open_per_objective",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.get_objective_display()} breach of {self.datastore_id and self.datastore.name}"

    @property
    def is_open(self) -> bool:
        return self.closed_at is None
