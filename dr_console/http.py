"""Request helpers shared by the admin and the pages."""

from __future__ import annotations

import zoneinfo
from collections.abc import Callable
from typing import Any

from django.conf import settings
from django.contrib.auth.middleware import LoginRequiredMiddleware
from django.contrib.auth.models import User
from django.contrib.auth.views import redirect_to_login
from django.http import HttpRequest, HttpResponseBase
from django.utils import timezone
from django_htmx.http import HttpResponseClientRedirect
from django_htmx.middleware import HtmxDetails

from dr_console.channel import API, WEB, Channel, channel_set


class HtmxRequest(HttpRequest):
    """What the console's views get: the login middleware guarantees a user, HtmxMiddleware adds `htmx`."""

    htmx: HtmxDetails
    user: User


def partial_wanted(request: HtmxRequest) -> bool:
    """An htmx request that wants a fragment. A boosted link or a history restore (back button, cache miss)
    needs the whole page."""
    return bool(request.htmx) and not request.htmx.boosted and not request.htmx.history_restore_request


def client_ip(request: HttpRequest) -> str | None:
    """The client's address for the audit log: REMOTE_ADDR, or the first X-Forwarded-For entry when the
    console runs behind a proxy that sets it (DJANGO_USE_X_FORWARDED_FOR=True)."""
    if settings.USE_X_FORWARDED_FOR:
        forwarded = request.META.get("HTTP_X_FORWARDED_FOR", "")
        if forwarded:
            return forwarded.split(",")[0].strip() or None
    return request.META.get("REMOTE_ADDR") or None


class HtmxLoginRequiredMiddleware(LoginRequiredMiddleware):
    """Every page needs a login. An htmx request (a poll after the session expired) gets an HX-Redirect to the
    login page, so the whole page goes there instead of the login form being swapped into a table row."""

    def handle_no_permission(self, request: HttpRequest, view_func: Callable[..., HttpResponseBase]) -> Any:
        if getattr(request, "htmx", False):
            current = request.htmx.current_url_abs_path or "/"  # type: ignore[attr-defined]
            return HttpResponseClientRedirect(redirect_to_login(current, self.get_login_url(view_func))["Location"])
        return super().handle_no_permission(request, view_func)


class ChannelMiddleware:
    """Every request is audited as coming from the web, or from the API when it carries a bearer token (a
    scraper of /metrics) rather than a session (dr_console.channel)."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponseBase]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponseBase:
        api = request.headers.get("Authorization", "").lower().startswith("bearer ")
        with channel_set(Channel(via=API if api else WEB)):
            return self.get_response(request)


class BrowserTimezoneMiddleware:
    """Show times in the user's timezone: base.html stores the browser's IANA zone in the `tz` cookie; an unknown
    or missing zone falls back to TIME_ZONE."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponseBase]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponseBase:
        name = request.COOKIES.get("tz", "")
        try:
            zone = zoneinfo.ZoneInfo(name) if name else None
        except (zoneinfo.ZoneInfoNotFoundError, ValueError):
            zone = None
        if zone is not None:
            timezone.activate(zone)
        else:
            timezone.deactivate()
        return self.get_response(request)
