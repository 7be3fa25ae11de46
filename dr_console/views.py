"""/healthz, the console's liveness endpoint for container health checks: no session login, no dependency asked.
/readyz and /metrics compose the job apps and are the overview's (overview/views.py)."""

from __future__ import annotations

from django.contrib.auth.decorators import login_not_required
from django.http import HttpRequest, JsonResponse
from django.views.decorators.http import require_GET


@login_not_required
@require_GET
def healthz(request: HttpRequest) -> JsonResponse:
    """Liveness for container health checks: the process answers; no dependency is consulted."""
    return JsonResponse({"status": "ok"})
