"""Restores: request one, run it (pg_restore into the target, then the runbook's checks), cancel, reap.

This is where a restore happens. `restore_run_execute` is the restore primitive: pg_restore --clean
--if-exists from a seekable local file with --jobs N, any error pg_restore reports counted as a failure, then
SELECT 1, SELECT now() and every table's row count compared with the counts recorded at dump time.
"""

from __future__ import annotations

import logging
import re
import subprocess
import tempfile
from typing import Any

from celery.exceptions import SoftTimeLimitExceeded
from django.conf import settings
from django.contrib.auth.models import User
from django.db import IntegrityError, transaction
from django.utils import timezone
from kombu.exceptions import OperationalError as KombuOperationalError
from psycopg import sql

from backups import artifacts
from backups.models import BackupArtifact, Datastore
from backups.postgres import (
    PgConnection,
    PostgresError,
    count_rows,
    describe_exit,
    first_line,
    pg_connection_from_env,
    pg_tool,
    read_tail,
    server_version,
    start_process,
    stop_process,
    tool_version,
)
from backups.services import BrokerUnavailable, JobFailed, broker_label
from dr_console.jobs import IllegalTransition, JobHeartbeat, JobStopped, job_heartbeat, job_transition, stale_cutoff
from restores.models import RestoreRun

logger = logging.getLogger(__name__)
Status = RestoreRun.Status
TargetKind = RestoreRun.TargetKind
DATABASE_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_$-]{0,62}$")


class RestoreRefused(Exception):
    """A restore request that cannot be accepted; nothing was created."""


# --- requesting --------------------------------------------------------------------------------------------------


def restore_run_request(
    *,
    artifact: BackupArtifact,
    target_kind: str,
    trigger: str,
    target_datastore: Datastore | None = None,
    new_database_name: str = "",
    jobs: int | None = None,
    no_owner: bool = False,
    triggered_by: User | None = None,
    enqueue: bool = True,
) -> RestoreRun:
    """Freeze what will run (artifact and its sha256, target, options) and queue it once committed
    (`enqueue=False`: the caller runs it itself, e.g. `manage.py restore --inline`)."""
    if artifact.status != BackupArtifact.Status.SUCCEEDED or not artifact.storage_key:
        raise RestoreRefused(f"backup #{artifact.pk} is {artifact.status}; only a succeeded backup can be restored")
    if artifact.verification == BackupArtifact.Verification.CORRUPT:
        raise RestoreRefused(
            f"backup #{artifact.pk} is marked corrupt ({artifact.verification_error}); it cannot be restored"
        )
    if target_kind == TargetKind.IN_PLACE:
        target_datastore = artifact.datastore
    elif target_kind == TargetKind.NEW_DATABASE:
        target_datastore = target_datastore or artifact.datastore
        if not DATABASE_NAME_RE.match(new_database_name):
            raise RestoreRefused(
                f"{new_database_name!r} is not a valid database name "
                "(letters, digits, _ $ -, at most 63 characters, not starting with a digit)"
            )
    elif target_kind == TargetKind.DATASTORE:
        if target_datastore is None:
            raise RestoreRefused("choose the datastore to restore into")
        if target_datastore.pk == artifact.datastore_id:
            target_kind = TargetKind.IN_PLACE
    else:
        raise RestoreRefused(f"unknown restore target kind {target_kind!r}")
    assert target_datastore is not None
    if target_datastore.kind != Datastore.Kind.POSTGRES:
        raise RestoreRefused(
            f"{target_datastore.name} is not a PostgreSQL datastore; backup #{artifact.pk} is a PostgreSQL archive"
        )
    jobs = settings.RESTORE_JOBS if jobs is None else jobs
    if not 1 <= jobs <= 64:
        raise RestoreRefused("--jobs must be between 1 and 64")
    target_key = f"datastore:{target_datastore.pk}"
    if target_kind == TargetKind.NEW_DATABASE:
        target_key += f":new:{new_database_name}"
    try:
        with transaction.atomic():
            active = RestoreRun.objects.filter(target_key=target_key, status__in=RestoreRun.ACTIVE).first()
            if active:
                raise RestoreRefused(f"restore #{active.pk} into the same target is already {active.status}")
            run = RestoreRun.objects.create(
                artifact=artifact,
                artifact_sha256=artifact.sha256,
                target_kind=target_kind,
                target_datastore=target_datastore,
                new_database_name=new_database_name if target_kind == TargetKind.NEW_DATABASE else "",
                target_key=target_key,
                options={"jobs": jobs, "no_owner": no_owner},
                trigger=trigger[:120],
                triggered_by=triggered_by,
            )
            if enqueue:
                transaction.on_commit(lambda: _enqueue_restore(run.pk))
    except IntegrityError:  # the database's one-active-restore-per-target constraint caught a race
        raise RestoreRefused("another restore into the same target is already queued or running") from None
    return run


def _enqueue_restore(run_id: int) -> None:
    from restores.tasks import restore_run_execute_task

    try:
        restore_run_execute_task.apply_async(kwargs={"run_id": run_id}, retry=True)
    except KombuOperationalError as exc:
        message = f"could not reach the task broker at {broker_label()}: {exc}"
        job_transition(RestoreRun, pk=run_id, to=Status.FAILED, error=message)
        raise BrokerUnavailable(message) from None


def restore_run_cancel(*, run_id: int) -> bool:
    """Cancel a queued or running restore. Its worker's heartbeat notices within JOB_HEARTBEAT_SECONDS and stops
    pg_restore.
    False when the run had already finished."""
    try:
        return job_transition(RestoreRun, pk=run_id, to=Status.CANCELLED, error="cancelled by an operator")
    except IllegalTransition:
        return False


# --- running ------------------------------------------------------------------------------------------------------


def restore_run_execute(*, run_id: int) -> None:
    """Run the restore. Never runs twice: only the caller that wins QUEUED -> RUNNING does any work, and a
    restore that was interrupted is failed by the reaper, not re-run."""
    try:
        claimed = job_transition(RestoreRun, pk=run_id, to=Status.RUNNING, fields={"started_at": timezone.now()})
    except IllegalTransition as exc:
        logger.info("restore #%s not started: it is already %s", run_id, exc.old)
        return
    except RestoreRun.DoesNotExist:
        logger.warning("restore #%s does not exist; nothing to do", run_id)
        return
    if not claimed:
        logger.info("restore #%s was claimed by another worker", run_id)
        return
    run = RestoreRun.objects.select_related("artifact__datastore", "target_datastore").get(pk=run_id)
    heartbeat = JobHeartbeat(
        lambda: job_heartbeat(RestoreRun, pk=run_id, running_states=RestoreRun.RUNNING_STATES),
        interval=settings.JOB_HEARTBEAT_SECONDS,
    )
    try:
        with heartbeat:
            _restore_postgres(run, heartbeat)
    except JobStopped:
        logger.info("restore #%s stopped: it was cancelled or reaped", run_id)
    except (JobFailed, PostgresError) as exc:
        _fail(run_id, str(exc), getattr(exc, "stderr_tail", ""))
    except SoftTimeLimitExceeded:
        _fail(
            run_id,
            f"time limit of {settings.RESTORE_TIME_LIMIT} s reached; pg_restore was stopped "
            "and the target may be partly restored",
        )
    except Exception as exc:
        logger.exception("restore #%s failed unexpectedly", run_id)
        _fail(run_id, f"internal error: {type(exc).__name__}: {exc}")


def _fail(run_id: int, message: str, stderr_tail: str = "") -> None:
    fields: dict[str, Any] = {"stderr_tail": stderr_tail} if stderr_tail else {}
    try:
        job_transition(RestoreRun, pk=run_id, to=Status.FAILED, error=message, fields=fields)
    except IllegalTransition:
        logger.info("restore #%s already ended; not recording: %s", run_id, message)


def _advance(run: RestoreRun, to: str) -> None:
    """Move the run on; if an operator cancelled it (or the reaper failed it) meanwhile, stop."""
    try:
        moved = job_transition(RestoreRun, pk=run.pk, to=to)
    except IllegalTransition:
        moved = False
    if not moved:
        raise JobStopped


def _restore_postgres(run: RestoreRun, heartbeat: JobHeartbeat) -> None:
    """1. Check the target is reachable and can take the archive; create the new database if asked.
    2. Get a seekable local copy and re-check its sha256 against the one frozen in the run.
    3. pg_restore --clean --if-exists --jobs N; any reported error fails the run.
    4. VERIFYING: SELECT 1, SELECT now(), row counts equal to those recorded at dump time.
    A new database this run created is dropped again if the run fails, so a retry can use the same name."""
    artifact = run.artifact
    target = pg_connection_from_env(run.target_datastore.url_env)
    pg_restore = pg_tool("pg_restore")
    _restore_version, restore_major = tool_version(pg_restore)
    archive_major = _major(artifact.server_version)
    if archive_major and restore_major < archive_major:
        raise JobFailed(
            f"pg_restore {restore_major} on this worker cannot read an archive made by "
            f"PostgreSQL {archive_major}; install a newer client or set PG_BIN_DIR"
        )
    database = target
    created = False
    if run.target_kind == TargetKind.NEW_DATABASE:
        database = target.with_dbname(run.new_database_name)
        _create_database(target, run.new_database_name, archive_major)
        created = True
    else:
        with target.connect() as conn:
            _check_server_can_take(conn, archive_major, target)

    try:
        with artifacts.local_copy(artifact.storage_key) as (path, digest):
            if digest != run.artifact_sha256:
                raise JobFailed(
                    f"checksum mismatch: the stored file hashes to {digest}, the run was approved for "
                    f"{run.artifact_sha256}; nothing was restored"
                )
            heartbeat.check()
            exit_code, stderr_tail = _pg_restore(run, pg_restore, database, path, heartbeat)
        heartbeat.check()
        RestoreRun.objects.filter(pk=run.pk).update(exit_code=exit_code, stderr_tail=stderr_tail)
        if exit_code != 0:
            raise JobFailed(
                f"{describe_exit('pg_restore', exit_code)}: {_restore_error_summary(stderr_tail)}", stderr_tail
            )
        _advance(run, Status.VERIFYING)
        checks = run_checks(database, artifact.row_counts)
        RestoreRun.objects.filter(pk=run.pk).update(checks=checks)
        failed = [check for check in checks if not check["ok"]]
        if failed:
            raise JobFailed("check failed: " + "; ".join(f"{c['name']}: {c['detail']}" for c in failed))
        _advance(run, Status.SUCCEEDED)
    except BaseException as exc:
        if created:
            dropped = _drop_database_quietly(target, run.new_database_name)
            if dropped and isinstance(exc, JobFailed):
                raise JobFailed(
                    f"{exc} (the new database {run.new_database_name} was dropped)", exc.stderr_tail
                ) from None
        raise


def _major(version_text: str) -> int:
    match = re.search(r"(\d+)", version_text or "")
    return int(match.group(1)) if match else 0


def _check_server_can_take(conn: Any, archive_major: int, target: PgConnection) -> None:
    _text, major = server_version(conn)
    if archive_major and major < archive_major:
        raise JobFailed(
            f"the target server {target.server_label} runs PostgreSQL {major}, older than the "
            f"PostgreSQL {archive_major} the backup was taken from; restore into a newer server"
        )


def _create_database(target: PgConnection, name: str, archive_major: int) -> None:
    with target.connect(autocommit=True) as conn:
        _check_server_can_take(conn, archive_major, target)
        if conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone():
            raise JobFailed(
                f"database {name} already exists on {target.server_label}; choose another name, "
                "or restore into it with --into"
            )
        try:
            # template0: a pristine database, so nothing added to template1 collides with the archive's objects.
            conn.execute(sql.SQL("CREATE DATABASE {} TEMPLATE template0").format(sql.Identifier(name)))
        except Exception as exc:
            raise JobFailed(
                f"cannot create database {name} on {target.server_label}: {target.scrub(first_line(str(exc)))}"
            ) from None


def _drop_database_quietly(target: PgConnection, name: str) -> bool:
    try:
        with target.connect(autocommit=True) as conn:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
        return True
    except Exception:
        logger.exception("could not drop database %s after a failed restore", name)
        return False


def _pg_restore(
    run: RestoreRun, pg_restore: str, database: PgConnection, path: str, heartbeat: JobHeartbeat
) -> tuple[int, str]:
    args = [pg_restore, "--clean", "--if-exists", "--no-password", f"--jobs={run.options.get('jobs', 1)}"]
    if run.options.get("no_owner"):
        args += ["--no-owner", "--no-privileges"]
    args += [f"--dbname={database.dbname}", path]  # the name only; host, user and password come via PG* and PGPASSFILE
    with database.subprocess_env() as env, tempfile.TemporaryFile() as stderr_file:
        proc = start_process(args, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=stderr_file)
        heartbeat.on_stop(lambda: stop_process(proc))  # a cancel stops pg_restore and the workers it forked
        try:
            returncode = proc.wait()
        except BaseException:
            stop_process(proc)
            raise
        return returncode, database.scrub(read_tail(stderr_file))


def _restore_error_summary(stderr_tail: str) -> str:
    lines = [line for line in stderr_tail.splitlines() if line.strip()]
    ignored = next((line for line in reversed(lines) if "errors ignored on restore" in line), "")
    first_error = next((line for line in lines if "error:" in line), "")
    parts = [p.removeprefix("pg_restore: ") for p in (first_error, ignored) if p]
    return "; ".join(parts) or (lines[-1] if lines else "no output")


def run_checks(database: PgConnection, expected_counts: dict[str, int]) -> list[dict[str, Any]]:
    """The runbook's post-restore checks against the restored database, each a checklist item."""
    checks: list[dict[str, Any]] = []
    try:
        conn = database.connect()
    except PostgresError as exc:
        return [{"name": "connect", "ok": False, "detail": str(exc)}]
    with conn:
        row = conn.execute("SELECT 1").fetchone()
        checks.append({"name": "SELECT 1", "ok": bool(row and row[0] == 1), "detail": f"returned {row and row[0]}"})
        row = conn.execute("SELECT now()").fetchone()
        checks.append({"name": "SELECT now()", "ok": row is not None, "detail": f"returned {row and row[0]}"})
        mismatches = []
        for label, expected in sorted(expected_counts.items()):
            schema, _, table = label.partition(".")
            try:
                found = count_rows(conn, [(schema, table)])[label]
            except Exception as exc:
                conn.rollback()
                mismatches.append(f"{label}: expected {expected}, cannot count ({first_line(str(exc))})")
                continue
            if found != expected:
                mismatches.append(f"{label}: expected {expected}, found {found}")
        checks.append(
            {
                "name": "row counts",
                "ok": not mismatches,
                "detail": "; ".join(mismatches) if mismatches else f"{len(expected_counts)} tables match the dump",
            }
        )
    return checks


# --- reaping -----------------------------------------------------------------------------------------------------


def restore_runs_reap_stale() -> int:
    """Fail restores whose worker stopped heartbeating. Never re-runs them: a restore is run by a person's
    decision only."""
    cutoff = stale_cutoff(settings.JOB_STALE_AFTER_SECONDS)
    reaped = 0
    for run_id in RestoreRun.objects.filter(status__in=RestoreRun.RUNNING_STATES, heartbeat_at__lt=cutoff).values_list(
        "pk", flat=True
    ):
        try:
            if job_transition(
                RestoreRun, pk=run_id, to=Status.FAILED, error="worker lost: the target may be partly restored"
            ):
                reaped += 1
        except IllegalTransition:
            pass
    return reaped
