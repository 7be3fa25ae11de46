"""The console's own health endpoints, for load balancers, container health checks and monitoring. None of them
needs a session login (they are marked so); /metrics asks for its own bearer token (see `metrics`)."""

from __future__ import annotations

import hmac

from django.conf import settings
from django.contrib.auth.decorators import login_not_required
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET

from dr_console.health import readiness

METRICS_VIEW_PERM = "inventory.view_datastore"


@login_not_required
@require_GET
def healthz(request: HttpRequest) -> JsonResponse:
    """Liveness for container health checks: the process answers; no dependency is consulted."""
    return JsonResponse({"status": "ok"})


@login_not_required
@require_GET
@never_cache
def readyz(request: HttpRequest) -> JsonResponse:
    """Readiness: the console's database, the broker, the artifact storage (written to) and at least one worker
    answering a ping. 503 names the checks that failed."""
    results = readiness()
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

    from dr_console.metrics import REGISTRY

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
