"""Commands the tests run as a script would (manage.py in a process of its own, against the test database), and
their credentials: a personal token made the real way, for DR_CONSOLE_TOKEN."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from tests.support.postgres import database_url

ROOT = Path(__file__).resolve().parents[2]


def token_for(user: Any, **kwargs: Any) -> str:
    """A new personal token of `user` (made by themselves), its secret returned as DR_CONSOLE_TOKEN wants it."""
    from accounts.services import personal_token_create

    _token, secret = personal_token_create(user=user, created_by=user, **kwargs)
    return secret


def manage(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    """Run manage.py as a script would. A command that names a console user (`--as NAME`) gets NAME's own personal
    token in DR_CONSOLE_TOKEN, as a script must give it (there is no terminal to type a password on)."""
    from django.conf import settings
    from django.contrib.auth.models import User

    if "--as" in args and (user := User.objects.filter(username=args[args.index("--as") + 1]).first()):
        env = {"DR_CONSOLE_TOKEN": token_for(user), **env}
    environment = {**os.environ, "DJANGO_SETTINGS_MODULE": "tests.settings", **env}
    environment["DATABASE_URL"] = database_url(settings.DATABASES["default"]["NAME"], os.environ["DATABASE_URL"])
    return subprocess.run(
        [sys.executable, "manage.py", *args], cwd=ROOT, env=environment, capture_output=True, text=True, timeout=120
    )
