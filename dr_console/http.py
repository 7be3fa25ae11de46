"""Request helpers shared by the admin and the pages."""

from __future__ import annotations

from django.conf import settings
from django.http import HttpRequest


def client_ip(request: HttpRequest) -> str | None:
    """The client's address for the audit log: REMOTE_ADDR, or the first X-Forwarded-For entry when the
    console runs behind a proxy that sets it (DJANGO_USE_X_FORWARDED_FOR=True)."""
    if settings.USE_X_FORWARDED_FOR:
        forwarded = request.META.get("HTTP_X_FORWARDED_FOR", "")
        if forwarded:
            return forwarded.split(",")[0].strip() or None
    return request.META.get("REMOTE_ADDR") or None
