from __future__ import annotations

from datetime import datetime, timedelta

from django.conf import settings
from django.db import models
from django.utils import timezone
from django.utils.translation import gettext_lazy as _
from django.utils.translation import pgettext_lazy

from dr_console.jobs import JobEvent, JobModel
from dr_console.notes import Note
from inventory.models import DEFAULT_STORAGE_LOCATION, Datastore


class BackupArtifact(JobModel):
    """One backup of a datastore: the job that takes it and, once it succeeded, the stored file."""

    class Status(models.TextChoices):
        PENDING = "pending", _("Pending")
        RUNNING = "running", _("Running")
        SUCCEEDED = "succeeded", _("Succeeded")
        FAILED = "failed", _("Failed")  # expected: the tool or the target said no (the reason is on the row)
        ERRORED = "errored", _("Errored")  # unexpected: a bug in the console (the traceback is in the log)
        CANCELLED = "cancelled", _("Cancelled")
        EXPIRED = "expired", _("Expired")  # deleted by the retention policy; the row stays for history

    class Verification(models.TextChoices):
        UNVERIFIED = "unverified", _("Not verified")
        VERIFYING = "verifying", _("Verifying")
        VERIFIED = "verified", _("Verified")
        CORRUPT = "corrupt", _("Corrupt")

    class Format(models.TextChoices):
        PG_CUSTOM = "pg_custom", _("pg_dump custom format")
        REDIS_SNAPSHOT = "redis_snapshot", _("Redis logical snapshot")

    class Origin(models.TextChoices):
        TAKEN = "taken", _("Taken by the console")
        IMPORTED = "imported", _("Imported from a file")
        REBUILT = "rebuilt", _("Rebuilt from a location's manifests")

    ACTIVE = frozenset({Status.PENDING, Status.RUNNING})
    QUEUED_STATES = frozenset({Status.PENDING})
    RUNNING_STATES = frozenset({Status.RUNNING})
    TERMINAL = frozenset({Status.SUCCEEDED, Status.FAILED, Status.ERRORED, Status.CANCELLED, Status.EXPIRED})
    TRANSITIONS = {
        Status.PENDING: frozenset({Status.RUNNING, Status.FAILED, Status.ERRORED, Status.CANCELLED}),
        Status.RUNNING: frozenset({Status.SUCCEEDED, Status.FAILED, Status.ERRORED, Status.CANCELLED}),
        Status.SUCCEEDED: frozenset({Status.EXPIRED}),
    }

    datastore = models.ForeignKey(Datastore, models.PROTECT, related_name="artifacts", verbose_name=_("datastore"))
    status = models.CharField(_("status"), max_length=16, choices=Status.choices, default=Status.PENDING, db_index=True)
    verification = models.CharField(
        _("verification"), max_length=16, choices=Verification.choices, default=Verification.UNVERIFIED, db_index=True
    )
    # A summary of the newest verification (BackupVerification rows hold each one), kept by backups.verification.
    verified_at = models.DateTimeField(_("verified at"), null=True, blank=True)
    verification_error = models.TextField(_("verification error"), blank=True)
    format = models.CharField(_("format"), max_length=32, choices=Format.choices, default=Format.PG_CUSTOM)
    compression_level = models.PositiveSmallIntegerField(_("compression level"), null=True, blank=True)
    size_bytes = models.BigIntegerField(_("size (bytes)"), null=True, blank=True)
    bytes_done = models.BigIntegerField(
        _("bytes written"), default=0, help_text=_("Bytes written so far, while running.")
    )
    sha256 = models.CharField(_("SHA-256"), max_length=64, blank=True)
    storage_key = models.CharField(_("storage key"), max_length=512, blank=True)
    tool_version = models.CharField(
        _("tool version"), max_length=120, blank=True, help_text=_("e.g. pg_dump (PostgreSQL) 15.20")
    )
    server_version = models.CharField(_("server version"), max_length=120, blank=True)
    archive_entries = models.PositiveIntegerField(_("archive entries"), null=True, blank=True)
    row_counts = models.JSONField(
        _("row counts"),
        default=dict,
        blank=True,
        help_text=_("Exact rows per table, counted in the dump's own snapshot."),
    )
    pinned_at = models.DateTimeField(_("pinned at"), null=True, blank=True)
    pinned_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, models.PROTECT, null=True, blank=True, related_name="+", verbose_name=_("pinned by")
    )
    pin_reason = models.CharField(
        _("pin reason"),
        max_length=500,
        blank=True,
        help_text=_("Why the retention policy must never delete it, e.g. legal hold."),
    )
    expired_at = models.DateTimeField(_("expired at"), null=True, blank=True)
    file_deleted_at = models.DateTimeField(
        _("file deleted at"), null=True, blank=True, help_text=_("When the expired backup's stored file was deleted.")
    )
    # Where the file is and what it holds. `sha256`/`size_bytes` are of the stored bytes (encrypted when
    # `recipients` is set); `plaintext_sha256`/`plaintext_size` of the dump itself, what a restore checks it got.
    location = models.CharField(
        _("storage location"), max_length=64, default=DEFAULT_STORAGE_LOCATION, help_text=_("Where the file is.")
    )
    recipients = models.JSONField(
        _("encrypted to"), default=list, blank=True, help_text=_("The age recipients the stored file is encrypted to.")
    )
    plaintext_sha256 = models.CharField(_("SHA-256 of the content"), max_length=64, blank=True)
    plaintext_size = models.BigIntegerField(_("size of the content (bytes)"), null=True, blank=True)
    retain_until = models.DateTimeField(
        _("locked until"), null=True, blank=True, help_text=_("Object Lock: the storage refuses to delete it before.")
    )
    origin = models.CharField(_("origin"), max_length=16, choices=Origin.choices, default=Origin.TAKEN)
    origin_detail = models.CharField(
        _("origin detail"), max_length=500, blank=True, help_text=_("The imported file's name, or the location read.")
    )

    class Meta:
        verbose_name = _("backup")
        verbose_name_plural = _("backups")
        ordering = ["-created_at", "-pk"]
        permissions = [
            ("pin_backupartifact", "Can pin and unpin backups"),
            ("download_backupartifact", "Can download backups"),
        ]
        constraints = [
            # The database, not a check in Python, guarantees one running backup per datastore.
            models.UniqueConstraint(
                fields=["datastore"],
                condition=models.Q(status__in=["pending", "running"]),
                name="backupartifact_one_active_per_datastore",
            ),
        ]
        indexes = [
            # "-id" is the newest-first order's tie-break (dr_console.jobs.newest_job_value): no sort after the walk.
            models.Index(fields=["datastore", "-created_at", "-id"]),
            # The dashboard's "newest backup that ..." lookups: without these, a datastore with nothing running
            # (or whose recent backups all failed) walks its whole history to find no match.
            models.Index(
                fields=["datastore", "-created_at", "-id"],
                condition=models.Q(status="succeeded"),
                name="backupartifact_succeeded_idx",
            ),
            models.Index(
                fields=["datastore", "-created_at", "-id"],
                condition=models.Q(status="succeeded", verification="verified"),
                name="backupartifact_verified_idx",
            ),
            models.Index(
                fields=["datastore", "-created_at", "-id"],
                condition=models.Q(status__in=["pending", "running"]),
                name="backupartifact_active_idx",
            ),
            models.Index(
                fields=["datastore", "-created_at", "-id"],
                condition=models.Q(verification="verifying"),
                name="backupartifact_verifying_idx",
            ),
            models.Index(
                fields=["datastore", "-created_at", "-id"],
                condition=models.Q(verified_at__isnull=False),
                name="backupartifact_checked_idx",
            ),
            # /metrics counts failures per datastore at every scrape: from these (index-only scans), not by
            # reading every backup the console ever made.
            models.Index(fields=["datastore"], condition=models.Q(status="failed"), name="backupartifact_failed_idx"),
            models.Index(
                fields=["datastore"], condition=models.Q(verification="corrupt"), name="backupartifact_corrupt_idx"
            ),
        ]

    @property
    def taken_at(self) -> datetime:
        """When the backup's data was read: pg_dump's snapshot (or the Redis scan) starts as the job starts. Until
        it starts, when it was asked for. The one time every page shows for "taken"."""
        return self.started_at or self.created_at

    def __str__(self) -> str:
        return f"backup #{self.pk} of {self.datastore_id and self.datastore.name}"

    def audit_note(self) -> Note:
        return Note("backup_of", {"id": str(self.pk), "datastore": self.datastore.name})

    @property
    def is_pinned(self) -> bool:
        return self.pinned_at is not None

    @property
    def content_sha256(self) -> str:
        """The sha256 of the dump itself (older and unencrypted backups: the stored file's)."""
        return self.plaintext_sha256 or self.sha256

    @property
    def is_encrypted(self) -> bool:
        return bool(self.recipients)


class BackupArtifactEvent(JobEvent):
    """A status change of a backup artifact."""

    job = models.ForeignKey(BackupArtifact, models.CASCADE, related_name="events", verbose_name=_("backup"))

    class Meta(JobEvent.Meta):
        verbose_name = _("backup event")
        verbose_name_plural = _("backup events")


class ArtifactCopy(JobModel):
    """One backup's copy at one copy location: the job that streams it there, hashing as it goes, and reads it back
    from that location to check it (backups.copies). Restores fall back to a verified copy when the primary file
    is unreachable, missing or corrupt; retention expires copies by the location's own policy."""

    class Status(models.TextChoices):
        QUEUED = "queued", pgettext_lazy("copy", "Queued")
        RUNNING = "running", pgettext_lazy("copy", "Copying")
        VERIFIED = "verified", pgettext_lazy("copy", "Verified")
        FAILED = "failed", pgettext_lazy("copy", "Failed")
        ERRORED = "errored", pgettext_lazy("copy", "Errored")
        CANCELLED = "cancelled", pgettext_lazy("copy", "Cancelled")
        CORRUPT = "corrupt", pgettext_lazy("copy", "Corrupt")  # a later read found it does not match
        EXPIRED = "expired", pgettext_lazy("copy", "Expired")  # deleted by the location's retention

    ACTIVE = frozenset({Status.QUEUED, Status.RUNNING})
    QUEUED_STATES = frozenset({Status.QUEUED})
    RUNNING_STATES = frozenset({Status.RUNNING})
    TERMINAL = frozenset(
        {Status.VERIFIED, Status.FAILED, Status.ERRORED, Status.CANCELLED, Status.CORRUPT, Status.EXPIRED}
    )
    TRANSITIONS = {
        Status.QUEUED: frozenset({Status.RUNNING, Status.FAILED, Status.ERRORED, Status.CANCELLED}),
        Status.RUNNING: frozenset({Status.VERIFIED, Status.FAILED, Status.ERRORED, Status.CANCELLED}),
        Status.VERIFIED: frozenset({Status.CORRUPT, Status.EXPIRED}),
        Status.CORRUPT: frozenset({Status.EXPIRED}),
    }

    artifact = models.ForeignKey(BackupArtifact, models.PROTECT, related_name="copies", verbose_name=_("backup"))
    location = models.CharField(_("storage location"), max_length=64)
    status = models.CharField(_("status"), max_length=16, choices=Status.choices, default=Status.QUEUED, db_index=True)
    storage_key = models.CharField(_("storage key"), max_length=512, blank=True)
    size_bytes = models.BigIntegerField(_("size (bytes)"), null=True, blank=True)
    sha256 = models.CharField(_("SHA-256"), max_length=64, blank=True, help_text=_("Of the bytes stored there."))
    recipients = models.JSONField(_("encrypted to"), default=list, blank=True)
    retain_until = models.DateTimeField(_("locked until"), null=True, blank=True)
    bytes_done = models.BigIntegerField(_("bytes copied"), default=0)
    verified_at = models.DateTimeField(_("verified at"), null=True, blank=True)
    expired_at = models.DateTimeField(_("expired at"), null=True, blank=True)
    file_deleted_at = models.DateTimeField(_("file deleted at"), null=True, blank=True)

    class Meta:
        verbose_name = _("copy")
        verbose_name_plural = _("copies")
        ordering = ["location", "-created_at", "-pk"]
        constraints = [
            models.UniqueConstraint(
                fields=["artifact", "location"],
                condition=models.Q(status__in=["queued", "running"]),
                name="artifactcopy_one_active_per_location",
            ),
            models.UniqueConstraint(
                fields=["artifact", "location"],
                condition=models.Q(status="verified"),
                name="artifactcopy_one_verified_per_location",
            ),
        ]
        indexes = [models.Index(fields=["location", "status"])]

    def __str__(self) -> str:
        return f"copy #{self.pk} of backup #{self.artifact_id} at {self.location}"

    def audit_note(self) -> Note:
        return Note("copy_of", {"id": str(self.pk), "backup": str(self.artifact_id), "location": self.location})

    @property
    def is_encrypted(self) -> bool:
        return bool(self.recipients)


class ArtifactCopyEvent(JobEvent):
    """A status change of a copy."""

    job = models.ForeignKey(ArtifactCopy, models.CASCADE, related_name="events", verbose_name=_("copy"))

    class Meta(JobEvent.Meta):
        verbose_name = _("copy event")
        verbose_name_plural = _("copy events")


class BackupVerification(JobModel):
    """One re-read of a stored backup: its size and sha256 against the record, and the format's reader through
    every block. Its outcome is summarised on the backup (`verification`, `verified_at`, `verification_error`)."""

    class Status(models.TextChoices):
        QUEUED = "queued", pgettext_lazy("verification", "Queued")
        RUNNING = "running", pgettext_lazy("verification", "Verifying")
        VERIFIED = "verified", pgettext_lazy("verification", "Verified")
        CORRUPT = "corrupt", pgettext_lazy("verification", "Corrupt")  # found: the file does not match
        FAILED = "failed", pgettext_lazy("verification", "Failed")  # could not tell, e.g. storage unreachable
        ERRORED = "errored", pgettext_lazy("verification", "Errored")
        CANCELLED = "cancelled", pgettext_lazy("verification", "Cancelled")

    ACTIVE = frozenset({Status.QUEUED, Status.RUNNING})
    QUEUED_STATES = frozenset({Status.QUEUED})
    RUNNING_STATES = frozenset({Status.RUNNING})
    TERMINAL = frozenset({Status.VERIFIED, Status.CORRUPT, Status.FAILED, Status.ERRORED, Status.CANCELLED})
    TRANSITIONS = {
        Status.QUEUED: frozenset({Status.RUNNING, Status.FAILED, Status.ERRORED, Status.CANCELLED}),
        Status.RUNNING: frozenset({Status.VERIFIED, Status.CORRUPT, Status.FAILED, Status.ERRORED, Status.CANCELLED}),
    }

    artifact = models.ForeignKey(BackupArtifact, models.CASCADE, related_name="verifications", verbose_name=_("backup"))
    status = models.CharField(_("status"), max_length=16, choices=Status.choices, default=Status.QUEUED, db_index=True)
    bytes_done = models.BigIntegerField(_("bytes read"), default=0)

    class Meta:
        verbose_name = _("verification")
        verbose_name_plural = _("verifications")
        ordering = ["-created_at", "-pk"]
        constraints = [
            # One verification at a time per backup: a second request is refused, a redelivery finds it claimed.
            models.UniqueConstraint(
                fields=["artifact"],
                condition=models.Q(status__in=["queued", "running"]),
                name="backupverification_one_active_per_artifact",
            ),
        ]

    def __str__(self) -> str:
        return f"verification #{self.pk} of backup #{self.artifact_id}"

    def audit_note(self) -> Note:
        return Note("verification_of", {"id": str(self.pk), "backup": str(self.artifact_id)})


class BackupVerificationEvent(JobEvent):
    """A status change of a verification."""

    job = models.ForeignKey(BackupVerification, models.CASCADE, related_name="events", verbose_name=_("verification"))

    class Meta(JobEvent.Meta):
        verbose_name = _("verification event")
        verbose_name_plural = _("verification events")


class ScheduledBackup(models.Model):
    """One firing of a datastore's backup schedule, as the worker received it: what it started, or why not."""

    class Outcome(models.TextChoices):
        STARTED = "started", _("Started")
        SKIPPED = "skipped", _("Skipped: the previous backup was still running")
        REFUSED = "refused", _("Refused")

    datastore = models.ForeignKey(
        Datastore, models.CASCADE, related_name="scheduled_backups", verbose_name=_("datastore")
    )
    expected_at = models.DateTimeField(_("due at"), help_text=_("The schedule's fire time this run answers."))
    fired_at = models.DateTimeField(_("fired at"), help_text=_("When the worker received it."))
    missed_before = models.PositiveIntegerField(
        _("missed before"),
        default=0,
        help_text=_("Fire times between the previous run and this one that had no run (beat was down)."),
    )
    outcome = models.CharField(_("outcome"), max_length=16, choices=Outcome.choices)
    artifact = models.ForeignKey(
        BackupArtifact, models.SET_NULL, null=True, blank=True, related_name="+", verbose_name=_("backup")
    )
    message = models.TextField(_("message"), blank=True)
    # Unique: a message the broker delivers twice (acks_late) is handled once.
    task_id = models.CharField(_("task id"), max_length=64, unique=True, null=True, blank=True)

    class Meta:
        verbose_name = _("scheduled backup")
        verbose_name_plural = _("scheduled backups")
        ordering = ["-expected_at", "-pk"]
        indexes = [models.Index(fields=["datastore", "-expected_at", "-id"])]

    def __str__(self) -> str:
        return f"{self.datastore_id and self.datastore.name} at {self.expected_at:%Y-%m-%d %H:%M}: {self.outcome}"

    @property
    def late_by(self) -> timedelta:
        return self.fired_at - self.expected_at


class DownloadRequest(models.Model):
    """A request to download a backup of an environment whose data is protected: the file leaves the console, so
    like a restore that copies such data elsewhere it needs the approval of other people (backups.downloads). Once
    approved, its requester may download it once, within DOWNLOAD_WINDOW. Not a job: nothing runs in the background,
    so a plain model whose status changes by compare-and-set."""

    class Status(models.TextChoices):
        AWAITING_APPROVAL = "awaiting_approval", pgettext_lazy("download", "Awaiting approval")
        APPROVED = "approved", pgettext_lazy("download", "Approved")
        USED = "used", pgettext_lazy("download", "Downloaded")
        REJECTED = "rejected", pgettext_lazy("download", "Rejected")
        EXPIRED = "expired", pgettext_lazy("download", "Expired")
        CANCELLED = "cancelled", pgettext_lazy("download", "Cancelled")

    ACTIVE = frozenset({Status.AWAITING_APPROVAL, Status.APPROVED})
    TRANSITIONS = {
        Status.AWAITING_APPROVAL: frozenset({Status.APPROVED, Status.REJECTED, Status.EXPIRED, Status.CANCELLED}),
        Status.APPROVED: frozenset({Status.USED, Status.EXPIRED, Status.CANCELLED}),
    }

    artifact = models.ForeignKey(
        BackupArtifact, models.PROTECT, related_name="download_requests", verbose_name=_("backup")
    )
    location = models.CharField(
        _("storage location"), max_length=64, blank=True, help_text=_("The location asked for; empty: any.")
    )
    requested_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, models.PROTECT, related_name="+", verbose_name=_("requested by")
    )
    reason = models.TextField(_("reason"), help_text=_("Why the file must leave the console; shown to approvers."))
    status = models.CharField(
        _("status"), max_length=24, choices=Status.choices, default=Status.AWAITING_APPROVAL, db_index=True
    )
    required_approvals = models.PositiveSmallIntegerField(
        _("required approvals"), default=1, help_text=_("Distinct approvals needed, frozen at request time.")
    )
    created_at = models.DateTimeField(_("requested at"), default=timezone.now)
    approved_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        models.PROTECT,
        null=True,
        blank=True,
        related_name="+",
        verbose_name=_("approved by"),
        help_text=_("Who gave the last approval it needed."),
    )
    approved_at = models.DateTimeField(_("approved at"), null=True, blank=True)
    expires_at = models.DateTimeField(
        _("expires at"), null=True, blank=True, help_text=_("Once approved: the download must start before.")
    )
    used_at = models.DateTimeField(_("downloaded at"), null=True, blank=True)
    ended_note = models.TextField(_("note"), blank=True, help_text=_("Why it was rejected, expired or cancelled."))

    class Meta:
        verbose_name = _("download request")
        verbose_name_plural = _("download requests")
        ordering = ["-created_at", "-pk"]
        indexes = [models.Index(fields=["artifact", "status"])]

    def __str__(self) -> str:
        return f"download request #{self.pk} of backup #{self.artifact_id}"

    def audit_note(self) -> Note:
        return Note("download_request", {"id": str(self.pk), "backup": str(self.artifact_id)})

    @property
    def is_active(self) -> bool:
        return self.status in self.ACTIVE


class DownloadApproval(models.Model):
    """One approver's decision on a download request. Each person decides once per request."""

    class Decision(models.TextChoices):
        APPROVED = "approved", _("Approved")
        REJECTED = "rejected", _("Rejected")

    request = models.ForeignKey(
        DownloadRequest, models.CASCADE, related_name="approvals", verbose_name=_("download request")
    )
    approver = models.ForeignKey(settings.AUTH_USER_MODEL, models.PROTECT, related_name="+", verbose_name=_("approver"))
    decision = models.CharField(_("decision"), max_length=16, choices=Decision.choices)
    comment = models.TextField(_("comment"), blank=True)
    created_at = models.DateTimeField(_("created at"), default=timezone.now)

    class Meta:
        verbose_name = _("download approval")
        verbose_name_plural = _("download approvals")
        ordering = ["created_at", "pk"]
        constraints = [models.UniqueConstraint(fields=["request", "approver"], name="downloadapproval_once_per_person")]

    def __str__(self) -> str:
        return f"{self.approver} {self.decision} download request #{self.request_id}"
