from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.http import HttpRequest

from dr_console.admin_base import ReadOnlyInline
from drills.models import DrillRun, DrillRunEvent, ObjectiveBreach


class DrillRunEventInline(ReadOnlyInline):
    model = DrillRunEvent
    fields = readonly_fields = ("created_at", "old_status", "new_status", "message")


class ReadOnlyHistoryAdmin(admin.ModelAdmin):
    """History written by the console: read-only in the admin."""

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> list[str]:
        return [field.name for field in self.model._meta.fields]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


@admin.register(DrillRun)
class DrillRunAdmin(ReadOnlyHistoryAdmin):
    """Restore drills. Started by the datastore's drill schedule or `manage.py drill`; settings are on the datastore."""

    list_display = ["id", "datastore", "artifact", "status", "rto", "scratch_dropped", "created_at", "trigger"]
    list_filter = ["status", "datastore"]
    list_select_related = ["datastore", "artifact"]
    inlines = [DrillRunEventInline]


@admin.register(ObjectiveBreach)
class ObjectiveBreachAdmin(ReadOnlyHistoryAdmin):
    """RPO and RTO breaches, opened and closed by the console's periodic objectives check."""

    list_display = ["datastore", "objective", "opened_at", "closed_at", "reason"]
    list_filter = ["objective", "datastore"]
    list_select_related = ["datastore"]
