"""What the overview pages read: one row per datastore, composed of its backups (the newest attempt, the RPO, the
schedule), its health (can a worker reach it), the restores waiting for approval into it, its drills (RTO) and its
30-day chart; and what is wrong with it, worst first (`problems`). Used by the dashboard, the datastore page and the
objectives check (overview/services.py)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import timedelta
from enum import StrEnum

from django.db.models import Count, OuterRef, Q, Subquery
from django.db.models.functions import Coalesce
from django.utils import timezone

from backups.models import BackupArtifact, ScheduledBackup
from backups.scheduling import ScheduleState, datastore_schedule_state
from backups.selectors import RpoState, backup_artifact_recovery_point, rpo_state
from drills.selectors import DatastoreDrillState, datastore_drill_states
from inventory.models import Datastore, DatastoreHealth, Environment
from overview.charts import ObjectiveChart, datastore_objective_charts
from restores.models import RestoreRun


class Problem(StrEnum):
    """What can be wrong with a datastore, worst first: the order the dashboard lists them in."""

    LAST_ATTEMPT_FAILED = "last_attempt_failed"  # its newest backup failed, whatever its RPO says
    UNHEALTHY = "unhealthy"  # a worker cannot reach it as configured (backups.health)
    NO_VERIFIED_BACKUP = "no_verified_backup"  # and the first was due
    RPO_MISSED = "rpo_missed"
    VERIFICATION_FAILED = "verification_failed"  # its newest verification found the backup corrupt
    RTO_MISSED = "rto_missed"  # its newest drill failed or restored too slowly
    SCHEDULE_MISSED = "schedule_missed"  # scheduled backups did not fire (beat down)


PROBLEM_ORDER = {problem: index for index, problem in enumerate(Problem)}


@dataclass
class DatastoreDashboardRow:
    """What the dashboard shows about one datastore."""

    datastore: Datastore
    last_attempt: BackupArtifact | None  # newest backup that ended, whatever its outcome
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
    health: DatastoreHealth | None = None  # its newest health check; None: not checked yet
    chart: ObjectiveChart | None = None  # its last 30 days (backups and drills)
    problems: list[Problem] = field(default_factory=list)  # worst first; see datastore_problems

    @property
    def needs_attention(self) -> bool:
        return bool(self.problems)

    @property
    def last_attempt_failed(self) -> bool:
        attempt = self.last_attempt
        return attempt is not None and attempt.status in (BackupArtifact.Status.FAILED, BackupArtifact.Status.ERRORED)

    @property
    def objectives_met(self) -> bool:
        """Within its RPO, and its newest drill (if any) succeeded within its RTO."""
        return self.rpo_state in (RpoState.OK, RpoState.NEW) and (self.drills is None or self.drills.rto_ok)

    @property
    def busy(self) -> bool:
        drilling = self.drills is not None and self.drills.active is not None
        return self.active is not None or self.verifying is not None or drilling


def datastore_problems(row: DatastoreDashboardRow) -> list[Problem]:
    """What is wrong with the datastore now, worst first. One rule for every page, the banner and the count."""
    found = []
    if row.last_attempt_failed:
        found.append(Problem.LAST_ATTEMPT_FAILED)
    if row.health is not None and row.health.is_problem:
        found.append(Problem.UNHEALTHY)
    if row.rpo_state == RpoState.NONE:
        found.append(Problem.NO_VERIFIED_BACKUP)
    elif row.rpo_state in (RpoState.LATE, RpoState.VERY_LATE):
        found.append(Problem.RPO_MISSED)
    if row.last_check is not None and row.last_check.verification == BackupArtifact.Verification.CORRUPT:
        found.append(Problem.VERIFICATION_FAILED)
    if row.drills is not None and not row.drills.rto_ok:
        found.append(Problem.RTO_MISSED)
    if row.schedule is not None and row.schedule.overdue:
        found.append(Problem.SCHEDULE_MISSED)
    return found


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
    datastores = Datastore.objects.select_related("environment", "health").annotate(
        last_attempt_id=_newest(~Q(status__in=BackupArtifact.ACTIVE)),
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
    id_fields = ("last_attempt_id", "last_success_id", "last_verified_id", "last_check_id", "active_id", "verifying_id")
    wanted = {getattr(ds, name) for ds in datastore_list for name in id_fields} - {None}
    # The rows' backups without their per-table row counts: a dashboard of many datastores needs none of them.
    artifacts = BackupArtifact.objects.defer("row_counts", "stderr_tail").in_bulk(wanted) if wanted else {}
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
                last_attempt=found["last_attempt_id"],
                last_success=found["last_success_id"],
                last_verified=last_verified,
                last_check=found["last_check_id"],
                active=found["active_id"],
                verifying=found["verifying_id"],
                awaiting_approval=ds.awaiting_approval,
                rpo_state=rpo_state(age=age, target=ds.rpo_target, known_for=now - ds.created_at),
                rpo_age=age,
                schedule=datastore_schedule_state(ds, scheduled.get(ds.last_scheduled_id), now),
                health=_health_of(ds),
            )
        )
    drill_states = datastore_drill_states(datastore_list)
    chart_of = datastore_objective_charts(datastore_list, timezone.localdate()) if charts else {}
    for row in rows:
        row.drills = drill_states.get(row.datastore.pk)
        row.chart = chart_of.get(row.datastore.pk)
        row.problems = datastore_problems(row)
    return rows


def _health_of(datastore: Datastore) -> DatastoreHealth | None:
    try:
        return datastore.health
    except DatastoreHealth.DoesNotExist:
        return None


def datastore_dashboard_row(datastore_id: int) -> DatastoreDashboardRow | None:
    rows = datastore_dashboard_rows(datastore_ids=[datastore_id])
    return rows[0] if rows else None


# --- the dashboard of a fleet --------------------------------------------------------------------------------------

# Up to this many healthy datastores are listed row by row; beyond it they are summarised by environment, and a
# filter (an environment, a name) lists them. What needs attention is always listed, first.
HEALTHY_LISTED_UP_TO = 30
ROWS_PER_PAGE = 50


class DashboardState(StrEnum):
    ALL = ""
    ATTENTION = "attention"
    HEALTHY = "healthy"


@dataclass(frozen=True)
class DashboardFilters:
    q: str = ""  # part of a datastore's name
    environment: str = ""  # an environment's name
    state: DashboardState = DashboardState.ALL

    @property
    def narrowed(self) -> bool:
        return bool(self.q or self.environment or self.state)

    def matches(self, row: DatastoreDashboardRow) -> bool:
        ds = row.datastore
        if self.q and self.q.casefold() not in ds.name.casefold():
            return False
        if self.environment and ds.environment.name != self.environment:
            return False
        if self.state == DashboardState.ATTENTION:
            return row.needs_attention
        if self.state == DashboardState.HEALTHY:
            return not row.needs_attention
        return True


@dataclass
class EnvironmentSummary:
    """One environment's datastores in a line: how many, how many need attention or are busy, and the oldest
    recovery point among its healthy ones."""

    environment: Environment
    total: int = 0
    attention: int = 0
    busy: int = 0
    oldest_rpo_age: timedelta | None = None

    @property
    def healthy(self) -> int:
        return self.total - self.attention


@dataclass
class Dashboard:
    total: int  # every datastore, whatever the filters
    attention_total: int  # of them, those that need attention
    awaiting_approval: int  # restores waiting for approval, in every datastore
    environments: list[EnvironmentSummary]  # every environment that has datastores
    attention: list[DatastoreDashboardRow]  # matching the filters, worst first (a page of them at most)
    attention_matching: int  # how many rows needing attention match the filters (all pages)
    healthy: list[DatastoreDashboardRow]  # matching the filters, by environment and name (this page of them)
    healthy_matching: int  # how many healthy rows match the filters (all pages)
    summarised: bool  # healthy rows are not listed: too many, and no filter chose some
    page: int
    pages: int


def dashboard_read(filters: DashboardFilters, *, page: int = 1) -> Dashboard:
    """Everything the dashboard shows, in the constant number of queries of datastore_dashboard_rows (without the
    charts, which each row loads on its own)."""
    rows = datastore_dashboard_rows(charts=False)
    summaries: dict[int, EnvironmentSummary] = {}
    for row in rows:
        environment = row.datastore.environment
        summary = summaries.setdefault(environment.pk, EnvironmentSummary(environment))
        summary.total += 1
        summary.attention += row.needs_attention
        summary.busy += row.busy
        if not row.needs_attention and row.rpo_age is not None:
            summary.oldest_rpo_age = max(summary.oldest_rpo_age or row.rpo_age, row.rpo_age)
    matching = [row for row in rows if filters.matches(row)]
    attention = sorted(
        (row for row in matching if row.needs_attention),
        key=lambda row: (PROBLEM_ORDER[row.problems[0]], row.datastore.environment.name, row.datastore.name),
    )
    healthy = [row for row in matching if not row.needs_attention]  # rows come ordered by environment, name
    # One list is paged: what needs attention when that is what was asked for (a bad day: hundreds of them),
    # the healthy ones otherwise, under at most a page of those that need attention.
    paged = attention if filters.state == DashboardState.ATTENTION else healthy
    summarised = paged is healthy and len(healthy) > HEALTHY_LISTED_UP_TO and not filters.narrowed
    pages = 1 if summarised else max(1, -(-len(paged) // ROWS_PER_PAGE))
    page = min(max(page, 1), pages)
    window = slice((page - 1) * ROWS_PER_PAGE, page * ROWS_PER_PAGE)
    return Dashboard(
        total=len(rows),
        attention_total=sum(row.needs_attention for row in rows),
        awaiting_approval=sum(row.awaiting_approval for row in rows),
        environments=sorted(summaries.values(), key=lambda summary: summary.environment.name),
        attention=attention[window] if paged is attention else attention[:ROWS_PER_PAGE],
        attention_matching=len(attention),
        healthy=[] if summarised else healthy[window],
        healthy_matching=len(healthy),
        summarised=summarised,
        page=page,
        pages=pages,
    )
