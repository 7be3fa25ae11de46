"""/healthz, the console's liveness endpoint for container health checks: no session login, no dependency asked;
and /favicon.ico. /readyz and /metrics compose the job apps and are the overview's (overview/views.py)."""

from __future__ import annotations

from pathlib import Path

from django.conf import settings
from django.contrib.auth.decorators import login_not_required
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.views.decorators.cache import cache_control
from django.views.decorators.http import require_GET

FAVICON = Path(settings.BASE_DIR, "static", "favicon.svg")


@login_not_required
@require_GET
def healthz(request: HttpRequest) -> JsonResponse:
    """Liveness for container health checks: the process answers; no dependency is consulted."""
    return JsonResponse({"status": "ok"})


@login_not_required
@require_GET
@cache_control(max_age=86400, public=True)
def favicon(request: HttpRequest) -> HttpResponse:
    """Browsers ask for /favicon.ico on every site, the admin's pages included (which do not link ours)."""
    return HttpResponse(FAVICON.read_bytes(), content_type="image/svg+xml")
