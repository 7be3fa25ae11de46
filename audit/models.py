from __future__ import annotations

from typing import Any, NoReturn

from django.conf import settings
from django.db import models, router, transaction
from django.utils import timezone
from django.utils.translation import gettext_lazy as _

from audit import chain


class AppendOnlyError(Exception):
    """Audit events are never changed or deleted."""


class AuditEventQuerySet(models.QuerySet["AuditEvent"]):
    def update(self, **kwargs: Any) -> NoReturn:
        raise AppendOnlyError("audit events are append-only")

    def delete(self) -> NoReturn:
        raise AppendOnlyError("audit events are append-only")

    def bulk_create(self, *args: Any, **kwargs: Any) -> NoReturn:
        raise AppendOnlyError("audit events are chained one at a time: use audit_record")


class AuditEvent(models.Model):
    """Something someone (or the console itself) did. Append-only: the database refuses updates, deletes and
    TRUNCATE; each event carries the hash of the one before it (audit.chain), so what a database owner erases shows."""

    class Action(models.TextChoices):
        CONFIG_LOADED = "config.loaded", _("Configuration loaded")
        BACKUP_REQUESTED = "backup.requested", _("Backup requested")
        BACKUP_FINISHED = "backup.finished", _("Backup finished")
        VERIFY_REQUESTED = "backup.verify_requested", _("Verification requested")
        RESTORE_REQUESTED = "restore.requested", _("Restore requested")
        RESTORE_APPROVED = "restore.approved", _("Restore approved")
        RESTORE_REJECTED = "restore.rejected", _("Restore rejected")
        RESTORE_EXPIRED = "restore.expired", _("Restore approval expired")
        RESTORE_QUEUED = "restore.queued", _("Restore queued")
        RESTORE_LAUNCHED = "restore.launched", _("Restore launched")
        RESTORE_CANCELLED = "restore.cancelled", _("Restore cancelled")
        RESTORE_FINISHED = "restore.finished", _("Restore finished")
        DRILL_REQUESTED = "drill.requested", _("Drill requested")
        DRILL_FINISHED = "drill.finished", _("Drill finished")
        DRILL_CANCELLED = "drill.cancelled", _("Drill cancelled")
        OBJECTIVE_BREACHED = "objective.breached", _("Objective breached")
        OBJECTIVE_RECOVERED = "objective.recovered", _("Objective recovered")
        REPROCESS_CREATED = "reprocess.created", _("Reprocess batch built")
        REPROCESS_QUEUED = "reprocess.queued", _("Reprocess batch sent")
        REPROCESS_STARTED = "reprocess.started", _("Reprocess batch started")
        REPROCESS_FINISHED = "reprocess.finished", _("Reprocess batch finished")
        REPROCESS_CANCELLED = "reprocess.cancelled", _("Reprocess batch cancelled")
        REPROCESS_DISCARDED = "reprocess.discarded", _("Reprocess batch discarded")
        CONFIG_CHANGED = "config.changed", _("Configuration changed")
        CONFIG_DELETED = "config.deleted", _("Configuration deleted")
        BACKUP_SKIPPED = "backup.skipped", _("Scheduled backup skipped")
        BACKUP_PINNED = "backup.pinned", _("Backup pinned")
        BACKUP_UNPINNED = "backup.unpinned", _("Backup unpinned")
        BACKUP_EXPIRED = "backup.expired", _("Backup expired by retention")
        RETENTION_CHANGED = "retention.changed", _("Retention policy changed")
        QUEUE_JOB_REQUEUED = "queue.job_requeued", _("Failed queue job requeued")
        QUEUE_FAILED_REQUEUED = "queue.failed_requeued", _("Failed queue jobs requeued")
        BACKUP_CANCELLED = "backup.cancelled", _("Backup cancelled")
        VERIFY_CANCELLED = "backup.verify_cancelled", _("Verification cancelled")
        VERIFY_FINISHED = "backup.verify_finished", _("Verification finished")
        DATASTORE_HEALTH_CHANGED = "datastore.health_changed", _("Datastore health changed")
        RESTORE_REFUSED = "restore.refused", _("Restore refused")
        CONFIG_REFUSED = "config.refused", _("Configuration refused")
        AUTH_LOGGED_IN = "auth.logged_in", _("Logged in")
        AUTH_LOGIN_FAILED = "auth.login_failed", _("Login failed")
        AUTH_LOCKED_OUT = "auth.locked_out", _("Locked out after failed logins")
        AUTH_SESSION_EXPIRED = "auth.session_expired", _("Session expired")
        AUTH_REAUTHENTICATED = "auth.reauthenticated", _("Password confirmed")
        AUTH_REAUTH_FAILED = "auth.reauth_failed", _("Password confirmation failed")
        AUTH_REFUSED = "auth.refused", _("Command-line credential refused")
        AUTH_TOKEN_CREATED = "auth.token_created", _("Personal token created")
        AUTH_TOKEN_REVOKED = "auth.token_revoked", _("Personal token revoked")
        QUERY_REFUSED = "query.refused", _("Configured query refused")
        ACCESS_REFUSED = "access.refused", _("Change refused: no permission")
        COPY_REQUESTED = "backup.copy_requested", _("Copy requested")
        COPY_CANCELLED = "backup.copy_cancelled", _("Copy cancelled")
        COPY_FINISHED = "backup.copy_finished", _("Copy finished")
        BACKUP_FILE_LOCKED = "backup.file_locked", _("Expiry refused: the file is under Object Lock")
        BACKUP_DOWNLOADED = "backup.downloaded", _("Backup downloaded")
        BACKUP_DOWNLOAD_REFUSED = "backup.download_refused", _("Backup download refused")
        DOWNLOAD_REQUESTED = "backup.download_requested", _("Backup download requested")
        DOWNLOAD_APPROVED = "backup.download_approved", _("Backup download approved")
        DOWNLOAD_REJECTED = "backup.download_rejected", _("Backup download rejected")
        DOWNLOAD_EXPIRED = "backup.download_expired", _("Backup download request expired")
        BACKUP_IMPORTED = "backup.imported", _("Backup imported from a file")
        CATALOG_REBUILT = "catalog.rebuilt", _("Catalog rebuilt from a location")

    class Via(models.TextChoices):
        WEB = "web", _("web")
        CLI = "cli", _("command line")
        API = "api", _("API")
        SYSTEM = "system", _("system")

    created_at = models.DateTimeField(_("when"), default=timezone.now, db_index=True)
    # PROTECT: the log never loses its actors (SET_NULL would be an update, which the table refuses anyway).
    # People who leave are deactivated, not deleted.
    actor = models.ForeignKey(
        settings.AUTH_USER_MODEL, models.PROTECT, null=True, blank=True, related_name="+", verbose_name=_("actor")
    )
    actor_label = models.CharField(
        _("actor name"),
        max_length=150,
        help_text=_('The username at the time, or what acted: "console", "reaper", "schedule".'),
    )
    action = models.CharField(_("action"), max_length=40, choices=Action.choices, db_index=True)
    object_type = models.CharField(_("object type"), max_length=40, blank=True)
    object_id = models.CharField(_("object id"), max_length=40, blank=True)
    object_repr = models.CharField(_("object"), max_length=200, blank=True)
    client_ip = models.GenericIPAddressField(_("client IP"), null=True, blank=True)
    # Which way the action came (dr_console.channel): the page, the command line, the API, or the console itself.
    via = models.CharField(_("via"), max_length=8, choices=Via.choices, default=Via.SYSTEM, db_index=True)
    # On the command line: the OS user and the machine that ran the command, besides the console user named.
    os_user = models.CharField(_("OS user"), max_length=150, blank=True)
    os_host = models.CharField(_("host"), max_length=255, blank=True)
    details = models.JSONField(_("details"), default=dict, blank=True)
    # The object's and the actor's names as codes and parameters ({"object": note, "actor": note}), so that the
    # log reads in its reader's language; object_repr and actor_label keep the English words (exports, old rows).
    labels = models.JSONField(_("labels"), default=dict, blank=True)
    # The hash chain (audit.chain): the hash of the event before this one (by id; "" for the first) and this event's
    # own, over its fields and prev_hash. Set by save(), never by callers.
    prev_hash = models.CharField(_("previous hash"), max_length=64, blank=True, default="", editable=False)
    hash = models.CharField(_("hash"), max_length=64, blank=True, default="", editable=False)

    objects = AuditEventQuerySet.as_manager()

    class Meta:
        verbose_name = _("audit event")
        verbose_name_plural = _("audit events")
        ordering = ["-created_at", "-pk"]
        indexes = [models.Index(fields=["object_type", "object_id"])]
        constraints = [
            # One successor per event: a chain that forks (two writers linking to the same head) is refused here,
            # whatever the lock in audit.chain did. Also the index `audit verify` uses to tell a gap from a jump.
            models.UniqueConstraint(fields=["prev_hash"], name="auditevent_one_successor"),
            models.UniqueConstraint(fields=["hash"], name="auditevent_hash_unique"),
        ]

    def __str__(self) -> str:
        return f"{self.created_at:%Y-%m-%d %H:%M:%S} {self.actor_label} {self.action} {self.object_repr}"

    def save(self, *args: Any, **kwargs: Any) -> None:
        if self.pk is not None and not self._state.adding:
            raise AppendOnlyError("audit events are append-only")
        using = kwargs.get("using") or router.db_for_write(type(self), instance=self)
        # savepoint=False: no extra queries inside the caller's transaction. The chain stays held until that
        # transaction ends (audit.chain.chain_head_locked), so record events late in long transactions.
        with transaction.atomic(using=using, savepoint=False):
            self.prev_hash = chain.chain_head_locked(using)
            self.hash = chain.event_hash(self, self.prev_hash)
            super().save(*args, **kwargs)

    def delete(self, *args: Any, **kwargs: Any) -> NoReturn:
        raise AppendOnlyError("audit events are append-only")
