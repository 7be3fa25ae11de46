"""The admin of the inventory: environments and datastores. Saving a datastore tells the apps that keep beat's
schedules in step (inventory.signals)."""

from __future__ import annotations

import os
from typing import Any

from django import forms
from django.contrib import admin
from django.db import transaction
from django.db.models import Model
from django.http import HttpRequest
from django.utils.translation import gettext
from django.utils.translation import gettext_lazy as _

from audit.admin import AuditedConfigAdmin
from audit.models import AuditEvent
from audit.services import audit_record
from dr_console.http import client_ip
from inventory.models import Datastore, Environment, StorageLocation
from inventory.services import (
    DatastoreRefused,
    datastore_check_change,
    datastore_check_target,
    datastore_configured_notify,
    datastore_identity,
    datastore_removed_notify,
)


@admin.register(Environment)
class EnvironmentAdmin(AuditedConfigAdmin):
    list_display = ["name", "protected", "required_approvals", "api_url"]
    search_fields = ["name"]


@admin.register(StorageLocation)
class StorageLocationAdmin(AuditedConfigAdmin):
    list_display = ["name", "role", "region", "backend", "object_lock", "is_encrypted"]
    list_filter = ["role", "object_lock"]
    search_fields = ["name", "region"]

    @admin.display(boolean=True, description=_("encrypted"))
    def is_encrypted(self, obj: StorageLocation) -> bool:
        return obj.is_encrypted

    def get_deleted_objects(self, objs: Any, request: HttpRequest) -> Any:
        """A location a datastore still names cannot be deleted: the admin lists those datastores as protected."""
        deleted, counts, perms_needed, protected = super().get_deleted_objects(objs, request)
        names = {obj.name for obj in objs}
        protected = list(protected) + [
            gettext("datastore %(name)s (its storage locations)") % {"name": store.name}
            for store in Datastore.objects.all()
            if names & set(store.storage_locations or [])
        ]
        return deleted, counts, perms_needed, protected


# Retention is set on the datastore's page, which previews what a policy would delete before it is saved.
RETENTION_FIELDS = ["retention_keep_last", "retention_keep_daily", "retention_keep_weekly", "retention_keep_monthly"]


class DatastoreForm(forms.ModelForm):
    class Meta:
        model = Datastore
        exclude = RETENTION_FIELDS

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean() or {}
        if not cleaned.get("kind") or not cleaned.get("url_env"):
            return cleaned  # said by the fields themselves
        candidate = Datastore(
            pk=self.instance.pk,
            kind=cleaned.get("kind", ""),
            url_env=cleaned.get("url_env", ""),
            name=cleaned.get("name") or gettext("this datastore"),
        )
        try:
            datastore_check_change(self.instance, self.changed_data)
            datastore_check_target(candidate, datastore_identity(candidate, stored="url_env" not in self.changed_data))
        except DatastoreRefused as exc:
            # An attempt to point a record at a database it must not reach is worth a line in the log.
            request = getattr(self, "request", None)
            audit_record(
                action=AuditEvent.Action.CONFIG_REFUSED,
                actor=getattr(request, "user", None),
                obj=self.instance if self.instance.pk else None,
                client_ip=client_ip(request) if request is not None else None,
                details={"datastore": candidate.name, "url_env": candidate.url_env, "refused": str(exc)},
            )
            raise forms.ValidationError(str(exc)) from None
        return cleaned


@admin.register(Datastore)
class DatastoreAdmin(AuditedConfigAdmin):
    form = DatastoreForm
    list_display = ["name", "environment", "kind", "url_env", "url_env_is_set", "backup_schedule", "compression_level"]
    list_filter = ["environment", "kind"]
    search_fields = ["name"]
    readonly_fields = ["backup_schedule_since"]

    def get_form(self, request: HttpRequest, obj: Any = None, change: bool = False, **kwargs: Any) -> Any:
        form = super().get_form(request, obj, change, **kwargs)
        form.request = request  # type: ignore[attr-defined]  # a class made for this request: who is refused
        return form

    def save_model(self, request: HttpRequest, obj: Model, form: forms.ModelForm, change: bool) -> None:
        assert isinstance(obj, Datastore)
        with transaction.atomic():
            super().save_model(request, obj, form, change)
            datastore_configured_notify(datastore=obj)

    def delete_model(self, request: HttpRequest, obj: Model) -> None:
        with transaction.atomic():
            datastore_id = obj.pk
            super().delete_model(request, obj)
            datastore_removed_notify(datastore_id=datastore_id)

    @admin.display(boolean=True, description=_("URL variable set in the web process"))
    def url_env_is_set(self, obj: Datastore) -> bool:
        # Only whether it is set: the value is a secret and is never shown.
        return bool(os.environ.get(obj.url_env))
