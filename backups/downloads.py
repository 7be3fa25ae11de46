"""Downloads: a backup's file handed out as it is stored (an encrypted file stays encrypted, its name ends in .age),
from the primary location or a verified copy, the preferred location first and falling back like a restore does.
Every download and every refusal is audited with the location and the key (never a URL: a presigned one is a
bearer credential).

A download copies the data out of the console, so for an environment whose data is protected
(`Environment.data_protected`) it takes what a restore copying that data elsewhere takes:

1. the requester asks, saying why (`download_request_create`); the request freezes how many approvals it needs;
2. other people with the approver role approve (`download_request_approve`), each once, never the requester (not
   even a superuser), each having just re-authenticated (the page's re-auth, the command line's credential);
   one rejection ends it;
3. the last approval opens a window of DOWNLOAD_WINDOW seconds in which the requester alone may download it,
   once: `backup_download_start` moves the request APPROVED -> USED by compare-and-set, so two clicks, two
   commands or a replayed form get one download between them.

A request is not a job (nothing runs in the background): a plain model (backups.models.DownloadRequest) whose
status changes only through `download_request_transition`.
"""

from __future__ import annotations

import logging
import os
import re
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.contrib.auth.models import User
from django.db import transaction
from django.db.models import Q
from django.utils import timezone
from django.utils.translation import gettext as _

from audit.models import AuditEvent
from audit.services import audit_record
from backups.locations import Location
from backups.models import BackupArtifact, DownloadApproval, DownloadRequest
from backups.object_store import is_object_store
from backups.sources import ArtifactSource, NoUsableSource, artifact_stored_source

logger = logging.getLogger(__name__)
Status = DownloadRequest.Status

DOWNLOAD_PERM = "backups.download_backupartifact"
# The approvers of restores approve downloads too: the same people decide whether protected data may leave.
APPROVE_PERM = "restores.approve_restorerun"
_UNSAFE_NAME = re.compile(r"[^A-Za-z0-9._-]")


class DownloadRefused(Exception):
    """A download, a request or a decision that is not allowed; the message says why (the refusal is audited)."""


@dataclass
class DownloadPlan:
    """What to hand out: one stored file of the backup, where it is, and how (streamed, or a presigned URL)."""

    artifact: BackupArtifact
    source: ArtifactSource
    location: Location
    filename: str
    fallbacks: list[str] = field(default_factory=list)
    presigned_url: str = ""  # an object store: the client fetches it there (never audited, never logged)
    request: DownloadRequest | None = None


def download_filename(key: str) -> str:
    """The file's name as the browser saves it: the key's last part, with anything but letters, digits, dot, dash
    and underscore replaced (the key is ours, but the datastore's name in it came from a configuration file)."""
    name = _UNSAFE_NAME.sub("_", os.path.basename(key)).lstrip(".")
    return name or "backup.dump"


def download_needs_approval(artifact: BackupArtifact) -> bool:
    return bool(artifact.datastore.environment.data_protected)


def _refuse(user: User | None, artifact: BackupArtifact, message: str, client_ip: str | None, **details: Any) -> None:
    audit_record(
        action=AuditEvent.Action.BACKUP_DOWNLOAD_REFUSED,
        actor=user,
        obj=artifact,
        client_ip=client_ip,
        details={"artifact": artifact.pk, "refused": message, **details},
    )
    raise DownloadRefused(message)


def _artifact_problem(artifact: BackupArtifact) -> str:
    if artifact.status != BackupArtifact.Status.SUCCEEDED or not artifact.storage_key:
        return _("backup #%(id)s is %(status)s; only a succeeded backup can be downloaded") % {
            "id": artifact.pk,
            "status": artifact.get_status_display().lower(),
        }
    return ""


def _user_problem(user: User) -> str:
    if not user.is_active or not user.has_perm(DOWNLOAD_PERM):
        return _("%(user)s may not download backups (needs the operator role)") % {"user": user.get_username()}
    return ""


# --- downloading ----------------------------------------------------------------------------------------------------


def backup_download_start(
    *,
    artifact: BackupArtifact,
    user: User,
    location: str = "",
    request_id: int | None = None,
    client_ip: str | None = None,
    presign: bool = True,
) -> DownloadPlan:
    """Check everything, choose the file, consume the approval (protected data), audit; the caller then streams
    `plan.source` (backups.sources.stored_chunks_checked) or redirects to `plan.presigned_url`.

    1. The user may download, the backup succeeded and has a file.
    2. Protected data: the user's own approved request for this backup (`request_id`, else their newest), within
       its window; its location is the preferred one.
    3. The first readable file, the preferred location first (a missing or unreachable one is skipped, and said).
    4. In one transaction: APPROVED -> USED (compare-and-set: a second use finds it used), the audit event.
    `presign=False`: never a presigned URL (the command line streams every location itself)."""
    download_requests_expire()
    if problem := _user_problem(user) or _artifact_problem(artifact):
        _refuse(user, artifact, problem, client_ip, location=location)
    request: DownloadRequest | None = None
    if download_needs_approval(artifact):
        request = _approved_request(artifact, user, request_id, client_ip)
        location = location or request.location
    try:
        source, store, fallbacks = artifact_stored_source(artifact, prefer=location or None)
    except NoUsableSource as exc:
        _refuse(user, artifact, str(exc), client_ip, location=location)
        raise  # unreachable: _refuse raises
    plan = DownloadPlan(
        artifact=artifact,
        source=source,
        location=store,
        filename=download_filename(source.key),
        fallbacks=fallbacks,
        request=request,
    )
    storage = store.storage()
    if presign and is_object_store(storage):
        # django-storages' S3Storage signs for `expire` seconds (its querystring_expire otherwise).
        plan.presigned_url = storage.url(source.key, expire=settings.DOWNLOAD_PRESIGNED_SECONDS)  # type: ignore[call-arg]
    with transaction.atomic():
        claimed = request is None or download_request_transition(
            request_id=request.pk, to=Status.USED, fields={"used_at": timezone.now()}
        )
        if claimed:
            audit_record(
                action=AuditEvent.Action.BACKUP_DOWNLOADED,
                actor=user,
                obj=artifact,
                client_ip=client_ip,
                details={
                    "artifact": artifact.pk,
                    "location": source.location_name,
                    "copy": source.copy_id,
                    "key": source.key,
                    "size_bytes": source.size,
                    "sha256": source.sha256,
                    "encrypted": bool(source.recipients),
                    "presigned_seconds": settings.DOWNLOAD_PRESIGNED_SECONDS if plan.presigned_url else None,
                    "request": request.pk if request is not None else None,
                    "fallbacks": fallbacks,
                },
            )
    if not claimed:
        assert request is not None
        # Another click, command or replayed form won the compare-and-set: one download per approval.
        message = _("download request #%(id)s has been used already; ask again") % {"id": request.pk}
        _refuse(user, artifact, message, client_ip, request=request.pk)
    return plan


def _approved_request(
    artifact: BackupArtifact, user: User, request_id: int | None, client_ip: str | None
) -> DownloadRequest:
    """The user's own approved, unused, unexpired request for this backup; refused (and audited) otherwise."""
    mine = artifact.download_requests.filter(requested_by=user)
    request = mine.filter(pk=request_id).first() if request_id else None
    if request_id and request is None:
        # Somebody else's request, or none: the approval is its requester's only.
        _refuse(
            user,
            artifact,
            _("download request #%(id)s is not %(user)s's: only its requester may use it")
            % {"id": request_id, "user": user.get_username()},
            client_ip,
            request=request_id,
        )
    if request is None:
        request = mine.filter(status=Status.APPROVED).order_by("-approved_at", "-pk").first()
    if request is None:
        _refuse(
            user,
            artifact,
            _(
                "backup #%(id)s holds protected data of %(environment)s: ask for a download, say why, and have "
                "another approver approve it; then download it within the window"
            )
            % {"id": artifact.pk, "environment": artifact.datastore.environment.name},
            client_ip,
        )
    assert request is not None
    if request.status != Status.APPROVED:
        _refuse(
            user,
            artifact,
            _("download request #%(id)s is %(status)s; it cannot be used")
            % {"id": request.pk, "status": request.get_status_display().lower()},
            client_ip,
            request=request.pk,
        )
    return request


# --- requesting and deciding ----------------------------------------------------------------------------------------


def download_request_transition(*, request_id: int, to: str, fields: dict[str, Any] | None = None) -> bool:
    """Move a request to `to` if its TRANSITIONS allow it. False: refused, or someone changed it first (the
    conditional UPDATE lets one caller win)."""
    current = DownloadRequest.objects.filter(pk=request_id).values_list("status", flat=True).first()
    allowed: frozenset[str] = DownloadRequest.TRANSITIONS.get(Status(current), frozenset()) if current else frozenset()
    if current is None or to not in allowed:
        return False
    return DownloadRequest.objects.filter(pk=request_id, status=current).update(status=to, **(fields or {})) == 1


def download_request_create(
    *, artifact: BackupArtifact, requested_by: User, reason: str, location: str = "", client_ip: str | None = None
) -> DownloadRequest:
    reason = reason.strip()
    problem = _user_problem(requested_by) or _artifact_problem(artifact)
    if not problem and not download_needs_approval(artifact):
        problem = _("backup #%(id)s needs no approval to be downloaded: download it directly") % {"id": artifact.pk}
    if not problem and not reason:
        problem = _("say why the file must leave the console (a reason is required)")
    if problem:
        _refuse(requested_by, artifact, problem, client_ip, location=location)
    with transaction.atomic():
        request = DownloadRequest.objects.create(
            artifact=artifact,
            location=location[:64],
            requested_by=requested_by,
            reason=reason,
            required_approvals=artifact.datastore.environment.required_approvals,
        )
        audit_record(
            action=AuditEvent.Action.DOWNLOAD_REQUESTED,
            actor=requested_by,
            obj=request,
            client_ip=client_ip,
            details={
                "artifact": artifact.pk,
                "environment": artifact.datastore.environment.name,
                "location": location,
                "reason": reason,
                "required": request.required_approvals,
            },
        )
    return request


def _check_can_decide(request: DownloadRequest, user: User) -> None:
    values = {"user": user.get_username(), "id": request.pk}
    if not user.is_active or not user.has_perm(APPROVE_PERM):
        raise DownloadRefused(_("%(user)s may not approve or reject downloads (needs the approver role)") % values)
    if request.requested_by_id == user.pk:
        # Not even a superuser: a second pair of eyes is the point.
        raise DownloadRefused(_("%(user)s requested download #%(id)s and cannot decide on it") % values)
    if request.status != Status.AWAITING_APPROVAL:
        raise DownloadRefused(
            _("download request #%(id)s is %(status)s, not awaiting approval")
            % {**values, "status": request.get_status_display().lower()}
        )
    if request.approvals.filter(approver=user).exists():
        raise DownloadRefused(_("%(user)s already decided on download request #%(id)s") % values)


def download_request_approve(
    *, request_id: int, approver: User, comment: str = "", client_ip: str | None = None
) -> DownloadRequest:
    """Record an approval (the caller re-authenticated the approver); the last one needed opens the window."""
    download_requests_expire()  # an approval never revives a stale request
    with transaction.atomic():
        request = DownloadRequest.objects.select_for_update().get(pk=request_id)
        _check_can_decide(request, approver)
        DownloadApproval.objects.create(
            request=request, approver=approver, decision=DownloadApproval.Decision.APPROVED, comment=comment
        )
        approvals = request.approvals.filter(decision=DownloadApproval.Decision.APPROVED).count()
        now = timezone.now()
        if approvals >= request.required_approvals:
            download_request_transition(
                request_id=request.pk,
                to=Status.APPROVED,
                fields={
                    "approved_by": approver,
                    "approved_at": now,
                    "expires_at": now + timedelta(seconds=settings.DOWNLOAD_WINDOW),
                },
            )
        audit_record(
            action=AuditEvent.Action.DOWNLOAD_APPROVED,
            actor=approver,
            obj=request,
            client_ip=client_ip,
            details={
                "artifact": request.artifact_id,
                "requested_by": request.requested_by.get_username(),
                "approvals": approvals,
                "required": request.required_approvals,
                "comment": comment,
            },
        )
    request.refresh_from_db()
    return request


def download_request_reject(
    *, request_id: int, approver: User, reason: str, client_ip: str | None = None
) -> DownloadRequest:
    """One rejection ends the request."""
    reason = reason.strip()
    if not reason:
        raise DownloadRefused(_("say why the download is rejected (a reason is required)"))
    with transaction.atomic():
        request = DownloadRequest.objects.select_for_update().get(pk=request_id)
        _check_can_decide(request, approver)
        DownloadApproval.objects.create(
            request=request, approver=approver, decision=DownloadApproval.Decision.REJECTED, comment=reason
        )
        download_request_transition(
            request_id=request.pk, to=Status.REJECTED, fields={"ended_note": f"rejected by {approver}: {reason}"}
        )
        audit_record(
            action=AuditEvent.Action.DOWNLOAD_REJECTED,
            actor=approver,
            obj=request,
            client_ip=client_ip,
            details={"artifact": request.artifact_id, "reason": reason},
        )
    request.refresh_from_db()
    return request


def download_requests_expire() -> int:
    """End requests not approved within RESTORE_APPROVAL_TTL of asking, and approved ones whose window closed.
    Called before every use and decision, so an expired request is never used whatever beat does."""
    now = timezone.now()
    stale = DownloadRequest.objects.filter(
        Q(status=Status.AWAITING_APPROVAL, created_at__lt=now - timedelta(seconds=settings.RESTORE_APPROVAL_TTL))
        | Q(status=Status.APPROVED, expires_at__lt=now)
    )
    expired = 0
    for request in stale.only("pk", "status", "artifact_id"):
        note = "approved, but not downloaded in time" if request.status == Status.APPROVED else "not approved in time"
        with transaction.atomic():
            if download_request_transition(request_id=request.pk, to=Status.EXPIRED, fields={"ended_note": note}):
                expired += 1
                audit_record(
                    action=AuditEvent.Action.DOWNLOAD_EXPIRED,
                    actor_label="console",
                    obj=request,
                    details={"artifact": request.artifact_id, "was": request.status},
                )
    return expired
