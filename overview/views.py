"""The overview pages: the dashboard (one row per datastore: backups, RPO, schedule, restores waiting for approval,
drills, RTO, 30-day chart), the datastore page (schedule, retention, drills), and the health endpoints /readyz and
/metrics. They compose the job apps, which never import each other's pages (docs/architecture.md).

Views stay thin: a permission, a selector or one service call, a page or a partial. Every state change is a POST
(CSRF comes with every htmx request from base.html); partials that poll answer 286 once nothing runs any more,
which stops htmx polling.
"""

from __future__ import annotations

import hmac
from dataclasses import asdict
from typing import Any

from django.conf import settings
from django.contrib import messages
from django.contrib.auth.decorators import login_not_required, permission_required
from django.http import Http404, HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.utils import timezone
from django.utils.http import url_has_allowed_host_and_scheme
from django.utils.translation import gettext as _
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET, require_POST
from django_htmx.http import HTMX_STOP_POLLING, HttpResponseClientRedirect

from accounts.reauth import reauth_required
from backups.forms import RetentionPolicyForm
from backups.health import datastore_health_check_soon
from backups.retention import (
    POLICY_PERM,
    RetentionPolicy,
    RetentionRefused,
    datastore_retention_save,
    retention_preview,
)
from backups.selectors import backup_artifact_pinned, scheduled_backup_recent
from backups.services import BackupRefused, backup_artifact_request
from backups.views import START_PERM, VIEW_PERMS
from dr_console.http import HtmxRequest, client_ip
from dr_console.jobs import BrokerUnavailable
from drills.selectors import drill_run_recent
from inventory.models import Datastore
from overview.charts import datastore_objective_charts
from overview.forms import DashboardFilterForm
from overview.health import readiness_cached
from overview.selectors import DashboardFilters, DatastoreDashboardRow, dashboard_read, datastore_dashboard_row

METRICS_VIEW_PERM = "inventory.view_datastore"


def _next_url(request: HtmxRequest, default: str) -> str:
    url = request.POST.get("next", "")
    if url and url_has_allowed_host_and_scheme(url, allowed_hosts={request.get_host()}, require_https=False):
        return url
    return default


# --- dashboard ---------------------------------------------------------------------------------------------------


@require_GET
@permission_required(VIEW_PERMS, raise_exception=True)
def dashboard(request: HtmxRequest) -> HttpResponse:
    """What needs attention first (a failed newest backup, a datastore no worker can reach, a missed RPO or RTO),
    then the healthy datastores: listed when few, summarised by environment when many (filters list them)."""
    form = DashboardFilterForm(request.GET)
    filters = form.filters() if form.is_valid() else DashboardFilters()
    board = dashboard_read(filters, page=form.page_number())
    context = {"board": board, "form": form, "filters": filters}
    return render(request, "overview/dashboard.html", context)


@require_GET
@permission_required(VIEW_PERMS, raise_exception=True)
def datastore_chart(request: HtmxRequest, pk: int) -> HttpResponse:
    """A dashboard row's 30-day chart, loaded once the row is on screen: a dashboard of many datastores does not
    draw hundreds of charts nobody scrolls to."""
    datastore = get_object_or_404(Datastore, pk=pk)
    chart = datastore_objective_charts([datastore], timezone.localdate()).get(datastore.pk)
    return render(request, "overview/partials/datastore_chart.html", {"chart": chart, "ds": datastore})


@require_GET
@permission_required(VIEW_PERMS, raise_exception=True)
def datastore_row(request: HtmxRequest, pk: int) -> HttpResponse:
    """A dashboard row, polled every 3 s while a backup or a verification of the datastore runs."""
    row = _dashboard_row(pk)
    return render(
        request, "overview/partials/dashboard_row.html", {"row": row}, status=200 if row.busy else HTMX_STOP_POLLING
    )


def _dashboard_row(pk: int) -> DatastoreDashboardRow:
    row = datastore_dashboard_row(pk)
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
        return render(request, "overview/partials/dashboard_row.html", context)
    messages.add_message(request, messages.SUCCESS if ok else messages.ERROR, notice)
    url = _next_url(request, reverse("overview:dashboard"))
    return HttpResponseClientRedirect(url) if request.htmx else redirect(url)


# --- one datastore: schedule and retention -------------------------------------------------------------------------


def _datastore(name: str) -> Datastore:
    return get_object_or_404(Datastore.objects.select_related("environment"), name=name)


def _datastore_context(datastore: Datastore, form: RetentionPolicyForm, proposed: bool = False) -> dict[str, Any]:
    policy = form.policy() if proposed else RetentionPolicy.of(datastore)
    return {
        "datastore": datastore,
        "row": _dashboard_row(datastore.pk),
        "scheduled_runs": scheduled_backup_recent(datastore),
        "pinned": backup_artifact_pinned(datastore),
        "drills": drill_run_recent(datastore),
        "form": form,
        "preview": retention_preview(datastore=datastore, policy=policy),
        "proposed": proposed,
        "health_interval": settings.DATASTORE_HEALTH_CHECK_SECONDS,
    }


@require_GET
@permission_required(VIEW_PERMS, raise_exception=True)
def datastore_detail(request: HtmxRequest, name: str) -> HttpResponse:
    """The datastore's schedule (next, last and missed runs) and its retention policy, with what that policy
    keeps and expires now, and why."""
    datastore = _datastore(name)
    form = RetentionPolicyForm(initial=asdict(RetentionPolicy.of(datastore)))
    return render(request, "overview/datastore_detail.html", _datastore_context(datastore, form))


@require_POST
@permission_required(POLICY_PERM, raise_exception=True)
def datastore_retention_preview(request: HtmxRequest, name: str) -> HttpResponse:
    """What the policy in the form would do now, before it is saved. Changes nothing."""
    datastore = _datastore(name)
    form = RetentionPolicyForm(request.POST)
    if not form.is_valid():
        context = {"datastore": datastore, "form": form, "preview": None, "proposed": True}
        return render(request, "overview/partials/retention_preview.html", context, status=400)
    if not request.htmx:
        return render(request, "overview/datastore_detail.html", _datastore_context(datastore, form, proposed=True))
    preview = retention_preview(datastore=datastore, policy=form.policy())
    context = {"datastore": datastore, "form": form, "preview": preview, "proposed": True}
    return render(request, "overview/partials/retention_preview.html", context)


@require_POST
@permission_required(POLICY_PERM, raise_exception=True)
@reauth_required(lambda: _("change this retention policy"))
def datastore_retention_update(request: HtmxRequest, name: str) -> HttpResponse:
    datastore = _datastore(name)
    form = RetentionPolicyForm(request.POST)
    if not form.is_valid():
        context = _datastore_context(datastore, RetentionPolicyForm(initial=asdict(RetentionPolicy.of(datastore))))
        return render(request, "overview/datastore_detail.html", {**context, "form": form}, status=400)
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
    url = reverse("overview:datastore_detail", args=[datastore.name])
    return HttpResponseClientRedirect(url) if request.htmx else redirect(url)


# --- health: /readyz and /metrics (no session login; /metrics asks for its own token) -----------------------------


@login_not_required
@require_GET
@never_cache
def readyz(request: HttpRequest) -> JsonResponse:
    """Readiness: the console's database, the broker, the artifact storage (written to) and at least one worker
    answering a ping. 503 names the checks that failed. The answer may be READYZ_CACHE_SECONDS old."""
    results = readiness_cached()
    failed = [result.name for result in results if not result.ok]
    body = {
        "status": "not ready" if failed else "ready",
        "failed": failed,
        "checks": {result.name: result.as_dict() for result in results},
    }
    return JsonResponse(body, status=503 if failed else 200)


@login_not_required
@require_GET
@never_cache
def metrics(request: HttpRequest) -> HttpResponse:
    """Prometheus metrics. Who may read them:
    - a scraper sending `Authorization: Bearer <METRICS_BEARER_TOKEN>` (compared in constant time);
    - a signed-in user who may view datastores (a person checking in a browser).
    Anyone else gets 401. With METRICS_BEARER_TOKEN unset no bearer token is accepted at all."""
    from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

    from overview.metrics import REGISTRY

    if not _metrics_allowed(request):
        response = HttpResponse(
            "401 Unauthorized: send Authorization: Bearer <METRICS_BEARER_TOKEN>, or sign in as a viewer\n",
            status=401,
            content_type="text/plain; charset=utf-8",
        )
        response["WWW-Authenticate"] = 'Bearer realm="dr-console metrics"'
        return response
    return HttpResponse(generate_latest(REGISTRY), content_type=CONTENT_TYPE_LATEST)


def _metrics_allowed(request: HttpRequest) -> bool:
    token = settings.METRICS_BEARER_TOKEN
    scheme, _, offered = request.headers.get("Authorization", "").partition(" ")
    if token and scheme.lower() == "bearer" and hmac.compare_digest(offered.strip().encode(), token.encode()):
        return True
    return request.user.is_authenticated and request.user.has_perm(METRICS_VIEW_PERM)


@require_POST
@permission_required(START_PERM, raise_exception=True)
def datastore_health_check(request: HtmxRequest, pk: int) -> HttpResponse:
    """Check now: a worker (which has the datastores' URL variables, unlike the web process) checks the datastore
    within seconds; the page shows what it found."""
    datastore = get_object_or_404(Datastore, pk=pk)
    datastore_health_check_soon(datastore.pk)
    messages.info(
        request,
        _("A worker checks %(datastore)s now; reload in a few seconds to see the result.")
        % {"datastore": datastore.name},
    )
    url = _next_url(request, reverse("overview:datastore_detail", args=[datastore.name]))
    return HttpResponseClientRedirect(url) if request.htmx else redirect(url)
