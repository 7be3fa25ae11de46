"""Reads for the audit log page and its CSV export, and the keyset pagination the console's history pages share."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Generic, TypeVar

from django.db import models
from django.db.models import Q, QuerySet
from django.utils import timezone

from audit.models import AuditEvent

PER_PAGE = 50
M = TypeVar("M", bound=models.Model)


# --- keyset pagination ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Page(Generic[M]):
    """One page of a newest-first history. `newer` and `older` are cursors for the neighbouring pages ("" when
    there is none); they go in the URL as ?after= and ?before=."""

    items: list[M]
    newer: str
    older: str

    @property
    def is_first(self) -> bool:
        return not self.newer


def page_cursor(obj: models.Model) -> str:
    """The position of a row in (created_at, pk) order, opaque to the user: 20260102103000123456-42."""
    created_at: datetime = obj.created_at  # type: ignore[attr-defined]
    return f"{created_at.astimezone(UTC):%Y%m%d%H%M%S%f}-{obj.pk}"


def _parse_cursor(value: str) -> tuple[datetime, int] | None:
    stamp, _, pk = value.partition("-")
    try:
        return datetime.strptime(stamp, "%Y%m%d%H%M%S%f").replace(tzinfo=UTC), int(pk)
    except ValueError:
        return None  # a hand-edited or truncated URL: start from the newest page rather than fail


def keyset_page(queryset: QuerySet[M], *, before: str = "", after: str = "", per_page: int = PER_PAGE) -> Page[M]:
    """Newest first by (created_at, pk), `per_page` rows older than `before` or newer than `after`.

    The position is a value the index on created_at finds directly, not an OFFSET: a page deep in the history
    costs what the first one does, and rows added meanwhile do not shift what the next page shows (the audit log
    grows while people read it). One query per page: per_page + 1 rows are read to know whether more follow.
    """
    older_cursor = _parse_cursor(before) if before else None
    newer_cursor = _parse_cursor(after) if after and not older_cursor else None
    if newer_cursor:
        at, pk = newer_cursor
        rows = list(
            queryset.filter(Q(created_at__gt=at) | Q(created_at=at, pk__gt=pk)).order_by("created_at", "pk")[
                : per_page + 1
            ]
        )
        more_newer = len(rows) > per_page
        items = rows[:per_page][::-1]
        return Page(
            items=items,
            newer=page_cursor(items[0]) if more_newer and items else "",
            older=page_cursor(items[-1]) if items else "",
        )
    if older_cursor:
        at, pk = older_cursor
        queryset = queryset.filter(Q(created_at__lt=at) | Q(created_at=at, pk__lt=pk))
    rows = list(queryset.order_by("-created_at", "-pk")[: per_page + 1])
    items = rows[:per_page]
    return Page(
        items=items,
        newer=page_cursor(items[0]) if older_cursor and items else "",
        older=page_cursor(items[-1]) if len(rows) > per_page else "",
    )


# --- the audit log --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class AuditFilters:
    """What the audit log page and the export are narrowed to; empty values do not filter."""

    action: str = ""
    actor: str = ""
    object_type: str = ""
    since: date | None = None
    until: date | None = None


def _day_start(day: date) -> datetime:
    return timezone.make_aware(datetime.combine(day, time.min))


def audit_event_queryset(filters: AuditFilters) -> QuerySet[AuditEvent]:
    """The filtered events, newest first. Dates are days in the console's time zone, both ends included."""
    events = AuditEvent.objects.all()
    if filters.action:
        events = events.filter(action=filters.action)
    if filters.actor:
        events = events.filter(actor_label__icontains=filters.actor)
    if filters.object_type:
        events = events.filter(object_type=filters.object_type)
    if filters.since:
        events = events.filter(created_at__gte=_day_start(filters.since))
    if filters.until:
        events = events.filter(created_at__lt=_day_start(filters.until + timedelta(days=1)))
    return events.order_by("-created_at", "-pk")


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
    yield ["id", "time", "actor", "action", "object_type", "object_id", "object", "client_ip", "details"]
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
        ]
