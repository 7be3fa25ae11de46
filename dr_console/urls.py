from __future__ import annotations

from django.contrib import admin
from django.http import HttpRequest, JsonResponse
from django.urls import path
from django.views.decorators.http import require_GET
from django.views.generic import RedirectView


@require_GET
def healthz(request: HttpRequest) -> JsonResponse:
    """Liveness for container health checks: the process answers; no dependency is consulted."""
    return JsonResponse({"status": "ok"})


admin.site.site_header = "DR Console"
admin.site.site_title = "DR Console"
admin.site.index_title = "Configuration and history"

urlpatterns = [
    path("admin/", admin.site.urls),
    path("healthz", healthz, name="healthz"),
    path("", RedirectView.as_view(pattern_name="admin:index", permanent=False)),
]
