"""Restores: request, approve or reject, cancel, expire, run, reap. This is where a restore happens.

A run's parameters (artifact and its sha256, target, options) are frozen at request time, so an approval
covers exactly what will run. Into a protected environment a run waits for `required_approvals` distinct
approvers, none of them the requester; one rejection ends it. `restore_run_execute` then:

1. claims the run (QUEUED -> RUNNING; a redelivered message finds it claimed and does nothing),
2. takes the target's lock (no other backup or restore touches the same database meanwhile),
3. checks every precondition before touching anything, takes the safety backup of the target,
4. restores: pg_restore (restores/pg_restore.py), any error it reports being a failure, or RESTORE of every key
   of a Redis snapshot (restores/redis_restore.py),
5. VERIFYING: SELECT 1, SELECT now(), row counts against the dump (or PING and the keys), the application's
   /healthz and /readyz.

What differs by backup format (options, preconditions, the restore itself, its checks) is one `RestoreMethod`
per format, at the end of this module; the workflow around it is shared.
"""

from __future__ import annotations

import logging
import re
import socket
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import redis
from celery.exceptions import SoftTimeLimitExceeded
from django.conf import settings
from django.contrib.auth.models import User
from django.db import transaction
from django.template.defaultfilters import filesizeformat
from django.utils import timezone, translation
from django.utils.translation import gettext as _

from audit.models import AuditEvent
from audit.services import audit_record
from backups import artifacts, redis_snapshot
from backups.models import BackupArtifact, Datastore
from backups.postgres import (
    describe_exit,
    pg_connection_from_env,
)
from backups.redis_snapshot import RedisTarget, SnapshotCorrupt, SnapshotReader, SnapshotRecord
from backups.services import (
    EXPECTED_ERRORS,
    FORMAT_BY_KIND,
    BackupRefused,
    JobFailed,
    backup_artifact_execute,
    backup_artifact_request,
    datastore_check_not_broker,
    job_enqueue,
    target_lock_acquire,
    target_lock_release,
)
from dr_console.jobs import (
    IllegalTransition,
    JobHeartbeat,
    JobStopped,
    job_claim,
    job_fail,
    job_heartbeat,
    job_transition,
    jobs_reap_stale,
)
from restores import pg_restore as primitive
from restores import redis_restore
from restores.health import application_checks
from restores.models import RestoreApproval, RestoreRun
from restores.notifications import restore_run_notify

logger = logging.getLogger(__name__)
Status = RestoreRun.Status
TargetKind = RestoreRun.TargetKind
DATABASE_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_$-]{0,62}$")


class RestoreRefused(Exception):
    """A restore request that cannot be accepted; nothing was created."""


class ApprovalRefused(Exception):
    """An approval, rejection or cancel that is not allowed; nothing was changed."""


# --- requesting -----------------------------------------------------------------------------------------------------


def restore_run_request(
    *,
    artifact: BackupArtifact,
    target_kind: str,
    requested_by: User,
    reason: str,
    confirm: str = "",
    target_datastore: Datastore | None = None,
    new_database_name: str = "",
    jobs: int | None = None,
    no_owner: bool = False,
    replace: bool = False,
    key_pattern: str = "",
    trigger: str = "",
    client_ip: str | None = None,
    enqueue: bool = True,
) -> RestoreRun:
    """Freeze what will run and either queue it or, if it overwrites a datastore of a protected environment,
    wait for approval.

    `confirm` is the typed confirmation: for a protected target it must equal the target datastore's name.
    `jobs` and `no_owner` are options of PostgreSQL restores, `replace` and `key_pattern` of Redis restores.
    `enqueue=False` leaves a queued run for the caller to execute itself (`manage.py restore --inline`).
    """
    if not requested_by.is_active or not requested_by.has_perm("restores.add_restorerun"):
        raise RestoreRefused(
            _("%(user)s may not request restores (needs the operator role)") % {"user": requested_by.get_username()}
        )
    reason = reason.strip()
    if not reason:
        raise RestoreRefused(_("say why this restore is needed (a reason is required)"))
    if artifact.status != BackupArtifact.Status.SUCCEEDED or not artifact.storage_key:
        raise RestoreRefused(
            _("backup #%(id)s is %(status)s; only a succeeded backup can be restored")
            % {"id": artifact.pk, "status": artifact.get_status_display().lower()}
        )
    if artifact.verification == BackupArtifact.Verification.CORRUPT:
        raise RestoreRefused(
            _("backup #%(id)s is marked corrupt (%(error)s); it cannot be restored")
            % {"id": artifact.pk, "error": artifact.verification_error}
        )
    method = RESTORE_METHODS[BackupArtifact.Format(artifact.format)]
    if target_kind == TargetKind.NEW_DATABASE and not method.new_database:
        raise RestoreRefused(
            _(
                "backup #%(id)s is a %(format)s: restore it in place or into another %(kind)s datastore "
                "(a new database is for PostgreSQL backups)"
            )
            % {
                "id": artifact.pk,
                "format": artifact.get_format_display(),
                "kind": artifact.datastore.get_kind_display(),
            }
        )
    if target_kind == TargetKind.IN_PLACE:
        target_datastore = artifact.datastore
    elif target_kind == TargetKind.NEW_DATABASE:
        target_datastore = target_datastore or artifact.datastore
        if not DATABASE_NAME_RE.match(new_database_name):
            raise RestoreRefused(
                _(
                    "%(name)s is not a valid database name "
                    "(letters, digits, _ $ -, at most 63 characters, not starting with a digit)"
                )
                % {"name": repr(new_database_name)}
            )
    elif target_kind == TargetKind.DATASTORE:
        if target_datastore is None:
            raise RestoreRefused(_("choose the datastore to restore into"))
        if target_datastore.pk == artifact.datastore_id:
            target_kind = TargetKind.IN_PLACE
    else:
        raise RestoreRefused(_("unknown restore target kind %(kind)s") % {"kind": repr(target_kind)})
    assert target_datastore is not None
    if FORMAT_BY_KIND.get(Datastore.Kind(target_datastore.kind)) != artifact.format:
        raise RestoreRefused(
            _("%(target)s is not a %(kind)s datastore; backup #%(id)s is a %(format)s")
            % {
                "target": target_datastore.name,
                "kind": artifact.datastore.get_kind_display(),
                "id": artifact.pk,
                "format": artifact.get_format_display(),
            }
        )
    try:
        datastore_check_not_broker(target_datastore)
    except BackupRefused as exc:
        raise RestoreRefused(str(exc)) from None
    options = method.options(jobs=jobs, no_owner=no_owner, replace=replace, key_pattern=key_pattern)
    environment = target_datastore.environment
    # A new database overwrites nothing (drills and "does this backup restore?" checks make them): approval and
    # the typed confirmation guard restores that overwrite a protected datastore.
    protected = environment.protected and target_kind != TargetKind.NEW_DATABASE
    if protected and confirm != target_datastore.name:
        raise RestoreRefused(
            _(
                "%(datastore)s is in the protected environment %(environment)s: type its name to confirm "
                "(--confirm %(datastore)s)"
            )
            % {"datastore": target_datastore.name, "environment": environment.name}
        )
    target_key = f"datastore:{target_datastore.pk}"
    if target_kind == TargetKind.NEW_DATABASE:
        target_key += f":new:{new_database_name}"

    with transaction.atomic():
        run = RestoreRun.objects.create(
            artifact=artifact,
            artifact_sha256=artifact.sha256,
            target_kind=target_kind,
            target_datastore=target_datastore,
            new_database_name=new_database_name if target_kind == TargetKind.NEW_DATABASE else "",
            target_key=target_key,
            options=options,
            reason=reason,
            required_approvals=environment.required_approvals if protected else 0,
            trigger=(trigger or requested_by.get_username())[:120],
            triggered_by=requested_by,
        )
        audit_record(
            action=AuditEvent.Action.RESTORE_REQUESTED,
            actor=requested_by,
            obj=run,
            client_ip=client_ip,
            details={
                "artifact": artifact.pk,
                "artifact_sha256": artifact.sha256,
                "target": _in_english(run.target_label),
                "target_kind": target_kind,
                "environment": environment.name,
                "protected": protected,
                "reason": reason,
                "options": run.options,
            },
        )
        if protected:
            job_transition(RestoreRun, pk=run.pk, to=Status.AWAITING_APPROVAL)
            transaction.on_commit(lambda: _notify(run.pk, "awaiting_approval"))
        else:
            _queue(run.pk, enqueue=enqueue)
    run.refresh_from_db()
    return run


def _in_english(text: Any) -> str:
    """Audit details are data, not UI: the same words whatever language the requester's page was in."""
    with translation.override("en"):
        return str(text)


def _queue(run_id: int, *, enqueue: bool = True) -> None:
    job_transition(RestoreRun, pk=run_id, to=Status.QUEUED)
    if enqueue:
        transaction.on_commit(lambda: _enqueue_restore(run_id))


def _enqueue_restore(run_id: int) -> None:
    from restores.tasks import restore_run_execute_task

    job_enqueue(restore_run_execute_task, RestoreRun, pk=run_id, failed=Status.FAILED, run_id=run_id)


def _notify(run_id: int, event: str) -> None:
    run = RestoreRun.objects.select_related("artifact__datastore", "target_datastore__environment", "triggered_by")
    restore_run_notify(run.get(pk=run_id), event)


# --- deciding -------------------------------------------------------------------------------------------------------


def _check_can_decide(run: RestoreRun, user: User) -> None:
    if not user.is_active or not user.has_perm("restores.approve_restorerun"):
        raise ApprovalRefused(
            _("%(user)s may not approve or reject restores (needs the approver role)") % {"user": user.get_username()}
        )
    if run.triggered_by_id == user.pk:
        # Not even a superuser: a second pair of eyes is the point.
        raise ApprovalRefused(
            _("%(user)s requested restore #%(id)s and cannot decide on it")
            % {"user": user.get_username(), "id": run.pk}
        )
    if run.status != Status.AWAITING_APPROVAL:
        raise ApprovalRefused(
            _("restore #%(id)s is %(status)s, not awaiting approval")
            % {"id": run.pk, "status": run.get_status_display().lower()}
        )
    if run.approvals.filter(approver=user).exists():
        raise ApprovalRefused(
            _("%(user)s already decided on restore #%(id)s") % {"user": user.get_username(), "id": run.pk}
        )


def restore_run_approve(
    *, run_id: int, approver: User, comment: str = "", client_ip: str | None = None, enqueue: bool = True
) -> RestoreRun:
    """Record an approval; the last one needed moves the run to APPROVED and queues it."""
    restore_runs_expire()  # an approval never revives a stale request
    with transaction.atomic():
        run = RestoreRun.objects.select_for_update().get(pk=run_id)
        _check_can_decide(run, approver)
        RestoreApproval.objects.create(
            run=run, approver=approver, decision=RestoreApproval.Decision.APPROVED, comment=comment
        )
        approvals = run.approvals.filter(decision=RestoreApproval.Decision.APPROVED).count()
        audit_record(
            action=AuditEvent.Action.RESTORE_APPROVED,
            actor=approver,
            obj=run,
            client_ip=client_ip,
            details={"approvals": approvals, "required": run.required_approvals, "comment": comment},
        )
        if approvals >= run.required_approvals:
            job_transition(RestoreRun, pk=run.pk, to=Status.APPROVED, event_message=f"approved by {approver}")
            _queue(run.pk, enqueue=enqueue)
            transaction.on_commit(lambda: _notify(run.pk, "queued"))
    run.refresh_from_db()
    return run


def restore_run_reject(*, run_id: int, approver: User, reason: str, client_ip: str | None = None) -> RestoreRun:
    """One rejection ends the run."""
    reason = reason.strip()
    if not reason:
        raise ApprovalRefused(_("say why the restore is rejected (a reason is required)"))
    with transaction.atomic():
        run = RestoreRun.objects.select_for_update().get(pk=run_id)
        _check_can_decide(run, approver)
        RestoreApproval.objects.create(
            run=run, approver=approver, decision=RestoreApproval.Decision.REJECTED, comment=reason
        )
        job_transition(RestoreRun, pk=run.pk, to=Status.REJECTED, error=f"rejected by {approver}: {reason}")
        audit_record(
            action=AuditEvent.Action.RESTORE_REJECTED,
            actor=approver,
            obj=run,
            client_ip=client_ip,
            details={"reason": reason},
        )
        transaction.on_commit(lambda: _notify(run.pk, "rejected"))
    run.refresh_from_db()
    return run


def restore_run_cancel(*, run_id: int, cancelled_by: User | None, client_ip: str | None = None) -> bool:
    """Cancel a waiting or running restore: the requester, or anyone who may change restore runs. A running
    pg_restore is stopped by its worker's heartbeat within JOB_HEARTBEAT_SECONDS. False if it had ended."""
    run = RestoreRun.objects.get(pk=run_id)
    if (
        cancelled_by is not None
        and run.triggered_by_id != cancelled_by.pk
        and not cancelled_by.has_perm("restores.change_restorerun")
    ):
        raise ApprovalRefused(_("%(user)s may only cancel their own restores") % {"user": cancelled_by.get_username()})
    who = cancelled_by.get_username() if cancelled_by else "the console"
    try:
        cancelled = job_transition(RestoreRun, pk=run_id, to=Status.CANCELLED, error=f"cancelled by {who}")
    except IllegalTransition:
        return False
    if cancelled:
        audit_record(
            action=AuditEvent.Action.RESTORE_CANCELLED,
            actor=cancelled_by,
            obj=run,
            client_ip=client_ip,
            details={"was": run.status},
        )
    return cancelled


def restore_runs_expire() -> int:
    """End runs not launched within RESTORE_APPROVAL_TTL of their request. Returns how many."""
    cutoff = timezone.now() - timedelta(seconds=settings.RESTORE_APPROVAL_TTL)
    expired = 0
    stale = RestoreRun.objects.filter(status__in=RestoreRun.WAITING_STATES, created_at__lt=cutoff)
    for run in stale.only("pk", "status"):
        hours = settings.RESTORE_APPROVAL_TTL / 3600
        message = f"not launched within {hours:g} h of the request; request it again"
        try:
            if job_transition(RestoreRun, pk=run.pk, to=Status.EXPIRED, error=message):
                expired += 1
                audit_record(
                    action=AuditEvent.Action.RESTORE_EXPIRED,
                    actor_label="console",
                    obj=run,
                    details={"was": run.status},
                )
        except IllegalTransition:
            continue
    return expired


# --- running --------------------------------------------------------------------------------------------------------


def restore_run_execute(*, run_id: int) -> None:
    """Run a queued restore. Never twice: only the caller that wins QUEUED -> RUNNING works, and a restore that
    was interrupted is failed by the reaper, never re-run."""
    restore_runs_expire()
    if not job_claim(
        RestoreRun,
        pk=run_id,
        to=Status.RUNNING,
        label=f"restore #{run_id}",
        fields={"started_at": timezone.now()},
        event_message=f"launched on {socket.gethostname()}",
    ):
        return
    run = RestoreRun.objects.select_related("artifact__datastore", "target_datastore__environment", "triggered_by").get(
        pk=run_id
    )
    audit_record(
        action=AuditEvent.Action.RESTORE_LAUNCHED,
        actor_label="console",
        obj=run,
        details={"worker": socket.gethostname()},
    )
    holder = f"restore #{run_id}"
    current = target_lock_acquire(target_key=run.target_key, holder=holder)
    if current:
        _fail(run_id, f"{current} is running against {run.target_label}; nothing was restored")
    else:
        try:
            _execute_locked(run)
        finally:
            target_lock_release(target_key=run.target_key, holder=holder)
    run.refresh_from_db()
    audit_record(
        action=AuditEvent.Action.RESTORE_FINISHED,
        actor_label="console",
        obj=run,
        details={
            "status": run.status,
            "error": run.error,
            "duration_seconds": run.duration_seconds,
            "checks": [{"name": c["name"], "ok": c["ok"]} for c in run.checks],
            "safety_backup": run.safety_backup_id,
        },
    )
    _notify(run_id, run.status)


def _execute_locked(run: RestoreRun) -> None:
    heartbeat = JobHeartbeat(
        lambda: job_heartbeat(RestoreRun, pk=run.pk, running_states=RestoreRun.RUNNING_STATES),
        interval=settings.JOB_HEARTBEAT_SECONDS,
    )
    method = RESTORE_METHODS[BackupArtifact.Format(run.artifact.format)]
    try:
        with heartbeat:
            method.execute(run, heartbeat)
    except JobStopped:
        logger.info("restore #%s stopped: it was cancelled or reaped", run.pk)
    except EXPECTED_ERRORS as exc:
        _fail(run.pk, str(exc), getattr(exc, "stderr_tail", ""))
    except SoftTimeLimitExceeded:
        _fail(
            run.pk,
            f"time limit of {settings.RESTORE_TIME_LIMIT} s reached; the restore was stopped "
            "and the target may be partly restored",
        )
    except Exception as exc:
        logger.exception("restore #%s failed unexpectedly", run.pk)
        _fail(run.pk, f"internal error: {type(exc).__name__}: {exc}")


def _fail(run_id: int, message: str, stderr_tail: str = "") -> None:
    fields: dict[str, Any] = {"stderr_tail": stderr_tail} if stderr_tail else {}
    job_fail(RestoreRun, pk=run_id, to=Status.FAILED, label=f"restore #{run_id}", error=message, **fields)


def _advance(run: RestoreRun, to: str) -> None:
    """Move the run on; if an operator cancelled it (or the reaper failed it) meanwhile, stop."""
    try:
        moved = job_transition(RestoreRun, pk=run.pk, to=to)
    except IllegalTransition:
        moved = False
    if not moved:
        raise JobStopped


def _check_artifact_unchanged(run: RestoreRun) -> None:
    artifact = run.artifact
    if artifact.status != BackupArtifact.Status.SUCCEEDED or artifact.sha256 != run.artifact_sha256:
        raise JobFailed(f"backup #{artifact.pk} is no longer the succeeded backup this run was requested for")


def _checksum_mismatch(digest: str, run: RestoreRun) -> JobFailed:
    return JobFailed(
        f"checksum mismatch: the stored file hashes to {digest}, the run was requested for "
        f"{run.artifact_sha256}; nothing was restored"
    )


def _restore_postgres(run: RestoreRun, heartbeat: JobHeartbeat) -> None:
    """Preconditions first, each with its own message; then the safety backup, pg_restore and the checks.
    A new database this run created is dropped again if the run fails, so a retry can use the same name."""
    _check_artifact_unchanged(run)
    artifact = run.artifact
    target = pg_connection_from_env(run.target_datastore.url_env)
    pg_restore, archive_major = primitive.restore_preflight(artifact, target)

    database = target
    created = False
    try:
        with artifacts.local_copy(artifact.storage_key) as (path, digest):
            if digest != run.artifact_sha256:
                raise _checksum_mismatch(digest, run)
            heartbeat.check()
            if run.target_kind == TargetKind.NEW_DATABASE:
                database = target.with_dbname(run.new_database_name)
                primitive.create_database(target, run.new_database_name, archive_major)
                created = True
            elif run.target_datastore.environment.takes_safety_backup:
                _take_safety_backup(run)
                heartbeat.check()
            exit_code, stderr_tail = primitive.pg_restore_run(
                pg_restore=pg_restore,
                database=database,
                path=path,
                jobs=int(run.options.get("jobs", 1)),
                no_owner=bool(run.options.get("no_owner")),
                heartbeat=heartbeat,
            )
        heartbeat.check()
        RestoreRun.objects.filter(pk=run.pk).update(exit_code=exit_code, stderr_tail=stderr_tail)
        if exit_code != 0:
            summary = primitive.restore_error_summary(stderr_tail)
            raise JobFailed(f"{describe_exit('pg_restore', exit_code)}: {summary}", stderr_tail)
        _advance(run, Status.VERIFYING)
        _record_checks(run, primitive.run_checks(database, run.artifact.row_counts))
    except BaseException as exc:
        if created:
            dropped = primitive.drop_database_quietly(target, run.new_database_name)
            if dropped and isinstance(exc, JobFailed):
                raise JobFailed(
                    f"{exc} (the new database {run.new_database_name} was dropped)", exc.stderr_tail
                ) from None
        raise


def _take_safety_backup(run: RestoreRun) -> None:
    """Back up the target before overwriting it, under the run's own lock, and link it to the run."""
    datastore = run.target_datastore
    try:
        safety = backup_artifact_request(
            datastore=datastore, trigger=f"safety backup before restore #{run.pk}", enqueue=False
        )
    except BackupRefused as exc:
        raise JobFailed(f"cannot take the safety backup of {datastore.name}: {exc}; nothing was restored") from None
    RestoreRun.objects.filter(pk=run.pk).update(safety_backup=safety)
    backup_artifact_execute(artifact_id=safety.pk, verify_after=True, lock_held=True)
    safety.refresh_from_db()
    if safety.status != BackupArtifact.Status.SUCCEEDED:
        raise JobFailed(
            f"the safety backup of {datastore.name} (backup #{safety.pk}) failed: {safety.error}; nothing was restored"
        )


def _record_checks(run: RestoreRun, checks: list[dict[str, Any]]) -> None:
    """Add the application's checks to the datastore's, record them all, and succeed only if every one passed."""
    api_url = run.target_datastore.environment.api_url
    if run.target_kind != TargetKind.NEW_DATABASE and api_url:  # the application does not use a new database
        checks = checks + application_checks(api_url)
    RestoreRun.objects.filter(pk=run.pk).update(checks=checks)
    failed = [check for check in checks if not check["ok"]]
    if failed:
        raise JobFailed("check failed: " + "; ".join(f"{c['name']}: {c['detail']}" for c in failed))
    _advance(run, Status.SUCCEEDED)


def _restore_redis(run: RestoreRun, heartbeat: JobHeartbeat) -> None:
    """Preconditions first (the target answers, is not the console's broker, runs a Redis at least as new as the
    source, has room); then a read of the whole file (its sha256, and conflicts unless replacing) before anything
    is written; the safety backup; RESTORE of every matching key; the checks."""
    _check_artifact_unchanged(run)
    artifact, datastore = run.artifact, run.target_datastore
    try:
        datastore_check_not_broker(datastore)
    except BackupRefused as exc:
        raise JobFailed(f"{exc}; nothing was restored") from None
    target = redis_snapshot.redis_target_from_env(datastore.url_env)
    replace = bool(run.options.get("replace"))
    match = redis_restore.key_matcher(str(run.options.get("key_pattern") or ""))
    client = target.client()
    writing = False
    try:
        with client:
            empty = _check_redis_can_take(client, target, artifact)
            preflight = redis_restore.redis_preflight(
                client,
                artifacts.iter_chunks(artifact.storage_key),
                match=match,
                check_conflicts=not replace and not empty,
                checkpoint=heartbeat.check,
            )
            if preflight.sha256 != run.artifact_sha256:
                raise _checksum_mismatch(preflight.sha256, run)
            if preflight.conflicts.count:
                raise JobFailed(
                    f"{preflight.conflicts.count} keys of the backup already exist in {datastore.name}: "
                    f"{preflight.conflicts.named()}; nothing was restored. Restore with “replace existing keys” "
                    "to overwrite them, or with a key pattern that leaves them out"
                )
            if datastore.environment.takes_safety_backup:
                _take_safety_backup(run)
                heartbeat.check()
            writing = True
            result = redis_restore.redis_restore(
                client, _records(artifact), match=match, replace=replace, checkpoint=heartbeat.check
            )
            heartbeat.check()
            RestoreRun.objects.filter(pk=run.pk).update(stderr_tail=result.summary())
            _advance(run, Status.VERIFYING)
            checks = redis_restore.redis_checks(
                client, _records(artifact), match=match, result=result, target_label=datastore.name
            )
            _record_checks(run, checks)
    except SnapshotCorrupt as exc:
        partly = "; the target may be partly restored" if writing else "; nothing was restored"
        raise JobFailed(f"the backup file is corrupt: {exc}{partly}") from None
    except redis.RedisError as exc:
        partly = "; the target may be partly restored" if writing else "; nothing was restored"
        raise redis_snapshot.RedisDatastoreError(f"{target.error('the restore failed', exc)}{partly}") from None


def _records(artifact: BackupArtifact) -> Iterator[SnapshotRecord]:
    return SnapshotReader(artifacts.iter_chunks(artifact.storage_key)).records()


def _check_redis_can_take(client: redis.Redis, target: RedisTarget, artifact: BackupArtifact) -> bool:
    """The target answers, its RESTORE can read the source's payloads, and it has at least the snapshot's size of
    memory to spare (a lower bound: keys take more room in memory than serialized). Returns whether it is empty."""
    try:
        client.ping()
        info = client.info()
        size = client.dbsize()
    except redis.RedisError as exc:
        raise target.error("cannot reach the target Redis; nothing was restored", exc) from None
    source = redis_snapshot.version_tuple(artifact.server_version)
    found = redis_snapshot.version_tuple(str(info.get("redis_version", "")))
    if found < source:
        raise JobFailed(
            f"the target {target.label} runs Redis {info.get('redis_version')}, older than the "
            f"{artifact.server_version} the backup was taken from: its RESTORE cannot read newer payloads; "
            "restore into a Redis at least as new"
        )
    limit = int(info.get("maxmemory") or 0) or int(info.get("total_system_memory") or 0)
    free = limit - int(info.get("used_memory") or 0)
    if limit and (artifact.size_bytes or 0) > free:
        raise JobFailed(
            f"the target {target.label} has {filesizeformat(max(free, 0))} of memory to spare, less than the "
            f"{filesizeformat(artifact.size_bytes or 0)} of the snapshot; nothing was restored"
        )
    return size == 0


# --- what differs by format -----------------------------------------------------------------------------------------


def _pg_options(*, jobs: int | None, no_owner: bool, replace: bool, key_pattern: str) -> dict[str, Any]:
    if replace or key_pattern:
        raise RestoreRefused(_("replacing keys and key patterns apply to Redis backups only"))
    jobs = settings.RESTORE_JOBS if jobs is None else jobs
    if not 1 <= jobs <= 64:
        raise RestoreRefused(_("--jobs must be between 1 and 64"))
    return {"jobs": jobs, "no_owner": no_owner}


def _redis_options(*, jobs: int | None, no_owner: bool, replace: bool, key_pattern: str) -> dict[str, Any]:
    if jobs is not None or no_owner:
        raise RestoreRefused(_("parallel jobs and --no-owner apply to PostgreSQL backups only"))
    if len(key_pattern) > 1000:
        raise RestoreRefused(_("the key pattern is longer than 1000 characters"))
    try:
        redis_restore.key_matcher(key_pattern)
    except redis_restore.KeyPatternError as exc:
        raise RestoreRefused(str(exc)) from None
    return {"replace": replace, "key_pattern": key_pattern}


@dataclass(frozen=True)
class RestoreMethod:
    """How backups of one format are restored: the options a request freezes, whether a new database can be the
    target, and the restore itself (preconditions, restore, checks)."""

    options: Callable[..., dict[str, Any]]
    execute: Callable[[RestoreRun, JobHeartbeat], None]
    new_database: bool


RESTORE_METHODS: dict[BackupArtifact.Format, RestoreMethod] = {
    BackupArtifact.Format.PG_CUSTOM: RestoreMethod(options=_pg_options, execute=_restore_postgres, new_database=True),
    BackupArtifact.Format.REDIS_SNAPSHOT: RestoreMethod(
        options=_redis_options, execute=_restore_redis, new_database=False
    ),
}


# --- reaping --------------------------------------------------------------------------------------------------------


def restore_runs_reap_stale() -> int:
    """Fail restores whose worker stopped heartbeating (their target lock is released by the backups reaper).
    Never re-runs them: a restore runs by a person's decision only."""
    return jobs_reap_stale(
        RestoreRun,
        running_states=RestoreRun.RUNNING_STATES,
        to=Status.FAILED,
        error="worker lost: the target may be partly restored",
        on_reaped=lambda run_id: audit_record(
            action=AuditEvent.Action.RESTORE_FINISHED,
            actor_label="reaper",
            obj=RestoreRun(pk=run_id),
            details={"status": "failed", "error": "worker lost"},
        ),
    )
