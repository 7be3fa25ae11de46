from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.db.models import Model
from django.forms import ModelForm
from django.http import HttpRequest

from audit.models import AuditEvent
from audit.services import audit_record
from dr_console.admin_base import ReadOnlyHistoryAdmin
from dr_console.http import client_ip


@admin.register(AuditEvent)
class AuditEventAdmin(ReadOnlyHistoryAdmin):
    """The audit log, read-only: what a team reviews after an incident."""

    list_display = ["created_at", "actor_label", "action", "object_repr", "client_ip"]
    list_filter = ["action", "object_type"]
    search_fields = ["actor_label", "object_repr", "object_id"]
    date_hierarchy = "created_at"

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False  # not even viewed as a form: the audit log is append-only


class AuditedConfigAdmin(admin.ModelAdmin):
    """Configuration edited in the admin is audited like `loadconfig`: who changed what, from where."""

    def save_model(self, request: HttpRequest, obj: Model, form: ModelForm, change: bool) -> None:
        super().save_model(request, obj, form, change)
        audit_record(
            action=AuditEvent.Action.CONFIG_CHANGED,
            actor=request.user,
            obj=obj,
            client_ip=client_ip(request),
            details={"created": not change, "fields": sorted(form.changed_data)},
        )

    def delete_model(self, request: HttpRequest, obj: Model) -> None:
        label = str(obj)
        audit_record(
            action=AuditEvent.Action.CONFIG_DELETED,
            actor=request.user,
            obj=obj,
            client_ip=client_ip(request),
            details={"deleted": label},
        )
        super().delete_model(request, obj)

    def delete_queryset(self, request: HttpRequest, queryset: Any) -> None:
        for obj in queryset:
            self.delete_model(request, obj)
