"""Restore drills: prove, on a schedule or on demand, that a datastore's newest backup restores, and how long
that takes (the measured RTO).

A drill restores into a scratch database that it creates on the drill server (the datastore's
`drill_server_url_env`, by default its own server) and always drops again: after success, after a failed check,
when it is cancelled or hits its time limit; a worker killed outright leaves the name on the row and the reaper
drops it. The scratch database is new, so a drill overwrites nothing and takes no target lock.

The restore itself is the restore workflow's primitive (restores/pg_restore.py): the same preflight,
pg_restore and checks, plus the datastore's SQL probes.
"""

from __future__ import annotations

import logging
import time
import uuid
from datetime import timedelta

from django.conf import settings
from django.contrib.auth.models import User
from django.db import IntegrityError, transaction
from django.utils.translation import gettext as _
from django.utils.translation import pgettext_lazy

from audit.models import AuditEvent
from audit.services import audit_job_finished, audit_record
from backups.models import BackupArtifact
from backups.postgres import PgConnection, PostgresError, describe_exit, pg_connection_from_env
from backups.sources import NoUsableSource, artifact_read_file
from dr_console.jobs import (
    BrokerUnavailable,
    JobContext,
    JobFailed,
    JobType,
    job_cancel,
    job_enqueue,
    job_run,
    job_transition,
    jobs_reap,
)
from dr_console.notifications import notify_job_failed
from drills.models import DrillRun
from inventory.models import Datastore
from restores import pg_restore as primitive

logger = logging.getLogger(__name__)
Status = DrillRun.Status
SCRATCH_PREFIX = "dr_drill_"
SCHEDULE_TRIGGER = "schedule"


class DrillRefused(Exception):
    """A drill request that cannot be accepted; nothing was created."""


# --- requesting -----------------------------------------------------------------------------------------------------


# An active drill's status in a refusal: the status value itself in English ("running", not the label "Restoring").
ACTIVE_WORDS = {
    Status.QUEUED: pgettext_lazy("drill", "queued"),
    Status.RUNNING: pgettext_lazy("drill", "running"),
    Status.CHECKING: pgettext_lazy("drill", "checking"),
}


def drill_source_artifact(datastore: Datastore) -> BackupArtifact | None:
    """The backup a drill restores: the datastore's newest succeeded backup that is not known to be corrupt."""
    return (
        datastore.artifacts.filter(status=BackupArtifact.Status.SUCCEEDED)
        .exclude(storage_key="")
        .exclude(verification=BackupArtifact.Verification.CORRUPT)
        .order_by("-created_at", "-pk")
        .first()
    )


def drill_run_request(
    *,
    datastore: Datastore,
    trigger: str,
    triggered_by: User | None = None,
    client_ip: str | None = None,
    enqueue: bool = True,
) -> DrillRun:
    """Create a drill of `datastore` and hand it to a worker once committed (`enqueue=False`: the caller runs it).

    A datastore with no backup to restore gets a drill that has failed at once, saying so: for a scheduled
    drill that is a finding to be told about, not a request to refuse."""
    if datastore.kind != Datastore.Kind.POSTGRES:
        raise DrillRefused(
            _("%(datastore)s is not a PostgreSQL datastore; drills restore PostgreSQL backups")
            % {"datastore": datastore.name}
        )
    artifact = drill_source_artifact(datastore)
    try:
        with transaction.atomic():
            running = datastore.drill_runs.filter(status__in=DrillRun.ACTIVE).first()
            if running:
                raise DrillRefused(
                    _("a drill of %(datastore)s is already %(status)s (#%(id)s)")
                    % {"datastore": datastore.name, "status": ACTIVE_WORDS[Status(running.status)], "id": running.pk}
                )
            run = DrillRun.objects.create(
                datastore=datastore,
                artifact=artifact,
                server_url_env=datastore.drill_url_env,
                trigger=trigger[:120],
                triggered_by=triggered_by,
            )
            audit_record(
                action=AuditEvent.Action.DRILL_REQUESTED,
                actor=triggered_by,
                actor_label="" if triggered_by else trigger,
                obj=run,
                details={"datastore": datastore.name, "artifact": artifact and artifact.pk, "trigger": trigger},
                client_ip=client_ip,
            )
            if artifact is None:
                job_transition(
                    DrillRun, pk=run.pk, to=Status.FAILED, error=f"no succeeded backup of {datastore.name} to restore"
                )
                transaction.on_commit(lambda: _finished(run.pk))
            elif enqueue:
                transaction.on_commit(lambda: _enqueue_drill(run.pk))
    except IntegrityError:  # another request won the race the check above could not see
        raise DrillRefused(_("a drill of %(datastore)s is already running") % {"datastore": datastore.name}) from None
    run.refresh_from_db()
    return run


def _enqueue_drill(run_id: int) -> None:
    from drills.tasks import drill_run_execute_task

    job_enqueue(drill_run_execute_task, DrillRun, pk=run_id, run_id=run_id)


def drill_run_cancel(*, run_id: int, cancelled_by: User | None, client_ip: str | None = None) -> bool:
    """Cancel a queued or running drill. Its worker stops pg_restore within JOB_HEARTBEAT_SECONDS and drops the
    scratch database. False if the drill had already ended."""
    who = cancelled_by.get_username() if cancelled_by else "the console"
    cancelled = job_cancel(DRILL_JOB, pk=run_id, who=who)
    if cancelled:
        audit_record(
            action=AuditEvent.Action.DRILL_CANCELLED,
            actor=cancelled_by,
            obj=DrillRun.objects.get(pk=run_id),
            client_ip=client_ip,
        )
    return cancelled


# --- running --------------------------------------------------------------------------------------------------------


def drill_run_execute(*, run_id: int) -> None:
    """Run a queued drill (the job framework's runner): a redelivered message does nothing."""
    job_run(DRILL_JOB, pk=run_id)


def scratch_database_name(run_id: int) -> str:
    # Unique on a server several consoles (or test runs) may share: the run id alone could repeat.
    return f"{SCRATCH_PREFIX}{run_id}_{uuid.uuid4().hex[:8]}"


def _drill(ctx: JobContext) -> None:
    """1. Preflight (pg_restore reads the archive, room for a copy, the drill server answers).
    2. Name the scratch database on the row before creating it (the reaper drops it if this worker dies).
    3. Restore into it, timing fetch + CREATE DATABASE + pg_restore: the measured RTO.
    4. CHECKING: SELECT 1, SELECT now(), row counts against the dump's, the datastore's probes.
    5. Drop the scratch database whatever happened, and record whether that worked."""
    run = DrillRun.objects.select_related("datastore", "artifact").get(pk=ctx.pk)
    artifact = run.artifact
    if artifact is None or artifact.status != BackupArtifact.Status.SUCCEEDED:
        raise JobFailed("the backup this drill was requested for is no longer a succeeded backup")
    server = pg_connection_from_env(run.server_url_env)
    pg_restore, archive_major = primitive.restore_preflight(artifact, server)
    name = scratch_database_name(run.pk)
    DrillRun.objects.filter(pk=run.pk).update(scratch_database=name)
    database = server.with_dbname(name)
    try:
        rto, exit_code, stderr_tail = _restore_timed(artifact, server, database, pg_restore, archive_major, ctx)
        ctx.check()
        DrillRun.objects.filter(pk=run.pk).update(exit_code=exit_code, stderr_tail=stderr_tail)
        if exit_code != 0:
            summary = primitive.restore_error_summary(stderr_tail)
            raise JobFailed(f"{describe_exit('pg_restore', exit_code)}: {summary}", stderr_tail)
        ctx.advance(Status.CHECKING, rto=rto)
        checks = primitive.run_checks(database, artifact.row_counts)
        checks += primitive.run_probes(database, run.datastore.drill_probe_list, about=run)
        DrillRun.objects.filter(pk=run.pk).update(checks=checks)
        failed = [check for check in checks if not check["ok"]]
        if failed:
            raise JobFailed("check failed: " + "; ".join(f"{c['name']}: {c['detail']}" for c in failed))
    finally:
        _drop_scratch(run.pk, server, name)


def _restore_timed(
    artifact: BackupArtifact,
    server: PgConnection,
    database: PgConnection,
    pg_restore: str,
    archive_major: int,
    ctx: JobContext,
) -> tuple[timedelta, int, str]:
    started = time.monotonic()
    try:
        with artifact_read_file(artifact, checkpoint=ctx.check) as read:
            ctx.update(source_note=read.note())
            ctx.check()
            primitive.create_database(server, database.dbname, archive_major)
            exit_code, stderr_tail = primitive.pg_restore_run(
                pg_restore=pg_restore,
                database=database,
                path=read.path,
                jobs=settings.RESTORE_JOBS,
                no_owner=True,  # the drill server need not have the source's roles; ownership is not what is proven
            )
    except NoUsableSource as exc:
        raise JobFailed(f"{exc}; nothing was restored") from None
    return timedelta(seconds=time.monotonic() - started), exit_code, stderr_tail


def _drop_scratch(run_id: int, server: PgConnection, name: str) -> bool:
    dropped = primitive.drop_database_quietly(server, name)
    DrillRun.objects.filter(pk=run_id).update(scratch_dropped=dropped)
    return dropped


def _finished(run_id: int) -> None:
    """The audit event of a finished drill, and a notification if it failed."""
    run = DrillRun.objects.select_related("datastore__environment", "triggered_by").get(pk=run_id)
    audit_job_finished(
        action=AuditEvent.Action.DRILL_FINISHED,
        job=run,
        artifact=run.artifact_id,
        rto_seconds=run.rto_seconds,
        scratch_dropped=run.scratch_dropped,
        checks=[{"name": c["name"], "ok": c["ok"]} for c in run.checks],
    )
    if run.status in (Status.FAILED, Status.ERRORED):
        drill_run_notify_failed(run)


def drill_run_notify_failed(run: DrillRun) -> None:
    lines = [f"It restored backup #{run.artifact_id}." if run.artifact_id else "There was no backup to restore."]
    if run.scratch_dropped is False:
        lines.append(f"The scratch database {run.scratch_database} could not be dropped; the reaper tries again.")
    datastore = run.datastore
    notify_job_failed(
        noun="drill", job=run, datastore_name=datastore.name, environment=datastore.environment, lines=lines
    )


DRILL_JOB = JobType(
    name="drill",
    model=DrillRun,
    work=_drill,
    running=Status.RUNNING,
    time_limit=lambda: settings.RESTORE_TIME_LIMIT,
    time_limit_message="time limit of {seconds} s reached; pg_restore was stopped",
    stale_message="worker lost: the drill did not finish",
    lost_message="the broker lost the message that hands this drill to a worker; nothing was restored",
    on_finished=_finished,
)


# --- reaping --------------------------------------------------------------------------------------------------------


def drill_runs_reap_stale() -> int:
    """Fail drills whose worker stopped heartbeating, then drop every scratch database a drill left behind (a
    worker killed outright, or a server that was unreachable when the drill ended). Returns how many it failed."""
    reaped = jobs_reap(DRILL_JOB)
    leftovers = DrillRun.objects.filter(status__in=DrillRun.TERMINAL, scratch_database__startswith=SCRATCH_PREFIX)
    for run_id, url_env, name in leftovers.exclude(scratch_dropped=True).values_list(
        "pk", "server_url_env", "scratch_database"
    ):
        try:
            server = pg_connection_from_env(url_env)
        except PostgresError as exc:
            logger.warning("drill #%s: cannot drop scratch database %s: %s", run_id, name, exc)
            continue
        _drop_scratch(run_id, server, name)
    return reaped


def drill_run_scheduled(*, datastore_id: int) -> DrillRun | None:
    """What beat's drill entry runs. A drill still running when the next one is due starts no second one."""
    datastore = Datastore.objects.select_related("environment").filter(pk=datastore_id).first()
    if datastore is None or not datastore.drill_schedule:
        logger.info("datastore %s has no drill schedule any more; nothing to do", datastore_id)
        return None
    try:
        return drill_run_request(datastore=datastore, trigger=SCHEDULE_TRIGGER)
    except (DrillRefused, BrokerUnavailable) as exc:
        logger.warning("scheduled drill of %s not started: %s", datastore.name, exc)
        return None
