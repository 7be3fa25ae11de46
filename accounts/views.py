"""The login page: Django's, with the login audited (failures and lockouts: accounts/signals.py), and counting as
a re-authentication (accounts.reauth)."""

from __future__ import annotations

from typing import Any

from django.contrib.auth import views as auth_views
from django.http import HttpResponse

from accounts.reauth import reauth_mark
from audit.models import AuditEvent
from audit.services import audit_record
from dr_console.http import client_ip


class LoginView(auth_views.LoginView):
    def form_valid(self, form: Any) -> HttpResponse:
        response = super().form_valid(form)
        reauth_mark(self.request)  # the password was typed just now: no need to ask again for a few minutes
        audit_record(action=AuditEvent.Action.AUTH_LOGGED_IN, actor=form.get_user(), client_ip=client_ip(self.request))
        return response
