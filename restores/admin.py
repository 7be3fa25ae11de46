from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.http import HttpRequest

from restores.models import RestoreRun, RestoreRunEvent


class RestoreRunEventInline(admin.TabularInline):
    model = RestoreRunEvent
    extra = 0
    can_delete = False
    fields = readonly_fields = ("created_at", "old_status", "new_status", "message")

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


@admin.register(RestoreRun)
class RestoreRunAdmin(admin.ModelAdmin):
    """History of restores: read-only. Restores are requested with `manage.py restore`."""

    list_display = [
        "id",
        "artifact",
        "target_kind",
        "target_datastore",
        "new_database_name",
        "status",
        "created_at",
        "duration",
        "trigger",
    ]
    list_filter = ["status", "target_kind", "target_datastore"]
    list_select_related = ["artifact__datastore", "target_datastore"]
    inlines = [RestoreRunEventInline]

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> list[str]:
        return [field.name for field in RestoreRun._meta.fields]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False
