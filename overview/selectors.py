"""What the overview pages read: one row per datastore, composed of its backups (RPO, schedule), the restores
waiting for approval into it, its drills (RTO) and its 30-day chart. Used by the dashboard, the datastore page and
the objectives check (overview/services.py)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import timedelta

from django.db.models import Count, OuterRef, Q, Subquery
from django.db.models.functions import Coalesce
from django.utils import timezone

from backups.models import BackupArtifact, ScheduledBackup
from backups.scheduling import ScheduleState, datastore_schedule_state
from backups.selectors import RpoState, backup_artifact_recovery_point, rpo_state
from drills.selectors import DatastoreDrillState, datastore_drill_states
from inventory.models import Datastore
from overview.charts import ObjectiveChart, datastore_objective_charts
from restores.models import RestoreRun


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
    drills: DatastoreDrillState | None = None  # its drills and RTO
    chart: ObjectiveChart | None = None  # its last 30 days (backups and drills)

    @property
    def objectives_met(self) -> bool:
        """Within its RPO, and its newest drill (if any) succeeded within its RTO."""
        return self.rpo_state == RpoState.OK and (self.drills is None or self.drills.rto_ok)

    @property
    def busy(self) -> bool:
        drilling = self.drills is not None and self.drills.active is not None
        return self.active is not None or self.verifying is not None or drilling


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
    and the count of restores awaiting approval as one more subquery; drills in two more
    (drills.selectors.datastore_drill_states) and the 30-day charts in two more (overview.charts)."""
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
    drill_states = datastore_drill_states(datastore_list)
    chart_of = datastore_objective_charts(datastore_list, timezone.localdate()) if charts else {}
    for row in rows:
        row.drills = drill_states.get(row.datastore.pk)
        row.chart = chart_of.get(row.datastore.pk)
    return rows


def datastore_dashboard_row(datastore_id: int) -> DatastoreDashboardRow | None:
    rows = datastore_dashboard_rows(datastore_ids=[datastore_id])
    return rows[0] if rows else None
