"""The backup pages: history, one backup; and the HTMX endpoints they poll or post to. The dashboard and the
datastore page compose backups with restores and drills, so they are overview's (overview/views.py).

Views stay thin: a permission, a selector or one service call, a page or a partial. Every state change is a POST
(CSRF comes with every htmx request from base.html); partials that poll answer 286 once the job ended, which
stops htmx polling.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

from django.contrib import messages
from django.contrib.auth.decorators import permission_required
from django.http import HttpResponse, HttpResponseBase, HttpResponseRedirect, StreamingHttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.utils import timezone
from django.utils.http import content_disposition_header
from django.utils.translation import gettext as _
from django.views.decorators.http import require_GET, require_POST
from django.views.decorators.vary import vary_on_headers
from django_htmx.http import HTMX_STOP_POLLING, push_url, trigger_client_event

from accounts.reauth import reauth_required
from backups import selectors
from backups.copies import CopyRefused, artifact_copies_request
from backups.downloads import (
    APPROVE_PERM,
    DOWNLOAD_PERM,
    DownloadPlan,
    DownloadRefused,
    backup_download_start,
    download_needs_approval,
    download_request_approve,
    download_request_create,
    download_request_reject,
    download_requests_expire,
)
from backups.forms import BackupArtifactFilterForm
from backups.models import BackupArtifact, BackupVerification, DownloadRequest
from backups.retention import (
    PIN_PERM,
    RetentionRefused,
    backup_artifact_pin,
    backup_artifact_unpin,
)
from backups.services import backup_artifact_cancel
from backups.sources import SourceUnusable, artifact_location_names, stored_chunks_checked
from backups.verification import VerificationRefused, backup_verification_cancel, backup_verification_request
from dr_console.http import HtmxRequest, client_ip, partial_wanted
from dr_console.jobs import BrokerUnavailable
from inventory.selectors import datastore_name_suggestions

logger = logging.getLogger(__name__)
VIEW_PERMS = ("inventory.view_datastore", "backups.view_backupartifact")
START_PERM = "backups.add_backupartifact"  # operators: start backups and verifications
PAGE_SIZE = 50
# A verification still waiting for a worker after this long gets a hint on its page.
VERIFY_WAIT = timedelta(minutes=2)


# --- history -------------------------------------------------------------------------------------------------------


@require_GET
@permission_required(VIEW_PERMS, raise_exception=True)
@vary_on_headers("HX-Request")
def artifact_list(request: HtmxRequest) -> HttpResponse:
    """All backups, newest first, filtered by the query string. The filter form and the pager ask for the rows
    partial with htmx (and push the URL, so it stays shareable); anything else gets the whole page."""
    form = BackupArtifactFilterForm(request.GET)
    filters = form.filters()
    page = selectors.backup_artifact_page(
        filters, before=form.cursor("before"), after=form.cursor("after"), per_page=PAGE_SIZE
    )
    context: dict[str, Any] = {
        "form": form,
        "filters": filters,
        "page": page,
        "filter_query": form.filter_query(),
        "filtered": any(form.data.get(name) for name in form.FILTER_FIELDS),
    }
    if not partial_wanted(request):
        return render(request, "backups/artifact_list.html", context)
    response = render(request, "backups/partials/artifact_results.html", context)
    # The form sends its empty fields too; the address shown and shared is the tidy one.
    query = form.filter_query(with_cursor=True)
    return push_url(response, f"{request.path}?{query}" if query else request.path)


@require_GET
@permission_required(VIEW_PERMS, raise_exception=True)
def datastore_options(request: HtmxRequest) -> HttpResponse:
    """The datastore filter's suggestions: the <option>s of its datalist for what has been typed so far."""
    typed = request.GET.get("datastore", "")[:200]
    return render(request, "backups/partials/datastore_options.html", {"datastores": datastore_name_suggestions(typed)})


@require_GET
@permission_required(VIEW_PERMS, raise_exception=True)
def artifact_row(request: HtmxRequest, pk: int) -> HttpResponse:
    """A history row, polled every 3 s while the backup is taken or verified."""
    artifact = get_object_or_404(BackupArtifact.objects.select_related("datastore__environment", "triggered_by"), pk=pk)
    status = 200 if selectors.backup_artifact_in_progress(artifact) else HTMX_STOP_POLLING
    return render(request, "backups/partials/artifact_row.html", {"artifact": artifact}, status=status)


# --- one backup ----------------------------------------------------------------------------------------------------


@require_GET
@permission_required(VIEW_PERMS, raise_exception=True)
def artifact_detail(request: HtmxRequest, pk: int) -> HttpResponse:
    artifact = get_object_or_404(selectors.backup_artifact_detail_queryset(), pk=pk)
    may_download = request.user.has_perm(DOWNLOAD_PERM)
    may_approve = request.user.has_perm(APPROVE_PERM)
    if may_download or may_approve:
        download_requests_expire()  # the page never offers a request whose time is up
    context = {
        "artifact": artifact,
        "row_counts": sorted(artifact.row_counts.items()),
        "is_redis": artifact.format == BackupArtifact.Format.REDIS_SNAPSHOT,
        "events": artifact.events.all(),
        # Through the reverse relations the restores and drills apps declare: backups imports neither.
        "restores": artifact.restore_runs.select_related("target_datastore", "triggered_by"),
        "drills": artifact.drill_runs.select_related("datastore"),
        "in_progress": selectors.backup_artifact_in_progress(artifact),
        "copy_rows": selectors.artifact_copy_rows(artifact),
        "may_download": may_download,
        "download_protected": download_needs_approval(artifact),
        "download_locations": artifact_location_names(artifact) if may_download else [],
        "download_requests": (
            artifact.download_requests.select_related("requested_by", "approved_by").prefetch_related(
                "approvals__approver"
            )
            if may_download or may_approve
            else []
        ),
    }
    return render(request, "backups/artifact_detail.html", context)


@require_POST
@permission_required(START_PERM, raise_exception=True)
def artifact_copy(request: HtmxRequest, pk: int) -> HttpResponse:
    """Copy now (or retry a failed copy) to one copy location, or to each that lacks a verified copy."""
    artifact = get_object_or_404(BackupArtifact.objects.select_related("datastore"), pk=pk)
    location = request.POST.get("location", "").strip()
    if location and location not in artifact.datastore.copy_location_names:
        messages.error(request, _("%(location)s is not a copy location of this datastore.") % {"location": location})
        return redirect("backups:artifact_detail", pk=pk)
    try:
        created = artifact_copies_request(
            artifact_id=pk,
            trigger="",
            requested_by=request.user,
            locations=[location] if location else None,
            client_ip=client_ip(request),
        )
    except CopyRefused as exc:
        messages.error(request, _("Backup #%(id)s cannot be copied now: %(reason)s") % {"id": pk, "reason": exc})
    else:
        if created:
            names = ", ".join(copy.location for copy in created)
            messages.success(request, _("Copy of backup #%(id)s to %(names)s queued.") % {"id": pk, "names": names})
        else:
            messages.info(request, _("Backup #%(id)s already has its copies (or they are under way).") % {"id": pk})
    return redirect("backups:artifact_detail", pk=pk)


@require_GET
@permission_required(VIEW_PERMS, raise_exception=True)
def artifact_status(request: HtmxRequest, pk: int) -> HttpResponse:
    """The backup page's status box, polled every 3 s while the backup is taken or verified (or a requested
    verification has not started yet). When the job has ended: 286, and the page reloads to show everything the
    job recorded."""
    artifact = get_object_or_404(BackupArtifact.objects.select_related("datastore"), pk=pk)
    context = _status_context(artifact)
    if context["in_progress"]:
        return render(request, "backups/partials/artifact_status.html", context)
    response = render(request, "backups/partials/artifact_status.html", context, status=HTMX_STOP_POLLING)
    response["HX-Refresh"] = "true"
    return response


def _status_context(artifact: BackupArtifact) -> dict[str, Any]:
    """The status box follows the backup's own job and its newest verification job, both rows with states."""
    verification = artifact.verifications.order_by("-pk").first()
    waiting = verification is not None and verification.status == BackupVerification.Status.QUEUED
    since = timezone.now() - verification.created_at if verification is not None else timedelta(0)
    return {
        "artifact": artifact,
        "in_progress": selectors.backup_artifact_in_progress(artifact),
        "verification_job": verification,
        "verify_waiting": waiting,
        # Still waiting after a while: say what to check (the reaper fails it if the broker lost its message).
        "verify_stalled": waiting and since > VERIFY_WAIT,
    }


@require_POST
@permission_required(PIN_PERM, raise_exception=True)
@reauth_required(lambda: _("pin this backup"))
def artifact_pin(request: HtmxRequest, pk: int) -> HttpResponse:
    """Pin a backup (legal hold, an investigation): retention never expires it while it is pinned."""
    artifact = get_object_or_404(BackupArtifact, pk=pk)
    try:
        backup_artifact_pin(
            artifact=artifact, user=request.user, reason=request.POST.get("reason", ""), client_ip=client_ip(request)
        )
    except RetentionRefused as exc:
        messages.error(request, _("Backup #%(id)s was not pinned: %(reason)s") % {"id": pk, "reason": exc})
    else:
        messages.success(request, _("Backup #%(id)s is pinned: retention will keep it.") % {"id": pk})
    return redirect("backups:artifact_detail", pk=pk)


@require_POST
@permission_required(PIN_PERM, raise_exception=True)
@reauth_required(lambda: _("unpin this backup"))
def artifact_unpin(request: HtmxRequest, pk: int) -> HttpResponse:
    artifact = get_object_or_404(BackupArtifact, pk=pk)
    try:
        backup_artifact_unpin(artifact=artifact, user=request.user, client_ip=client_ip(request))
    except RetentionRefused as exc:
        messages.error(request, _("Backup #%(id)s was not unpinned: %(reason)s") % {"id": pk, "reason": exc})
    else:
        messages.success(
            request, _("Backup #%(id)s is unpinned: the retention policy applies to it again.") % {"id": pk}
        )
    return redirect("backups:artifact_detail", pk=pk)


@require_POST
@permission_required(START_PERM, raise_exception=True)
def artifact_verify(request: HtmxRequest, pk: int) -> HttpResponse:
    """Verify again: queue a job that re-reads the stored file. With htmx the answer is the status box, which
    polls until a worker has done it."""
    artifact = get_object_or_404(BackupArtifact.objects.select_related("datastore"), pk=pk)
    try:
        backup_verification_request(artifact=artifact, requested_by=request.user, client_ip=client_ip(request))
    except (VerificationRefused, BrokerUnavailable) as exc:
        ok, notice = False, _("Backup #%(id)s cannot be verified now: %(reason)s") % {"id": artifact.pk, "reason": exc}
    else:
        ok, notice = True, _("Verification of backup #%(id)s queued.") % {"id": artifact.pk}
    if request.htmx:
        artifact.refresh_from_db()
        context = _status_context(artifact)
        return render(request, "backups/partials/artifact_status.html", {**context, "notice": notice, "notice_ok": ok})
    messages.add_message(request, messages.SUCCESS if ok else messages.ERROR, notice)
    return redirect("backups:artifact_detail", pk=artifact.pk)


@require_POST
@permission_required(START_PERM, raise_exception=True)
def artifact_cancel(request: HtmxRequest, pk: int) -> HttpResponse:
    """Cancel the backup while it is pending or running (its worker stops pg_dump and deletes the temporary file),
    or, for a taken backup, its queued or running verification. A second click says it had ended."""
    artifact = get_object_or_404(BackupArtifact.objects.select_related("datastore"), pk=pk)
    if artifact.is_active:
        cancelled = backup_artifact_cancel(artifact_id=pk, cancelled_by=request.user, client_ip=client_ip(request))
        done = (
            _("Backup #%(id)s cancelled.") if cancelled else _("Backup #%(id)s had already ended; nothing to cancel.")
        )
    else:
        verification = artifact.verifications.filter(status__in=BackupVerification.ACTIVE).first()
        cancelled = verification is not None and backup_verification_cancel(
            verification_id=verification.pk, cancelled_by=request.user, client_ip=client_ip(request)
        )
        done = (
            _("Verification of backup #%(id)s cancelled.")
            if cancelled
            else _("Backup #%(id)s has no verification running; nothing to cancel.")
        )
    notice = done % {"id": pk}
    if request.htmx:
        artifact.refresh_from_db()
        context = {**_status_context(artifact), "notice": notice, "notice_ok": cancelled}
        response = render(request, "backups/partials/artifact_status.html", context)
        return trigger_client_event(response, "backup-changed", {"id": pk})
    messages.add_message(request, messages.SUCCESS if cancelled else messages.ERROR, notice)
    return redirect("backups:artifact_detail", pk=pk)


# --- downloads -----------------------------------------------------------------------------------------------------


@require_POST
def artifact_download(request: HtmxRequest, pk: int) -> HttpResponseBase:
    """Download the backup's file as stored (encrypted stays encrypted), from `location` or the next readable one.
    POST only: a download is audited, and protected data needs an approved request (`download_request_fetch`).
    The permission is checked by the service, so that a refusal is audited too."""
    artifact = get_object_or_404(BackupArtifact.objects.select_related("datastore__environment"), pk=pk)
    return _download(request, artifact, location=request.POST.get("location", "")[:64])


@require_POST
def download_request_fetch(request: HtmxRequest, pk: int) -> HttpResponseBase:
    """The requester's one download of an approved request."""
    download = get_object_or_404(DownloadRequest.objects.select_related("artifact__datastore__environment"), pk=pk)
    return _download(request, download.artifact, location=download.location, request_id=download.pk)


def _download(
    request: HtmxRequest, artifact: BackupArtifact, *, location: str, request_id: int | None = None
) -> HttpResponseBase:
    try:
        plan = backup_download_start(
            artifact=artifact, user=request.user, location=location, request_id=request_id, client_ip=client_ip(request)
        )
    except DownloadRefused as exc:
        return render(request, "backups/download_refused.html", {"artifact": artifact, "reason": str(exc)}, status=403)
    if plan.presigned_url:
        return HttpResponseRedirect(plan.presigned_url)
    response = StreamingHttpResponse(_chunks(plan), content_type="application/octet-stream")
    response["Content-Disposition"] = content_disposition_header(True, plan.filename) or "attachment"
    if plan.source.size is not None:
        response["Content-Length"] = str(plan.source.size)
    response["Cache-Control"] = "no-store"
    return response


def _chunks(plan: DownloadPlan) -> Iterator[bytes]:
    try:
        yield from stored_chunks_checked(plan.source, plan.location)
    except SourceUnusable as exc:
        # The headers are gone: the response ends short of its Content-Length, and the client says it failed.
        logger.error("download of backup #%s stopped before its end: %s", plan.artifact.pk, exc)


@require_POST
def download_request_new(request: HtmxRequest, pk: int) -> HttpResponse:
    """Ask to download a backup of protected data; other approvers decide on it on this page."""
    artifact = get_object_or_404(BackupArtifact.objects.select_related("datastore__environment"), pk=pk)
    try:
        download = download_request_create(
            artifact=artifact,
            requested_by=request.user,
            reason=request.POST.get("reason", "")[:2000],
            location=request.POST.get("location", "")[:64],
            client_ip=client_ip(request),
        )
    except DownloadRefused as exc:
        messages.error(request, _("No download was requested: %(reason)s") % {"reason": exc})
    else:
        messages.success(
            request,
            _("Download request #%(id)s sent: once another approver approves it, download it here.")
            % {"id": download.pk},
        )
    return redirect(f"{_detail_url(pk)}#downloads")


@require_POST
@permission_required(APPROVE_PERM, raise_exception=True)
@reauth_required(lambda: _("approve this download"))
def download_request_approve_view(request: HtmxRequest, pk: int) -> HttpResponse:
    download = get_object_or_404(DownloadRequest, pk=pk)
    try:
        download = download_request_approve(
            request_id=pk,
            approver=request.user,
            comment=request.POST.get("comment", "")[:2000],
            client_ip=client_ip(request),
        )
    except DownloadRefused as exc:
        messages.error(request, _("Download request #%(id)s was not approved: %(reason)s") % {"id": pk, "reason": exc})
    else:
        messages.success(request, _("Download request #%(id)s approved.") % {"id": pk})
    return redirect(f"{_detail_url(download.artifact_id)}#downloads")


@require_POST
@permission_required(APPROVE_PERM, raise_exception=True)
def download_request_reject_view(request: HtmxRequest, pk: int) -> HttpResponse:
    download = get_object_or_404(DownloadRequest, pk=pk)
    try:
        download_request_reject(
            request_id=pk,
            approver=request.user,
            reason=request.POST.get("reason", "")[:2000],
            client_ip=client_ip(request),
        )
    except DownloadRefused as exc:
        messages.error(request, _("Download request #%(id)s was not rejected: %(reason)s") % {"id": pk, "reason": exc})
    else:
        messages.success(request, _("Download request #%(id)s rejected.") % {"id": pk})
    return redirect(f"{_detail_url(download.artifact_id)}#downloads")


def _detail_url(pk: int) -> str:
    return reverse("backups:artifact_detail", args=[pk])
