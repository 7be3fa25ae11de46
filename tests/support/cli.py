"""Credentials for commands the tests run: a personal token made the real way, for DR_CONSOLE_TOKEN."""

from __future__ import annotations

from typing import Any


def token_for(user: Any, **kwargs: Any) -> str:
    """A new personal token of `user` (made by themselves), its secret returned as DR_CONSOLE_TOKEN wants it."""
    from accounts.services import personal_token_create

    _token, secret = personal_token_create(user=user, created_by=user, **kwargs)
    return secret
