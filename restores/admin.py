from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.http import HttpRequest

from dr_console.admin_base import ReadOnlyInline
from restores.models import RestoreApproval, RestoreRun, RestoreRunEvent


class RestoreRunEventInline(ReadOnlyInline):
    model = RestoreRunEvent
    fields = readonly_fields = ("created_at", "old_status", "new_status", "message")


class RestoreApprovalInline(ReadOnlyInline):
    model = RestoreApproval
    fields = readonly_fields = ("created_at", "approver", "decision", "comment")


@admin.register(RestoreRun)
class RestoreRunAdmin(admin.ModelAdmin):
    """History of restores: read-only. Restores are requested with `manage.py restore` (and the console pages)."""

    list_display = [
        "id",
        "artifact",
        "target_kind",
        "target_datastore",
        "new_database_name",
        "status",
        "triggered_by",
        "created_at",
        "duration",
    ]
    list_filter = ["status", "target_kind", "target_datastore"]
    list_select_related = ["artifact__datastore", "target_datastore", "triggered_by"]
    inlines = [RestoreApprovalInline, RestoreRunEventInline]

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> list[str]:
        return [field.name for field in RestoreRun._meta.fields]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False
