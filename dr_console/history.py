"""What the console's history pages (backups, restores, audit log) share: newest-first keyset pagination by
(created_at, pk), and filtering by a range of days."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Generic, TypeVar

from django import forms
from django.db import models
from django.db.models import Q, QuerySet
from django.utils import timezone
from django.utils.translation import gettext_lazy as _

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
            # The redundant created_at >= at bounds an index range scan; the OR alone makes PostgreSQL filter rows.
            queryset.filter(created_at__gte=at)
            .filter(Q(created_at__gt=at) | Q(pk__gt=pk))
            .order_by("created_at", "pk")[: per_page + 1]
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
        queryset = queryset.filter(created_at__lte=at).filter(Q(created_at__lt=at) | Q(pk__lt=pk))
    rows = list(queryset.order_by("-created_at", "-pk")[: per_page + 1])
    items = rows[:per_page]
    return Page(
        items=items,
        newer=page_cursor(items[0]) if older_cursor and items else "",
        older=page_cursor(items[-1]) if len(rows) > per_page else "",
    )


# --- ranges of days ------------------------------------------------------------------------------------------------


def day_start(day: date) -> datetime:
    """Midnight starting `day` in the current time zone (the user's, see dr_console.http)."""
    return timezone.make_aware(datetime.combine(day, time.min))


def created_within_days(queryset: QuerySet[M], since: date | None, until: date | None) -> QuerySet[M]:
    """Rows created from the start of `since` to the end of `until`, both days included."""
    if since is not None:
        queryset = queryset.filter(created_at__gte=day_start(since))
    if until is not None:
        queryset = queryset.filter(created_at__lt=day_start(until + timedelta(days=1)))
    return queryset


def check_day_range(form: forms.Form, start_field: str, end_field: str) -> None:
    """In a form's clean(): an end day before the start day is an error on the end field."""
    start, end = form.cleaned_data.get(start_field), form.cleaned_data.get(end_field)
    if start and end and start > end:
        form.add_error(end_field, _("The end date is before the start date."))
