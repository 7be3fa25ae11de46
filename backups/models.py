from __future__ import annotations

from datetime import timedelta

from django.core.exceptions import ValidationError
from django.core.validators import MaxValueValidator, MinValueValidator, RegexValidator
from django.db import models
from django.utils.translation import gettext_lazy as _

from dr_console.jobs import JobEvent, JobModel
from dr_console.schedules import InvalidSchedule, cron_schedule_parse

env_var_name_validator = RegexValidator(
    r"^[A-Z_][A-Z0-9_]*$", _("Use the name of an environment variable (A-Z, 0-9, _), not a URL.")
)
slug_name_validator = RegexValidator(
    r"^[a-z0-9][a-z0-9_.-]*$", _("Use lowercase letters, digits, '.', '_' and '-', starting with a letter or digit.")
)


def cron_expression_validator(value: str) -> None:
    try:
        cron_schedule_parse(value)
    except InvalidSchedule as exc:
        raise ValidationError(str(exc)) from None


# Documents whose queue job may have been lost with Redis: still waiting, or half-way through processing.
DEFAULT_REPROCESS_QUERY = (
    "SELECT workspace_id, id AS document_id FROM documents WHERE status IN ('PENDING', 'PROCESSING') ORDER BY id"
)


class Environment(models.Model):
    """A deployment of the protected product (e.g. staging, prod)."""

    name = models.CharField(max_length=64, unique=True, validators=[slug_name_validator])
    description = models.TextField(blank=True)
    protected = models.BooleanField(
        default=False, help_text=_("Restores into a protected environment need approval by someone else.")
    )
    required_approvals = models.PositiveSmallIntegerField(
        default=1, validators=[MinValueValidator(1), MaxValueValidator(10)]
    )
    api_url = models.URLField(
        blank=True, help_text=_("Base URL of the protected application, for /healthz and /readyz checks.")
    )
    safety_backup = models.BooleanField(
        null=True,
        blank=True,
        help_text=_(
            "Back up the target before a restore overwrites it. Empty: yes in protected environments, no elsewhere."
        ),
    )
    webhook_url = models.URLField(
        blank=True, help_text=_("Optional: restore notifications are also posted here as JSON (Slack-compatible).")
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
        null=True,
        blank=True,
        related_name="+",
        limit_choices_to={"kind": "postgres"},
        help_text=_("The PostgreSQL datastore holding the application's data (documents)."),
    )
    redis_datastore = models.ForeignKey(
        "Datastore",
        models.SET_NULL,
        null=True,
        blank=True,
        related_name="+",
        limit_choices_to={"kind": "redis"},
        help_text=_("The Redis datastore holding the application's RQ queues."),
    )
    reprocess_concurrency = models.PositiveSmallIntegerField(
        default=16,
        validators=[MinValueValidator(1), MaxValueValidator(256)],
        help_text=_("How many reprocess calls are in flight at once."),
    )
    reprocess_query = models.TextField(
        blank=True,
        help_text=_(
            "SQL returning workspace_id, document_id for the documents to reprocess, run read-only against the "
            "PostgreSQL datastore. Empty: documents in PENDING or PROCESSING."
        ),
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
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

    environment = models.ForeignKey(Environment, models.PROTECT, related_name="datastores")
    name = models.CharField(max_length=64, unique=True, validators=[slug_name_validator])
    kind = models.CharField(max_length=16, choices=Kind.choices)
    url_env = models.CharField(
        "URL environment variable",
        max_length=128,
        validators=[env_var_name_validator],
        help_text=_(
            "Name of the environment variable holding the connection URL, e.g. PROD_DATABASE_URL. "
            "The URL itself is never stored, shown or logged by the console."
        ),
    )
    compression_level = models.PositiveSmallIntegerField(
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
        validators=[cron_expression_validator],
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
    description = models.TextField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["environment__name", "name"]

    def __str__(self) -> str:
        return self.name

    @property
    def drill_probe_list(self) -> list[str]:
        return [line.strip() for line in self.drill_probes.splitlines() if line.strip()]

    @property
    def drill_url_env(self) -> str:
        """The variable naming the server drills restore into."""
        return self.drill_server_url_env or self.url_env


class BackupArtifact(JobModel):
    """One backup of a datastore: the job that takes it and, once it succeeded, the stored file."""

    class Status(models.TextChoices):
        PENDING = "pending", _("Pending")
        RUNNING = "running", _("Running")
        SUCCEEDED = "succeeded", _("Succeeded")
        FAILED = "failed", _("Failed")

    class Verification(models.TextChoices):
        UNVERIFIED = "unverified", _("Not verified")
        VERIFYING = "verifying", _("Verifying")
        VERIFIED = "verified", _("Verified")
        CORRUPT = "corrupt", _("Corrupt")

    class Format(models.TextChoices):
        PG_CUSTOM = "pg_custom", _("pg_dump custom format")
        REDIS_SNAPSHOT = "redis_snapshot", _("Redis logical snapshot")

    ACTIVE = frozenset({Status.PENDING, Status.RUNNING})
    TERMINAL = frozenset({Status.SUCCEEDED, Status.FAILED})
    TRANSITIONS = {
        Status.PENDING: frozenset({Status.RUNNING, Status.FAILED}),
        Status.RUNNING: frozenset({Status.SUCCEEDED, Status.FAILED}),
    }

    datastore = models.ForeignKey(Datastore, models.PROTECT, related_name="artifacts")
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.PENDING, db_index=True)
    verification = models.CharField(
        max_length=16, choices=Verification.choices, default=Verification.UNVERIFIED, db_index=True
    )
    verified_at = models.DateTimeField(null=True, blank=True)
    verification_error = models.TextField(blank=True)
    verification_heartbeat_at = models.DateTimeField(null=True, blank=True)
    format = models.CharField(max_length=32, choices=Format.choices, default=Format.PG_CUSTOM)
    compression_level = models.PositiveSmallIntegerField(null=True, blank=True)
    size_bytes = models.BigIntegerField(null=True, blank=True)
    bytes_done = models.BigIntegerField(default=0, help_text=_("Bytes written so far, while running."))
    sha256 = models.CharField(max_length=64, blank=True)
    storage_key = models.CharField(max_length=512, blank=True)
    tool_version = models.CharField(max_length=120, blank=True, help_text=_("e.g. pg_dump (PostgreSQL) 15.20"))
    server_version = models.CharField(max_length=120, blank=True)
    archive_entries = models.PositiveIntegerField(null=True, blank=True)
    row_counts = models.JSONField(
        default=dict, blank=True, help_text=_("Exact rows per table, counted in the dump's own snapshot.")
    )

    class Meta:
        ordering = ["-created_at", "-pk"]
        constraints = [
            # The database, not a check in Python, guarantees one running backup per datastore.
            models.UniqueConstraint(
                fields=["datastore"],
                condition=models.Q(status__in=["pending", "running"]),
                name="backupartifact_one_active_per_datastore",
            ),
        ]
        indexes = [models.Index(fields=["datastore", "-created_at"])]

    def __str__(self) -> str:
        return f"backup #{self.pk} of {self.datastore_id and self.datastore.name}"


class BackupArtifactEvent(JobEvent):
    """A status change of a backup artifact."""

    job = models.ForeignKey(BackupArtifact, models.CASCADE, related_name="events")


class TargetLock(models.Model):
    """Held by the one job (backup or restore) touching a target database. The unique key is the lock: of two
    workers racing for it, the database lets exactly one insert."""

    target_key = models.CharField(max_length=200, unique=True)
    holder = models.CharField(max_length=100, help_text=_('e.g. "backup #12", "restore #3".'))
    acquired_at = models.DateTimeField(auto_now_add=True)

    def __str__(self) -> str:
        return f"{self.target_key} held by {self.holder}"
