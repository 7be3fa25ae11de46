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
from inventory.models import Datastore, Environment
from inventory.services import (
    DatastoreRefused,
    datastore_check_not_broker,
    datastore_configured_notify,
    datastore_removed_notify,
)


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
        except DatastoreRefused as exc:
            raise forms.ValidationError(str(exc)) from None
        return cleaned


@admin.register(Datastore)
class DatastoreAdmin(AuditedConfigAdmin):
    form = DatastoreForm
    list_display = ["name", "environment", "kind", "url_env", "url_env_is_set", "backup_schedule", "compression_level"]
    list_filter = ["environment", "kind"]
    search_fields = ["name"]
    readonly_fields = ["backup_schedule_since"]

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
