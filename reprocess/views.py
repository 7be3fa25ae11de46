"""The reprocess pages: batches, building one (shown before anything is sent), a batch with its live progress.

Thin: each view checks the permission, makes at most one service call, and renders a page or, for htmx, a partial.
"""

from __future__ import annotations

from django.contrib import messages
from django.contrib.auth.decorators import permission_required
from django.http import HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.utils.translation import gettext as _
from django.views.decorators.http import require_GET, require_http_methods, require_POST
from django_htmx.http import HTMX_STOP_POLLING

from dr_console.http import HtmxRequest, client_ip
from dr_console.uploads import upload_refused
from reprocess import selectors, services
from reprocess.forms import ItemFilterForm, ReprocessBatchForm
from reprocess.models import ReprocessBatch
from reprocess.sources import SourceError

VIEW_PERM = "reprocess.view_reprocessbatch"
OPERATE_PERM = "reprocess.add_reprocessbatch"


@require_GET
@permission_required(VIEW_PERM, raise_exception=True)
def batch_list(request: HtmxRequest) -> HttpResponse:
    return render(request, "reprocess/batch_list.html", {"batches": selectors.reprocess_batches_recent()})


@require_http_methods(["GET", "POST"])
@permission_required(OPERATE_PERM, raise_exception=True)
def batch_create(request: HtmxRequest) -> HttpResponse:
    """Build a batch. It is created as a draft and shown: nothing is sent until the operator sends it."""
    refused = upload_refused(request) if request.method == "POST" else False  # CSRF has read the upload already
    form = ReprocessBatchForm(
        request.POST or None, request.FILES or None, initial=_initial(request), upload_refused=refused
    )
    if request.method == "POST" and form.is_valid():
        try:
            batch = services.reprocess_batch_build(
                environment=form.cleaned_data["environment"],
                source=form.cleaned_data["source"],
                csv_content=form.cleaned_data.get("csv_content", ""),
                csv_name=form.cleaned_data.get("csv_name", ""),
                requested_by=request.user,
                client_ip=client_ip(request),
            )
        except SourceError as exc:
            for error in exc.errors:
                form.add_error(None, error)
        except services.ReprocessRefused as exc:
            form.add_error(None, str(exc))
        else:
            messages.success(
                request,
                _("Batch #%(id)s holds %(count)s documents. Check them, then send the batch.")
                % {"id": batch.pk, "count": batch.total},
            )
            return redirect("reprocess:batch_detail", pk=batch.pk)
    return render(request, "reprocess/batch_create.html", {"form": form}, status=413 if refused else 200)


def _initial(request: HtmxRequest) -> dict[str, str]:
    return {key: request.GET[key] for key in ("environment", "source") if request.GET.get(key)}


def _detail_context(request: HtmxRequest, batch: ReprocessBatch) -> dict[str, object]:
    form = ItemFilterForm(request.GET)
    form.is_valid()
    status = form.cleaned_data.get("status", "") if hasattr(form, "cleaned_data") else ""
    return {
        "batch": batch,
        "rate": services.batch_rate(batch),
        "filter_form": form,
        "items": selectors.reprocess_items_shown(batch, status),
        "items_status": status,
        "items_limit": selectors.ITEMS_SHOWN,
        "can_operate": request.user.has_perm(OPERATE_PERM),
    }


@require_GET
@permission_required(VIEW_PERM, raise_exception=True)
def batch_detail(request: HtmxRequest, pk: int) -> HttpResponse:
    batch = get_object_or_404(selectors.reprocess_batch_queryset(), pk=pk)
    context = _detail_context(request, batch)
    if request.htmx and request.htmx.target == "batch-items":
        return render(request, "reprocess/partials/batch_items.html", context)
    return render(request, "reprocess/batch_detail.html", context)


@require_GET
@permission_required(VIEW_PERM, raise_exception=True)
def batch_progress(request: HtmxRequest, pk: int) -> HttpResponse:
    """Polled every second while the batch is queued or running; 286 once it has ended stops the polling."""
    if not request.htmx:
        return redirect("reprocess:batch_detail", pk=pk)
    batch = get_object_or_404(selectors.reprocess_batch_queryset(), pk=pk)
    status = 200 if batch.is_active else HTMX_STOP_POLLING
    return render(request, "reprocess/partials/batch_progress.html", _detail_context(request, batch), status=status)


def _act(request: HtmxRequest, pk: int, action: str) -> HttpResponse:
    batch = get_object_or_404(selectors.reprocess_batch_queryset(), pk=pk)
    ip = client_ip(request)
    try:
        if action == "send":
            services.reprocess_batch_send(batch=batch, requested_by=request.user, client_ip=ip)
            messages.success(
                request,
                _("Batch #%(id)s is sending %(count)s documents.") % {"id": batch.pk, "count": batch.not_accepted},
            )
        elif action == "cancel":
            services.reprocess_batch_cancel(batch=batch, requested_by=request.user, client_ip=ip)
            messages.success(
                request,
                _("Batch #%(id)s cancelled: calls in flight finish and are recorded; nothing more is sent.")
                % {"id": batch.pk},
            )
        else:
            services.reprocess_batch_discard(batch=batch, requested_by=request.user, client_ip=ip)
            messages.success(request, _("Batch #%(id)s discarded; nothing was sent.") % {"id": batch.pk})
    except services.ReprocessRefused as exc:
        messages.error(request, str(exc))
    return redirect("reprocess:batch_detail", pk=batch.pk)


@require_POST
@permission_required(OPERATE_PERM, raise_exception=True)
def batch_send(request: HtmxRequest, pk: int) -> HttpResponse:
    return _act(request, pk, "send")


@require_POST
@permission_required(OPERATE_PERM, raise_exception=True)
def batch_cancel(request: HtmxRequest, pk: int) -> HttpResponse:
    return _act(request, pk, "cancel")


@require_POST
@permission_required(OPERATE_PERM, raise_exception=True)
def batch_discard(request: HtmxRequest, pk: int) -> HttpResponse:
    return _act(request, pk, "discard")
