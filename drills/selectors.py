"""Reads of drills shared by the command line and the pages."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from enum import StrEnum
from typing import Any

from django.db.models import Count, Max, OuterRef, Q, Subquery
from django.db.models.functions import TruncDate
from django.utils import timezone

from backups.models import BackupArtifact
from backups.selectors import iso
from drills.models import DrillRun
from inventory.models import Datastore


def drill_run_summary(run: DrillRun) -> dict[str, Any]:
    """One JSON-able object describing a drill, for `--json` and scripts."""
    return {
        "id": run.pk,
        "kind": "drill",
        "datastore": run.datastore.name,
        "status": run.status,
        "artifact": run.artifact_id,
        "rto_seconds": run.rto_seconds,
        "rto_target_seconds": run.datastore.rto_target.total_seconds(),
        "scratch_database": run.scratch_database,
        "scratch_dropped": run.scratch_dropped,
        "checks": run.checks,
        "created_at": iso(run.created_at),
        "started_at": iso(run.started_at),
        "finished_at": iso(run.finished_at),
        "duration_seconds": run.duration_seconds,
        "trigger": run.trigger,
        "error": run.error,
    }


def drill_run_describe(run: DrillRun) -> str:
    """One line saying where a drill is or how it ended."""
    name = run.datastore.name
    if run.status == DrillRun.Status.SUCCEEDED:
        passed = ", ".join(check["name"] for check in run.checks)
        return (
            f"drill #{run.pk} of {name} succeeded: backup #{run.artifact_id} restored in {run.rto_seconds or 0:.1f} s "
            f"(RTO target {run.datastore.rto_target.total_seconds():g} s); checks passed: {passed}; "
            f"scratch database {run.scratch_database} dropped"
        )
    if run.status in DrillRun.TERMINAL:
        return f"drill #{run.pk} of {name} {run.status}: {run.error}"
    return f"drill #{run.pk} of {name} is {run.get_status_display().lower()}"


# --- objectives: the RTO side of the dashboard, and the 30-day chart ------------------------------------------------


class RtoState(StrEnum):
    OK = "ok"  # the newest finished drill succeeded within the RTO target
    OVER = "over"  # it succeeded, but restoring took longer than the target
    FAILED = "failed"  # it failed
    NONE = "none"  # no drill has finished yet


def rto_state(last_drill: DrillRun | None, target: timedelta) -> RtoState:
    if last_drill is None:
        return RtoState.NONE
    if last_drill.status != DrillRun.Status.SUCCEEDED:
        return RtoState.FAILED
    if last_drill.rto is not None and last_drill.rto > target:
        return RtoState.OVER
    return RtoState.OK


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


@dataclass
class DatastoreDrillState:
    """What the dashboard and the datastore page show about a datastore's drills and RTO."""

    last_drill: DrillRun | None  # the newest finished drill: it decides the RTO state
    last_measured: DrillRun | None  # the newest drill that measured an RTO (its restore finished)
    active: DrillRun | None
    rto_state: RtoState
    chart: ObjectiveChart | None = None

    @property
    def rto_ok(self) -> bool:
        """No drill has failed or run over the RTO target (none yet counts as no breach)."""
        return self.rto_state in (RtoState.OK, RtoState.NONE)

    @property
    def last_rto(self) -> timedelta | None:
        return self.last_measured.rto if self.last_measured else None


def datastore_drill_states(datastores: Sequence[Datastore], *, charts: bool = True) -> dict[int, DatastoreDrillState]:
    """Per datastore, in a constant number of queries (two, and two more for the charts)."""
    if not datastores:
        return {}

    def newest(condition: Q) -> Subquery:
        rows = DrillRun.objects.filter(condition, datastore=OuterRef("pk")).order_by("-created_at", "-pk")
        return Subquery(rows.values("pk")[:1])

    ids = (
        Datastore.objects.filter(pk__in=[ds.pk for ds in datastores])
        .annotate(
            last_drill_id=newest(Q(status__in=[DrillRun.Status.SUCCEEDED, DrillRun.Status.FAILED])),
            last_measured_id=newest(Q(rto__isnull=False)),
            active_drill_id=newest(Q(status__in=DrillRun.ACTIVE)),
        )
        .values_list("pk", "last_drill_id", "last_measured_id", "active_drill_id")
    )
    by_datastore = {pk: rest for pk, *rest in ids}
    drills = DrillRun.objects.in_bulk({i for rest in by_datastore.values() for i in rest} - {None})
    datastore_of = {ds.pk: ds for ds in datastores}
    for drill in drills.values():
        drill.datastore = datastore_of[drill.datastore_id]  # no query per drill for its datastore
    chart_of = datastore_objective_charts(datastores, timezone.localdate()) if charts else {}
    states = {}
    for ds in datastores:
        last_id, measured_id, active_id = by_datastore.get(ds.pk, (None, None, None))
        last = drills.get(last_id)
        states[ds.pk] = DatastoreDrillState(
            last_drill=last,
            last_measured=drills.get(measured_id),
            active=drills.get(active_id),
            rto_state=rto_state(last, ds.rto_target),
            chart=chart_of.get(ds.pk),
        )
    return states


def drill_run_recent(datastore: Datastore, limit: int = 10) -> list[DrillRun]:
    return list(datastore.drill_runs.select_related("artifact").order_by("-created_at", "-pk")[:limit])
