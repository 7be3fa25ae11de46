"""Re-authentication: the password again, within the last REAUTH_MAX_AGE seconds, before the actions that cannot
be taken back (approving a restore, launching an in-place restore of a protected target, pinning, unpinning,
changing retention). A session cookie alone, stolen or left open, does not take them.

The form of such an action may carry the password itself (field `reauth_password`); otherwise the POST is
answered with the re-authentication page, which posts the same fields again, with the password, to the same
address: nothing typed is lost, and nothing is done until the password is right. The password goes through
`authenticate`, so django-axes counts wrong ones and locks out as it does for logins.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable
from typing import Any

from django.conf import settings
from django.contrib.auth import authenticate
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render

from audit.models import AuditEvent
from audit.services import audit_record
from dr_console.http import client_ip

REAUTH_KEY = "auth_reauth_at"
PASSWORD_FIELD = "reauth_password"
_NOT_REPOSTED = {"csrfmiddlewaretoken", PASSWORD_FIELD}


def reauth_is_recent(request: HttpRequest) -> bool:
    at = request.session.get(REAUTH_KEY)
    return at is not None and time.time() - float(at) <= settings.REAUTH_MAX_AGE


def reauth_mark(request: HttpRequest) -> None:
    """The person has just typed their password (to log in, or when asked again): it counts for REAUTH_MAX_AGE."""
    request.session[REAUTH_KEY] = time.time()


def _password_confirms(request: HttpRequest, password: str, what: str) -> bool:
    user: Any = request.user
    # accounts.signals reads it: a wrong password here is a failed re-authentication, not a failed login.
    request.reauth_in_progress = True  # type: ignore[attr-defined]
    try:
        confirmed = authenticate(request, username=user.get_username(), password=password)
    finally:
        request.reauth_in_progress = False  # type: ignore[attr-defined]
    if confirmed is None or confirmed.pk != user.pk:
        return False  # accounts.signals recorded the failure (auth.reauth_failed)
    reauth_mark(request)
    audit_record(
        action=AuditEvent.Action.AUTH_REAUTHENTICATED, actor=user, client_ip=client_ip(request), details={"for": what}
    )
    return True


def reauth_refusal(request: HttpRequest, *, what: str) -> HttpResponse | None:
    """None when the person confirmed their password recently, or with this POST; else the re-authentication
    page (403: nothing was done), which re-posts the same fields with the password."""
    if reauth_is_recent(request):
        return None
    password = request.POST.get(PASSWORD_FIELD, "")
    if password and _password_confirms(request, password, what):
        return None
    fields = [(k, v) for k, values in request.POST.lists() if k not in _NOT_REPOSTED for v in values]
    context = {
        "what": what,
        "fields": fields,
        "action": request.get_full_path(),
        "wrong": bool(password),
        "minutes": max(1, settings.REAUTH_MAX_AGE // 60),
        "back": request.headers.get("Referer", ""),
    }
    response = render(request, "accounts/reauth.html", context, status=403)
    if request.headers.get("HX-Request"):
        # An htmx form: the whole page becomes the re-authentication page, not a fragment of it.
        response["HX-Retarget"] = "body"
        response["HX-Reswap"] = "innerHTML"
    return response


def reauth_required(what: Callable[[], str]) -> Callable[[Callable[..., HttpResponse]], Callable[..., HttpResponse]]:
    """Decorate a POST view that needs a recent password. `what` says the action, in the reader's language."""

    def decorate(view: Callable[..., HttpResponse]) -> Callable[..., HttpResponse]:
        @functools.wraps(view)
        def wrapped(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
            if request.method == "POST" and (refused := reauth_refusal(request, what=what())):
                return refused
            return view(request, *args, **kwargs)

        return wrapped

    return decorate


def reauth_context(request: HttpRequest) -> dict[str, Any]:
    """Template context: whether forms of such actions should ask for the password (`reauth_needed`)."""
    user = getattr(request, "user", None)
    if user is None or not user.is_authenticated:
        return {}
    return {"reauth_needed": not reauth_is_recent(request), "reauth_field": PASSWORD_FIELD}
