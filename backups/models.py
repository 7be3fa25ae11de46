from __future__ import annotations

from datetime import timedelta

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.validators import MaxValueValidator, MinValueValidator, RegexValidator
from django.db import models
from django.utils.translation import gettext_lazy as _

from dr_console.jobs import JobEvent, JobModel
from dr_console.schedules import DEFAULT_TIMEZONE, CronSchedule, InvalidSchedule, cron_schedule_parse, timezone_check

env_var_name_validator = RegexValidator(
    r"^[A-Z_][A-Z0-9_]*$", _("Use the name of an environment variable (A-Z, 0-9, _), not a URL.")
)
slug_name_validator = RegexValidator(
    r"^[a-z0-9][a-z0-9_.-]*$", _("Use lowercase letters, digits, '.', '_' and '-', starting with a letter or digit.")
)


# Documents whose queue job may have been lost with Redis: still waiting, or half-way through processing.
DEFAULT_REPROCESS_QUERY = (
    "SELECT workspace_id, id AS document_id FROM documents WHERE status IN ('PENDING', 'PROCESSING') ORDER BY id"
)


class Environment(models.Model):
    """A deployment of the protected product (e.g. staging, prod)."""

    name = models.CharField(_("name"), max_length=64, unique=True, validators=[slug_name_validator])
    description = models.TextField(_("description"), blank=True)
    protected = models.BooleanField(
        _("protected"),
        default=False,
        help_text=_("Restores into a protected environment need approval by someone else."),
    )
    required_approvals = models.PositiveSmallIntegerField(
        _("required approvals"), default=1, validators=[MinValueValidator(1), MaxValueValidator(10)]
    )
    api_url = models.URLField(
        _("API URL"), blank=True, help_text=_("Base URL of the protected application, for /healthz and /readyz checks.")
    )
    safety_backup = models.BooleanField(
        _("safety backup"),
        null=True,
        blank=True,
        help_text=_(
            "Back up the target before a restore overwrites it. Empty: yes in protected environments, no elsewhere."
        ),
    )
    webhook_url = models.URLField(
        _("webhook URL"),
        blank=True,
        help_text=_("Optional: restore notifications are also posted here as JSON (Slack-compatible)."),
    )
    api_token_env = models.CharField(
        _("API token environment variable"),
        max_length=128,
        blank=True,
        validators=[env_var_name_validator],
        help_text=_(
            "Name of the environment variable holding the application's bearer token, e.g. PROD_API_TOKEN. "
            "The token itself is never stored, shown or logged."
        ),
    )
    postgres_datastore = models.ForeignKey(
        "Datastore",
        models.SET_NULL,
        verbose_name=_("PostgreSQL datastore"),
        null=True,
        blank=True,
        related_name="+",
        limit_choices_to={"kind": "postgres"},
        help_text=_("The PostgreSQL datastore holding the application's data (documents)."),
    )
    redis_datastore = models.ForeignKey(
        "Datastore",
        models.SET_NULL,
        verbose_name=_("Redis datastore"),
        null=True,
        blank=True,
        related_name="+",
        limit_choices_to={"kind": "redis"},
        help_text=_("The Redis datastore holding the application's RQ queues."),
    )
    reprocess_concurrency = models.PositiveSmallIntegerField(
        _("reprocess concurrency"),
        default=16,
        validators=[MinValueValidator(1), MaxValueValidator(256)],
        help_text=_("How many reprocess calls are in flight at once."),
    )
    reprocess_query = models.TextField(
        _("reprocess query"),
        blank=True,
        help_text=_(
            "SQL returning workspace_id, document_id for the documents to reprocess, run read-only against the "
            "PostgreSQL datastore. Empty: documents in PENDING or PROCESSING."
        ),
    )
    created_at = models.DateTimeField(_("created at"), auto_now_add=True)
    updated_at = models.DateTimeField(_("updated at"), auto_now=True)

    class Meta:
        verbose_name = _("environment")
        verbose_name_plural = _("environments")
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name

    @property
    def takes_safety_backup(self) -> bool:
        return self.protected if self.safety_backup is None else self.safety_backup

    @property
    def effective_reprocess_query(self) -> str:
        return self.reprocess_query.strip() or DEFAULT_REPROCESS_QUERY

    def clean(self) -> None:
        errors = {}
        for field_name, kind in (("postgres_datastore", "postgres"), ("redis_datastore", "redis")):
            store = getattr(self, field_name)
            if store is None:
                continue
            if store.kind != kind:
                errors[field_name] = _("%(name)s is not a %(kind)s datastore.") % {"name": store.name, "kind": kind}
            elif self.pk and store.environment_id != self.pk:
                errors[field_name] = _("%(name)s belongs to another environment.") % {"name": store.name}
        if errors:
            raise ValidationError(errors)


class Datastore(models.Model):
    """A PostgreSQL database or a Redis that the console backs up. Its URL lives in an environment variable."""

    class Kind(models.TextChoices):
        POSTGRES = "postgres", "PostgreSQL"
        REDIS = "redis", "Redis"

    environment = models.ForeignKey(
        Environment, models.PROTECT, related_name="datastores", verbose_name=_("environment")
    )
    name = models.CharField(_("name"), max_length=64, unique=True, validators=[slug_name_validator])
    kind = models.CharField(_("kind"), max_length=16, choices=Kind.choices)
    url_env = models.CharField(
        _("URL environment variable"),
        max_length=128,
        validators=[env_var_name_validator],
        help_text=_(
            "Name of the environment variable holding the connection URL, e.g. PROD_DATABASE_URL. "
            "The URL itself is never stored, shown or logged by the console."
        ),
    )
    compression_level = models.PositiveSmallIntegerField(
        _("compression level"),
        null=True,
        blank=True,
        validators=[MaxValueValidator(9)],
        help_text=_("pg_dump compression level 0-9; empty uses the console default (BACKUP_DEFAULT_COMPRESSION)."),
    )
    rpo_target = models.DurationField(
        _("RPO target"),
        default=timedelta(hours=24),
        validators=[MinValueValidator(timedelta(minutes=1))],
        help_text=_("Maximum age of the newest verified backup"),
    )
    rto_target = models.DurationField(
        _("RTO target"),
        default=timedelta(hours=1),
        validators=[MinValueValidator(timedelta(minutes=1))],
        help_text=_("Maximum restore duration, as a drill measures it"),
    )
    drill_schedule = models.CharField(
        _("drill schedule"),
        max_length=120,
        blank=True,
        help_text=_(
            "Cron expression for restore drills (minute hour day-of-month month day-of-week), e.g. 0 5 * * 0 for "
            "05:00 every Sunday. Empty: no scheduled drills."
        ),
    )
    drill_server_url_env = models.CharField(
        _("drill server URL environment variable"),
        max_length=128,
        blank=True,
        validators=[env_var_name_validator],
        help_text=_(
            "Name of the environment variable holding the URL of the server drills restore into (a scratch "
            "database is created there and dropped after). Empty: the datastore's own server."
        ),
    )
    drill_probes = models.TextField(
        _("drill probes"),
        blank=True,
        help_text=_(
            "SQL probes a drill runs against the restored copy, one per line; each must return true, e.g. "
            "SELECT count(*) > 0 FROM documents"
        ),
    )
    backup_schedule = models.CharField(
        _("backup schedule"),
        max_length=120,
        blank=True,
        help_text=_(
            "Cron expression (minute hour day-of-month month day-of-week), e.g. 0 3 * * * for 03:00 every day. "
            "Empty: no scheduled backups."
        ),
    )
    backup_schedule_timezone = models.CharField(
        _("schedule time zone"),
        max_length=64,
        default=DEFAULT_TIMEZONE,
        help_text=_(
            "IANA time zone the backup and drill schedules are read in, e.g. Europe/Madrid; also the day of retention."
        ),
    )
    backup_schedule_since = models.DateTimeField(
        _("schedule set at"),
        null=True,
        blank=True,
        editable=False,
        help_text=_("When the current schedule was set: runs are due from here."),
    )
    # Retention (grandfather-father-son): a backup is kept if any rule keeps it. All zero: keep everything.
    retention_keep_last = models.PositiveSmallIntegerField(
        _("keep last"), default=0, validators=[MaxValueValidator(1000)], help_text=_("The newest N backups.")
    )
    retention_keep_daily = models.PositiveSmallIntegerField(
        _("keep daily"),
        default=0,
        validators=[MaxValueValidator(1000)],
        help_text=_("The newest backup of each of the last N days that have one."),
    )
    retention_keep_weekly = models.PositiveSmallIntegerField(
        _("keep weekly"),
        default=0,
        validators=[MaxValueValidator(1000)],
        help_text=_("The newest backup of each of the last N weeks (Monday to Sunday) that have one."),
    )
    retention_keep_monthly = models.PositiveSmallIntegerField(
        _("keep monthly"),
        default=0,
        validators=[MaxValueValidator(1000)],
        help_text=_("The newest backup of each of the last N months that have one."),
    )
    description = models.TextField(_("description"), blank=True)
    created_at = models.DateTimeField(_("created at"), auto_now_add=True)
    updated_at = models.DateTimeField(_("updated at"), auto_now=True)

    class Meta:
        verbose_name = _("datastore")
        verbose_name_plural = _("datastores")
        ordering = ["environment__name", "name"]
        permissions = [("change_datastore_retention", "Can change a datastore's retention policy")]

    def __str__(self) -> str:
        return self.name

    @property
    def drill_probe_list(self) -> list[str]:
        return [line.strip() for line in self.drill_probes.splitlines() if line.strip()]

    @property
    def drill_url_env(self) -> str:
        """The variable naming the server drills restore into."""
        return self.drill_server_url_env or self.url_env

    @property
    def drill_cron(self) -> CronSchedule | None:
        """The drill schedule, read in the schedule time zone; None when there is none."""
        if not self.drill_schedule:
            return None
        return cron_schedule_parse(self.drill_schedule, self.backup_schedule_timezone)

    def clean(self) -> None:
        self.backup_schedule_timezone = self.backup_schedule_timezone.strip() or DEFAULT_TIMEZONE
        try:
            timezone_check(self.backup_schedule_timezone)
        except InvalidSchedule as exc:
            raise ValidationError({"backup_schedule_timezone": str(exc)}) from None
        if self.backup_schedule.strip():
            try:
                self.backup_schedule = cron_schedule_parse(
                    self.backup_schedule, self.backup_schedule_timezone
                ).expression
            except InvalidSchedule as exc:
                raise ValidationError({"backup_schedule": str(exc)}) from None
        else:
            self.backup_schedule = ""
        if self.drill_schedule.strip():
            try:
                self.drill_schedule = cron_schedule_parse(self.drill_schedule, self.backup_schedule_timezone).expression
            except InvalidSchedule as exc:
                raise ValidationError({"drill_schedule": str(exc)}) from None
        else:
            self.drill_schedule = ""

    @property
    def backup_cron(self) -> CronSchedule | None:
        """The backup schedule; None when there is none. Raises InvalidSchedule (it was checked when saved)."""
        if not self.backup_schedule:
            return None
        return cron_schedule_parse(self.backup_schedule, self.backup_schedule_timezone)

    @property
    def has_retention_policy(self) -> bool:
        return any(
            (
                self.retention_keep_last,
                self.retention_keep_daily,
                self.retention_keep_weekly,
                self.retention_keep_monthly,
            )
        )


class BackupArtifact(JobModel):
    """One backup of a datastore: the job that takes it and, once it succeeded, the stored file."""

    class Status(models.TextChoices):
        PENDING = "pending", _("Pending")
        RUNNING = "running", _("Running")
        SUCCEEDED = "succeeded", _("Succeeded")
        FAILED = "failed", _("Failed")
        EXPIRED = "expired", _("Expired")  # deleted by the retention policy; the row stays for history

    class Verification(models.TextChoices):
        UNVERIFIED = "unverified", _("Not verified")
        VERIFYING = "verifying", _("Verifying")
        VERIFIED = "verified", _("Verified")
        CORRUPT = "corrupt", _("Corrupt")

    class Format(models.TextChoices):
        PG_CUSTOM = "pg_custom", _("pg_dump custom format")
        REDIS_SNAPSHOT = "redis_snapshot", _("Redis logical snapshot")

    ACTIVE = frozenset({Status.PENDING, Status.RUNNING})
    TERMINAL = frozenset({Status.SUCCEEDED, Status.FAILED, Status.EXPIRED})
    TRANSITIONS = {
        Status.PENDING: frozenset({Status.RUNNING, Status.FAILED}),
        Status.RUNNING: frozenset({Status.SUCCEEDED, Status.FAILED}),
        Status.SUCCEEDED: frozenset({Status.EXPIRED}),
    }

    datastore = models.ForeignKey(Datastore, models.PROTECT, related_name="artifacts", verbose_name=_("datastore"))
    status = models.CharField(_("status"), max_length=16, choices=Status.choices, default=Status.PENDING, db_index=True)
    verification = models.CharField(
        _("verification"), max_length=16, choices=Verification.choices, default=Verification.UNVERIFIED, db_index=True
    )
    verified_at = models.DateTimeField(_("verified at"), null=True, blank=True)
    verification_error = models.TextField(_("verification error"), blank=True)
    verification_heartbeat_at = models.DateTimeField(_("verification heartbeat at"), null=True, blank=True)
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

    class Meta:
        verbose_name = _("backup")
        verbose_name_plural = _("backups")
        ordering = ["-created_at", "-pk"]
        permissions = [("pin_backupartifact", "Can pin and unpin backups")]
        constraints = [
            # The database, not a check in Python, guarantees one running backup per datastore.
            models.UniqueConstraint(
                fields=["datastore"],
                condition=models.Q(status__in=["pending", "running"]),
                name="backupartifact_one_active_per_datastore",
            ),
        ]
        indexes = [
            models.Index(fields=["datastore", "-created_at"]),
            # The dashboard's "newest backup that ..." lookups: without these, a datastore with nothing running
            # (or whose recent backups all failed) walks its whole history to find no match.
            models.Index(
                fields=["datastore", "-created_at"],
                condition=models.Q(status="succeeded"),
                name="backupartifact_succeeded_idx",
            ),
            models.Index(
                fields=["datastore", "-created_at"],
                condition=models.Q(status="succeeded", verification="verified"),
                name="backupartifact_verified_idx",
            ),
            models.Index(
                fields=["datastore", "-created_at"],
                condition=models.Q(status__in=["pending", "running"]),
                name="backupartifact_active_idx",
            ),
            models.Index(
                fields=["datastore", "-created_at"],
                condition=models.Q(verification="verifying"),
                name="backupartifact_verifying_idx",
            ),
            models.Index(
                fields=["datastore", "-created_at"],
                condition=models.Q(verified_at__isnull=False),
                name="backupartifact_checked_idx",
            ),
        ]

    def __str__(self) -> str:
        return f"backup #{self.pk} of {self.datastore_id and self.datastore.name}"

    @property
    def is_pinned(self) -> bool:
        return self.pinned_at is not None


class BackupArtifactEvent(JobEvent):
    """A status change of a backup artifact."""

    job = models.ForeignKey(BackupArtifact, models.CASCADE, related_name="events", verbose_name=_("backup"))

    class Meta(JobEvent.Meta):
        verbose_name = _("backup event")
        verbose_name_plural = _("backup events")


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
        indexes = [models.Index(fields=["datastore", "-expected_at"])]

    def __str__(self) -> str:
        return f"{self.datastore_id and self.datastore.name} at {self.expected_at:%Y-%m-%d %H:%M}: {self.outcome}"

    @property
    def late_by(self) -> timedelta:
        return self.fired_at - self.expected_at


class TargetLock(models.Model):
    """Held by the one job (backup or restore) touching a target database. The unique key is the lock: of two
    workers racing for it, the database lets exactly one insert."""

    target_key = models.CharField(_("target key"), max_length=200, unique=True)
    holder = models.CharField(_("holder"), max_length=100, help_text=_('e.g. "backup #12", "restore #3".'))
    acquired_at = models.DateTimeField(_("acquired at"), auto_now_add=True)

    class Meta:
        verbose_name = _("target lock")
        verbose_name_plural = _("target locks")

    def __str__(self) -> str:
        return f"{self.target_key} held by {self.holder}"
