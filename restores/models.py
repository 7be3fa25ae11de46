from __future__ import annotations

from django.db import models
from django.utils import timezone
from django.utils.translation import gettext_lazy as _

from backups.models import BackupArtifact
from dr_console.jobs import JobEvent, JobModel
from dr_console.notes import Note
from inventory.models import Datastore


class RestoreRun(JobModel):
    """One restore of a backup artifact into a target database. Its parameters are frozen at request time."""

    class Status(models.TextChoices):
        REQUESTED = "requested", _("Requested")
        AWAITING_APPROVAL = "awaiting_approval", _("Awaiting approval")
        APPROVED = "approved", _("Approved")
        QUEUED = "queued", _("Queued")
        RUNNING = "running", _("Running")
        VERIFYING = "verifying", _("Verifying")
        SUCCEEDED = "succeeded", _("Succeeded")
        FAILED = "failed", _("Failed")  # expected: a precondition, the tool or a check said no
        ERRORED = "errored", _("Errored")  # unexpected: a bug in the console (the traceback is in the log)
        REJECTED = "rejected", _("Rejected")
        EXPIRED = "expired", _("Expired")
        CANCELLED = "cancelled", _("Cancelled")

    class TargetKind(models.TextChoices):
        IN_PLACE = "in_place", _("In place (its own datastore)")
        DATASTORE = "datastore", _("Another datastore")
        NEW_DATABASE = "new_database", _("A new database")

    ACTIVE = frozenset(
        {Status.REQUESTED, Status.AWAITING_APPROVAL, Status.APPROVED, Status.QUEUED, Status.RUNNING, Status.VERIFYING}
    )
    TERMINAL = frozenset(
        {Status.SUCCEEDED, Status.FAILED, Status.ERRORED, Status.REJECTED, Status.EXPIRED, Status.CANCELLED}
    )
    # The one place that says what may follow what. Approval is a set of states, not a flag.
    TRANSITIONS = {
        Status.REQUESTED: frozenset({Status.AWAITING_APPROVAL, Status.QUEUED, Status.FAILED, Status.CANCELLED}),
        Status.AWAITING_APPROVAL: frozenset({Status.APPROVED, Status.REJECTED, Status.EXPIRED, Status.CANCELLED}),
        Status.APPROVED: frozenset({Status.QUEUED, Status.FAILED, Status.EXPIRED, Status.CANCELLED}),
        Status.QUEUED: frozenset({Status.RUNNING, Status.FAILED, Status.ERRORED, Status.EXPIRED, Status.CANCELLED}),
        Status.RUNNING: frozenset({Status.VERIFYING, Status.FAILED, Status.ERRORED, Status.CANCELLED}),
        Status.VERIFYING: frozenset({Status.SUCCEEDED, Status.FAILED, Status.ERRORED, Status.CANCELLED}),
    }
    QUEUED_STATES = frozenset({Status.QUEUED})
    RUNNING_STATES = frozenset({Status.RUNNING, Status.VERIFYING})
    WAITING_STATES = frozenset({Status.REQUESTED, Status.AWAITING_APPROVAL, Status.APPROVED, Status.QUEUED})

    artifact = models.ForeignKey(BackupArtifact, models.PROTECT, related_name="restore_runs", verbose_name=_("backup"))
    artifact_sha256 = models.CharField(
        _("backup SHA-256"), max_length=64, help_text=_("The checksum the run was requested for.")
    )
    target_kind = models.CharField(_("target kind"), max_length=16, choices=TargetKind.choices)
    target_datastore = models.ForeignKey(
        Datastore,
        models.PROTECT,
        verbose_name=_("target datastore"),
        related_name="restore_runs",
        help_text=_("The datastore restored into; for a new database, the server the database is created on."),
    )
    new_database_name = models.CharField(_("new database name"), max_length=63, blank=True)
    target_key = models.CharField(
        _("target key"),
        max_length=200,
        editable=False,
        help_text=_("Identifies the target database, for the lock that lets one job at a time touch it."),
    )
    target_identity = models.JSONField(
        _("target identity"),
        null=True,
        blank=True,
        editable=False,
        help_text=_(
            "Which database the target was at request time (inventory.identity). The run fails before touching "
            "anything if its target is another database at launch."
        ),
    )
    options = models.JSONField(_("options"), default=dict, blank=True)
    source_note = models.TextField(
        _("read from"), blank=True, help_text=_("Which file of the backup was read, and why others were not.")
    )
    reason = models.TextField(
        _("reason"), help_text=_("Why this restore is needed; shown to approvers and kept in the audit log.")
    )
    status = models.CharField(
        _("status"), max_length=24, choices=Status.choices, default=Status.REQUESTED, db_index=True
    )
    required_approvals = models.PositiveSmallIntegerField(
        _("required approvals"),
        default=0,
        help_text=_("Distinct approvals needed, frozen at request time (0: not a protected target)."),
    )
    safety_backup = models.ForeignKey(
        BackupArtifact,
        models.PROTECT,
        verbose_name=_("safety backup"),
        null=True,
        blank=True,
        related_name="+",
        help_text=_("The backup of the target taken just before this restore overwrote it."),
    )
    approved_at = models.DateTimeField(
        _("approved at"),
        null=True,
        blank=True,
        help_text=_("When the last approval it needed was given: the approval's time to live counts from here."),
    )
    database_created = models.BooleanField(
        _("database created"),
        default=False,
        help_text=_("The run created its new database (and so drops it again if it fails, or the reaper does)."),
    )
    # Who asked, besides the console user named: on the command line, the OS user and the machine that ran it;
    # `requested_via` is which way the request came (web, cli, api, system), as in the audit log.
    requested_via = models.CharField(_("requested via"), max_length=8, blank=True)
    requested_os_user = models.CharField(_("requested by OS user"), max_length=150, blank=True)
    requested_host = models.CharField(_("requested from host"), max_length=255, blank=True)
    exit_code = models.IntegerField(_("exit code"), null=True, blank=True)
    checks = models.JSONField(
        _("checks"), default=list, blank=True, help_text=_("Post-restore checks: name, ok, detail.")
    )

    class Meta:
        verbose_name = _("restore")
        verbose_name_plural = _("restores")
        ordering = ["-created_at", "-pk"]
        permissions = [("approve_restorerun", "Can approve or reject restore runs")]

    def __str__(self) -> str:
        return f"restore #{self.pk}"

    def audit_note(self) -> Note:
        return Note("restore", {"id": str(self.pk)})

    @property
    def target_label(self) -> str:
        if self.target_kind == self.TargetKind.NEW_DATABASE:
            return _("new database %(name)s on %(server)s's server") % {
                "name": self.new_database_name,
                "server": self.target_datastore.name,
            }
        return self.target_datastore.name


class RestoreApproval(models.Model):
    """One approver's decision on a restore run. Each person decides once per run."""

    class Decision(models.TextChoices):
        APPROVED = "approved", _("Approved")
        REJECTED = "rejected", _("Rejected")

    run = models.ForeignKey(RestoreRun, models.CASCADE, related_name="approvals", verbose_name=_("restore"))
    approver = models.ForeignKey("auth.User", models.PROTECT, related_name="+", verbose_name=_("approver"))
    decision = models.CharField(_("decision"), max_length=16, choices=Decision.choices)
    comment = models.TextField(_("comment"), blank=True)
    created_at = models.DateTimeField(_("created at"), default=timezone.now)

    class Meta:
        verbose_name = _("restore approval")
        verbose_name_plural = _("restore approvals")
        ordering = ["created_at", "pk"]
        constraints = [models.UniqueConstraint(fields=["run", "approver"], name="restoreapproval_once_per_person")]

    def __str__(self) -> str:
        return f"{self.approver} {self.decision} restore #{self.run_id}"


class RestoreRunEvent(JobEvent):
    """A status change of a restore run."""

    job = models.ForeignKey(RestoreRun, models.CASCADE, related_name="events", verbose_name=_("restore"))

    class Meta(JobEvent.Meta):
        verbose_name = _("restore event")
        verbose_name_plural = _("restore events")
