"""The command line's proof of who is acting: DR_CONSOLE_TOKEN, or the password (or token) typed at a prompt.

Never from argv (a command line is visible to every user of the machine in `ps`, and kept in shell history), never
logged. A command that names a console user (`--as`) or makes a decision calls `cli_user`.
"""

from __future__ import annotations

import getpass
import os
import sys

from django.contrib.auth.models import User
from django.core.management.base import CommandError

from accounts.services import CredentialRefused, credential_check, credential_refuse

TOKEN_ENV = "DR_CONSOLE_TOKEN"


def ask_secret(username: str, purpose: str) -> str | None:
    """Ask `username` for their password or token on the terminal, without echo; None when there is no terminal
    to ask on (a script, cron, a pipe)."""
    if not sys.stdin.isatty():
        return None
    try:
        return getpass.getpass(f"Password or personal token of {username} (to {purpose}): ")
    except (EOFError, KeyboardInterrupt):
        return None


def cli_user(username: str | None, *, purpose: str, required: bool = True) -> User | None:
    """The console user acting, proven by their own credential:

    1. DR_CONSOLE_TOKEN set: that personal token; `--as`, if given, must name its owner;
    2. else `--as USERNAME` on a terminal: their password (or token) is asked, without echo;
    3. else refused, and audited: a name alone proves nothing.

    With `required=False` (a backup, a verification, a drill may be started without naming anyone) and neither a
    token nor `--as`, None: the action is recorded as the command line's, with the OS user and host."""
    try:
        token = os.environ.get(TOKEN_ENV, "").strip()
        if token:
            return credential_check(secret=token, username=username, purpose=purpose)
        if not username:
            if not required:
                return None
            credential_refuse(
                message=f"to {purpose}, prove who you are: set {TOKEN_ENV} to your personal token, or give "
                "--as USERNAME in a terminal and type your password",
                reason="no_credential",
                username=None,
                purpose=purpose,
            )
        secret = ask_secret(username, purpose)
        if not secret:
            credential_refuse(
                message=f"to {purpose} as {username} takes {username}'s own credential: set {TOKEN_ENV} to their "
                f"personal token (`manage.py token create --user {username}`), or run the command in a terminal "
                "to type the password; nothing was done",
                reason="no_credential",
                username=username,
                purpose=purpose,
            )
        return credential_check(secret=secret, username=username, purpose=purpose)
    except CredentialRefused as exc:
        raise CommandError(str(exc)) from None


def cli_person(username: str | None, *, purpose: str) -> User:
    """`cli_user` for commands that always act as someone (a restore, a decision, a cancel, a reprocess)."""
    user = cli_user(username, purpose=purpose, required=True)
    assert user is not None  # required=True refuses instead of returning None
    return user
