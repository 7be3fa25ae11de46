"""Logging in as a person does: through the login page, with the password (`<username>-password`, set by
tests/factories.py). Such a session has a recent password, so it may approve, pin or restore over a protected
datastore for REAUTH_MAX_AGE (accounts.reauth); a session made by force_login has none and is asked for it."""

from __future__ import annotations

from typing import Any

from django.test import Client
from django.urls import reverse


def log_in(client: Client, username: str, password: str | None = None, **extra: Any) -> Any:
    """Open the login page, then POST it with its CSRF token; returns the POST's response (a redirect when the
    password is right)."""
    client.get(reverse("login"), **extra)
    token = client.cookies["csrftoken"].value if "csrftoken" in client.cookies else ""
    data = {"username": username, "password": password or f"{username}-password", "csrfmiddlewaretoken": token}
    return client.post(reverse("login"), data, **extra)


def logged_in_with_password(client: Client, user: Any) -> Client:
    response = log_in(client, user.get_username())
    assert response.status_code == 302, f"{user} could not log in: {response.status_code}"
    return client
