"""The console's own health endpoints, for load balancers, container health checks and monitoring. None of them
needs a login (they are marked so); /metrics asks for its own bearer token (see `metrics`)."""

from __future__ import annotations

from django.contrib.auth.decorators import login_not_required
from django.http import HttpRequest, JsonResponse
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET

from dr_console.health import readiness


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
