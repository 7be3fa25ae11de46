"""Refused attempts are in the audit log: a signed-in person whose request to change something (any method but GET,
HEAD, OPTIONS) was answered 403 (no permission for it, a view's own refusal, a failed CSRF check) leaves an
`access.refused` event with the method and the path. Reading a page one may not see is not an attempt to change
anything, and is only logged (dr_console.log.RefusalFilter)."""

from __future__ import annotations

from collections.abc import Callable

from django.http import HttpRequest, HttpResponseBase

from audit.models import AuditEvent
from audit.services import audit_record
from dr_console.http import client_ip

SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


class RefusedAttemptAuditMiddleware:
    def __init__(self, get_response: Callable[[HttpRequest], HttpResponseBase]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponseBase:
        response = self.get_response(request)
        user = getattr(request, "user", None)
        if (
            response.status_code == 403
            and request.method not in SAFE_METHODS
            and user is not None
            and user.is_authenticated
        ):
            audit_record(
                action=AuditEvent.Action.ACCESS_REFUSED,
                actor=user,
                details={"method": request.method, "path": request.path[:300]},
                client_ip=client_ip(request),
            )
        return response
