"""The console in this process: Django set up on the bench's own database, and a logged-in test client.

Django reads its settings from the environment once, at setup: call these before importing the app's models."""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from harness.core import ROOT, use_app_code
from harness.pg import Pg

if TYPE_CHECKING:
    from django.test import Client

BASE_ENV = {"DJANGO_SETTINGS_MODULE": "dr_console.settings", "DJANGO_SECRET_KEY": "bench-only"}


def setup_django(code_dir: Path = ROOT, **env: str) -> None:
    """django.setup() with the app's settings and `env` (DJANGO_DEBUG False unless given) in os.environ, the app's
    code taken from `code_dir` (another worktree, to measure another version)."""
    os.environ.update({**BASE_ENV, "DJANGO_DEBUG": "False", **env})
    use_app_code(code_dir)
    import django

    django.setup()


@contextlib.contextmanager
def django_database(db: str, *, pg: Pg | None = None, quiet: bool = False, **env: str) -> Iterator[None]:
    """Django set up on its own database `db`: (re)created and migrated first, dropped at the end. `quiet`
    disables logging at INFO and below (the jobs' progress lines)."""
    pg = pg or Pg()
    with pg.scratch(db):
        setup_django(DATABASE_URL=pg.url(db, scheme="postgres"), **env)
        if quiet:
            logging.disable(logging.INFO)
        from django.core.management import call_command
        from django.db import connections

        try:
            call_command("migrate", verbosity=0)
            yield
        finally:
            connections.close_all()  # before the drop: it would end them anyway, with errors in the log


def logged_in_client(username: str, groups: list[str]) -> Client:
    """Django's test client (routing, middleware, templates; no network), logged in as a new user in `groups`.
    Without setup_test_environment: it instruments every template render so that tests can read the contexts
    (a copy of the context per template, 50 per dashboard page), which a server does not pay."""
    from django.contrib.auth.models import Group, User
    from django.test import Client

    user = User.objects.create_user(username, password="x")
    user.groups.set(Group.objects.filter(name__in=groups))
    client = Client()
    client.force_login(user)
    return client


def plain_static_files() -> Any:
    """override_settings for the test client: static files without the manifest (no collectstatic needed)."""
    from django.conf import settings
    from django.test.utils import override_settings

    static = {**settings.STORAGES, "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"}}
    return override_settings(STORAGES=static)
