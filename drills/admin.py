from __future__ import annotations

from django.contrib import admin

from dr_console.admin_base import JobEventInline, ReadOnlyHistoryAdmin
from drills.models import DrillRun, DrillRunEvent, ObjectiveBreach


class DrillRunEventInline(JobEventInline):
    model = DrillRunEvent


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
