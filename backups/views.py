"""The backup pages: dashboard, history, one backup; and the HTMX endpoints they poll or post to.

Views stay thin: a permission, a selector or one service call, a page or a partial. Every state change is a POST
(CSRF comes with every htmx request from base.html); partials that poll answer 286 once the job ended, which
stops htmx polling.
"""

from __future__ import annotations

from dataclasses import asdict
from datetime import timedelta
from typing import Any

from django.contrib import messages
from django.contrib.auth.decorators import permission_required
from django.http import Http404, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.utils import timezone
from django.utils.http import url_has_allowed_host_and_scheme
from django.utils.translation import gettext as _
from django.views.decorators.http import require_GET, require_POST
from django.views.decorators.vary import vary_on_headers
from django_htmx.http import HTMX_STOP_POLLING, HttpResponseClientRedirect, push_url

from backups import selectors
from backups.forms import BackupArtifactFilterForm, RetentionPolicyForm
from backups.models import BackupArtifact, BackupVerification
from backups.retention import (
    PIN_PERM,
    POLICY_PERM,
    RetentionPolicy,
    RetentionRefused,
    backup_artifact_pin,
    backup_artifact_unpin,
    datastore_retention_save,
    retention_preview,
)
from backups.services import BackupRefused, backup_artifact_request
from backups.verification import VerificationRefused, backup_verification_request
from dr_console.http import HtmxRequest, client_ip, partial_wanted
from dr_console.jobs import BrokerUnavailable
from drills.selectors import drill_run_recent
from inventory.models import Datastore

VIEW_PERMS = ("inventory.view_datastore", "backups.view_backupartifact")
START_PERM = "backups.add_backupartifact"  # operators: start backups and verifications
PAGE_SIZE = 50
# A verification still waiting for a worker after this long gets a hint on its page.
VERIFY_WAIT = timedelta(minutes=2)


def _next_url(request: HtmxRequest, default: str) -> str:
    url = request.POST.get("next", "")
    if url and url_has_allowed_host_and_scheme(url, allowed_hosts={request.get_host()}, require_https=False):
        return url
    return default


# --- dashboard ---------------------------------------------------------------------------------------------------


@require_GET
@permission_required(VIEW_PERMS, raise_exception=True)
def dashboard(request: HtmxRequest) -> HttpResponse:
    rows = selectors.datastore_dashboard_rows()
    context = {
        "rows": rows,
        "awaiting_approval": sum(row.awaiting_approval for row in rows),
        "objectives_missed": sum(not row.objectives_met for row in rows),
    }
    return render(request, "backups/dashboard.html", context)


@require_GET
@permission_required(VIEW_PERMS, raise_exception=True)
def datastore_row(request: HtmxRequest, pk: int) -> HttpResponse:
    """A dashboard row, polled every 3 s while a backup or a verification of the datastore runs."""
    row = _dashboard_row(pk)
    return render(
        request, "backups/partials/dashboard_row.html", {"row": row}, status=200 if row.busy else HTMX_STOP_POLLING
    )


def _dashboard_row(pk: int) -> selectors.DatastoreDashboardRow:
    row = selectors.datastore_dashboard_row(pk)
    if row is None:
        raise Http404("No such datastore")
    return row


@require_POST
@permission_required(START_PERM, raise_exception=True)
def datastore_backup(request: HtmxRequest, pk: int) -> HttpResponse:
    """Back up now. From a dashboard row (htmx) the answer is the row itself, now showing the pending backup;
    otherwise a redirect back, with a message."""
    datastore = get_object_or_404(Datastore, pk=pk)
    try:
        artifact = backup_artifact_request(
            datastore=datastore,
            trigger=f"web:{request.user.get_username()}",
            triggered_by=request.user,
            client_ip=client_ip(request),
        )
    except (BackupRefused, BrokerUnavailable) as exc:
        ok, notice = False, _("No backup of %(datastore)s: %(reason)s") % {"datastore": datastore.name, "reason": exc}
    else:
        ok, notice = True, _("Backup #%(id)s of %(datastore)s queued.") % {"id": artifact.pk, "datastore": datastore}
    if request.htmx and request.htmx.target == f"datastore-row-{pk}":
        context = {"row": _dashboard_row(pk), "notice": notice, "notice_ok": ok}
        return render(request, "backups/partials/dashboard_row.html", context)
    messages.add_message(request, messages.SUCCESS if ok else messages.ERROR, notice)
    url = _next_url(request, reverse("backups:dashboard"))
    return HttpResponseClientRedirect(url) if request.htmx else redirect(url)


# --- one datastore: schedule and retention -------------------------------------------------------------------------


def _datastore(name: str) -> Datastore:
    return get_object_or_404(Datastore.objects.select_related("environment"), name=name)


def _datastore_context(datastore: Datastore, form: RetentionPolicyForm, proposed: bool = False) -> dict[str, Any]:
    policy = form.policy() if proposed else RetentionPolicy.of(datastore)
    return {
        "datastore": datastore,
        "row": _dashboard_row(datastore.pk),
        "scheduled_runs": selectors.scheduled_backup_recent(datastore),
        "pinned": selectors.backup_artifact_pinned(datastore),
        "drills": drill_run_recent(datastore),
        "form": form,
        "preview": retention_preview(datastore=datastore, policy=policy),
        "proposed": proposed,
    }


@require_GET
@permission_required(VIEW_PERMS, raise_exception=True)
def datastore_detail(request: HtmxRequest, name: str) -> HttpResponse:
    """The datastore's schedule (next, last and missed runs) and its retention policy, with what that policy
    keeps and expires now, and why."""
    datastore = _datastore(name)
    form = RetentionPolicyForm(initial=asdict(RetentionPolicy.of(datastore)))
    return render(request, "backups/datastore_detail.html", _datastore_context(datastore, form))


@require_POST
@permission_required(POLICY_PERM, raise_exception=True)
def datastore_retention_preview(request: HtmxRequest, name: str) -> HttpResponse:
    """What the policy in the form would do now, before it is saved. Changes nothing."""
    datastore = _datastore(name)
    form = RetentionPolicyForm(request.POST)
    if not form.is_valid():
        context = {"datastore": datastore, "form": form, "preview": None, "proposed": True}
        return render(request, "backups/partials/retention_preview.html", context, status=400)
    if not request.htmx:
        return render(request, "backups/datastore_detail.html", _datastore_context(datastore, form, proposed=True))
    preview = retention_preview(datastore=datastore, policy=form.policy())
    context = {"datastore": datastore, "form": form, "preview": preview, "proposed": True}
    return render(request, "backups/partials/retention_preview.html", context)


@require_POST
@permission_required(POLICY_PERM, raise_exception=True)
def datastore_retention_update(request: HtmxRequest, name: str) -> HttpResponse:
    datastore = _datastore(name)
    form = RetentionPolicyForm(request.POST)
    if not form.is_valid():
        context = _datastore_context(datastore, RetentionPolicyForm(initial=asdict(RetentionPolicy.of(datastore))))
        return render(request, "backups/datastore_detail.html", {**context, "form": form}, status=400)
    try:
        changed = datastore_retention_save(
            datastore=datastore, policy=form.policy(), user=request.user, client_ip=client_ip(request)
        )
    except RetentionRefused as exc:
        messages.error(request, str(exc))
    else:
        if changed:
            messages.success(request, _("Retention policy of %(name)s saved.") % {"name": datastore.name})
        else:
            messages.info(request, _("The retention policy of %(name)s is unchanged.") % {"name": datastore.name})
    url = reverse("backups:datastore_detail", args=[datastore.name])
    return HttpResponseClientRedirect(url) if request.htmx else redirect(url)


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
    context = {
        "artifact": artifact,
        "row_counts": sorted(artifact.row_counts.items()),
        "is_redis": artifact.format == BackupArtifact.Format.REDIS_SNAPSHOT,
        "events": artifact.events.all(),
        "restores": artifact.restore_runs.all(),
        "drills": artifact.drill_runs.all(),
        "in_progress": selectors.backup_artifact_in_progress(artifact),
    }
    return render(request, "backups/artifact_detail.html", context)


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
