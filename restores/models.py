from __future__ import annotations

from django.db import models
from django.utils.translation import gettext_lazy as _

from backups.models import BackupArtifact, Datastore
from dr_console.jobs import JobEvent, JobModel


class RestoreRun(JobModel):
    """One restore of a backup artifact into a target database. Its parameters are frozen at request time."""

    class Status(models.TextChoices):
        QUEUED = "queued", _("Queued")
        RUNNING = "running", _("Running")
        VERIFYING = "verifying", _("Verifying")
        SUCCEEDED = "succeeded", _("Succeeded")
        FAILED = "failed", _("Failed")
        CANCELLED = "cancelled", _("Cancelled")

    class TargetKind(models.TextChoices):
        IN_PLACE = "in_place", _("In place (its own datastore)")
        DATASTORE = "datastore", _("Another datastore")
        NEW_DATABASE = "new_database", _("A new database")

    ACTIVE = frozenset({Status.QUEUED, Status.RUNNING, Status.VERIFYING})
    TERMINAL = frozenset({Status.SUCCEEDED, Status.FAILED, Status.CANCELLED})
    TRANSITIONS = {
        Status.QUEUED: frozenset({Status.RUNNING, Status.FAILED, Status.CANCELLED}),
        Status.RUNNING: frozenset({Status.VERIFYING, Status.FAILED, Status.CANCELLED}),
        Status.VERIFYING: frozenset({Status.SUCCEEDED, Status.FAILED, Status.CANCELLED}),
    }
    RUNNING_STATES = frozenset({Status.RUNNING, Status.VERIFYING})

    artifact = models.ForeignKey(BackupArtifact, models.PROTECT, related_name="restore_runs")
    artifact_sha256 = models.CharField(max_length=64, help_text=_("The checksum the run was requested for."))
    target_kind = models.CharField(max_length=16, choices=TargetKind.choices)
    target_datastore = models.ForeignKey(
        Datastore,
        models.PROTECT,
        related_name="restore_runs",
        help_text=_("The datastore restored into; for a new database, the server the database is created on."),
    )
    new_database_name = models.CharField(max_length=63, blank=True)
    target_key = models.CharField(
        max_length=200, editable=False, help_text=_("Identifies the target database (one active restore per target).")
    )
    options = models.JSONField(default=dict, blank=True)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.QUEUED, db_index=True)
    exit_code = models.IntegerField(null=True, blank=True)
    checks = models.JSONField(default=list, blank=True, help_text=_("Post-restore checks: name, ok, detail."))

    class Meta:
        ordering = ["-created_at", "-pk"]
        constraints = [
            # Two workers racing cannot both restore into the same target: the database refuses the second.
            models.UniqueConstraint(
                fields=["target_key"],
                condition=models.Q(status__in=["queued", "running", "verifying"]),
                name="restorerun_one_active_per_target",
            ),
        ]

    def __str__(self) -> str:
        return f"restore #{self.pk}"

    @property
    def target_label(self) -> str:
        if self.target_kind == self.TargetKind.NEW_DATABASE:
            return _("new database %(name)s on %(server)s's server") % {
                "name": self.new_database_name,
                "server": self.target_datastore.name,
            }
        return self.target_datastore.name


class RestoreRunEvent(JobEvent):
    """A status change of a restore run."""

    job = models.ForeignKey(RestoreRun, models.CASCADE, related_name="events")
