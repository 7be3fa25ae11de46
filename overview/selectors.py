"""What the overview pages read: each datastore's standing (what decides what is wrong with it, for every
datastore at once, without its backup rows), and one row per listed datastore, composed of its backups (the newest
attempt, the RPO, the schedule), its health (can a worker reach it), the restores waiting for approval into it, its
drills (RTO) and its 30-day chart; and what is wrong with it, worst first (`problems`). Used by the dashboard, the
datastore page and the objectives check (overview/services.py)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

from django.conf import settings
from django.db.models import Count, JSONField, OuterRef, Q, Subquery
from django.db.models.expressions import RawSQL
from django.db.models.functions import Coalesce
from django.utils import timezone

from backups.models import BackupArtifact, ScheduledBackup
from backups.scheduling import ScheduleState, datastore_schedule_state
from backups.selectors import RpoState, rpo_state
from dr_console.jobs import newest_job_value
from drills.selectors import (
    DatastoreDrillState,
    DrillStanding,
    datastore_drill_states,
    drill_standing_annotations,
    drill_standings,
)
from inventory.models import Datastore, DatastoreHealth, Environment, StorageLocation
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
    COPY_MISSING = "copy_missing"  # a copy location has no verified copy of the newest backup, after the grace
    COPY_RPO_MISSED = "copy_rpo_missed"  # a copy location's newest verified copy is older than the RPO target


PROBLEM_ORDER = {problem: index for index, problem in enumerate(Problem)}


@dataclass(frozen=True)
class CopyStanding:
    """One copy location of a datastore: its newest verified copy's backup (the location's recovery point), and
    whether the datastore's newest succeeded backup, past the grace period, is still without a verified copy there."""

    location: str
    region: str
    newest_id: int | None  # the newest backup with a verified copy there
    age: timedelta | None  # of that backup's recovery point
    missing: bool  # the newest succeeded backup (`of_backup`) has no verified copy there, after COPY_GRACE_SECONDS
    late: bool  # older than the RPO target (or none, and the first was due)
    of_backup: int | None = None

    @property
    def label(self) -> str:
        return f"{self.location} ({self.region})" if self.region else self.location


@dataclass
class DatastoreStanding:
    """Where one datastore stands, read for every datastore in one query without any backup or drill row: enough
    to decide what is wrong with it (`problems`), count it and summarise it. The dashboard reads this for all
    datastores, and the rows' details (DatastoreDashboardRow) only for those it lists."""

    datastore: Datastore  # with its environment and health
    last_attempt_id: int | None  # newest backup that ended, whatever its outcome
    last_attempt_status: str | None
    last_success_id: int | None  # newest succeeded backup
    last_verified_id: int | None  # newest succeeded and verified backup: the recovery point
    last_check_id: int | None  # the newest backup that has been verified, whatever the result
    last_check_verification: str | None
    active_id: int | None  # a pending or running backup
    verifying_id: int | None  # a backup being verified
    awaiting_approval: int  # restores into this datastore waiting for approval
    rpo_state: RpoState
    rpo_age: timedelta | None
    drills: DrillStanding
    schedule: ScheduleState | None = None  # None: no backup schedule
    health: DatastoreHealth | None = None  # its newest health check; None: not checked yet
    copies: list[CopyStanding] = field(default_factory=list)  # one per copy location
    problems: list[Problem] = field(default_factory=list)  # worst first; see datastore_problems

    @property
    def copies_missing(self) -> list[CopyStanding]:
        return [copy for copy in self.copies if copy.missing]

    @property
    def copies_late(self) -> list[CopyStanding]:
        return [copy for copy in self.copies if copy.late]

    @property
    def needs_attention(self) -> bool:
        return bool(self.problems)

    @property
    def last_attempt_failed(self) -> bool:
        return self.last_attempt_status in (BackupArtifact.Status.FAILED, BackupArtifact.Status.ERRORED)

    @property
    def busy(self) -> bool:
        return self.active_id is not None or self.verifying_id is not None or self.drills.active_id is not None


def datastore_problems(standing: DatastoreStanding) -> list[Problem]:
    """What is wrong with the datastore now, worst first. One rule for every page, the banner and the count."""
    found = []
    if standing.last_attempt_failed:
        found.append(Problem.LAST_ATTEMPT_FAILED)
    if standing.health is not None and standing.health.is_problem:
        found.append(Problem.UNHEALTHY)
    if standing.rpo_state == RpoState.NONE:
        found.append(Problem.NO_VERIFIED_BACKUP)
    elif standing.rpo_state in (RpoState.LATE, RpoState.VERY_LATE):
        found.append(Problem.RPO_MISSED)
    if standing.last_check_verification == BackupArtifact.Verification.CORRUPT:
        found.append(Problem.VERIFICATION_FAILED)
    if not standing.drills.rto_ok:
        found.append(Problem.RTO_MISSED)
    if standing.schedule is not None and standing.schedule.overdue:
        found.append(Problem.SCHEDULE_MISSED)
    if standing.copies_missing:
        found.append(Problem.COPY_MISSING)
    if standing.copies_late:
        found.append(Problem.COPY_RPO_MISSED)
    return found


# Each copy location's newest verified copy of a stored backup, for every datastore in the query: per location
# named in `storage_locations`, a walk down the datastore's succeeded backups (backupartifact_succeeded_idx), newest
# first, probing each for a verified copy there (the artifactcopy_one_verified_per_location index) and stopping at
# the first. {"offsite": [backup id, recovery point], ...}; a location without one is null. Raw SQL: the ORM cannot
# walk a JSON list laterally.
NEWEST_COPIES_SQL = """
    SELECT jsonb_object_agg(loc.name, (
        SELECT jsonb_build_array(a.id, COALESCE(a.started_at, a.created_at))
        FROM backups_backupartifact a
        WHERE a.datastore_id = backups_datastore.id AND a.status = 'succeeded'
          AND EXISTS (
            SELECT 1 FROM backups_artifactcopy c
            WHERE c.artifact_id = a.id AND c.location = loc.name AND c.status = 'verified'
          )
        ORDER BY a.created_at DESC, a.id DESC
        LIMIT 1
    ))
    FROM jsonb_array_elements_text(backups_datastore.storage_locations) AS loc(name)
"""


def _copy_standings(
    ds: Any, roles: dict[str, str], regions: dict[str, str], last_success: _BackupFacts | None, now: datetime
) -> list[CopyStanding]:
    """Where each copy location of the datastore stands (`ds` carries the NEWEST_COPIES_SQL annotation)."""
    newest: dict[str, Any] = ds.newest_copies or {}
    grace = timedelta(seconds=settings.COPY_GRACE_SECONDS)
    standings = []
    for name in ds.copy_locations_given(roles):
        found = newest.get(name)
        newest_id = int(found[0]) if found else None
        age = now - datetime.fromisoformat(found[1]) if found else None
        missing = (
            last_success is not None
            and newest_id != last_success.id  # the walk meets succeeded backups only: none is newer than it
            and now - (last_success.finished_at or last_success.taken_at) > grace
        )
        state = rpo_state(age=age, target=ds.rpo_target, known_for=now - ds.created_at)
        late = state in (RpoState.LATE, RpoState.VERY_LATE, RpoState.NONE)
        standings.append(
            CopyStanding(
                location=name,
                region=regions.get(name, ""),
                newest_id=newest_id,
                age=age,
                missing=missing,
                late=late,
                of_backup=last_success.id if last_success is not None else None,
            )
        )
    return standings


def _newest(condition: Q, value: Any = "pk") -> Subquery:
    return newest_job_value(BackupArtifact, condition, value)


def datastore_standings(*, datastore_ids: Iterable[int] | None = None) -> list[DatastoreStanding]:
    """Every datastore's standing (or those of `datastore_ids`), by environment and name, in five queries whatever
    the number of datastores, backups and drills: the datastores with what decides their state as subqueries
    (the interesting backups' and drills' ids, each one walk down a newest-first index, and the restores awaiting
    approval), their environments, the few fields of those backups the problems need (by id: cheaper than walking
    the index again for each field), the same of their drills (drills.selectors.drill_standings), and their newest
    schedule firings."""
    Status, Verification = BackupArtifact.Status, BackupArtifact.Verification
    awaiting = (
        RestoreRun.objects.filter(target_datastore=OuterRef("pk"), status=RestoreRun.Status.AWAITING_APPROVAL)
        .order_by()
        .values("target_datastore")
        .annotate(n=Count("pk"))
        .values("n")
    )
    datastores = Datastore.objects.select_related(
        "health"
    ).annotate(
        last_attempt_id=_newest(~Q(status__in=BackupArtifact.ACTIVE)),  # ended, whatever its outcome
        last_success_id=_newest(Q(status=Status.SUCCEEDED)),
        last_verified_id=_newest(Q(status=Status.SUCCEEDED, verification=Verification.VERIFIED)),
        last_check_id=_newest(Q(verified_at__isnull=False)),
        active_id=_newest(Q(status__in=BackupArtifact.ACTIVE)),
        verifying_id=_newest(Q(verification=Verification.VERIFYING)),
        awaiting_approval=Coalesce(Subquery(awaiting), 0),
        newest_copies=RawSQL(NEWEST_COPIES_SQL, (), output_field=JSONField()),
        last_scheduled_id=Subquery(
            ScheduledBackup.objects.filter(datastore=OuterRef("pk")).order_by("-expected_at", "-pk").values("pk")[:1]
        ),
        **drill_standing_annotations(),
    )
    if datastore_ids is not None:
        datastores = datastores.filter(pk__in=list(datastore_ids))
    datastore_list: list[Any] = list(datastores)  # Datastores with the annotations above
    # A few environments for hundreds of datastores: each built once, not once per datastore by a join.
    environments = Environment.objects.in_bulk({ds.environment_id for ds in datastore_list})
    for ds in datastore_list:
        Datastore.environment.field.set_cached_value(ds, environments[ds.environment_id])
    facts = _backup_facts(
        {ds.last_attempt_id for ds in datastore_list}
        | {ds.last_verified_id for ds in datastore_list}
        | {ds.last_check_id for ds in datastore_list}
        | {ds.last_success_id for ds in datastore_list if ds.storage_locations}
    )
    with_copies = any(ds.storage_locations for ds in datastore_list)  # no location configured: no query
    locations = (
        {name: (role, region) for name, role, region in StorageLocation.objects.values_list("name", "role", "region")}
        if with_copies
        else {}
    )
    roles = {name: role for name, (role, _region) in locations.items()}
    regions = {name: region for name, (_role, region) in locations.items()}
    drills = drill_standings(datastore_list)
    scheduled_ids = {ds.last_scheduled_id for ds in datastore_list} - {None}
    scheduled = ScheduledBackup.objects.in_bulk(scheduled_ids) if scheduled_ids else {}
    now = timezone.now()
    standings = []
    for ds in datastore_list:
        recovery_point = facts[ds.last_verified_id].taken_at if ds.last_verified_id else None
        age = now - recovery_point if recovery_point else None
        standing = DatastoreStanding(
            datastore=ds,
            last_attempt_id=ds.last_attempt_id,
            last_attempt_status=facts[ds.last_attempt_id].status if ds.last_attempt_id else None,
            last_success_id=ds.last_success_id,
            last_verified_id=ds.last_verified_id,
            last_check_id=ds.last_check_id,
            last_check_verification=facts[ds.last_check_id].verification if ds.last_check_id else None,
            active_id=ds.active_id,
            verifying_id=ds.verifying_id,
            awaiting_approval=ds.awaiting_approval,
            rpo_state=rpo_state(age=age, target=ds.rpo_target, known_for=now - ds.created_at),
            rpo_age=age,
            drills=drills[ds.pk],
            schedule=datastore_schedule_state(ds, scheduled.get(ds.last_scheduled_id), now),
            health=_health_of(ds),
            copies=_copy_standings(ds, roles, regions, facts.get(ds.last_success_id), now)
            if ds.storage_locations
            else [],
        )
        standing.problems = datastore_problems(standing)
        standings.append(standing)
    return standings


@dataclass(frozen=True)
class _BackupFacts:
    id: int
    status: str
    verification: str
    taken_at: datetime  # BackupArtifact.taken_at: the recovery point of a verified backup
    finished_at: datetime | None


def _backup_facts(ids: set[int | None]) -> dict[int, _BackupFacts]:
    """What a standing needs of these backups, by id, in one query, without building the backups."""
    wanted = ids - {None}
    if not wanted:
        return {}
    rows = BackupArtifact.objects.filter(pk__in=wanted).values_list(
        "pk",
        "status",
        "verification",
        Coalesce("started_at", "created_at"),  # BackupArtifact.taken_at, in SQL
        "finished_at",
    )
    return {pk: _BackupFacts(pk, *fields) for pk, *fields in rows}


@dataclass
class DatastoreDashboardRow:
    """What the dashboard shows about one datastore: its standing, with the backups and drills behind it."""

    standing: DatastoreStanding
    last_attempt: BackupArtifact | None
    last_success: BackupArtifact | None
    last_verified: BackupArtifact | None
    last_check: BackupArtifact | None
    active: BackupArtifact | None
    verifying: BackupArtifact | None
    drills: DatastoreDrillState
    chart: ObjectiveChart | None = None  # its last 30 days (backups and drills)

    @property
    def datastore(self) -> Datastore:
        return self.standing.datastore

    @property
    def problems(self) -> list[Problem]:
        return self.standing.problems

    @property
    def needs_attention(self) -> bool:
        return self.standing.needs_attention

    @property
    def busy(self) -> bool:
        return self.standing.busy

    @property
    def rpo_state(self) -> RpoState:
        return self.standing.rpo_state

    @property
    def rpo_age(self) -> timedelta | None:
        return self.standing.rpo_age

    @property
    def awaiting_approval(self) -> int:
        return self.standing.awaiting_approval

    @property
    def schedule(self) -> ScheduleState | None:
        return self.standing.schedule

    @property
    def health(self) -> DatastoreHealth | None:
        return self.standing.health

    @property
    def objectives_met(self) -> bool:
        """Within its RPO, and its newest drill (if any) succeeded within its RTO."""
        return self.rpo_state in (RpoState.OK, RpoState.NEW) and self.drills.rto_ok


def dashboard_rows_of(standings: Sequence[DatastoreStanding], *, charts: bool = True) -> list[DatastoreDashboardRow]:
    """The rows of these standings, with their backups (one query), drills (one more) and, with `charts`, their
    30-day charts (two more: overview.charts), whatever their number."""
    id_fields = ("last_attempt_id", "last_success_id", "last_verified_id", "last_check_id", "active_id", "verifying_id")
    wanted = {getattr(st, name) for st in standings for name in id_fields} - {None}
    # The rows' backups without their per-table row counts and tool output: a dashboard needs neither.
    artifacts = BackupArtifact.objects.defer("row_counts", "stderr_tail").in_bulk(wanted) if wanted else {}
    datastore_of = {st.datastore.pk: st.datastore for st in standings}
    for artifact in artifacts.values():
        BackupArtifact.datastore.field.set_cached_value(artifact, datastore_of[artifact.datastore_id])  # no query
    datastores = [st.datastore for st in standings]
    drill_states = datastore_drill_states([(st.datastore, st.drills) for st in standings])
    chart_of = datastore_objective_charts(datastores, timezone.localdate()) if charts else {}
    return [
        DatastoreDashboardRow(
            standing=st,
            last_attempt=artifacts.get(st.last_attempt_id),
            last_success=artifacts.get(st.last_success_id),
            last_verified=artifacts.get(st.last_verified_id),
            last_check=artifacts.get(st.last_check_id),
            active=artifacts.get(st.active_id),
            verifying=artifacts.get(st.verifying_id),
            drills=drill_states[st.datastore.pk],
            chart=chart_of.get(st.datastore.pk),
        )
        for st in standings
    ]


def datastore_dashboard_rows(
    *, datastore_ids: Iterable[int] | None = None, charts: bool = True
) -> list[DatastoreDashboardRow]:
    """One row per datastore (or per one of `datastore_ids`), in a constant number of queries whatever the number
    of datastores and backups: datastore_standings, then dashboard_rows_of."""
    return dashboard_rows_of(datastore_standings(datastore_ids=datastore_ids), charts=charts)


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
ROWS_PER_PAGE = 25  # a page a person reads at 3 a.m.; each listed row costs about a millisecond to draw


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

    def matches(self, row: DatastoreStanding) -> bool:
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
    """Everything the dashboard shows: every datastore's standing (datastore_standings), and the rows it lists
    (at most two pages' worth) with their backups and drills (dashboard_rows_of, without the charts, which each
    row loads on its own). A constant number of queries, and the cost of a listed row paid only for those listed."""
    standings = datastore_standings()
    summaries: dict[int, EnvironmentSummary] = {}
    for standing in standings:
        environment = standing.datastore.environment
        summary = summaries.setdefault(environment.pk, EnvironmentSummary(environment))
        summary.total += 1
        summary.attention += standing.needs_attention
        summary.busy += standing.busy
        if not standing.needs_attention and standing.rpo_age is not None:
            summary.oldest_rpo_age = max(summary.oldest_rpo_age or standing.rpo_age, standing.rpo_age)
    matching = [standing for standing in standings if filters.matches(standing)]
    attention = sorted(
        (st for st in matching if st.needs_attention),
        key=lambda st: (PROBLEM_ORDER[st.problems[0]], st.datastore.environment.name, st.datastore.name),
    )
    healthy = [st for st in matching if not st.needs_attention]  # standings come ordered by environment, name
    # One list is paged: what needs attention when that is what was asked for (a bad day: hundreds of them),
    # the healthy ones otherwise, under at most a page of those that need attention.
    paged = attention if filters.state == DashboardState.ATTENTION else healthy
    summarised = paged is healthy and len(healthy) > HEALTHY_LISTED_UP_TO and not filters.narrowed
    pages = 1 if summarised else max(1, -(-len(paged) // ROWS_PER_PAGE))
    page = min(max(page, 1), pages)
    window = slice((page - 1) * ROWS_PER_PAGE, page * ROWS_PER_PAGE)
    listed_attention = attention[window] if paged is attention else attention[:ROWS_PER_PAGE]
    listed_healthy = [] if summarised else healthy[window]
    rows = dashboard_rows_of([*listed_attention, *listed_healthy], charts=False)
    return Dashboard(
        total=len(standings),
        attention_total=sum(st.needs_attention for st in standings),
        awaiting_approval=sum(st.awaiting_approval for st in standings),
        environments=sorted(summaries.values(), key=lambda summary: summary.environment.name),
        attention=rows[: len(listed_attention)],
        attention_matching=len(attention),
        healthy=rows[len(listed_attention) :],
        healthy_matching=len(healthy),
        summarised=summarised,
        page=page,
        pages=pages,
    )
