"""The RQ queue pages: environments with a queue Redis, one environment's queues and workers, a page of jobs of a
queue or registry; and the POSTs that requeue failed jobs. Reading needs inventory.view_datastore (every role);
requeueing needs queues.requeue_job (operators), checked here on the server."""

from __future__ import annotations

import os
from typing import Any

import redis
from django.contrib import messages
from django.contrib.auth.decorators import permission_required
from django.http import Http404, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.utils.translation import gettext as _
from django.utils.translation import ngettext
from django.views.decorators.http import require_GET, require_POST
from django.views.decorators.vary import vary_on_headers
from django_htmx.http import HTMX_STOP_POLLING, trigger_client_event

from dr_console.http import HtmxRequest, client_ip, partial_wanted
from dr_console.text import untrusted_text
from inventory.models import Environment
from queues import selectors, services
from queues.rqclient import QueueUnavailable, environment_redis, redis_error_reason

VIEW_PERM = "inventory.view_datastore"
REQUEUE_PERM = "queues.requeue_job"


def _environment(name: str) -> Environment:
    return get_object_or_404(Environment.objects.select_related("redis_datastore"), name=name)


def _page_number(raw: str) -> int:
    try:
        return max(1, min(int(raw), 1_000_000))
    except ValueError:
        return 1


@require_GET
@permission_required(VIEW_PERM, raise_exception=True)
def environment_list(request: HtmxRequest) -> HttpResponse:
    """Every environment and the Redis holding its RQ queues. Redis is not contacted here: one unreachable
    Redis must not slow the list down."""
    environments = Environment.objects.select_related("redis_datastore").order_by("name")
    rows = [
        {
            "environment": env,
            "datastore": env.redis_datastore,
            "url_set": bool(env.redis_datastore and os.environ.get(env.redis_datastore.url_env)),
        }
        for env in environments
    ]
    return render(request, "queues/environment_list.html", {"rows": rows})


def _read(environment: Environment, read: Any) -> tuple[Any, str]:
    """Run `read(connection)` against the environment's Redis; (result, "") or (None, why it cannot)."""
    try:
        connection = environment_redis(environment)
    except QueueUnavailable as exc:
        return None, str(exc)
    try:
        return read(connection), ""
    except redis.RedisError as exc:
        return None, _("The Redis of %(datastore)s does not answer: %(reason)s") % {
            "datastore": environment.redis_datastore,
            "reason": redis_error_reason(exc),
        }
    finally:
        connection.close()


def _page_context(environment: Environment, job_page: selectors.JobPage | None = None) -> dict[str, Any]:
    overview, unavailable = _read(environment, selectors.queue_overview)
    return {"environment": environment, "overview": overview, "unavailable": unavailable, "job_page": job_page}


@require_GET
@permission_required(VIEW_PERM, raise_exception=True)
def environment_queues(request: HtmxRequest, environment: str) -> HttpResponse:
    env = _environment(environment)
    return render(request, "queues/environment_queues.html", _page_context(env))


@require_GET
@permission_required(VIEW_PERM, raise_exception=True)
def queue_overview(request: HtmxRequest, environment: str) -> HttpResponse:
    """The queues and workers box, polled every 5 s (and after a requeue); 286 stops the polling when Redis
    cannot be read."""
    context = _page_context(_environment(environment))
    status = HTMX_STOP_POLLING if context["unavailable"] else 200
    return render(request, "queues/partials/queue_overview.html", context, status=status)


def _job_page(environment: Environment, queue: str, job_list: selectors.JobList, page: int) -> tuple[Any, str]:
    def read(connection: redis.Redis) -> selectors.JobPage | None:
        if queue not in selectors.queue_names(connection):
            return None
        return selectors.queue_job_page(connection, queue_name=queue, job_list=job_list, page=page)

    return _read(environment, read)


def _job_list_kind(value: str) -> selectors.JobList:
    try:
        return selectors.JobList(value)
    except ValueError:
        raise Http404("No such job list") from None


@require_GET
@permission_required(VIEW_PERM, raise_exception=True)
@vary_on_headers("HX-Request")
def job_list(request: HtmxRequest, environment: str, queue: str, job_list: str) -> HttpResponse:
    """A page of the jobs of a queue (`queued`) or of one of its registries; htmx asks for the list alone."""
    env = _environment(environment)
    kind = _job_list_kind(job_list)
    job_page, unavailable = _job_page(env, queue, kind, _page_number(request.GET.get("page", "1")))
    if job_page is None and not unavailable:
        raise Http404("No such queue")
    if partial_wanted(request):
        context = {"environment": env, "job_page": job_page, "unavailable": unavailable}
        return render(request, "queues/partials/job_list.html", context)
    context = _page_context(env, job_page)
    context["unavailable"] = context["unavailable"] or unavailable
    return render(request, "queues/environment_queues.html", context)


def _after_requeue(request: HtmxRequest, env: Environment, queue: str, notice: str, ok: bool) -> HttpResponse:
    notice = untrusted_text(notice)  # it quotes the queue's name, as the application's Redis holds it
    page = _page_number(request.POST.get("page", "1"))
    if not request.htmx:
        messages.add_message(request, messages.SUCCESS if ok else messages.ERROR, notice)
        url = reverse("queues:job_list", kwargs={"environment": env.name, "queue": queue, "job_list": "failed"})
        return redirect(f"{url}?page={page}" if page > 1 else url)
    job_page, unavailable = _job_page(env, queue, selectors.JobList.FAILED, page)
    if job_page is not None and page > job_page.pages:  # the last page emptied: show the one before
        job_page, unavailable = _job_page(env, queue, selectors.JobList.FAILED, job_page.pages)
    context = {"environment": env, "job_page": job_page, "unavailable": unavailable, "notice": notice, "notice_ok": ok}
    response = render(request, "queues/partials/job_list.html", context)
    return trigger_client_event(response, "queues-changed")  # the overview box refreshes its counts


@require_POST
@permission_required(REQUEUE_PERM, raise_exception=True)
def failed_requeue(request: HtmxRequest, environment: str, queue: str, job_id: str) -> HttpResponse:
    env = _environment(environment)
    try:
        requeued = services.failed_job_requeue(
            environment=env, queue_name=queue, job_id=job_id, requested_by=request.user, client_ip=client_ip(request)
        )
    except (QueueUnavailable, redis.RedisError) as exc:
        reason = str(exc) if isinstance(exc, QueueUnavailable) else redis_error_reason(exc)
        return _after_requeue(request, env, queue, _("Nothing requeued: %(reason)s") % {"reason": reason}, False)
    if requeued:
        notice = _("Job %(job)s is back in queue %(queue)s.") % {"job": job_id, "queue": queue}
    else:
        notice = _("Job %(job)s is not in the failed jobs of %(queue)s any more.") % {"job": job_id, "queue": queue}
    return _after_requeue(request, env, queue, notice, requeued)


@require_POST
@permission_required(REQUEUE_PERM, raise_exception=True)
def failed_requeue_all(request: HtmxRequest, environment: str, queue: str) -> HttpResponse:
    env = _environment(environment)
    try:
        outcome = services.failed_jobs_requeue_all(
            environment=env, queue_name=queue, requested_by=request.user, client_ip=client_ip(request)
        )
    except (QueueUnavailable, redis.RedisError) as exc:
        reason = str(exc) if isinstance(exc, QueueUnavailable) else redis_error_reason(exc)
        return _after_requeue(request, env, queue, _("Nothing requeued: %(reason)s") % {"reason": reason}, False)
    notice = ngettext(
        "%(count)s failed job is back in queue %(queue)s.",
        "%(count)s failed jobs are back in queue %(queue)s.",
        outcome.requeued,
    ) % {"count": outcome.requeued, "queue": queue}
    if outcome.gone:
        notice += " " + ngettext(
            "%(count)s had expired and was removed from the list.",
            "%(count)s had expired and were removed from the list.",
            outcome.gone,
        ) % {"count": outcome.gone}
    if outcome.remaining:
        notice += " " + ngettext(
            "%(count)s is still failed: requeue again to continue.",
            "%(count)s are still failed: requeue again to continue.",
            outcome.remaining,
        ) % {"count": outcome.remaining}
    return _after_requeue(request, env, queue, notice, outcome.requeued > 0 or not outcome.remaining)
