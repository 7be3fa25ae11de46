from __future__ import annotations

from django.contrib import admin

from dr_console.admin_base import JobEventInline, ReadOnlyHistoryAdmin, ReadOnlyInline
from restores.models import RestoreApproval, RestoreRun, RestoreRunEvent


class RestoreRunEventInline(JobEventInline):
    model = RestoreRunEvent


class RestoreApprovalInline(ReadOnlyInline):
    model = RestoreApproval
    fields = readonly_fields = ("created_at", "approver", "decision", "comment")


@admin.register(RestoreRun)
class RestoreRunAdmin(ReadOnlyHistoryAdmin):
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
