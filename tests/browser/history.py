"""A console with its history, for the browser tests and the screenshots: two environments, five datastores
in different states (on time, late, failing, never backed up), a week of backups with their timelines (a month of
scheduled ones for prod-db), restore drills within and over their RTO and one that failed, restores that succeeded,
failed, were rejected or wait for approval, and the audit events all of it left.

The rows are written as the services would have written them days ago (the services only act "now"). The one
datastore the tests back up and restore for real is prod-db, whose URL is the real database's.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from django.contrib.auth.models import User
from django.utils import timezone

from audit.models import AuditEvent
from backups.artifacts import artifact_storage_key
from backups.models import BackupArtifact, BackupArtifactEvent, ScheduledBackup
from dr_console.schedules import cron_schedule_parse
from drills.models import DrillRun, DrillRunEvent
from inventory.models import Datastore, Environment
from inventory.services import datastore_configured_notify as datastore_schedule_sync
from restores.models import RestoreApproval, RestoreRun, RestoreRunEvent
from tests.factories import (
    AuditEventFactory,
    BackupArtifactFactory,
    DatastoreFactory,
    EnvironmentFactory,
    RestoreRunFactory,
    user_in_groups,
)

Status, Verification = BackupArtifact.Status, BackupArtifact.Verification
RunStatus = RestoreRun.Status
PG_DUMP_VERSION = "pg_dump (PostgreSQL) 15.20"

# The tables of tests.support.postgres.SOURCE_SCHEMA, as a backup of prod-db counts them.
PROD_DB_ROWS = {
    "audit.events": 50,
    "public.chunks": 2000,
    "public.documents": 300,
    "public.empty_table": 0,
    "public.workspaces": 5,
}


def password_of(username: str) -> str:
    return f"{username}-Pa55word!"


@dataclass
class History:
    prod: Environment
    prod_db: Datastore
    prod_db_backup: BackupArtifact  # prod-db's newest backup
    awaiting: RestoreRun  # maria's request into prod-analytics, waiting for an approver
    succeeded: RestoreRun  # a check of a staging backup in a new database, with its checklist
    backup: BackupArtifact  # the backup that check restored


def console_history(*, prod_db_url_env: str, api_url: str, language: str = "en") -> History:
    """The history, with what people typed (reasons, comments) in `language`."""
    words = WORDS[language]
    now = timezone.now()
    users = {name: user_in_groups(name, *groups) for name, *groups in USERS}
    for user in users.values():
        user.set_password(password_of(user.username))
        user.save(update_fields=["password"])

    prod = EnvironmentFactory(
        name="prod", protected=True, required_approvals=1, api_url=api_url, description="Production"
    )
    staging = EnvironmentFactory(name="staging", protected=False, description="Staging")
    prod_db = DatastoreFactory(
        environment=prod,
        name="prod-db",
        url_env=prod_db_url_env,
        description="Workspaces, documents and chunks",
        backup_schedule=PROD_DB_SCHEDULE,
        backup_schedule_timezone=TEAM_TIMEZONE,
        drill_schedule=PROD_DB_DRILL_SCHEDULE,
        drill_probes=PROD_DB_PROBE,
        retention_keep_last=7,
        retention_keep_daily=30,
        retention_keep_weekly=8,
        retention_keep_monthly=12,
    )
    analytics = DatastoreFactory(
        environment=prod, name="prod-analytics", url_env="PROD_ANALYTICS_URL", rpo_target=timedelta(hours=6)
    )
    billing = DatastoreFactory(environment=prod, name="prod-billing", url_env="PROD_BILLING_URL")
    staging_db = DatastoreFactory(environment=staging, name="staging-db", url_env="STAGING_DATABASE_URL")
    DatastoreFactory(environment=staging, name="staging-reports", url_env="STAGING_REPORTS_URL")

    nightly = now.replace(hour=2, minute=0, second=0, microsecond=0)
    if nightly > now:
        nightly -= timedelta(days=1)
    prod_db_backups = _scheduled_backups(prod_db, now, days=30)
    # Every 6 h; the newest is corrupt, so the newest verified one is 9 h old: over its 6 h target, not twice.
    for hours in (33, 27, 21, 15, 9):
        _backup(analytics, now - timedelta(hours=hours, minutes=15), 3_401_220_000 + hours * 1_000_003, ANALYTICS_ROWS)
    _backup(
        analytics,
        now - timedelta(hours=3, minutes=15),
        3_431_501_312,
        ANALYTICS_ROWS,
        verification=Verification.CORRUPT,
        verification_error="size mismatch: 3431498752 bytes stored, 3431501312 recorded",
    )
    billing_backups = [
        _backup(billing, nightly - timedelta(days=day), 612_300_000 + day * 90_001, BILLING_ROWS)
        for day in range(6, 2, -1)
    ]
    for day in (2, 1, 0):  # failing since: the role lost its CONNECT privilege
        _backup(billing, nightly - timedelta(days=day), None, {}, error=BILLING_ERROR)
    staging_backups = [
        _backup(staging_db, nightly - timedelta(days=day), 88_100_000 + day * 4_099, STAGING_ROWS)
        for day in range(5, -1, -1)
    ]
    _backup(
        staging_db, now - timedelta(hours=3, minutes=12), 88_140_311, STAGING_ROWS, by=users["olga"], trigger="web:olga"
    )

    checked = staging_backups[2]
    succeeded = _restore(
        checked,
        users["olga"],
        at=checked.finished_at + timedelta(hours=5),  # type: ignore[operator]
        reason=words["monthly_check"],
        new_database_name="staging_check",
        outcome=RunStatus.SUCCEEDED,
        seconds=41.6,
    )
    _restore(
        staging_backups[4],
        users["maria"],
        at=staging_backups[4].finished_at + timedelta(hours=2),  # type: ignore[operator]
        reason=words["premigration"],
        new_database_name="staging_premigration",
        outcome=RunStatus.FAILED,
        seconds=3.2,
        error=f'pg_restore: error: could not execute query: ERROR: extension "vector" is not available ({PG_HINT})',
    )
    analytics_backups = list(analytics.artifacts.filter(verification=Verification.VERIFIED).order_by("created_at"))
    _restore(
        analytics_backups[0],
        users["maria"],
        at=now - timedelta(days=1),
        reason=words["duplicates"],
        in_place=True,
        decided_by=users["abel"],
        outcome=RunStatus.REJECTED,
        comment=words["rejected"],
    )
    awaiting = _restore(
        analytics_backups[-1],
        users["maria"],
        at=now - timedelta(minutes=25),
        reason=words["rollups"],
        in_place=True,
        outcome=RunStatus.AWAITING_APPROVAL,
    )
    _drills(
        prod_db_backups=prod_db_backups,
        analytics_backup=analytics_backups[-2],
        billing_backup=billing_backups[0],
        staging_backup=staging_backups[-3],
        now=now,
    )
    return History(
        prod=prod,
        prod_db=prod_db,
        prod_db_backup=prod_db_backups[-1],
        awaiting=awaiting,
        succeeded=succeeded,
        backup=checked,
    )


WORDS = {
    "en": {
        "monthly_check": "Monthly restore test of staging-db",
        "premigration": "Check yesterday's backup before the schema migration",
        "duplicates": "Dashboards show duplicated sessions since the 02:00 import",
        "rejected": "The import is being fixed upstream; a restore would lose today's events.",
        "rollups": "A bad migration dropped the daily_rollups of the last 24 h",
    },
    "es": {
        "monthly_check": "Prueba mensual de restauración de staging-db",
        "premigration": "Comprobar la copia de ayer antes de la migración del esquema",
        "duplicates": "Los paneles muestran sesiones duplicadas desde la importación de las 02:00",
        "rejected": "La importación se corrige en origen; una restauración perdería los eventos de hoy.",
        "rollups": "Una migración errónea borró los daily_rollups de las últimas 24 h",
    },
}
TEAM_TIMEZONE = "Europe/Madrid"
PROD_DB_SCHEDULE = "0 3 * * *"  # 03:00 in Madrid
PROD_DB_DRILL_SCHEDULE = "30 5 * * *"
PROD_DB_PROBE = "SELECT count(*) > 0 FROM documents"
USERS = [("olga", "operator"), ("abel", "approver", "operator"), ("maria", "operator")]
ANALYTICS_ROWS = {"public.events": 48_211_903, "public.sessions": 3_118_220, "public.daily_rollups": 91_244}
BILLING_ROWS = {"public.customers": 18_402, "public.invoices": 611_893, "public.payments": 598_120}
STAGING_ROWS = {"public.chunks": 412_077, "public.documents": 20_114, "public.workspaces": 48}
BILLING_ERROR = (
    'pg_dump: error: connection to server failed: FATAL: permission denied for database "billing" '
    "(the role needs CONNECT)"
)
PG_HINT = "install pgvector on the target server"


def _sha(*parts: Any) -> str:
    return hashlib.sha256(repr(parts).encode()).hexdigest()


def _backup(
    datastore: Datastore,
    started: datetime,
    size: int | None,
    rows: dict[str, int],
    *,
    error: str = "",
    by: User | None = None,
    trigger: str = "schedule",
    seconds: float | None = None,
    **recorded: Any,
) -> BackupArtifact:
    """A backup as the services record it, started at `started`, taking `seconds` (default: by its size);
    `recorded` overrides any field."""
    seconds = seconds or 4 + (size or 0) / 40_000_000
    finished = started + timedelta(seconds=seconds)
    fields: dict[str, Any] = {
        "datastore": datastore,
        "created_at": started - timedelta(seconds=1),
        "started_at": started,
        "finished_at": finished,
        "duration": finished - started,
        "trigger": trigger,
        "triggered_by": by,
        "compression_level": 6,
        "tool_version": PG_DUMP_VERSION,
        "server_version": "15.20",
    }
    if error:
        fields.update(status=Status.FAILED, error=error, stderr_tail=error)
    else:
        fields.update(
            status=Status.SUCCEEDED,
            verification=Verification.VERIFIED,
            verified_at=finished + timedelta(seconds=seconds / 2 + 2),
            size_bytes=size,
            sha256=_sha(datastore.name, started),
            archive_entries=12 + 4 * len(rows),
            row_counts=rows,
        )
    artifact = BackupArtifactFactory(**{**fields, **recorded})
    if not error:
        artifact.storage_key = artifact_storage_key(artifact)
        artifact.save(update_fields=["storage_key"])
    BackupArtifactEvent.objects.create(job=artifact, created_at=started, old_status="pending", new_status="running")
    BackupArtifactEvent.objects.create(
        job=artifact, created_at=finished, old_status="running", new_status=artifact.status, message=error
    )
    actor = {"actor": by} if by else {"actor_label": trigger}
    _audit(
        AuditEvent.Action.BACKUP_REQUESTED,
        artifact,
        started,
        {"datastore": datastore.name, "trigger": trigger},
        **actor,
    )
    _audit(
        AuditEvent.Action.BACKUP_FINISHED,
        artifact,
        finished,
        {"status": artifact.status, "error": error, "size_bytes": size, "sha256": artifact.sha256},
    )
    return artifact


def _scheduled_backups(datastore: Datastore, now: datetime, *, days: int) -> list[BackupArtifact]:
    """The datastore's nightly backups of the last `days` days, oldest first, each recorded as its schedule's
    firing; the database grows a little every day, and more on Mondays (the weekly import)."""
    datastore_schedule_sync(datastore=datastore)
    schedule = cron_schedule_parse(datastore.backup_schedule, datastore.backup_schedule_timezone)
    fires = [schedule.previous_fire(now)]
    while len(fires) < days:
        fires.append(schedule.previous_fire(fires[-1] - timedelta(minutes=1)))
    fires.reverse()
    Datastore.objects.filter(pk=datastore.pk).update(backup_schedule_since=fires[0] - timedelta(days=1))
    backups = []
    for number, fire in enumerate(fires):
        started = fire + timedelta(seconds=1)
        size = 150_000 + number * 1_400 + (9_000 if fire.weekday() == 0 else 0)
        artifact = _backup(datastore, started, size, PROD_DB_ROWS, seconds=2.9 + size / 120_000 + (number % 4) * 0.2)
        ScheduledBackup.objects.create(
            datastore=datastore,
            expected_at=fire,
            fired_at=started,
            outcome=ScheduledBackup.Outcome.STARTED,
            artifact=artifact,
            task_id=f"history-{datastore.pk}-{number}",
        )
        backups.append(artifact)
    return backups


def _drills(
    *,
    prod_db_backups: list[BackupArtifact],
    analytics_backup: BackupArtifact,
    billing_backup: BackupArtifact,
    staging_backup: BackupArtifact,
    now: datetime,
) -> None:
    """Restore drills: prod-db's nightly ones well within the RTO target, one of prod-analytics over it (its
    3.4 GB take more than an hour), one of prod-billing, and a failed one of staging-db."""
    for number, artifact in enumerate(prod_db_backups):
        at = artifact.started_at + timedelta(hours=2, minutes=29, seconds=59)  # type: ignore[operator]
        if at < now:
            _drill(artifact, at, rto_seconds=146 + number * 1.3 + (number % 4) * 6, probe=True)
    _drill(analytics_backup, analytics_backup.finished_at + timedelta(hours=1), rto_seconds=72 * 60 + 14)  # type: ignore[operator]
    _drill(billing_backup, billing_backup.finished_at + timedelta(hours=3), rto_seconds=9 * 60 + 14)  # type: ignore[operator]
    _drill(
        staging_backup,
        staging_backup.finished_at + timedelta(hours=4),  # type: ignore[operator]
        rto_seconds=None,
        error=f'pg_restore: error: could not execute query: ERROR: extension "vector" is not available ({PG_HINT})',
    )


def _drill(
    artifact: BackupArtifact, at: datetime, *, rto_seconds: float | None, probe: bool = False, error: str = ""
) -> DrillRun:
    """A finished drill of `artifact`, as drills.services records it."""
    datastore = artifact.datastore
    restored = at + timedelta(seconds=(rto_seconds or 41) + 1)
    finished = restored + timedelta(seconds=2)
    checks = [] if error else _checks(artifact, at=restored)
    if probe and not error:
        checks.append({"name": f"probe: {PROD_DB_PROBE}", "ok": True, "detail": "returned True"})
    run = DrillRun.objects.create(
        datastore=datastore,
        artifact=artifact,
        status=DrillRun.Status.FAILED if error else DrillRun.Status.SUCCEEDED,
        server_url_env=datastore.url_env,
        scratch_database=f"dr_drill_{artifact.pk}_{_sha(artifact.pk, at)[:8]}",
        scratch_dropped=True,
        rto=None if rto_seconds is None else timedelta(seconds=rto_seconds),
        checks=checks,
        error=error,
        stderr_tail=error,
        trigger="schedule",
        created_at=at,
        started_at=at + timedelta(seconds=1),
        finished_at=finished,
        duration=finished - at - timedelta(seconds=1),
    )
    steps = [(at + timedelta(seconds=1), DrillRun.Status.RUNNING)]
    if not error:
        steps.append((restored, DrillRun.Status.CHECKING))
    steps.append((finished, run.status))
    previous = DrillRun.Status.QUEUED
    for moment, status in steps:
        DrillRunEvent.objects.create(job=run, created_at=moment, old_status=previous, new_status=status)
        previous = status
    _audit(AuditEvent.Action.DRILL_REQUESTED, run, at, {"datastore": datastore.name}, actor_label="schedule")
    _audit(
        AuditEvent.Action.DRILL_FINISHED,
        run,
        finished,
        {"status": run.status, "rto_seconds": rto_seconds, "error": error},
    )
    return run


def _restore(
    artifact: BackupArtifact,
    requester: User,
    *,
    at: datetime,
    reason: str,
    outcome: str,
    new_database_name: str = "",
    in_place: bool = False,
    decided_by: User | None = None,
    comment: str = "",
    seconds: float = 0,
    error: str = "",
) -> RestoreRun:
    datastore = artifact.datastore
    protected = in_place and datastore.environment.protected
    fields: dict[str, Any] = {
        "artifact": artifact,
        "created_at": at,
        "reason": reason,
        "triggered_by": requester,
        "trigger": f"web:{requester.username}",
        "required_approvals": datastore.environment.required_approvals if protected else 0,
        "status": outcome,
    }
    if in_place:
        fields.update(
            target_kind=RestoreRun.TargetKind.IN_PLACE, new_database_name="", target_key=f"datastore:{datastore.pk}"
        )
    else:
        fields.update(new_database_name=new_database_name)
    run = RestoreRunFactory(**fields)
    _audit(
        AuditEvent.Action.RESTORE_REQUESTED,
        run,
        at,
        {"artifact": artifact.pk, "target": run.target_label, "protected": protected, "reason": reason},
        actor=requester,
    )
    decided = at + timedelta(minutes=14) if protected else at  # an approver's decision takes a while
    steps: list[tuple[datetime, str, str]] = []
    if protected:
        steps.append((at, RunStatus.AWAITING_APPROVAL, ""))
    if outcome == RunStatus.REJECTED:
        assert decided_by is not None
        RestoreApproval.objects.create(
            run=run,
            approver=decided_by,
            decision=RestoreApproval.Decision.REJECTED,
            comment=comment,
            created_at=decided,
        )
        steps.append((decided, RunStatus.REJECTED, f"rejected by {decided_by}: {comment}"))
        run.error = f"rejected by {decided_by}: {comment}"
        _audit(AuditEvent.Action.RESTORE_REJECTED, run, decided, {"reason": comment}, actor=decided_by)
    elif outcome in (RunStatus.SUCCEEDED, RunStatus.FAILED):
        started = decided + timedelta(seconds=2)
        finished = started + timedelta(seconds=seconds)
        steps += [(decided, RunStatus.QUEUED, ""), (started, RunStatus.RUNNING, "launched on worker-1")]
        if outcome == RunStatus.SUCCEEDED:
            steps += [(finished - timedelta(seconds=1), RunStatus.VERIFYING, ""), (finished, RunStatus.SUCCEEDED, "")]
            run.checks = _checks(artifact, at=finished)
        else:
            steps.append((finished, RunStatus.FAILED, error))
            run.error, run.stderr_tail, run.exit_code = error, error, 1
        run.started_at, run.duration = started, finished - started
        _audit(
            AuditEvent.Action.RESTORE_FINISHED,
            run,
            finished,
            {"status": outcome, "error": error, "duration_seconds": seconds},
        )
    previous = RunStatus.REQUESTED
    for moment, status, message in steps:
        RestoreRunEvent.objects.create(
            job=run, created_at=moment, old_status=previous, new_status=status, message=message
        )
        previous = status
    if outcome in RestoreRun.TERMINAL:
        run.finished_at = steps[-1][0]
        run.save()
    return run


def _checks(artifact: BackupArtifact, *, at: datetime) -> list[dict[str, Any]]:
    """What restores.pg_restore.run_checks reports for a good restore of `artifact` checked at `at`."""
    return [
        {"name": "SELECT 1", "ok": True, "detail": "returned 1"},
        {"name": "SELECT now()", "ok": True, "detail": f"returned {at}"},
        {"name": "row counts", "ok": True, "detail": f"{len(artifact.row_counts)} tables match the dump"},
    ]


def _audit(action: str, obj: Any, at: datetime, details: dict[str, Any], **actor: Any) -> None:
    AuditEventFactory(
        action=action,
        created_at=at,
        object_type=obj._meta.label_lower,
        object_id=str(obj.pk),
        object_repr=str(obj),
        details=details,
        client_ip="10.20.0.14" if actor.get("actor") else None,
        **actor,
    )
