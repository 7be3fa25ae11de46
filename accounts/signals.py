"""Failed logins and lockouts (django-axes) go to the audit log; a login starts the session's clocks."""

from __future__ import annotations

import time
from typing import Any

from axes.signals import user_locked_out
from django.contrib.auth import get_user_model
from django.contrib.auth.signals import user_logged_in, user_login_failed
from django.dispatch import receiver

from audit.models import AuditEvent
from audit.services import audit_record
from dr_console.http import client_ip

SESSION_STARTED_KEY = "auth_started_at"
SESSION_SEEN_KEY = "auth_last_seen_at"


@receiver(user_logged_in, dispatch_uid="accounts_logged_in")
def _logged_in(sender: Any, request: Any, user: Any, **kwargs: Any) -> None:
    if request is None or not hasattr(request, "session"):
        return  # force_login in tests, a login without a request
    now = time.time()
    request.session[SESSION_STARTED_KEY] = now
    request.session[SESSION_SEEN_KEY] = now
    # A person's password login (accounts.views.LoginView) is audited there, not here: force_login, in tests and
    # scripts, also sends this signal.


@receiver(user_login_failed, dispatch_uid="accounts_login_failed")
def _login_failed(sender: Any, credentials: dict[str, Any], request: Any = None, **kwargs: Any) -> None:
    # `credentials` has the password already masked by Django; only the user name is kept.
    username = str(credentials.get("username") or "")[:150]
    user = get_user_model().objects.filter(username=username).first() if username else None
    reauth = bool(getattr(request, "reauth_in_progress", False))  # accounts.reauth: the password asked again
    audit_record(
        action=AuditEvent.Action.AUTH_REAUTH_FAILED if reauth else AuditEvent.Action.AUTH_LOGIN_FAILED,
        actor=user,
        actor_label="" if user is not None else (username or "unknown"),
        client_ip=client_ip(request) if request is not None else None,
        details={"username": username},
    )


@receiver(user_locked_out, dispatch_uid="accounts_locked_out")
def _locked_out(sender: Any, request: Any = None, username: str = "", ip_address: str = "", **kwargs: Any) -> None:
    username = str(username or "")[:150]
    user = get_user_model().objects.filter(username=username).first() if username else None
    audit_record(
        action=AuditEvent.Action.AUTH_LOCKED_OUT,
        actor=user,
        actor_label="" if user is not None else (username or "unknown"),
        client_ip=ip_address or (client_ip(request) if request is not None else None),
        details={"username": username, "unlock": "manage.py axes_reset_username " + username if username else ""},
    )
