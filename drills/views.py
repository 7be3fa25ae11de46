"""Starting a drill from the datastore page. Thin: a permission, one service call, a redirect with a message."""

from __future__ import annotations

from django.contrib import messages
from django.contrib.auth.decorators import permission_required
from django.http import HttpResponse
from django.shortcuts import get_object_or_404, redirect
from django.urls import reverse
from django.utils.translation import gettext as _
from django.views.decorators.http import require_POST
from django_htmx.http import HttpResponseClientRedirect

from dr_console.http import HtmxRequest, client_ip
from dr_console.jobs import BrokerUnavailable
from drills.models import DrillRun
from drills.services import DrillRefused, drill_run_cancel, drill_run_request
from inventory.models import Datastore

START_PERM = "drills.add_drillrun"


@require_POST
@permission_required(START_PERM, raise_exception=True)
def drill_start(request: HtmxRequest, name: str) -> HttpResponse:
    datastore = get_object_or_404(Datastore.objects.select_related("environment"), name=name)
    try:
        run = drill_run_request(
            datastore=datastore,
            trigger=f"web:{request.user.get_username()}",
            triggered_by=request.user,
            client_ip=client_ip(request),
        )
    except (DrillRefused, BrokerUnavailable) as exc:
        messages.error(request, _("No drill of %(datastore)s: %(reason)s") % {"datastore": name, "reason": exc})
    else:
        if run.status == run.Status.FAILED:
            messages.error(request, _("Drill #%(id)s failed: %(error)s") % {"id": run.pk, "error": run.error})
        else:
            messages.success(request, _("Drill #%(id)s of %(datastore)s queued.") % {"id": run.pk, "datastore": name})
    return redirect(f"{reverse('overview:datastore_detail', args=[name])}#drills")


@require_POST
@permission_required(START_PERM, raise_exception=True)
def drill_cancel(request: HtmxRequest, pk: int) -> HttpResponse:
    """Cancel a queued or running drill: its worker stops pg_restore and drops the scratch database."""
    run = get_object_or_404(DrillRun.objects.select_related("datastore"), pk=pk)
    if drill_run_cancel(run_id=run.pk, cancelled_by=request.user, client_ip=client_ip(request)):
        messages.success(request, _("Drill #%(id)s cancelled.") % {"id": run.pk})
    else:
        messages.error(request, _("Drill #%(id)s had already ended; nothing to cancel.") % {"id": run.pk})
    url = f"{reverse('overview:datastore_detail', args=[run.datastore.name])}#drills"
    return HttpResponseClientRedirect(url) if request.htmx else redirect(url)
