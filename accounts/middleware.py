"""Sessions end on the server: after SESSION_IDLE_TIMEOUT seconds without the person doing anything, and
SESSION_ABSOLUTE_TIMEOUT seconds after the login whatever they do.

A page's own polling (htmx `every 3s`, which base.html marks with the X-Console-Poll header) is not the person
doing something: a tab left open on a running restore must not keep its session alive for ever. An htmx request
after expiry gets an HX-Redirect to the login page, which the whole page follows (not a login form swapped into a
table row)."""

from __future__ import annotations

import time
from collections.abc import Callable
from urllib.parse import urlsplit

from django.conf import settings
from django.contrib.auth import logout
from django.contrib.auth.views import redirect_to_login
from django.http import HttpRequest, HttpResponseBase
from django_htmx.http import HttpResponseClientRedirect

from accounts.signals import SESSION_SEEN_KEY, SESSION_STARTED_KEY
from audit.models import AuditEvent
from audit.services import audit_record
from dr_console.http import client_ip

POLL_HEADER = "X-Console-Poll"
SEEN_WRITE_EVERY = 5.0  # seconds: each request need not write the session


def session_expiry(*, started: float, seen: float, now: float) -> str:
    """ "absolute", "idle", or "" while the session is still good."""
    if now - started > settings.SESSION_ABSOLUTE_TIMEOUT:
        return "absolute"
    if now - seen > settings.SESSION_IDLE_TIMEOUT:
        return "idle"
    return ""


class SessionTimeoutMiddleware:
    def __init__(self, get_response: Callable[[HttpRequest], HttpResponseBase]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponseBase:
        user = getattr(request, "user", None)
        if user is None or not user.is_authenticated:
            return self.get_response(request)
        session = request.session
        now = time.time()
        started = float(session.get(SESSION_STARTED_KEY) or now)
        seen = float(session.get(SESSION_SEEN_KEY) or now)
        if SESSION_STARTED_KEY not in session:
            session[SESSION_STARTED_KEY] = started  # a session made without the login view (force_login)
        expired = session_expiry(started=started, seen=seen, now=now)
        if expired:
            audit_record(
                action=AuditEvent.Action.AUTH_SESSION_EXPIRED,
                actor=user,
                client_ip=client_ip(request),
                details={"timeout": expired, "idle_seconds": round(now - seen), "age_seconds": round(now - started)},
            )
            logout(request)
            if request.headers.get("HX-Request"):
                parts = urlsplit(request.headers.get("HX-Current-URL", ""))
                current = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
                return HttpResponseClientRedirect(redirect_to_login(current)["Location"])
            return redirect_to_login(request.get_full_path())
        if not request.headers.get(POLL_HEADER) and (now - seen >= SEEN_WRITE_EVERY or SESSION_SEEN_KEY not in session):
            session[SESSION_SEEN_KEY] = now
        return self.get_response(request)
