"""The inventory: what the console protects (environments and their datastores) and the locks that let one job at
a time touch a target. The bottom of the app layers: it imports only dr_console and audit, and every other app
imports it (docs/architecture.md)."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from django.core.exceptions import ValidationError
from django.core.validators import MaxValueValidator, MinValueValidator, RegexValidator
from django.db import models
from django.utils.translation import gettext_lazy as _

from dr_console.notes import Note
from dr_console.schedules import DEFAULT_TIMEZONE, CronSchedule, InvalidSchedule, cron_schedule_parse, timezone_check
from dr_console.secrets import TOKEN_SUFFIX, WEBHOOK_SUFFIX
from dr_console.sqltext import sql_statement_count

env_var_name_validator = RegexValidator(
    r"^[A-Z_][A-Z0-9_]*$", _("Use the name of an environment variable (A-Z, 0-9, _), not a URL.")
)
# Variables are declared by their names (dr_console.secrets): a token's ends in _TOKEN, a webhook's in
# _WEBHOOK_URL, and a datastore's URL variable ends in neither. So `api_token_env = "PROD_DATABASE_URL"` is refused:
# the production URL is never sent as a bearer token to whatever api_url says.
token_variable_validator = RegexValidator(
    rf"{TOKEN_SUFFIX}\Z",
    _("A token variable's name ends in _TOKEN, e.g. PROD_API_TOKEN, so that no other secret is sent as a token."),
)
webhook_variable_validator = RegexValidator(
    rf"{WEBHOOK_SUFFIX}\Z",
    _("A webhook variable's name ends in _WEBHOOK_URL, e.g. PROD_WEBHOOK_URL."),
)
url_variable_validator = RegexValidator(
    rf"({TOKEN_SUFFIX}|{WEBHOOK_SUFFIX})\Z",
    _("That name is declared as a token or webhook variable (it ends in _TOKEN or _WEBHOOK_URL), not a URL."),
    inverse_match=True,
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
    protected_data = models.BooleanField(
        _("protected data"),
        null=True,
        blank=True,
        help_text=_(
            "Restoring this environment's backups into a new database or into another environment needs approval "
            "(it copies the data where the operator can read it). Empty: the same as protected."
        ),
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
    webhook_url_env = models.CharField(
        _("webhook URL environment variable"),
        max_length=128,
        blank=True,
        validators=[env_var_name_validator, webhook_variable_validator],
        help_text=_(
            "Optional: name of the environment variable holding a webhook URL (e.g. PROD_WEBHOOK_URL) that "
            "notifications are also posted to as JSON (Slack-compatible). The URL is never stored, shown or logged."
        ),
    )
    api_token_env = models.CharField(
        _("API token environment variable"),
        max_length=128,
        blank=True,
        validators=[env_var_name_validator, token_variable_validator],
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
    reprocess_query_url_env = models.CharField(
        _("reprocess query URL environment variable"),
        max_length=128,
        blank=True,
        validators=[env_var_name_validator, url_variable_validator],
        help_text=_(
            "Name of the environment variable holding the URL the reprocess query connects with: a role that can "
            "only read the documents. Empty: the PostgreSQL datastore's own URL."
        ),
    )
    created_at = models.DateTimeField(_("created at"), auto_now_add=True)
    updated_at = models.DateTimeField(_("updated at"), auto_now=True)

    class Meta:
        verbose_name = _("environment")
        verbose_name_plural = _("environments")
        db_table = "backups_environment"  # the tables keep the names the backups app gave them
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name

    @property
    def data_protected(self) -> bool:
        return self.protected if self.protected_data is None else self.protected_data

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
        # The friendly refusal; at run time the protocol refuses several statements anyway (backups/readonly.py).
        if sql_statement_count(self.reprocess_query) > 1:
            errors["reprocess_query"] = Note("query_several_statements").text()
        if errors:
            raise ValidationError(errors)


# Storage options that are credentials: they are given by variable name in `secret_options`, never stored.
SECRET_STORAGE_OPTIONS = frozenset(
    {
        "access_key",
        "secret_key",
        "security_token",
        "session_token",
        "password",
        "account_key",
        "sas_token",
        "connection_string",
        "credentials",
        "key",
        "token",
    }
)
age_recipient_validator = RegexValidator(
    r"^age1[02-9ac-hj-np-z]{58}$", _("Use an age public key (age1..., from age-keygen), not a private identity.")
)
identity_variable_validator = RegexValidator(
    r"_IDENTITY\Z",
    _("An identity variable's name ends in _IDENTITY, e.g. OFFSITE_AGE_IDENTITY: it holds a private key."),
)
DEFAULT_STORAGE_LOCATION = "default"


class StorageLocation(models.Model):
    """A place backups are written to: a Django storage backend with its options, its credentials by variable name.

    The primary location of a datastore receives the backup as it is taken; each copy location receives a copy made
    by a copy job (backups.copies), checked by reading it back from there. A location that names recipients stores
    age-encrypted files; one with Object Lock writes every object with a retain-until date. With no location
    configured, backups go to the built-in `default` location (STORAGES["artifacts"], ARTIFACT_STORAGE_BACKEND).
    """

    class Role(models.TextChoices):
        PRIMARY = "primary", _("Primary: backups are written here as they are taken")
        COPY = "copy", _("Copy: each backup is copied here afterwards")

    class ObjectLock(models.TextChoices):
        OFF = "off", _("Off")
        GOVERNANCE = "governance", _("Governance (a privileged user can shorten it)")
        COMPLIANCE = "compliance", _("Compliance (nobody can delete before the date)")

    name = models.CharField(_("name"), max_length=64, unique=True, validators=[slug_name_validator])
    role = models.CharField(_("role"), max_length=16, choices=Role.choices, default=Role.PRIMARY)
    region = models.CharField(
        _("region"), max_length=64, blank=True, help_text=_("A label for where it is, e.g. eu-west (off-site).")
    )
    backend = models.CharField(
        _("storage backend"),
        max_length=200,
        help_text=_(
            "A Django storage class, e.g. django.core.files.storage.FileSystemStorage or "
            "storages.backends.s3.S3Storage."
        ),
    )
    options = models.JSONField(
        _("options"),
        default=dict,
        blank=True,
        help_text=_(
            'The backend\'s options, credentials excepted, e.g. {"bucket_name": "dr", "endpoint_url": '
            '"https://s3.example.net"} or {"location": "/srv/backups"}.'
        ),
    )
    secret_options = models.JSONField(
        _("secret options"),
        default=dict,
        blank=True,
        help_text=_(
            'Options read from environment variables, by name, e.g. {"access_key": "OFFSITE_ACCESS_KEY_ID", '
            '"secret_key": "OFFSITE_SECRET_ACCESS_KEY"}. The values are never stored.'
        ),
    )
    object_lock = models.CharField(
        _("object lock"),
        max_length=16,
        choices=ObjectLock.choices,
        default=ObjectLock.OFF,
        help_text=_("S3 Object Lock: each object is written with a retain-until date (the bucket must have it on)."),
    )
    object_lock_days = models.PositiveIntegerField(
        _("object lock days"),
        null=True,
        blank=True,
        validators=[MinValueValidator(1), MaxValueValidator(36600)],
        help_text=_("How long each object is locked; empty: as long as the location's retention keeps a daily backup."),
    )
    recipients = models.JSONField(
        _("encryption recipients"),
        default=list,
        blank=True,
        help_text=_("age public keys (age1...): files stored here are encrypted to each. Empty: not encrypted."),
    )
    identity_env = models.CharField(
        _("identity variable"),
        max_length=128,
        blank=True,
        validators=[env_var_name_validator, identity_variable_validator],
        help_text=_(
            "Name of the environment variable holding the age identity (private key) that opens this location's "
            "files, e.g. OFFSITE_AGE_IDENTITY. Set it only where restores and verifications run."
        ),
    )
    retention_keep_last = models.PositiveSmallIntegerField(
        _("keep last"), default=0, validators=[MaxValueValidator(1000)], help_text=_("The newest N copies.")
    )
    retention_keep_daily = models.PositiveSmallIntegerField(
        _("keep daily"), default=0, validators=[MaxValueValidator(1000)]
    )
    retention_keep_weekly = models.PositiveSmallIntegerField(
        _("keep weekly"), default=0, validators=[MaxValueValidator(1000)]
    )
    retention_keep_monthly = models.PositiveSmallIntegerField(
        _("keep monthly"), default=0, validators=[MaxValueValidator(1000)]
    )
    description = models.TextField(_("description"), blank=True)
    created_at = models.DateTimeField(_("created at"), auto_now_add=True)
    updated_at = models.DateTimeField(_("updated at"), auto_now=True)

    class Meta:
        verbose_name = _("storage location")
        verbose_name_plural = _("storage locations")
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name

    @property
    def is_encrypted(self) -> bool:
        return bool(self.recipients)

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

    @property
    def lock_days(self) -> int:
        """How long an object written here is locked: the set days, else the daily horizon of its retention (a
        backup kept as a daily one is kept that long), else 30 days."""
        if self.object_lock_days:
            return self.object_lock_days
        return self.retention_keep_daily or 30

    def clean(self) -> None:
        errors: dict[str, list[Any]] = {}  # messages, lazily translated
        if not isinstance(self.options, dict):
            errors.setdefault("options", []).append(_("Options are a table of keys and values."))
        else:
            if leaked := sorted(SECRET_STORAGE_OPTIONS & set(self.options)):
                errors.setdefault("options", []).append(
                    _("%(keys)s is a credential: name the variable holding it in secret_options instead.")
                    % {"keys": ", ".join(leaked)}
                )
        if not isinstance(self.secret_options, dict):
            errors.setdefault("secret_options", []).append(_("Secret options map an option to a variable name."))
        else:
            for option, variable in sorted(self.secret_options.items()):
                try:
                    env_var_name_validator(variable if isinstance(variable, str) else "")
                except ValidationError:
                    errors.setdefault("secret_options", []).append(
                        _("%(option)s: use the name of an environment variable (A-Z, 0-9, _), not its value.")
                        % {"option": option}
                    )
        if not isinstance(self.recipients, list) or not all(isinstance(r, str) for r in self.recipients):
            errors.setdefault("recipients", []).append(_("Recipients are a list of age public keys."))
        else:
            self.recipients = [r.strip() for r in self.recipients if r.strip()]
            for number, recipient in enumerate(self.recipients, start=1):
                if recipient.upper().startswith("AGE-SECRET-KEY-"):
                    errors.setdefault("recipients", []).append(
                        _(
                            "recipient %(number)s is a private identity, not a public recipient: remove it from the "
                            "configuration at once, and give its public key (age-keygen -y) instead."
                        )
                        % {"number": number}
                    )
                    continue
                try:
                    age_recipient_validator(recipient)
                except ValidationError:
                    errors.setdefault("recipients", []).append(
                        _("recipient %(number)s (%(value)s) is not an age public key (age1...).")
                        % {"number": number, "value": recipient[:16]}
                    )
            if len(set(self.recipients)) != len(self.recipients):
                errors.setdefault("recipients", []).append(_("A recipient is listed twice."))
        if self.object_lock != self.ObjectLock.OFF and not self.backend.endswith("S3Storage"):
            errors.setdefault("object_lock", []).append(
                _("Object Lock needs an S3-compatible location (storages.backends.s3.S3Storage).")
            )
        if errors:
            raise ValidationError(errors)


def storage_locations_problem(names: Any, roles: dict[str, str]) -> str:
    """What is wrong with a datastore's `storage_locations` given the known locations' roles ("" when nothing)."""
    if not isinstance(names, list) or not all(isinstance(name, str) for name in names):
        return str(_('A list of storage location names, e.g. ["local", "offsite"].'))
    if len(set(names)) != len(names):
        return str(_("A location is listed twice."))
    roles = {DEFAULT_STORAGE_LOCATION: StorageLocation.Role.PRIMARY, **roles}  # the built-in one, unless configured
    if unknown := [name for name in names if name not in roles]:
        return str(_("No storage location is named %(names)s.") % {"names": ", ".join(unknown)})
    primaries = [name for name in names if roles[name] == StorageLocation.Role.PRIMARY]
    if names and len(primaries) != 1:
        return str(
            _("Name exactly one primary location (where the backup is written); %(found)s found: %(names)s.")
            % {"found": len(primaries), "names": ", ".join(primaries) or "-"}
        )
    return ""


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
        validators=[env_var_name_validator, url_variable_validator],
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
        validators=[env_var_name_validator, url_variable_validator],
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
    storage_locations = models.JSONField(
        _("storage locations"),
        default=list,
        blank=True,
        help_text=_(
            'Where its backups go, by location name: one primary and any copies, e.g. ["local", "offsite"]. Empty: '
            'the built-in "default" location.'
        ),
    )
    description = models.TextField(_("description"), blank=True)
    created_at = models.DateTimeField(_("created at"), auto_now_add=True)
    updated_at = models.DateTimeField(_("updated at"), auto_now=True)

    class Meta:
        verbose_name = _("datastore")
        verbose_name_plural = _("datastores")
        db_table = "backups_datastore"
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
        self._clean_storage_locations()
        several = Note("query_several_statements").text()
        if problems := [
            _("probe %(number)s: %(problem)s") % {"number": number, "problem": several}
            for number, probe in enumerate(self.drill_probe_list, start=1)
            if sql_statement_count(probe) > 1
        ]:
            raise ValidationError({"drill_probes": problems})

    def _clean_storage_locations(self) -> None:
        names = self.storage_locations
        roles = {}
        if isinstance(names, list):
            roles = dict(
                StorageLocation.objects.filter(name__in=[n for n in names if isinstance(n, str)]).values_list(
                    "name", "role"
                )
            )
        if problem := storage_locations_problem(names, roles):
            raise ValidationError({"storage_locations": problem})

    @property
    def primary_location_name(self) -> str:
        """The location its backups are written to (copies go to the others of `storage_locations`)."""
        names = self.storage_locations or [DEFAULT_STORAGE_LOCATION]
        roles = dict(StorageLocation.objects.filter(name__in=names).values_list("name", "role"))
        return self.primary_location_given(roles)

    def primary_location_given(self, roles: dict[str, str]) -> str:
        """The primary location, the locations' roles known (by name): for a page of many datastores, one query."""
        for name in self.storage_locations or [DEFAULT_STORAGE_LOCATION]:
            if roles.get(name, StorageLocation.Role.PRIMARY) == StorageLocation.Role.PRIMARY:
                return name
        return DEFAULT_STORAGE_LOCATION

    @property
    def copy_location_names(self) -> list[str]:
        primary = self.primary_location_name
        return [name for name in self.storage_locations if name != primary]

    def copy_locations_given(self, roles: dict[str, str]) -> list[str]:
        primary = self.primary_location_given(roles)
        return [name for name in self.storage_locations if name != primary]

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


class TargetLock(models.Model):
    """Held by the one job (a backup or a restore) touching a target database. The unique key is the lock: of two
    workers racing for it, the database lets exactly one insert. The holder is named by model and id, never by a
    label: only the holder's own end, or the reaper once the holder's processes are gone, releases it."""

    target_key = models.CharField(_("target key"), max_length=200, unique=True)
    holder_model = models.CharField(
        _("holder model"), max_length=64, help_text=_('The job model holding it, e.g. "backups.backupartifact".')
    )
    holder_id = models.PositiveBigIntegerField(_("holder id"))
    acquired_at = models.DateTimeField(_("acquired at"), auto_now_add=True)

    class Meta:
        verbose_name = _("target lock")
        verbose_name_plural = _("target locks")
        db_table = "backups_targetlock"  # created by the backups app before the inventory had its own

    def __str__(self) -> str:
        return f"{self.target_key} held by {self.holder_model} #{self.holder_id}"


class DatastoreHealth(models.Model):
    """The newest check that a worker can reach the datastore as configured: its URL variable is set there, the
    server answers, and it accepts the credentials. One row per datastore, replaced by each check
    (backups.health runs them: on a schedule, when the datastore is configured, after a failed backup). A row
    that changes state is audited and told."""

    class State(models.TextChoices):
        OK = "ok", _("Reachable")
        UNCONFIGURED = "unconfigured", _("Not configured")  # the URL variable is unset or malformed on the worker
        UNREACHABLE = "unreachable", _("Unreachable")  # refused, timed out, no such host
        REFUSED = "refused", _("Access refused")  # wrong credentials, no such role or database, pg_hba
        TOOL = "tool", _("Tool problem")  # pg_dump missing on the worker, or too old for the server
        ERROR = "error", _("Check failed")  # anything else
        # Its URL reaches the same database as another datastore's, or the console's own database or broker
        CONFLICT = "conflict", _("Same database as another")

    PROBLEMS = frozenset(
        {State.UNCONFIGURED, State.UNREACHABLE, State.REFUSED, State.TOOL, State.ERROR, State.CONFLICT}
    )

    datastore = models.OneToOneField(
        Datastore, models.CASCADE, related_name="health", primary_key=True, verbose_name=_("datastore")
    )
    state = models.CharField(_("state"), max_length=16, choices=State.choices)
    message = models.TextField(_("message"), blank=True, help_text=_("What the check found; never the URL."))
    server_version = models.CharField(_("server version"), max_length=120, blank=True)
    checked_at = models.DateTimeField(_("checked at"))
    checked_on = models.CharField(_("checked on"), max_length=255, help_text=_("The host whose worker checked."))
    since = models.DateTimeField(_("in this state since"))
    identity = models.JSONField(
        _("identity"),
        null=True,
        blank=True,
        help_text=_(
            "Which database the URL reached at the newest check that got an answer (inventory.identity): the "
            "server's id, its address and the database. Kept when a later check cannot connect."
        ),
    )

    class Meta:
        verbose_name = _("datastore health")
        verbose_name_plural = _("datastore health")

    def __str__(self) -> str:
        return f"{self.datastore_id}: {self.state}"

    @property
    def is_problem(self) -> bool:
        return self.state in self.PROBLEMS


def configured_variable_names() -> set[str]:
    """Every environment variable the inventory names: datastore URLs, drill servers, API tokens, webhooks. Their
    values are masked in error reports (dr_console.secrets, registered in InventoryConfig.ready)."""
    names: set[str] = set()
    for field_names, model in (
        (("url_env", "drill_server_url_env"), Datastore),
        (("api_token_env", "webhook_url_env", "reprocess_query_url_env"), Environment),
    ):
        for row in model.objects.values_list(*field_names):
            names.update(name for name in row if name)
    for identity_env, secret_options in StorageLocation.objects.values_list("identity_env", "secret_options"):
        names.update(
            name for name in [identity_env, *(secret_options or {}).values()] if name and isinstance(name, str)
        )
    return names
