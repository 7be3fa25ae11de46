"""Reads for the audit log page and its CSV export."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date

from django.db.models import QuerySet

from audit.models import AuditEvent
from dr_console.history import PER_PAGE, Page, created_within_days, keyset_page

# --- the audit log --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class AuditFilters:
    """What the audit log page and the export are narrowed to; empty values do not filter."""

    action: str = ""
    actor: str = ""
    object_type: str = ""
    via: str = ""
    since: date | None = None
    until: date | None = None


def audit_event_queryset(filters: AuditFilters) -> QuerySet[AuditEvent]:
    """The filtered events, newest first. Dates are days in the console's time zone, both ends included."""
    events = AuditEvent.objects.all()
    if filters.action:
        events = events.filter(action=filters.action)
    if filters.actor:
        events = events.filter(actor_label__icontains=filters.actor)
    if filters.object_type:
        events = events.filter(object_type=filters.object_type)
    if filters.via:
        events = events.filter(via=filters.via)
    return created_within_days(events, filters.since, filters.until).order_by("-created_at", "-pk")


def audit_event_page(
    filters: AuditFilters, *, before: str = "", after: str = "", per_page: int = PER_PAGE
) -> Page[AuditEvent]:
    return keyset_page(audit_event_queryset(filters), before=before, after=after, per_page=per_page)


def audit_object_types() -> list[str]:
    """The object types the log holds, for the filter's choices (one query on a small distinct set)."""
    types = AuditEvent.objects.exclude(object_type="").order_by("object_type").values_list("object_type", flat=True)
    return list(types.distinct())


def audit_event_export_rows(filters: AuditFilters) -> Iterator[list[str]]:
    """The CSV rows of the export, header first. Streamed from a server-side cursor: memory stays flat however
    many events match. Times are ISO 8601 in UTC; details are the JSON the event holds."""
    yield [
        "id",
        "time",
        "actor",
        "action",
        "object_type",
        "object_id",
        "object",
        "client_ip",
        "details",
        "via",
        "os_user",
        "os_host",
    ]
    for event in audit_event_queryset(filters).iterator(chunk_size=2000):
        yield [
            str(event.pk),
            event.created_at.astimezone(UTC).isoformat(),
            event.actor_label,
            event.action,
            event.object_type,
            event.object_id,
            event.object_repr,
            event.client_ip or "",
            json.dumps(event.details, sort_keys=True, ensure_ascii=False),
            event.via,
            event.os_user,
            event.os_host,
        ]
