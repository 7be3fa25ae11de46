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
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.contrib.auth.models import User
from django.db import transaction
from django.db.models import Q
from django.utils import timezone, translation
from django.utils.translation import gettext as _

from audit.models import AuditEvent
from audit.services import audit_job_finished, audit_record
from backups.methods import FORMAT_BY_KIND
from backups.models import BackupArtifact
from backups.sources import artifact_location_names
from dr_console.channel import channel_current
from dr_console.jobs import (
    IllegalTransition,
    JobContext,
    JobFailed,
    JobType,
    job_cancel,
    job_enqueue,
    job_run,
    job_transition,
    jobs_reap,
)
from dr_console.notes import Note
from dr_console.text import untrusted_text
from inventory.identity import IdentityUnknown, TargetIdentity, identity_from_env
from inventory.locks import target_lock_held
from inventory.models import Datastore
from inventory.services import DatastoreRefused, datastore_check_target, datastore_identity
from restores import pg_restore
from restores.errors import ApprovalRefused, RestoreRefused
from restores.methods import RESTORE_METHODS
from restores.models import RestoreApproval, RestoreRun
from restores.notifications import restore_run_notify

logger = logging.getLogger(__name__)
Status = RestoreRun.Status
TargetKind = RestoreRun.TargetKind
DATABASE_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_$-]{0,62}$")


def database_name_problem(name: str) -> str:
    """Why `name` cannot be a new database's name, or "". The one wording of the rule, for the form and the CLI."""
    if DATABASE_NAME_RE.fullmatch(name):  # not .match: its $ also matches before a final newline
        return ""
    return _(
        "%(name)s is not a valid database name: use letters, digits, _ $ and -, at most 63 characters, "
        "starting with a letter or _"
    ) % {"name": repr(name)}


def _confirmation_problem(typed: str, datastore: Datastore) -> str:
    """What to say when the typed confirmation of a protected target is missing, or does not match."""
    values = {"datastore": datastore.name, "environment": datastore.environment.name, "typed": typed}
    if not typed:
        return (
            _(
                "%(datastore)s is in the protected environment %(environment)s: type its name to confirm "
                "(--confirm %(datastore)s)"
            )
            % values
        )
    return (
        _(
            "the confirmation %(typed)r does not match: type %(datastore)s exactly (it is in the protected "
            "environment %(environment)s)"
        )
        % values
    )


__all__ = ["ApprovalRefused", "RestoreRefused"]  # raised here, defined in restores.errors


# --- requesting -----------------------------------------------------------------------------------------------------


def restore_run_request(
    *, artifact: BackupArtifact, requested_by: User, client_ip: str | None = None, **options: Any
) -> RestoreRun:
    """Freeze what will run and either queue it or, if it overwrites a datastore of a protected environment (or
    copies a protected environment's data out of it), wait for approval. A refused request is audited too: who
    tried what, and why it was refused (`_restore_run_request` has the parameters)."""
    try:
        return _restore_run_request(artifact=artifact, requested_by=requested_by, client_ip=client_ip, **options)
    except RestoreRefused as exc:
        audit_record(
            action=AuditEvent.Action.RESTORE_REFUSED,
            actor=requested_by,
            obj=artifact,
            client_ip=client_ip,
            details={
                "artifact": artifact.pk,
                "target_kind": options.get("target_kind", ""),
                "target": getattr(options.get("target_datastore"), "name", "") or artifact.datastore.name,
                "new_database_name": options.get("new_database_name", ""),
                "refused": str(exc),  # in the requester's language: the message they were shown
            },
        )
        raise


def _restore_run_request(
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
    location: str = "",
    trigger: str = "",
    client_ip: str | None = None,
    enqueue: bool = True,
) -> RestoreRun:
    """`confirm` is the typed confirmation: for a protected target it must equal the target datastore's name.
    `jobs` and `no_owner` are options of PostgreSQL restores, `replace` and `key_pattern` of Redis restores.
    `location`: where to read the backup from first (its primary location or one holding a verified copy; empty:
    the primary, then the copies); frozen in the options, so an approval covers it too.
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
        if problem := database_name_problem(new_database_name):
            raise RestoreRefused(problem, field="new_database_name")
        # Checked again when the run creates it (another could take the name meanwhile); here it is said at once,
        # not after an approval and a worker's turn.
        if taken_on := pg_restore.database_exists(target_datastore.url_env, new_database_name):
            raise RestoreRefused(
                pg_restore.database_exists_message(new_database_name, taken_on), field="new_database_name"
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
    options = method.options(jobs=jobs, no_owner=no_owner, replace=replace, key_pattern=key_pattern)
    if location := location.strip():
        if location not in artifact_location_names(artifact):
            raise RestoreRefused(
                _("backup #%(id)s has no readable file at %(location)s (its primary file, or a verified copy)")
                % {"id": artifact.pk, "location": location},
                field="location",
            )
        options["location"] = location
    identity = _target_identity(target_datastore, target_kind, new_database_name)  # None: not known from here
    environment = target_datastore.environment
    source_environment = artifact.datastore.environment
    # Overwriting a protected datastore needs approval and its typed name. A new database overwrites nothing, but it
    # (like a datastore of another environment) puts a copy of the data where the operator can read it: a
    # protected environment's data leaves it only with approval too.
    protected = environment.protected and target_kind != TargetKind.NEW_DATABASE
    data_leaves = source_environment.data_protected and (
        target_kind == TargetKind.NEW_DATABASE or environment.pk != source_environment.pk
    )
    if protected and confirm != target_datastore.name:
        raise RestoreRefused(_confirmation_problem(confirm, target_datastore), field="confirm")
    required_approvals = max(
        environment.required_approvals if protected else 0,
        source_environment.required_approvals if data_leaves else 0,
    )
    if identity is None and required_approvals:
        # An approval covers one database: which one must be known before anyone approves it. (A run that needs
        # none is checked by its worker at launch, like every run.)
        raise RestoreRefused(
            _(
                "the console does not know yet which database %(datastore)s reaches: %(variable)s is not set here "
                "and no worker has reached it yet; press Check now on its page, then request the restore again"
            )
            % {"datastore": target_datastore.name, "variable": target_datastore.url_env}
        )
    target_key = identity.lock_key if identity is not None else f"datastore:{target_datastore.pk}"
    if identity is None and target_kind == TargetKind.NEW_DATABASE:
        target_key += f":new:{new_database_name}"

    with transaction.atomic():
        run = RestoreRun.objects.create(
            artifact=artifact,
            artifact_sha256=artifact.sha256,
            target_kind=target_kind,
            target_datastore=target_datastore,
            new_database_name=new_database_name if target_kind == TargetKind.NEW_DATABASE else "",
            target_key=target_key,
            target_identity=identity.as_json() if identity is not None else None,
            options=options,
            reason=reason,
            required_approvals=required_approvals,
            trigger=(trigger or requested_by.get_username())[:120],
            triggered_by=requested_by,
            **_requester_origin(),
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
                "protected_data": data_leaves,
                "target_identity": identity.as_json() if identity is not None else None,
                "reason": reason,
                "options": run.options,
            },
        )
        if required_approvals:
            job_transition(RestoreRun, pk=run.pk, to=Status.AWAITING_APPROVAL)
            transaction.on_commit(lambda: _notify(run.pk, "awaiting_approval"))
        else:
            _queue(run.pk, enqueue=enqueue)
    run.refresh_from_db()
    return run


def _target_identity(datastore: Datastore, target_kind: str, new_database_name: str) -> TargetIdentity | None:
    """Which database the run will touch, frozen with the request (the worker checks it again at launch), after
    refusing a target that is the console's own database or broker, or that another datastore reaches too. None
    when neither this process nor a worker's health check could ask its server."""
    identity = datastore_identity(datastore)
    try:
        datastore_check_target(datastore, identity)
    except DatastoreRefused as exc:
        raise RestoreRefused(str(exc)) from None
    if identity is not None and target_kind == TargetKind.NEW_DATABASE:
        return identity.with_database(new_database_name)
    return identity


def _requester_origin() -> dict[str, str]:
    """Which way the request came, and on the command line the OS user and host that ran it (dr_console.channel)."""
    channel = channel_current()
    return {
        "requested_via": channel.via,
        "requested_os_user": untrusted_text(channel.os_user)[:150],
        "requested_host": untrusted_text(channel.host)[:255],
    }


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

    job_enqueue(restore_run_execute_task, RestoreRun, pk=run_id, run_id=run_id)


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
            job_transition(
                RestoreRun,
                pk=run.pk,
                to=Status.APPROVED,
                event_note=Note("approved_by", {"who": approver.get_username()}),
                fields={"approved_at": timezone.now()},
            )
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
    """Cancel a waiting or running restore: the requester while they may request restores (an operator), or
    anyone who may change restore runs. A running pg_restore is stopped by its worker's heartbeat within
    JOB_HEARTBEAT_SECONDS. False if it had ended."""
    run = RestoreRun.objects.get(pk=run_id)
    if cancelled_by is not None and not cancelled_by.has_perm("restores.change_restorerun"):
        user = {"user": cancelled_by.get_username()}
        if run.triggered_by_id != cancelled_by.pk:
            raise ApprovalRefused(_("%(user)s may only cancel their own restores") % user)
        if not cancelled_by.has_perm("restores.add_restorerun"):  # requested it, and is no operator any more
            raise ApprovalRefused(_("%(user)s may not cancel restores: that needs the operator role") % user)
    who = cancelled_by.get_username() if cancelled_by else "the console"
    cancelled = job_cancel(RESTORE_JOB, pk=run_id, who=who)
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
    """End runs not launched within RESTORE_APPROVAL_TTL: of their request while they wait for approval (or when
    they needed none), of their approval once approved, so a run approved late still gets the whole time to find
    a free worker. Returns how many."""
    cutoff = timezone.now() - timedelta(seconds=settings.RESTORE_APPROVAL_TTL)
    expired = 0
    stale = RestoreRun.objects.filter(status__in=RestoreRun.WAITING_STATES).filter(
        Q(approved_at__isnull=True, created_at__lt=cutoff) | Q(approved_at__lt=cutoff)
    )
    hours = settings.RESTORE_APPROVAL_TTL / 3600
    for run in stale.only("pk", "status", "approved_at"):
        since = "its approval" if run.approved_at else "the request"
        message = f"not launched within {hours:g} h of {since}; request it again"
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
    """Run a queued restore (the job framework's runner). Never twice: only the caller that wins QUEUED -> RUNNING
    works, and a restore that was interrupted is failed by the reaper, never re-run."""
    restore_runs_expire()
    job_run(RESTORE_JOB, pk=run_id)


def _restore_work(ctx: JobContext) -> None:
    run = RestoreRun.objects.select_related("artifact__datastore", "target_datastore__environment", "triggered_by").get(
        pk=ctx.pk
    )
    audit_record(
        action=AuditEvent.Action.RESTORE_LAUNCHED,
        actor_label="console",
        obj=run,
        details={"worker": socket.gethostname()},
    )
    method = RESTORE_METHODS[BackupArtifact.Format(run.artifact.format)]
    target_key = _target_key_at_launch(run)
    with target_lock_held(
        target_key=target_key, holder=run, target_label=run.target_label, nothing_done="nothing was restored"
    ):
        method.execute(run, ctx)


def _target_key_at_launch(run: RestoreRun) -> str:
    """Ask the target's server, from the worker that will restore, which database the URL reaches now. A target
    that is not the database requested (and approved), or that is now the console's own or another datastore's,
    fails the run before anything is touched. Returns the lock key of that database."""
    datastore = run.target_datastore
    try:
        live = identity_from_env(datastore.kind, datastore.url_env)
    except IdentityUnknown as exc:
        raise JobFailed(
            f"cannot check which database {datastore.name} is before restoring: {exc}; nothing was restored"
        ) from None
    try:
        datastore_check_target(datastore, live)
    except DatastoreRefused as exc:
        raise JobFailed(f"{exc}; nothing was restored") from None
    if run.target_kind == TargetKind.NEW_DATABASE:
        live = live.with_database(run.new_database_name)
    requested = TargetIdentity.from_json(run.target_identity)
    if requested is not None and not requested.same_database(live):
        raise JobFailed(
            f"the target is not the database this restore was requested for: it was {requested.describe()}, "
            f"{datastore.url_env} now reaches {live.describe()}; nothing was restored. Request the restore again"
        )
    if run.target_key != live.lock_key:
        RestoreRun.objects.filter(pk=run.pk).update(target_key=live.lock_key)
    return live.lock_key


def _restore_finished(run_id: int) -> None:
    """The audit event of an ended restore, and the notifications."""
    run = RestoreRun.objects.get(pk=run_id)
    audit_job_finished(
        action=AuditEvent.Action.RESTORE_FINISHED,
        job=run,
        checks=[{"name": c["name"], "ok": c["ok"]} for c in run.checks],
        safety_backup=run.safety_backup_id,
    )
    _notify(run_id, run.status)


def _restore_reaped(job: object) -> None:
    assert isinstance(job, RestoreRun)
    run = RestoreRun.objects.select_related("artifact", "target_datastore").get(pk=job.pk)
    RESTORE_METHODS[BackupArtifact.Format(run.artifact.format)].reaped(run)


RESTORE_JOB = JobType(
    name="restore",
    model=RestoreRun,
    work=_restore_work,
    running=Status.RUNNING,
    time_limit=lambda: settings.RESTORE_TIME_LIMIT,
    time_limit_message=(
        "time limit of {seconds} s reached; the restore was stopped and the target may be partly restored"
    ),
    stale_message="worker lost: the target may be partly restored",
    lost_message=(
        "the broker lost the message that hands this restore to a worker; nothing was restored. Request it again"
    ),
    on_finished=_restore_finished,
    on_reaped=_restore_reaped,
    claim_note=lambda: Note("launched_on", {"host": socket.gethostname()}),
)


# --- reaping --------------------------------------------------------------------------------------------------------


def restore_runs_reap_stale() -> int:
    """End restores whose worker died (after killing a tool that survived it, and dropping a new database it made)
    or whose message was lost. Never re-runs them: a restore runs by a person's decision only."""
    return jobs_reap(RESTORE_JOB)
