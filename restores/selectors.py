"""Reads shared by the command line, the admin and the pages."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.contrib.auth.models import User
from django.db.models import Count, Prefetch, Q, QuerySet
from django.utils import timezone
from django.utils.translation import gettext as _

from backups.models import BackupArtifact
from dr_console.formatting import iso
from dr_console.history import PER_PAGE, Page, keyset_page
from dr_console.jobs import active_job_labels
from dr_console.notes import note_text
from inventory.models import Datastore
from restores.models import RestoreApproval, RestoreRun

Status = RestoreRun.Status
TargetKind = RestoreRun.TargetKind
# The run list's status filter: every status, plus "active" for all the ones still going.
ACTIVE_FILTER = "active"


def restore_run_summary(run: RestoreRun) -> dict[str, Any]:
    """One JSON-able object describing a restore run, for `--json` and scripts."""
    return {
        "id": run.pk,
        "kind": "restore",
        "artifact_id": run.artifact_id,
        "artifact_sha256": run.artifact_sha256,
        "status": run.status,
        "target_kind": run.target_kind,
        "target_datastore": run.target_datastore.name,
        "new_database": run.new_database_name or None,
        "target": str(run.target_label),
        "options": run.options,
        "reason": run.reason,
        "requested_by": run.triggered_by.get_username() if run.triggered_by else None,
        "requested_via": run.requested_via or None,
        "requested_os_user": run.requested_os_user or None,
        "requested_host": run.requested_host or None,
        "required_approvals": run.required_approvals,
        "approvals": [
            {
                "approver": a.approver.get_username(),
                "decision": a.decision,
                "comment": a.comment,
                "at": iso(a.created_at),
            }
            for a in run.approvals.select_related("approver")
        ],
        "safety_backup_id": run.safety_backup_id,
        "created_at": iso(run.created_at),
        "started_at": iso(run.started_at),
        "finished_at": iso(run.finished_at),
        "duration_seconds": run.duration_seconds,
        "exit_code": run.exit_code,
        "checks": run.checks,
        "trigger": run.trigger,
        "error": run.error,
    }


# --- pages ----------------------------------------------------------------------------------------------------------


def restore_run_queryset() -> QuerySet[RestoreRun]:
    """Runs with what every page shows of them (backup, target, environment, requester) in the same query."""
    return RestoreRun.objects.select_related(
        "artifact__datastore", "target_datastore__environment", "triggered_by", "safety_backup"
    )


def restore_run_page(
    *, status: str = "", before: str = "", after: str = "", per_page: int = PER_PAGE
) -> Page[RestoreRun]:
    """The restore history, newest first, optionally one status (or ACTIVE_FILTER), with each run's approvals
    counted in the same query."""
    runs = restore_run_queryset().annotate(
        approvals_count=Count("approvals", filter=Q(approvals__decision=RestoreApproval.Decision.APPROVED))
    )
    if status == ACTIVE_FILTER:
        runs = runs.filter(status__in=RestoreRun.ACTIVE)
    elif status:
        runs = runs.filter(status=status)
    return keyset_page(runs, before=before, after=after, per_page=per_page)


def restore_run_approvals(run: RestoreRun) -> list[RestoreApproval]:
    return list(run.approvals.select_related("approver"))


def restore_run_decision_blocker(*, run: RestoreRun, user: User, approvals: list[RestoreApproval]) -> str:
    """Why `user` cannot approve or reject `run` now, for the page ("" when they can). A hint that decides which
    buttons to show: the services check again, under a row lock, when a decision is posted."""
    if run.status != Status.AWAITING_APPROVAL:
        return _("This restore is not awaiting approval any more.")
    if run.triggered_by_id == user.pk:
        return _("You requested this restore, so someone else must approve it: a second pair of eyes is the point.")
    if not user.has_perm("restores.approve_restorerun"):
        return _("Someone with the approver role decides on it; you can follow it here.")
    if any(approval.approver_id == user.pk for approval in approvals):
        return _("You have already decided on this restore; it waits for another approver.")
    return ""


@dataclass(frozen=True)
class TimelineEntry:
    """One line of a run's history: a step it went through, an approver's decision, or its safety backup."""

    at: datetime
    label: str
    actor: str = ""
    message: str = ""
    status: str = ""  # the status the run entered (or the safety backup's); "" for a decision
    decision: str = ""  # "approved" or "rejected" for a decision
    current: bool = False  # the step the run is in now: only it shows as in progress
    backup_id: int | None = None  # the safety backup this line is about
    backup_status: str = ""  # and its status, in words


# Status changes a decision already says (with its approver and comment): not repeated as a step of their own.
DECIDED_STATES = frozenset({Status.APPROVED, Status.REJECTED})


def restore_run_timeline(run: RestoreRun, approvals: list[RestoreApproval]) -> list[TimelineEntry]:
    """The request, every decision, every step the run went through (RestoreRunEvent rows) and its safety backup,
    oldest first. Each thing appears once; a step the run has left shows as done, only the current one as in
    progress."""
    requester = run.triggered_by.get_username() if run.triggered_by else run.trigger
    entries = [
        TimelineEntry(at=run.created_at, label=_("Requested"), actor=requester, status=Status.REQUESTED),
    ]
    # Decisions first at equal times: the approval is written before the status change it causes.
    for approval in approvals:
        entries.append(
            TimelineEntry(
                at=approval.created_at,
                label=approval.get_decision_display(),
                actor=approval.approver.get_username(),
                message=approval.comment,
                decision=approval.decision,
            )
        )
    events = [event for event in run.events.all() if not (approvals and event.new_status in DECIDED_STATES)]
    for index, event in enumerate(events):
        label = Status(event.new_status).label if event.new_status in Status.values else event.new_status
        entries.append(
            TimelineEntry(
                at=event.created_at,
                label=str(label),
                message=note_text(event.note, event.message),
                status=event.new_status,
                current=index == len(events) - 1 and run.is_active,
            )
        )
    safety = run.safety_backup
    if safety is not None:
        entries.append(
            TimelineEntry(
                at=safety.started_at or safety.created_at,
                label=_("Safety backup"),
                message=safety.error,
                status=safety.status,
                current=safety.status in BackupArtifact.ACTIVE,
                backup_id=safety.pk,
                backup_status=safety.get_status_display(),
            )
        )
    return sorted(entries, key=lambda entry: entry.at)  # stable: equal times keep the order above


@dataclass(frozen=True)
class AwaitingRun:
    """A run on the approvals page, with what the page says about it to the reader."""

    run: RestoreRun
    approvals: list[RestoreApproval]
    expires_at: datetime
    blocker: str  # why the reader cannot decide; "" when they can

    @property
    def approved_count(self) -> int:
        return sum(1 for approval in self.approvals if approval.decision == RestoreApproval.Decision.APPROVED)


def restore_runs_awaiting_approval(*, user: User) -> list[AwaitingRun]:
    """Runs waiting for a decision, the one expiring first on top. Runs past RESTORE_APPROVAL_TTL are left out:
    they can no longer be approved (the next approval or worker expires them), so nobody should be asked to."""
    ttl = timedelta(seconds=settings.RESTORE_APPROVAL_TTL)
    runs = (
        restore_run_queryset()
        .filter(status=Status.AWAITING_APPROVAL, created_at__gte=timezone.now() - ttl)
        .prefetch_related(Prefetch("approvals", queryset=RestoreApproval.objects.select_related("approver")))
        .order_by("created_at", "pk")
    )
    awaiting = []
    for run in runs:
        approvals = list(run.approvals.all())
        awaiting.append(
            AwaitingRun(
                run=run,
                approvals=approvals,
                expires_at=run.created_at + ttl,
                blocker=restore_run_decision_blocker(run=run, user=user, approvals=approvals),
            )
        )
    return awaiting


@dataclass(frozen=True)
class RestoreImpact:
    """What a restore request would do, for the form to say plainly before anyone submits it."""

    target_kind: str
    datastore: Datastore  # the datastore overwritten, or the server the new database is created on
    new_database_name: str
    protected: bool  # a typed confirmation and approvals are needed
    required_approvals: int
    safety_backup: bool
    redis: bool = False  # a Redis snapshot: keys are written, not tables replaced
    replace: bool = False  # Redis: existing keys are overwritten
    key_pattern: str = ""  # Redis: only the keys matching it

    @property
    def overwrites(self) -> bool:
        return self.target_kind != TargetKind.NEW_DATABASE


def restore_impact(
    *,
    artifact: BackupArtifact,
    target_kind: str,
    target_datastore: Datastore | None,
    new_database_name: str = "",
    replace: bool = False,
    key_pattern: str = "",
) -> RestoreImpact | None:
    """Resolve the target the way restore_run_request will; None while the choice is incomplete (another
    datastore, but none chosen yet). `target_datastore` is the server of the new database for NEW_DATABASE."""
    if (
        target_kind == TargetKind.DATASTORE
        and target_datastore is not None
        and target_datastore.pk == artifact.datastore_id
    ):
        target_kind = TargetKind.IN_PLACE
    if target_kind == TargetKind.IN_PLACE:
        datastore = artifact.datastore
    elif target_kind == TargetKind.NEW_DATABASE:
        datastore = target_datastore or artifact.datastore
    elif target_kind == TargetKind.DATASTORE and target_datastore is not None:
        datastore = target_datastore
    else:
        return None
    environment = datastore.environment
    # As in the service: a new database overwrites nothing, so neither approval nor typed confirmation applies.
    protected = environment.protected and target_kind != TargetKind.NEW_DATABASE
    return RestoreImpact(
        target_kind=target_kind,
        datastore=datastore,
        new_database_name=new_database_name if target_kind == TargetKind.NEW_DATABASE else "",
        protected=protected,
        required_approvals=environment.required_approvals if protected else 0,
        safety_backup=target_kind != TargetKind.NEW_DATABASE and environment.takes_safety_backup,
        redis=artifact.format == BackupArtifact.Format.REDIS_SNAPSHOT,
        replace=replace,
        key_pattern=key_pattern,
    )


def restore_target_datastores(*, kind: str = Datastore.Kind.POSTGRES) -> QuerySet[Datastore]:
    """Datastores a backup of a datastore of `kind` can be restored into: those of the same kind."""
    return Datastore.objects.filter(kind=kind).select_related("environment")


def restore_run_artifacts_in_use(
    sender: object, *, datastore: Datastore, artifact_ids: Sequence[int] | None, **kwargs: object
) -> dict[int, str]:
    """Receiver of backups.signals.artifacts_in_use: the backups of `datastore` that a restore is reading or waiting
    to read, so retention keeps them. {artifact id: "restore #N"}, the oldest such restore named."""
    busy = RestoreRun.RUNNING_STATES | RestoreRun.WAITING_STATES
    runs = RestoreRun.objects.filter(status__in=busy, artifact__datastore=datastore)
    if artifact_ids is not None:
        runs = runs.filter(artifact_id__in=artifact_ids)
    used: dict[int, str] = {}
    for run_id, artifact_id in runs.order_by("pk").values_list("pk", "artifact_id"):
        used.setdefault(artifact_id, _("restore #%(id)s") % {"id": run_id})
    return used


def datastore_active_restores(sender: object, *, datastore_id: int, **kwargs: object) -> list[str]:
    """The restores into the datastore, or of its backups, that have not ended, waiting ones included: an approval
    covers the target as it was (inventory.signals.datastore_active_jobs)."""
    return active_job_labels(
        RestoreRun.objects.filter(Q(target_datastore_id=datastore_id) | Q(artifact__datastore_id=datastore_id))
    )
