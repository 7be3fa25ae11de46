"""Who is acting: personal tokens for the command line, and the checks of a person's own credential.

A decision on the command line (approve, reject) and any command that names a console user (`--as`) needs that
person's own credential: their personal token (DR_CONSOLE_TOKEN) or their password, never a name alone. Every
refusal is audited (`auth.refused`), and says in one line what was wrong. Tokens are stored as their sha256 only.
"""

from __future__ import annotations

import hashlib
import secrets
from datetime import timedelta
from typing import NoReturn

from django.contrib.auth import get_user_model
from django.contrib.auth.models import User
from django.db import transaction
from django.utils import timezone

from accounts.models import PersonalToken
from audit.models import AuditEvent
from audit.services import audit_record

TOKEN_PREFIX = "drc_"  # tells a token from a password when one is typed at the prompt


class CredentialRefused(Exception):
    """The credential presented does not prove who it claims to be. The message is one line for the person."""


def token_digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def personal_token_create(
    *, user: User, created_by: User, name: str = "", days: int | None = None
) -> tuple[PersonalToken, str]:
    """Make a token for `user` and return it with its secret, which is never stored or shown again. Only the person
    themselves or a superuser (both proven by their own credential first) may make one."""
    if created_by.pk != user.pk and not created_by.is_superuser:
        raise CredentialRefused(
            f"{created_by.get_username()} may not create tokens for {user.get_username()} "
            "(only the person themselves, or a superuser)"
        )
    if not user.is_active:
        raise CredentialRefused(f"{user.get_username()} is deactivated: no token can be made for them")
    secret = TOKEN_PREFIX + secrets.token_urlsafe(32)
    expires_at = timezone.now() + timedelta(days=days) if days else None
    with transaction.atomic():
        token = PersonalToken.objects.create(
            user=user,
            name=name.strip()[:100],
            digest=token_digest(secret),
            hint=secret[:10],
            created_by=created_by.get_username(),
            expires_at=expires_at,
        )
        audit_record(
            action=AuditEvent.Action.AUTH_TOKEN_CREATED,
            actor=created_by,
            obj=token,
            details={
                "user": user.get_username(),
                "token": token.pk,
                "hint": token.hint,
                "name": token.name,
                "expires_at": expires_at.isoformat() if expires_at else None,
            },
        )
    return token, secret


def personal_token_revoke(*, token_id: int, revoked_by: User) -> PersonalToken:
    """Revoke a token at once: the next command that presents it is refused. The owner or a superuser."""
    with transaction.atomic():
        token = PersonalToken.objects.select_for_update().filter(pk=token_id).select_related("user").first()
        if token is None:
            raise CredentialRefused(f"no personal token with id {token_id}")
        if token.user_id != revoked_by.pk and not revoked_by.is_superuser:
            raise CredentialRefused(
                f"{revoked_by.get_username()} may not revoke {token.user.get_username()}'s tokens "
                "(only the owner, or a superuser)"
            )
        if token.revoked_at is not None:
            raise CredentialRefused(f"token #{token.pk} was already revoked on {token.revoked_at:%Y-%m-%d %H:%M} UTC")
        token.revoked_at = timezone.now()
        token.save(update_fields=["revoked_at"])
        audit_record(
            action=AuditEvent.Action.AUTH_TOKEN_REVOKED,
            actor=revoked_by,
            obj=token,
            details={"user": token.user.get_username(), "token": token.pk, "hint": token.hint},
        )
    return token


def credential_refuse(
    *, message: str, reason: str, username: str | None, purpose: str, token_id: int | None = None
) -> NoReturn:
    """Audit a refused credential (`auth.refused`) and raise CredentialRefused. The secret is never recorded."""
    claimed = get_user_model().objects.filter(username=username).first() if username else None
    audit_record(
        action=AuditEvent.Action.AUTH_REFUSED,
        actor=claimed,
        actor_label="" if claimed is not None else (username or "unknown"),
        details={"reason": reason, "purpose": purpose, "claimed_user": username or None, "token": token_id},
    )
    raise CredentialRefused(message)


def credential_check(*, secret: str, username: str | None, purpose: str) -> User:
    """The console user that `secret` proves: a personal token (it names its owner; `username`, if given, must be
    the owner), or `username`'s password. Anything else is refused, audited, with one line saying what was wrong."""
    secret = secret.strip()
    if secret.startswith(TOKEN_PREFIX):
        return _token_user(secret, username=username, purpose=purpose)
    if not username:
        credential_refuse(
            message=f"to {purpose} with a password, name yourself with --as USERNAME",
            reason="no_username",
            username=None,
            purpose=purpose,
        )
    user = get_user_model().objects.filter(username=username).first()
    if user is None or not user.check_password(secret):
        # The same words whether the user exists or not: the prompt must not tell which names are real.
        credential_refuse(
            message=f"wrong user name or password for {username}; nothing was done",
            reason="bad_password",
            username=username,
            purpose=purpose,
        )
    assert user is not None
    if not user.is_active:
        credential_refuse(
            message=f"{username} is deactivated; nothing was done",
            reason="inactive",
            username=username,
            purpose=purpose,
        )
    return user


def _token_user(secret: str, *, username: str | None, purpose: str) -> User:
    token = PersonalToken.objects.select_related("user").filter(digest=token_digest(secret)).first()
    if token is None:
        credential_refuse(
            message="the personal token is not one this console issued (or was mistyped); nothing was done",
            reason="unknown_token",
            username=username,
            purpose=purpose,
        )
    assert token is not None
    owner = token.user.get_username()
    how = f"`manage.py token create --user {owner}` makes a new one"
    if token.revoked_at is not None:
        credential_refuse(
            message=f"personal token #{token.pk} ({token.hint}…) of {owner} was revoked on "
            f"{token.revoked_at:%Y-%m-%d %H:%M} UTC; {how}; nothing was done",
            reason="revoked_token",
            username=owner,
            purpose=purpose,
            token_id=token.pk,
        )
    if token.is_expired:
        assert token.expires_at is not None
        credential_refuse(
            message=f"personal token #{token.pk} ({token.hint}…) of {owner} expired on "
            f"{token.expires_at:%Y-%m-%d %H:%M} UTC; {how}; nothing was done",
            reason="expired_token",
            username=owner,
            purpose=purpose,
            token_id=token.pk,
        )
    if username and username != owner:
        credential_refuse(
            message=f"the personal token is {owner}'s, not {username}'s: one person cannot act as another; "
            "nothing was done",
            reason="token_of_another_user",
            username=username,
            purpose=purpose,
            token_id=token.pk,
        )
    if not token.user.is_active:
        credential_refuse(
            message=f"{owner} is deactivated; nothing was done",
            reason="inactive",
            username=owner,
            purpose=purpose,
            token_id=token.pk,
        )
    PersonalToken.objects.filter(pk=token.pk).update(last_used_at=timezone.now())
    return token.user
