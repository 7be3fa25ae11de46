from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.http import HttpRequest

from audit.models import AuditEvent
from dr_console.admin_base import ReadOnlyHistoryAdmin


@admin.register(AuditEvent)
class AuditEventAdmin(ReadOnlyHistoryAdmin):
    """The audit log, read-only: what a team reviews after an incident."""

    list_display = ["created_at", "actor_label", "action", "object_repr", "client_ip"]
    list_filter = ["action", "object_type"]
    search_fields = ["actor_label", "object_repr", "object_id"]
    date_hierarchy = "created_at"

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False  # not even viewed as a form: the audit log is append-only
