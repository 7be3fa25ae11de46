"""Reads for the audit log page and its CSV export."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date
from typing import Any

from django.db.models import QuerySet

from audit import chain
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


# --- the hash chain (audit.chain) -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class ChainBreak:
    """The first link of the chain that does not hold. `kind`:
    - "edited": the event's hash does not match its content (a field was changed after it was written);
    - "deleted": the event links to a hash no event has: the events before it (after `previous_id`) are gone,
      or were replaced by events re-hashed to look whole;
    - "inserted": `event_id` links well to its predecessor, but the event after it (`next_id`) links past it, to
      that same predecessor: it was slipped in;
    - "relinked": the event links to an event that exists, but not to the one before it (rows moved)."""

    kind: str
    event_id: int
    previous_id: int | None
    next_id: int | None = None

    @property
    def message(self) -> str:
        before = f"#{self.previous_id}" if self.previous_id is not None else "the chain's start"
        if self.kind == "edited":
            return f"event #{self.event_id} was edited: its hash does not match its content"
        if self.kind == "inserted":
            return (
                f"event #{self.event_id} was inserted: it links to {before}, but the next event, #{self.next_id}, "
                f"links to {before} too"
            )
        if self.kind == "relinked":
            return f"event #{self.event_id} links to another event than the one before it ({before}): rows were moved"
        return (
            f"events were deleted between {before} and #{self.event_id}: #{self.event_id} links to an event that "
            "no longer exists"
        )

    def as_json(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "event_id": self.event_id,
            "previous_id": self.previous_id,
            "next_id": self.next_id,
            "message": self.message,
        }


@dataclass(frozen=True)
class ChainReport:
    checked: int  # events walked, up to and including the broken one
    head_id: int | None  # the newest event walked, and its hash: note them elsewhere to notice a cut-off tail
    head_hash: str
    broken: ChainBreak | None

    def as_json(self) -> dict[str, Any]:
        return {
            "ok": self.broken is None,
            "checked": self.checked,
            "head": {"id": self.head_id, "hash": self.head_hash} if self.head_id is not None else None,
            "broken": self.broken.as_json() if self.broken is not None else None,
        }


def audit_chain_verify(*, chunk_size: int = 2000) -> ChainReport:
    """Walk the chain in id order and return at its first broken link. Streamed (memory stays flat); one more query
    at a break, to tell a gap from a jump. Events committed while it walks may or may not be included; none breaks
    the walk. What the chain alone cannot show: the newest events cut off (compare the head with the off-box
    stream, or a head noted earlier)."""
    previous: AuditEvent | None = None
    checked = 0
    for event in AuditEvent.objects.order_by("pk").iterator(chunk_size=chunk_size):
        checked += 1
        broken = _link_broken(previous, event)
        if broken is not None:
            return ChainReport(checked=checked, head_id=event.pk, head_hash=event.hash, broken=broken)
        previous = event
    return ChainReport(
        checked=checked,
        head_id=previous.pk if previous is not None else None,
        head_hash=previous.hash if previous is not None else chain.GENESIS,
        broken=None,
    )


def _link_broken(previous: AuditEvent | None, event: AuditEvent) -> ChainBreak | None:
    previous_id = previous.pk if previous is not None else None
    if chain.event_hash(event, event.prev_hash) != event.hash:
        return ChainBreak("edited", event.pk, previous_id)
    if event.prev_hash == (previous.hash if previous is not None else chain.GENESIS):
        return None
    if previous is not None and event.prev_hash == previous.prev_hash:
        return ChainBreak("inserted", previous.pk, _before(previous.pk), next_id=event.pk)
    if AuditEvent.objects.filter(hash=event.prev_hash).exists():
        return ChainBreak("relinked", event.pk, previous_id)
    return ChainBreak("deleted", event.pk, previous_id)


def _before(event_id: int) -> int | None:
    return AuditEvent.objects.filter(pk__lt=event_id).order_by("-pk").values_list("pk", flat=True).first()
