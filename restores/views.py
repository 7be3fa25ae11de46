"""The restore pages: history, request form, a run's page with its live status, approvals.

Thin: each view checks the permission, reads through restores.selectors, makes at most one service call, and
renders a page, or the partial when htmx asks. The services decide what is allowed; their refusals are shown.
"""

from __future__ import annotations

from typing import Any

from django.contrib import messages
from django.contrib.auth.decorators import permission_required
from django.core.exceptions import PermissionDenied
from django.http import HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.utils.http import url_has_allowed_host_and_scheme
from django.utils.translation import gettext as _
from django.views.decorators.http import require_GET, require_http_methods, require_POST
from django.views.decorators.vary import vary_on_headers
from django_htmx.http import HTMX_STOP_POLLING, HttpResponseClientRedirect, trigger_client_event

from accounts.reauth import reauth_refusal, reauth_required
from backups.models import BackupArtifact
from dr_console.http import HtmxRequest, client_ip
from dr_console.jobs import BrokerUnavailable
from restores import selectors, services
from restores.forms import ApproveForm, RejectForm, RestoreRequestForm, RunFilterForm
from restores.models import RestoreApproval, RestoreRun

VIEW_PERM = "restores.view_restorerun"
REQUEST_PERM = "restores.add_restorerun"
APPROVE_PERM = "restores.approve_restorerun"
Status = RestoreRun.Status


def _wants_partial(request: HtmxRequest) -> bool:
    # A boosted link wants the whole page; an hx-get from a filter or a pager wants the fragment (NetBox).
    return bool(request.htmx) and not request.htmx.boosted


def _redirect(request: HtmxRequest, url: str) -> HttpResponse:
    """After a POST: a plain redirect, or for htmx one that the browser follows as a full page load."""
    if request.htmx:
        return HttpResponseClientRedirect(url)
    return redirect(url)


def _next_url(request: HtmxRequest, default: str) -> str:
    candidate = request.POST.get("next", "")
    if candidate and url_has_allowed_host_and_scheme(
        candidate, allowed_hosts={request.get_host()}, require_https=request.is_secure()
    ):
        return candidate
    return default


# --- history --------------------------------------------------------------------------------------------------------


@require_GET
@permission_required(VIEW_PERM, raise_exception=True)
@vary_on_headers("HX-Request")
def run_list(request: HtmxRequest) -> HttpResponse:
    """Every restore, newest first, a page at a time; the filter and the pager swap the rows only."""
    form = RunFilterForm(request.GET)
    form.is_valid()  # an unknown status or cursor is dropped, not an error page
    status = form.cleaned_data.get("status", "")
    page = selectors.restore_run_page(
        status=status, before=form.cleaned_data.get("before", ""), after=form.cleaned_data.get("after", "")
    )
    context = {"form": form, "page": page, "status": status}
    template = "restores/partials/run_rows.html" if _wants_partial(request) else "restores/run_list.html"
    return render(request, template, context)


# --- requesting -----------------------------------------------------------------------------------------------------


def _requested_message(run: RestoreRun) -> str:
    """What the page shown after a request says about it, worded from the run's state when the page is drawn:
    a run that already ended is not "queued"."""
    values = {"id": run.pk, "count": run.required_approvals}
    if run.status == Status.AWAITING_APPROVAL:
        return (
            _(
                "Restore #%(id)s requested. It waits for %(count)s approval(s) by someone else; "
                "approvers have been told."
            )
            % values
        )
    if run.is_finished:
        return _("Restore #%(id)s requested; it has already ended: its status is below.") % values
    if run.status in (Status.RUNNING, Status.VERIFYING):
        return _("Restore #%(id)s requested; a worker is running it.") % values
    return _("Restore #%(id)s requested and queued: it starts as soon as a worker is free.") % values


def _requested_key(pk: int) -> str:
    return f"restore-requested-{pk}"


@require_http_methods(["GET", "POST"])
@permission_required(REQUEST_PERM, raise_exception=True)
def run_create(request: HtmxRequest) -> HttpResponse:
    """The restore form for ?artifact=ID. As the target changes, htmx asks for #restore-impact again: what would
    be overwritten, and the typed confirmation when the target is protected."""
    artifact_id = request.GET.get("artifact", "")
    if not artifact_id.isdigit():
        return render(request, "restores/run_create.html", {"artifact": None}, status=400)
    artifact = get_object_or_404(BackupArtifact.objects.select_related("datastore__environment"), pk=artifact_id)

    if request.method == "POST":
        form = RestoreRequestForm(request.POST, artifact=artifact)
        impact = form.current_impact() if form.is_valid() else None
        # Overwriting a protected datastore: the password again first (accounts.reauth); the page it shows posts
        # this same form back, so nothing typed is lost.
        protected = impact is not None and impact.protected
        if protected and (
            refused := reauth_refusal(request, what=_("restore over a datastore of a protected environment"))
        ):
            return refused
        if form.is_valid():
            try:
                run = services.restore_run_request(
                    artifact=artifact,
                    requested_by=request.user,
                    trigger=f"web:{request.user.get_username()}",
                    client_ip=client_ip(request),
                    **form.service_kwargs(),
                )
            except services.RestoreRefused as exc:
                form.add_error(exc.field if exc.field in form.fields else None, str(exc))
            except BrokerUnavailable as exc:
                # The run exists, failed: the worker could not be told. Say so, and where to look.
                form.add_error(None, _("The restore was recorded but not started: %(error)s") % {"error": exc})
            else:
                # Said by the run's page, in the words of its state then (a flash written now could be false by then).
                request.session[_requested_key(run.pk)] = True
                return _redirect(request, reverse("restores:run_detail", args=[run.pk]))
    elif request.htmx or "target_kind" in request.GET:
        # A preview of the current choice, or a link that chose the target (the operator still reviews it).
        form = RestoreRequestForm(request.GET, artifact=artifact)
    else:
        form = RestoreRequestForm(artifact=artifact)

    context = {"artifact": artifact, "form": form, "impact": form.current_impact(), "preview": request.method == "GET"}
    if request.htmx and request.htmx.target == "restore-impact":
        # The submit button's wording follows the target too: it comes along, swapped out of band.
        return render(request, "restores/partials/run_impact.html", {**context, "impact_only": True})
    if request.htmx and request.method == "POST":
        return render(request, "restores/partials/run_form.html", context)
    return render(request, "restores/run_create.html", context)


# --- one run --------------------------------------------------------------------------------------------------------


def _status_context(request: HtmxRequest, run: RestoreRun) -> dict[str, Any]:
    approvals = selectors.restore_run_approvals(run)
    return {
        "run": run,
        "approvals": approvals,
        "timeline": selectors.restore_run_timeline(run, approvals),
        "approved_count": sum(1 for approval in approvals if approval.decision == RestoreApproval.Decision.APPROVED),
        # Who sees the button; the service decides (and refuses with 403 below) whatever the page showed.
        "can_cancel": run.is_active
        and (
            (run.triggered_by_id == request.user.pk and request.user.has_perm(REQUEST_PERM))
            or request.user.has_perm("restores.change_restorerun")
        ),
    }


@require_GET
@permission_required(VIEW_PERM, raise_exception=True)
def run_detail(request: HtmxRequest, pk: int) -> HttpResponse:
    run = get_object_or_404(selectors.restore_run_queryset(), pk=pk)
    context = _status_context(request, run)
    context.update(
        blocker=selectors.restore_run_decision_blocker(run=run, user=request.user, approvals=context["approvals"]),
        approve_form=ApproveForm(),
        reject_form=RejectForm(),
        requested_notice=_requested_message(run) if request.session.pop(_requested_key(run.pk), False) else "",
    )
    return render(request, "restores/run_detail.html", context)


@require_GET
@permission_required(VIEW_PERM, raise_exception=True)
def run_status(request: HtmxRequest, pk: int) -> HttpResponse:
    """Polled every 3 s by the run's page while the run is active; 286 once it has ended stops the polling."""
    if not request.htmx:
        return redirect("restores:run_detail", pk=pk)
    run = get_object_or_404(selectors.restore_run_queryset(), pk=pk)
    status = 200 if run.is_active else HTMX_STOP_POLLING
    return render(request, "restores/partials/run_status.html", _status_context(request, run), status=status)


@require_POST
@permission_required(REQUEST_PERM, raise_exception=True)  # operators cancel their own; the service checks whose
def run_cancel(request: HtmxRequest, pk: int) -> HttpResponse:
    run = get_object_or_404(RestoreRun, pk=pk)
    was_running = run.status in RestoreRun.RUNNING_STATES
    try:
        cancelled = services.restore_run_cancel(run_id=run.pk, cancelled_by=request.user, client_ip=client_ip(request))
    except services.ApprovalRefused as exc:  # not the requester, and may not change others' runs
        raise PermissionDenied(str(exc)) from None
    run = get_object_or_404(selectors.restore_run_queryset(), pk=pk)
    if not request.htmx:  # the plain form post works too
        if cancelled:
            messages.success(request, _cancelled_message(run, was_running))
        else:
            messages.warning(request, _("Restore #%(id)s had already ended.") % {"id": run.pk})
        return redirect("restores:run_detail", pk=run.pk)
    context = _status_context(request, run)
    context.update(
        cancel_refused=not cancelled, cancelled_message=_cancelled_message(run, was_running) if cancelled else ""
    )
    response = render(request, "restores/partials/run_status.html", context)
    return trigger_client_event(response, "run-changed", {"id": run.pk})


def _cancelled_message(run: RestoreRun, was_running: bool) -> str:
    if was_running:
        return _("Restore #%(id)s cancelled. pg_restore stops within seconds; the target may be partly restored.") % {
            "id": run.pk
        }
    return _("Restore #%(id)s cancelled before it touched anything.") % {"id": run.pk}


# --- deciding -------------------------------------------------------------------------------------------------------


@require_POST
@permission_required(APPROVE_PERM, raise_exception=True)
@reauth_required(lambda: _("approve this restore"))
def run_approve(request: HtmxRequest, pk: int) -> HttpResponse:
    run = get_object_or_404(RestoreRun, pk=pk)
    form = ApproveForm(request.POST)
    if not form.is_valid():
        messages.error(request, " ".join(str(e) for errors in form.errors.values() for e in errors))
    else:
        try:
            run = services.restore_run_approve(
                run_id=run.pk,
                approver=request.user,
                comment=form.cleaned_data["comment"].strip(),
                client_ip=client_ip(request),
            )
        except services.ApprovalRefused as exc:
            messages.error(request, _("Not approved: %(reason)s.") % {"reason": exc})
        except BrokerUnavailable as exc:
            messages.error(request, _("Approved, but the restore could not be started: %(error)s") % {"error": exc})
        else:
            if run.status == Status.AWAITING_APPROVAL:
                approvals = selectors.restore_run_approvals(run)
                approved = sum(1 for approval in approvals if approval.decision == RestoreApproval.Decision.APPROVED)
                messages.success(
                    request,
                    _("You approved restore #%(id)s (%(done)s of %(needed)s approvals); it waits for another approver.")
                    % {"id": run.pk, "done": approved, "needed": run.required_approvals},
                )
            else:
                messages.success(
                    request,
                    _("You approved restore #%(id)s: it is queued and starts when a worker is free.") % {"id": run.pk},
                )
    return _redirect(request, _next_url(request, reverse("restores:run_detail", args=[run.pk])))


@require_POST
@permission_required(APPROVE_PERM, raise_exception=True)
def run_reject(request: HtmxRequest, pk: int) -> HttpResponse:
    run = get_object_or_404(RestoreRun, pk=pk)
    form = RejectForm(request.POST)
    if not form.is_valid():
        messages.error(request, " ".join(str(e) for errors in form.errors.values() for e in errors))
    else:
        try:
            services.restore_run_reject(
                run_id=run.pk, approver=request.user, reason=form.cleaned_data["reason"], client_ip=client_ip(request)
            )
        except services.ApprovalRefused as exc:
            messages.error(request, _("Not rejected: %(reason)s.") % {"reason": exc})
        else:
            messages.success(request, _("You rejected restore #%(id)s; the requester has been told.") % {"id": run.pk})
    return _redirect(request, _next_url(request, reverse("restores:run_detail", args=[run.pk])))


@require_GET
@permission_required(VIEW_PERM, raise_exception=True)
@vary_on_headers("HX-Request")
def approval_list(request: HtmxRequest) -> HttpResponse:
    """Runs waiting for a decision. Everyone who may read restores sees them; approvers get the buttons."""
    context = {
        "awaiting": selectors.restore_runs_awaiting_approval(user=request.user),
        "approve_form": ApproveForm(),
        "reject_form": RejectForm(),
    }
    template = "restores/partials/approval_rows.html" if _wants_partial(request) else "restores/approval_list.html"
    return render(request, template, context)
