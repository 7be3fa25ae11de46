"""Reads shared by the command line, the admin and the pages."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from enum import StrEnum
from typing import TYPE_CHECKING, Any

from django.db.models import Count, OuterRef, Prefetch, Q, QuerySet, Subquery
from django.db.models.functions import Coalesce
from django.utils import timezone

from backups.models import BackupArtifact, BackupArtifactEvent, ScheduledBackup
from backups.scheduling import ScheduleState, datastore_schedule_state
from dr_console.history import PER_PAGE, Page, created_within_days, keyset_page
from inventory.models import Datastore, Environment

if TYPE_CHECKING:
    from drills.selectors import DatastoreDrillState


def iso(value: datetime | None) -> str | None:
    return value.isoformat() if value else None


def backup_artifact_summary(artifact: BackupArtifact) -> dict[str, Any]:
    """One JSON-able object describing a backup, for `--json` and scripts."""
    return {
        "id": artifact.pk,
        "kind": "backup",
        "datastore": artifact.datastore.name,
        "environment": artifact.datastore.environment.name,
        "status": artifact.status,
        "verification": artifact.verification,
        "verification_error": artifact.verification_error,
        "verified_at": iso(artifact.verified_at),
        "format": artifact.format,
        "compression_level": artifact.compression_level,
        "sha256": artifact.sha256,
        "size_bytes": artifact.size_bytes,
        "storage_key": artifact.storage_key,
        "created_at": iso(artifact.created_at),
        "started_at": iso(artifact.started_at),
        "finished_at": iso(artifact.finished_at),
        "duration_seconds": artifact.duration_seconds,
        "tool_version": artifact.tool_version,
        "server_version": artifact.server_version,
        "archive_entries": artifact.archive_entries,
        "row_counts": artifact.row_counts,
        "trigger": artifact.trigger,
        "error": artifact.error,
    }


# --- pages ------------------------------------------------------------------------------------------------------


class RpoState(StrEnum):
    OK = "ok"  # the newest verified backup is within the datastore's RPO target
    LATE = "late"  # older than the target
    VERY_LATE = "very_late"  # older than twice the target
    NONE = "none"  # no verified backup at all


@dataclass
class DatastoreDashboardRow:
    """What the dashboard shows about one datastore."""

    datastore: Datastore
    last_success: BackupArtifact | None  # newest succeeded backup
    last_verified: BackupArtifact | None  # newest succeeded and verified backup: the recovery point
    last_check: BackupArtifact | None  # the newest backup that has been verified, whatever the result
    active: BackupArtifact | None  # a pending or running backup
    verifying: BackupArtifact | None  # a backup being verified
    awaiting_approval: int  # restores into this datastore waiting for approval
    rpo_state: RpoState
    rpo_age: timedelta | None
    schedule: ScheduleState | None = None  # None: no backup schedule
    drills: DatastoreDrillState | None = None  # its drills, RTO and 30-day chart

    @property
    def objectives_met(self) -> bool:
        """Within its RPO, and its newest drill (if any) succeeded within its RTO."""
        return self.rpo_state == RpoState.OK and (self.drills is None or self.drills.rto_ok)

    @property
    def busy(self) -> bool:
        drilling = self.drills is not None and self.drills.active is not None
        return self.active is not None or self.verifying is not None or drilling


def backup_artifact_recovery_point(artifact: BackupArtifact) -> datetime:
    """When the data in the backup was read: pg_dump's snapshot is taken as the job starts."""
    return artifact.started_at or artifact.created_at


def rpo_state(*, age: timedelta | None, target: timedelta) -> RpoState:
    if age is None:
        return RpoState.NONE
    if age > 2 * target:
        return RpoState.VERY_LATE
    if age > target:
        return RpoState.LATE
    return RpoState.OK


def _newest(condition: Q) -> Subquery:
    """The id of the datastore's newest backup meeting `condition`: a walk down the (datastore, -created_at) index
    that stops at the first match."""
    newest = BackupArtifact.objects.filter(condition, datastore=OuterRef("pk")).order_by("-created_at", "-pk")
    return Subquery(newest.values("pk")[:1])


def datastore_dashboard_rows(
    *, datastore_ids: Iterable[int] | None = None, charts: bool = True
) -> list[DatastoreDashboardRow]:
    """One row per datastore, in a constant number of queries whatever the number of datastores and backups:
    the ids of the interesting backups come as subqueries on the datastore query, the backups in one more query,
    and the count of restores awaiting approval as one more subquery; drills and the 30-day charts in four more
    (drills.selectors.datastore_drill_states)."""
    from drills.selectors import datastore_drill_states
    from restores.models import RestoreRun

    Status, Verification = BackupArtifact.Status, BackupArtifact.Verification
    awaiting = (
        RestoreRun.objects.filter(target_datastore=OuterRef("pk"), status=RestoreRun.Status.AWAITING_APPROVAL)
        .order_by()
        .values("target_datastore")
        .annotate(n=Count("pk"))
        .values("n")
    )
    datastores = Datastore.objects.select_related("environment").annotate(
        last_success_id=_newest(Q(status=Status.SUCCEEDED)),
        last_verified_id=_newest(Q(status=Status.SUCCEEDED, verification=Verification.VERIFIED)),
        last_check_id=_newest(Q(verified_at__isnull=False)),
        active_id=_newest(Q(status__in=BackupArtifact.ACTIVE)),
        verifying_id=_newest(Q(verification=Verification.VERIFYING)),
        awaiting_approval=Coalesce(Subquery(awaiting), 0),
        last_scheduled_id=Subquery(
            ScheduledBackup.objects.filter(datastore=OuterRef("pk")).order_by("-expected_at", "-pk").values("pk")[:1]
        ),
    )
    if datastore_ids is not None:
        datastores = datastores.filter(pk__in=list(datastore_ids))
    datastore_list = list(datastores)
    id_fields = ("last_success_id", "last_verified_id", "last_check_id", "active_id", "verifying_id")
    wanted = {getattr(ds, name) for ds in datastore_list for name in id_fields} - {None}
    artifacts = BackupArtifact.objects.in_bulk(wanted) if wanted else {}
    scheduled_ids = {ds.last_scheduled_id for ds in datastore_list} - {None}
    scheduled = ScheduledBackup.objects.in_bulk(scheduled_ids) if scheduled_ids else {}
    now = timezone.now()
    rows = []
    for ds in datastore_list:
        found = {name: artifacts.get(getattr(ds, name)) for name in id_fields}
        for artifact in found.values():
            if artifact is not None:
                artifact.datastore = ds  # no query per artifact for its datastore
        last_verified = found["last_verified_id"]
        age = now - backup_artifact_recovery_point(last_verified) if last_verified else None
        rows.append(
            DatastoreDashboardRow(
                datastore=ds,
                last_success=found["last_success_id"],
                last_verified=last_verified,
                last_check=found["last_check_id"],
                active=found["active_id"],
                verifying=found["verifying_id"],
                awaiting_approval=ds.awaiting_approval,
                rpo_state=rpo_state(age=age, target=ds.rpo_target),
                rpo_age=age,
                schedule=datastore_schedule_state(ds, scheduled.get(ds.last_scheduled_id), now),
            )
        )
    drill_states = datastore_drill_states(datastore_list, charts=charts)
    for row in rows:
        row.drills = drill_states.get(row.datastore.pk)
    return rows


def datastore_dashboard_row(datastore_id: int) -> DatastoreDashboardRow | None:
    rows = datastore_dashboard_rows(datastore_ids=[datastore_id])
    return rows[0] if rows else None


def scheduled_backup_recent(datastore: Datastore, limit: int = 10) -> list[ScheduledBackup]:
    return list(datastore.scheduled_backups.select_related("artifact").order_by("-expected_at", "-pk")[:limit])


def backup_artifact_pinned(datastore: Datastore) -> list[BackupArtifact]:
    return list(datastore.artifacts.filter(pinned_at__isnull=False).select_related("pinned_by").order_by("-created_at"))


def backup_artifact_in_progress(artifact: BackupArtifact) -> bool:
    """A backup that is being taken or verified (its summary says verifying from the request of a verification
    to its end): its row and status on the pages keep polling."""
    return artifact.is_active or artifact.verification == BackupArtifact.Verification.VERIFYING


@dataclass
class BackupArtifactFilters:
    environment: Environment | None = None
    datastore: Datastore | None = None
    status: str = ""
    verification: str = ""
    date_from: date | None = None
    date_to: date | None = None


def backup_artifact_filter(filters: BackupArtifactFilters) -> QuerySet[BackupArtifact]:
    artifacts = BackupArtifact.objects.all()
    if filters.environment is not None:
        artifacts = artifacts.filter(datastore__environment=filters.environment)
    if filters.datastore is not None:
        artifacts = artifacts.filter(datastore=filters.datastore)
    if filters.status:
        artifacts = artifacts.filter(status=filters.status)
    if filters.verification:
        artifacts = artifacts.filter(verification=filters.verification)
    # Dates are days in the user's time zone: "to" includes the whole of that day.
    return created_within_days(artifacts, filters.date_from, filters.date_to)


LIST_DEFERRED_FIELDS = (
    "row_counts",
    "stderr_tail",
    "verification_error",
    "datastore__description",
    "datastore__environment__description",
    "datastore__environment__reprocess_query",
)


def backup_artifact_page(
    filters: BackupArtifactFilters, *, before: str = "", after: str = "", per_page: int = PER_PAGE
) -> Page[BackupArtifact]:
    """Newest first, by keyset (dr_console.history): any page of 100,000 backups costs what the first one does.
    The list never shows the per-table row counts or the logs, so they are not read (they can be large)."""
    artifacts = (
        backup_artifact_filter(filters)
        .select_related("datastore__environment", "triggered_by")
        .defer(*LIST_DEFERRED_FIELDS)
    )
    return keyset_page(artifacts, before=before, after=after, per_page=per_page)


def backup_artifact_detail_queryset() -> QuerySet[BackupArtifact]:
    """Backups with what their page shows beside them: datastore, environment, who triggered it (joined), and
    the events, the restores made from it and the drills that restored it (prefetched, one query each)."""
    from drills.models import DrillRun
    from restores.models import RestoreRun

    restores = RestoreRun.objects.select_related("target_datastore", "triggered_by").order_by("-created_at", "-pk")
    drills = DrillRun.objects.select_related("datastore").order_by("-created_at", "-pk")
    return BackupArtifact.objects.select_related("datastore__environment", "triggered_by").prefetch_related(
        Prefetch("events", queryset=BackupArtifactEvent.objects.order_by("created_at", "pk")),
        Prefetch("restore_runs", queryset=restores),
        Prefetch("drill_runs", queryset=drills),
    )
