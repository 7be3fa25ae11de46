"""The 30-day objectives chart of the dashboard: backup size and duration (backups) and drill RTO (drills) per
day, laid out for an inline SVG (overview_ui.objective_chart draws it)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from typing import Any

from django.db.models import Count, Max, Q
from django.db.models.functions import TruncDate
from django.utils import timezone

from backups.models import BackupArtifact
from drills.models import DrillRun
from inventory.models import Datastore


@dataclass
class ChartPoint:
    day: date
    x: float
    y: float
    value: Any  # bytes, or a timedelta
    failed: bool = False


@dataclass
class ChartBand:
    """One row of the chart: a measure over the days, scaled into its own strip."""

    top: float
    points: list[ChartPoint]
    target_y: float | None = None  # the objective's line, where it has one

    @property
    def polyline(self) -> str:
        return " ".join(f"{p.x:.1f},{p.y:.1f}" for p in self.points)

    @property
    def label_y(self) -> float:
        return self.top + CHART_BAND_HEIGHT / 2 + 4


@dataclass
class ChartDay:
    day: date
    size_bytes: int | None = None
    backup_duration: timedelta | None = None
    rto: timedelta | None = None
    drills_failed: int = 0


@dataclass
class ObjectiveChart:
    """Backup size and duration and drill RTO over the last CHART_DAYS days, laid out for an inline SVG. The
    figures are each day's largest; `days` lists the days that have any, for the table beside the picture."""

    start: date
    end: date
    days: list[ChartDay]
    size: ChartBand
    duration: ChartBand
    rto: ChartBand

    width: float = 0.0
    height: float = 0.0
    left: float = 0.0  # where the days start, right of the labels


CHART_DAYS = 30
CHART_LEFT = 62.0  # room for the band labels
CHART_WIDTH = 300.0
CHART_BAND_HEIGHT = 22.0
CHART_BAND_GAP = 8.0


def _band(
    top: float, values: list[tuple[date, Any, float, bool]], start: date, target: float | None = None
) -> ChartBand:
    """Scale (day, value, magnitude, failed) into a strip `top`..`top + CHART_BAND_HEIGHT`: the largest
    magnitude (or the target, if larger) at the top."""
    ceiling = max([magnitude for _day, _value, magnitude, _failed in values] + [target or 0.0]) or 1.0
    step = (CHART_WIDTH - CHART_LEFT - 6) / (CHART_DAYS - 1)

    def y(magnitude: float) -> float:
        return top + CHART_BAND_HEIGHT - CHART_BAND_HEIGHT * magnitude / ceiling

    points = [
        ChartPoint(day=day, x=CHART_LEFT + (day - start).days * step, y=y(magnitude), value=value, failed=failed)
        for day, value, magnitude, failed in values
    ]
    return ChartBand(top=top, points=points, target_y=y(target) if target else None)


def datastore_objective_charts(datastores: Sequence[Datastore], today: date) -> dict[int, ObjectiveChart]:
    """One chart per datastore, in two queries: backups and drills grouped by day in the current time zone."""
    start = today - timedelta(days=CHART_DAYS - 1)
    since = timezone.make_aware(datetime.combine(start, time.min))
    ids = [ds.pk for ds in datastores]
    days: dict[int, dict[date, ChartDay]] = {pk: {} for pk in ids}
    backups = (
        BackupArtifact.objects.filter(
            datastore_id__in=ids, status=BackupArtifact.Status.SUCCEEDED, created_at__gte=since
        )
        .annotate(day=TruncDate("created_at"))
        .order_by()
        .values("datastore_id", "day")
        .annotate(size=Max("size_bytes"), duration=Max("duration"))
    )
    for row in backups:
        entry = days[row["datastore_id"]].setdefault(row["day"], ChartDay(day=row["day"]))
        entry.size_bytes, entry.backup_duration = row["size"], row["duration"]
    drills = (
        DrillRun.objects.filter(
            datastore_id__in=ids,
            status__in=[DrillRun.Status.SUCCEEDED, DrillRun.Status.FAILED],
            created_at__gte=since,
        )
        .annotate(day=TruncDate("created_at"))
        .order_by()
        .values("datastore_id", "day")
        .annotate(rto=Max("rto"), failed=Count("pk", filter=Q(status=DrillRun.Status.FAILED)))
    )
    for row in drills:
        entry = days[row["datastore_id"]].setdefault(row["day"], ChartDay(day=row["day"]))
        entry.rto, entry.drills_failed = row["rto"], row["failed"]

    charts = {}
    for ds in datastores:
        listed = sorted(days[ds.pk].values(), key=lambda d: d.day)
        sizes = [(d.day, d.size_bytes, float(d.size_bytes), False) for d in listed if d.size_bytes is not None]
        durations = [
            (d.day, d.backup_duration, d.backup_duration.total_seconds(), False)
            for d in listed
            if d.backup_duration is not None
        ]
        rtos = [
            (d.day, d.rto, d.rto.total_seconds() if d.rto else 0.0, bool(d.drills_failed))
            for d in listed
            if d.rto is not None or d.drills_failed
        ]
        band = CHART_BAND_HEIGHT + CHART_BAND_GAP
        charts[ds.pk] = ObjectiveChart(
            start=start,
            end=today,
            days=listed,
            size=_band(4, sizes, start),
            duration=_band(4 + band, durations, start),
            rto=_band(4 + 2 * band, rtos, start, target=ds.rto_target.total_seconds()),
            width=CHART_WIDTH,
            height=4 + 3 * band,
            left=CHART_LEFT,
        )
    return charts
