from __future__ import annotations

import os
from typing import Any

from django import forms
from django.contrib import admin, messages
from django.db import transaction
from django.db.models import Model, QuerySet
from django.http import HttpRequest
from django.template.defaultfilters import filesizeformat
from django.utils.translation import gettext
from django.utils.translation import gettext_lazy as _

from backups.models import BackupArtifact, BackupArtifactEvent, Datastore, Environment
from backups.scheduling import datastore_schedule_delete, datastore_schedule_sync
from backups.services import (
    BackupRefused,
    BrokerUnavailable,
    backup_artifact_request,
    backup_artifact_verify_request,
    datastore_check_not_broker,
)
from dr_console.admin_base import AuditedConfigAdmin, ReadOnlyInline
from dr_console.http import client_ip


@admin.register(Environment)
class EnvironmentAdmin(AuditedConfigAdmin):
    list_display = ["name", "protected", "required_approvals", "api_url"]
    search_fields = ["name"]


# Retention is set on the datastore's page, which previews what a policy would delete before it is saved.
RETENTION_FIELDS = ["retention_keep_last", "retention_keep_daily", "retention_keep_weekly", "retention_keep_monthly"]


class DatastoreForm(forms.ModelForm):
    class Meta:
        model = Datastore
        exclude = RETENTION_FIELDS

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean() or {}
        candidate = Datastore(
            kind=cleaned.get("kind", ""), url_env=cleaned.get("url_env", ""), name=gettext("this datastore")
        )
        try:
            datastore_check_not_broker(candidate)
        except BackupRefused as exc:
            raise forms.ValidationError(str(exc)) from None
        return cleaned


@admin.register(Datastore)
class DatastoreAdmin(AuditedConfigAdmin):
    form = DatastoreForm
    list_display = ["name", "environment", "kind", "url_env", "url_env_is_set", "backup_schedule", "compression_level"]
    list_filter = ["environment", "kind"]
    search_fields = ["name"]
    actions = ["back_up_now"]
    readonly_fields = ["backup_schedule_since"]

    def save_model(self, request: HttpRequest, obj: Model, form: forms.ModelForm, change: bool) -> None:
        assert isinstance(obj, Datastore)
        with transaction.atomic():
            super().save_model(request, obj, form, change)
            datastore_schedule_sync(datastore=obj)

    def delete_model(self, request: HttpRequest, obj: Model) -> None:
        with transaction.atomic():
            datastore_id = obj.pk
            super().delete_model(request, obj)
            datastore_schedule_delete(datastore_id=datastore_id)

    @admin.display(boolean=True, description=_("URL variable set in the web process"))
    def url_env_is_set(self, obj: Datastore) -> bool:
        # Only whether it is set: the value is a secret and is never shown.
        return bool(os.environ.get(obj.url_env))

    @admin.action(description=_("Back up now"), permissions=["change"])
    def back_up_now(self, request: HttpRequest, queryset: QuerySet[Datastore]) -> None:
        for datastore in queryset:
            try:
                artifact = backup_artifact_request(
                    datastore=datastore,
                    trigger=f"admin:{request.user.get_username()}",
                    triggered_by=request.user,  # type: ignore[arg-type]
                    client_ip=client_ip(request),
                )
            except (BackupRefused, BrokerUnavailable) as exc:
                message = gettext("No backup of %(datastore)s: %(reason)s") % {
                    "datastore": datastore.name,
                    "reason": exc,
                }
                self.message_user(request, message, messages.ERROR)
            else:
                message = gettext("Backup #%(id)s of %(datastore)s queued") % {
                    "id": artifact.pk,
                    "datastore": datastore.name,
                }
                self.message_user(request, message, messages.SUCCESS)


class BackupArtifactEventInline(ReadOnlyInline):
    model = BackupArtifactEvent
    fields = readonly_fields = ("created_at", "old_status", "new_status", "message")


@admin.register(BackupArtifact)
class BackupArtifactAdmin(admin.ModelAdmin):
    """History of backups: read-only. Backups are taken with "Back up now" or `manage.py backup`."""

    list_display = ["id", "datastore", "status", "verification", "size", "created_at", "duration", "trigger"]
    list_filter = ["status", "verification", "datastore__environment", "datastore"]
    list_select_related = ["datastore"]
    date_hierarchy = "created_at"
    inlines = [BackupArtifactEventInline]
    actions = ["verify"]

    @admin.display(description=_("size"), ordering="size_bytes")
    def size(self, obj: BackupArtifact) -> str:
        return filesizeformat(obj.size_bytes) if obj.size_bytes is not None else "-"

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> list[str]:
        return [field.name for field in BackupArtifact._meta.fields]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    @admin.action(description=_("Verify selected backups"), permissions=["view"])
    def verify(self, request: HttpRequest, queryset: QuerySet[BackupArtifact]) -> None:
        for artifact in queryset:
            try:
                backup_artifact_verify_request(
                    artifact=artifact,
                    requested_by=request.user,  # type: ignore[arg-type]
                    client_ip=client_ip(request),
                )
            except (BackupRefused, BrokerUnavailable) as exc:
                self.message_user(request, gettext("Not verified: %(reason)s") % {"reason": exc}, messages.ERROR)
            else:
                message = gettext("Verification of backup #%(id)s queued") % {"id": artifact.pk}
                self.message_user(request, message, messages.SUCCESS)
