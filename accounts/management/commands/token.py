"""manage.py token create --user USERNAME [--name TEXT] [--days N] | token list [--user USERNAME] [--json] |
token revoke ID

Personal tokens are the command line's credential (DR_CONSOLE_TOKEN). Making or revoking one needs the credential
of the person themselves or of a superuser: DR_CONSOLE_TOKEN, or the password typed at the prompt."""

from __future__ import annotations

import json
from typing import Any

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management.base import CommandError, CommandParser

from accounts.cli import TOKEN_ENV, cli_person
from accounts.models import PersonalToken
from accounts.services import CredentialRefused, personal_token_create, personal_token_revoke
from dr_console.cli import OneLineCommand, user_by_name


def _when(value: Any) -> str:
    return f"{value:%Y-%m-%d %H:%M} UTC" if value else "never"


class Command(OneLineCommand):
    help = "Create, list or revoke personal tokens, the command line's credential (DR_CONSOLE_TOKEN)."

    def add_arguments(self, parser: CommandParser) -> None:
        sub = parser.add_subparsers(dest="action", required=True, metavar="{create,list,revoke}")
        create = sub.add_parser("create", help="Make a token; it is printed once and never stored.")
        create.add_argument("--user", required=True, metavar="USERNAME", help="Whose token.")
        create.add_argument(
            "--by",
            metavar="USERNAME",
            help="Who makes it, when not the user themselves (a superuser); default: the user.",
        )
        create.add_argument("--name", default="", help="What it is for (a laptop, a CI job).")
        create.add_argument(
            "--days",
            type=int,
            default=settings.PERSONAL_TOKEN_DAYS,
            help=f"Valid for this many days (default {settings.PERSONAL_TOKEN_DAYS}, PERSONAL_TOKEN_DAYS; 0: "
            "no expiry).",
        )
        listing = sub.add_parser("list", help="The tokens (never their secret), newest first.")
        listing.add_argument("--user", metavar="USERNAME", help="Only this user's.")
        listing.add_argument("--json", action="store_true", help="Print one JSON document.")
        revoke = sub.add_parser("revoke", help="Revoke a token at once.")
        revoke.add_argument("token_id", type=int, help="Id of the token (see `token list`).")
        revoke.add_argument("--as", dest="as_user", metavar="USERNAME", help="Who revokes (the owner or a superuser).")

    def handle(self, *args: Any, **options: Any) -> None:
        action = options["action"]
        if action == "list":
            self._list(options)
            return
        try:
            if action == "create":
                user = user_by_name(options["user"])
                if options["days"] < 0:
                    raise CommandError("--days must be 0 (no expiry) or more")
                who = user.get_username()
                actor = cli_person(options["by"] or who, purpose=f"create a token for {who}")
                token, secret = personal_token_create(
                    user=user, created_by=actor, name=options["name"], days=options["days"] or None
                )
                self.stderr.write(
                    f"token #{token.pk} for {user.get_username()}, expires {_when(token.expires_at)}. It is shown "
                    f"once, below; keep it like a password and give it to commands as {TOKEN_ENV}:"
                )
                self.stdout.write(secret)
            else:
                found = PersonalToken.objects.select_related("user").filter(pk=options["token_id"]).first()
                if found is None:
                    raise CommandError(f"no personal token with id {options['token_id']}")
                owner = found.user.get_username()
                actor = cli_person(options["as_user"] or owner, purpose=f"revoke token #{found.pk}")
                personal_token_revoke(token_id=found.pk, revoked_by=actor)
                self.stdout.write(f"token #{found.pk} ({found.hint}…) of {owner} revoked")
        except CredentialRefused as exc:
            raise CommandError(str(exc)) from None

    def _list(self, options: dict[str, Any]) -> None:
        tokens = PersonalToken.objects.select_related("user").order_by("-created_at", "-pk")
        if options["user"]:
            if not get_user_model().objects.filter(username=options["user"]).exists():
                raise CommandError(f"no console user named {options['user']!r} (create one in the admin)")
            tokens = tokens.filter(user__username=options["user"])
        rows = [
            {
                "id": t.pk,
                "user": t.user.get_username(),
                "name": t.name,
                "hint": t.hint,
                "state": t.state,
                "created_at": t.created_at.isoformat(),
                "created_by": t.created_by,
                "expires_at": t.expires_at.isoformat() if t.expires_at else None,
                "last_used_at": t.last_used_at.isoformat() if t.last_used_at else None,
            }
            for t in tokens
        ]
        if options["json"]:
            self.stdout.write(json.dumps(rows, indent=2))
            return
        if not rows:
            self.stdout.write("no personal tokens")
        for t, row in zip(tokens, rows, strict=True):
            self.stdout.write(
                f"#{t.pk} {row['user']} {t.hint}… {t.state}, expires {_when(t.expires_at)}, last used "
                f"{_when(t.last_used_at)}{' — ' + t.name if t.name else ''}"
            )
