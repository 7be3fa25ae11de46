"""Reads of the reprocess pages."""

from __future__ import annotations

from django.db.models import Case, IntegerField, QuerySet, Value, When

from reprocess.models import ReprocessBatch, ReprocessItem

ITEMS_SHOWN = 200
BATCHES_SHOWN = 100


def reprocess_batch_queryset() -> QuerySet[ReprocessBatch]:
    return ReprocessBatch.objects.select_related("environment", "triggered_by")


def reprocess_batches_recent() -> list[ReprocessBatch]:
    return list(reprocess_batch_queryset()[:BATCHES_SHOWN])


def reprocess_items_shown(batch: ReprocessBatch, status: str = "") -> list[ReprocessItem]:
    """A page of a batch's items: of one status, or those needing attention (failed, then not sent) first."""
    items = ReprocessItem.objects.filter(batch=batch)
    if status:
        return list(items.filter(status=status).order_by("pk")[:ITEMS_SHOWN])
    attention = Case(
        When(status=ReprocessItem.Status.FAILED, then=Value(0)),
        When(status=ReprocessItem.Status.PENDING, then=Value(1)),
        default=Value(2),
        output_field=IntegerField(),
    )
    return list(items.order_by(attention, "pk")[:ITEMS_SHOWN])
