"""Admin pieces shared by the apps. The audited admin for configuration is audit.admin.AuditedConfigAdmin."""

from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.http import HttpRequest


class ReadOnlyInline(admin.TabularInline):
    """History rows shown under a job: never added, changed or deleted from the admin."""

    extra = 0
    can_delete = False

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


class JobEventInline(ReadOnlyInline):
    """A job's status changes (its JobEvent rows) under the job; subclasses set `model`."""

    fields = readonly_fields = ("created_at", "old_status", "new_status", "message")


class ReadOnlyHistoryAdmin(admin.ModelAdmin):
    """History written by the console (job rows, breaches, the audit log): shown, never added, edited or deleted
    in the admin. Jobs start from the console's pages and commands, where their rules are checked."""

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> list[str]:
        return [field.name for field in self.model._meta.fields]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False
