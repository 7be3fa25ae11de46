"""Test set-up: real PostgreSQL (the console's test database and the databases being backed up), real Redis as the
broker (its own database number), real pg_dump/pg_restore. Nothing here mocks them.
Environment defaults for the suite are in tests/settings.py; the fixtures themselves live in tests/support/, one
plugin module per kind of real thing, loaded below. This file keeps what every test shares: the check that the
services are there, the autouse fixtures, and the users the roles give."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit

import psycopg
import pytest
import redis

# Their asserts explain a failure as a conftest's do. Registered before anything imports them.
pytest.register_assert_rewrite("tests.support")

pytest_plugins = [
    "tests.support.postgres",  # source_db, new_database_name, password_server
    "tests.support.redis",  # app_redis, second_redis
    "tests.support.celery",  # celery_worker_thread, broker_down
    "tests.support.http",  # http_stub
    "tests.support.sampleapp",  # sampleapp, sampleapp_factory
    "tests.support.storage",  # artifact_dir (autouse)
    "tests.support.s3",  # moto_server (session), s3_bucket, s3_locked_bucket, s3_bucket_factory, s3_proxy
]


def pytest_sessionstart(session: pytest.Session) -> None:
    """Fail at once, in one line, when a service the suite needs is not there."""
    from tests.support.postgres import PG_ADMIN_URL

    problems = []
    try:
        psycopg.connect(PG_ADMIN_URL, connect_timeout=3).close()
    except psycopg.Error as exc:
        problems.append(
            f"PostgreSQL is not reachable at {urlsplit(PG_ADMIN_URL).netloc} ({str(exc).strip().splitlines()[0]}); "
            "start it with: pg_ctlcluster --skip-systemctl-redirect 15 main start"
        )
    broker = os.environ["CELERY_BROKER_URL"]
    try:
        redis.Redis.from_url(broker, socket_connect_timeout=3).ping()
    except redis.RedisError as exc:
        problems.append(
            f"Redis is not reachable at {urlsplit(broker).netloc} ({exc}); start it with: "
            "redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save '' --appendonly no"
        )
    for tool in ("pg_dump", "pg_restore"):
        if not shutil.which(tool):
            problems.append(f"{tool} is not installed: apt-get install -y postgresql-client")
    if problems:
        pytest.exit("; ".join(problems), returncode=2)


def _flush_past_the_audit_truncate_trigger() -> None:
    """Django empties the test database after each transaction=True test with one TRUNCATE of every table, which
    the audit table's trigger refuses (audit/migrations/0013). Here that statement runs with triggers off (SET LOCAL
    session_replication_role, for superusers only; the tests connect as one): the trigger is the production guard,
    and the tests of it (tests/audit/test_tamper.py) TRUNCATE the table themselves."""
    from django.db.backends.postgresql.operations import DatabaseOperations

    original = DatabaseOperations.sql_flush

    def sql_flush(self: Any, style: Any, tables: Any, *, reset_sequences: bool = False, allow_cascade: bool = False):
        statements = original(self, style, tables, reset_sequences=reset_sequences, allow_cascade=allow_cascade)
        return ["SET LOCAL session_replication_role = replica", *statements] if statements else statements

    DatabaseOperations.sql_flush = sql_flush  # type: ignore[method-assign]


_flush_past_the_audit_truncate_trigger()


@pytest.fixture(autouse=True)
def _fast_password_hasher(settings: Any) -> None:
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


@pytest.fixture(autouse=True)
def _empty_cache() -> None:
    """Django's cache is this process's memory (LocMemCache): without this, /readyz would answer one test from the
    check another test made."""
    from django.core.cache import cache

    cache.clear()


@pytest.fixture(autouse=True)
def _default_language() -> Iterator[None]:
    """Each test starts in the default language. The test client's LocaleMiddleware leaves the last request's
    language active in this thread, so after a Spanish page a later test got Spanish words from gettext."""
    from django.utils import translation

    translation.deactivate()
    yield
    translation.deactivate()


@pytest.fixture(autouse=True)
def _person_at_the_terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    """A command that names a console user (`--as`) asks for their credential on the terminal, which a test has
    not: here the person named types their own password ("<username>-password", tests/factories.py), and the check
    of it is the real one. Tests of refusals replace this (no terminal: `ask_secret` returns None, or a wrong
    password). Subprocesses have no terminal either: they get DR_CONSOLE_TOKEN (tests/support/cli.py)."""
    monkeypatch.setattr("accounts.cli.ask_secret", lambda username, purpose: f"{username}-password")
    monkeypatch.delenv("DR_CONSOLE_TOKEN", raising=False)


@pytest.fixture
def operator(db: None) -> Any:
    """Olga, in the operator group the roles migration creates."""
    from tests.factories import user_in_groups

    return user_in_groups("olga", "operator")


@pytest.fixture
def viewer(db: None) -> Any:
    """Vera, who reads everything."""
    from tests.factories import user_in_groups

    return user_in_groups("vera", "viewer")


@pytest.fixture
def approver(db: None) -> Any:
    """Abel, an approver who is also an operator (the usual set-up)."""
    from tests.factories import user_in_groups

    return user_in_groups("abel", "approver", "operator")
