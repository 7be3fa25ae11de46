"""Datastore health between backups (backups/health.py), against real servers: the local PostgreSQL, a private
cluster that checks passwords, the tests' Redis, and ports nobody listens on."""

from __future__ import annotations

from typing import Any

import pytest
from django.core import mail

from audit.models import AuditEvent
from backups.health import datastore_health_check, datastore_health_probe
from inventory.models import Datastore, DatastoreHealth
from tests.factories import DatastoreFactory
from tests.support.local import free_port
from tests.support.postgres import PasswordServer, SourceDb
from tests.support.redis import AppRedis

pytestmark = pytest.mark.django_db
State = DatastoreHealth.State


@pytest.fixture(autouse=True)
def _quick(settings: Any) -> None:
    settings.DATASTORE_HEALTH_TIMEOUT_SECONDS = 2
    settings.ALERT_EMAILS = ["oncall@example.com"]


def test_a_reachable_database_is_healthy_and_its_server_version_recorded(source_db: SourceDb) -> None:
    datastore = DatastoreFactory(url_env=source_db.url_env)
    health = datastore_health_check()[datastore.pk]
    assert health.state == State.OK and health.message == ""
    assert health.server_version.startswith("PostgreSQL 15")
    # A first check that finds it healthy is no news: no event, no mail.
    assert not AuditEvent.objects.filter(action=AuditEvent.Action.DATASTORE_HEALTH_CHANGED).exists()
    assert mail.outbox == []


def test_an_unset_url_variable_is_a_configuration_problem_named_with_the_host(monkeypatch: Any) -> None:
    monkeypatch.delenv("STAGING_DATABASE_URL", raising=False)
    datastore = DatastoreFactory(name="staging-db", url_env="STAGING_DATABASE_URL")
    finding = datastore_health_probe(datastore)
    assert finding.state == State.UNCONFIGURED
    assert "STAGING_DATABASE_URL is not set" in finding.message and "host" in finding.message


def test_nobody_listening_is_unreachable(monkeypatch: Any) -> None:
    monkeypatch.setenv("GONE_URL", f"postgresql://postgres@127.0.0.1:{free_port()}/postgres")
    finding = datastore_health_probe(DatastoreFactory(url_env="GONE_URL"))
    assert finding.state == State.UNREACHABLE
    assert "cannot connect" in finding.message


def test_a_wrong_password_is_refused_and_never_shown(password_server: PasswordServer, monkeypatch: Any) -> None:
    monkeypatch.setenv("PW_URL", password_server.url(password="not-the-password"))
    finding = datastore_health_probe(DatastoreFactory(url_env="PW_URL"))
    assert finding.state == State.REFUSED
    assert "password authentication failed" in finding.message
    assert "not-the-password" not in finding.message
    monkeypatch.setenv("PW_URL", password_server.url())
    assert datastore_health_probe(DatastoreFactory(url_env="PW_URL")).state == State.OK


def test_a_user_who_cannot_read_a_table_is_refused_before_the_backup_fails(
    source_db: SourceDb, monkeypatch: Any
) -> None:
    role = f"reader_{source_db.name}"
    with source_db.connect() as conn:
        conn.execute(f"CREATE ROLE {role} LOGIN")
        conn.execute(f"GRANT USAGE ON SCHEMA audit TO {role}")
        conn.execute(f"GRANT SELECT ON ALL TABLES IN SCHEMA public TO {role}")
        conn.execute(f"GRANT SELECT ON ALL SEQUENCES IN SCHEMA public TO {role}")
    try:
        monkeypatch.setenv("READER_URL", source_db.url.replace("postgres@", f"{role}@"))
        finding = datastore_health_probe(DatastoreFactory(url_env="READER_URL"))
        assert finding.state == State.REFUSED
        assert "may not read 2 table(s) (audit.events, audit.events_id_seq)" in finding.message
    finally:
        with source_db.connect() as conn:
            conn.execute(f"DROP OWNED BY {role}")
            conn.execute(f"DROP ROLE {role}")


def test_redis_reachable_unreachable_and_refused(app_redis: AppRedis, monkeypatch: Any) -> None:
    datastore = DatastoreFactory(kind=Datastore.Kind.REDIS, url_env=app_redis.url_env)
    ok = datastore_health_probe(datastore)
    assert ok.state == State.OK and ok.server_version.startswith("Redis 7")
    monkeypatch.setenv(app_redis.url_env, f"redis://127.0.0.1:{free_port()}/0")
    assert datastore_health_probe(datastore).state == State.UNREACHABLE
    monkeypatch.setenv(app_redis.url_env, app_redis.url.replace("redis://", "redis://nobody:wrong-secret@"))
    refused = datastore_health_probe(datastore)
    assert refused.state == State.REFUSED and "wrong-secret" not in refused.message


def test_a_change_of_state_is_audited_and_told_once_and_so_is_the_recovery(
    source_db: SourceDb, monkeypatch: Any, django_capture_on_commit_callbacks: Any
) -> None:
    def check() -> DatastoreHealth:
        with django_capture_on_commit_callbacks(execute=True):  # the mail goes once the row is committed
            return datastore_health_check()[datastore.pk]

    datastore = DatastoreFactory(name="prod-db", url_env=source_db.url_env)
    assert check().state == State.OK
    monkeypatch.delenv(source_db.url_env)
    first = check()
    again = check()
    assert first.state == again.state == State.UNCONFIGURED
    assert again.since == first.since and again.checked_at > first.checked_at
    events = AuditEvent.objects.filter(action=AuditEvent.Action.DATASTORE_HEALTH_CHANGED)
    assert events.count() == 1
    assert events.get().details["from"] == "ok" and events.get().details["to"] == "unconfigured"
    assert [message.subject for message in mail.outbox] == ["[DR Console] prod-db: not configured"]
    assert "is not set" in mail.outbox[0].body

    monkeypatch.setenv(source_db.url_env, source_db.url)
    assert check().state == State.OK
    assert events.count() == 2
    assert mail.outbox[-1].subject == "[DR Console] prod-db is reachable again"
    assert source_db.url not in str(list(events.values_list("details", flat=True)))


def test_a_slow_server_costs_its_own_timeout_not_everyones(source_db: SourceDb, monkeypatch: Any) -> None:
    """Eight datastores behind a server that accepts connections and never answers: checked at once, in threads,
    each ending unreachable after the timeout, while the healthy one is still checked."""
    import socket
    import threading

    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(16)
    accepted: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        silent.settimeout(0.2)
        while not stop.is_set():
            try:
                accepted.append(silent.accept()[0])
            except OSError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        monkeypatch.setenv("SILENT_URL", f"postgresql://postgres@127.0.0.1:{silent.getsockname()[1]}/postgres")
        silent_ones = [DatastoreFactory(url_env="SILENT_URL") for _ in range(8)]
        healthy = DatastoreFactory(url_env=source_db.url_env)
        found = datastore_health_check()
    finally:
        stop.set()
        thread.join()
        for conn in accepted:
            conn.close()
        silent.close()
    assert {found[ds.pk].state for ds in silent_ones} == {State.UNREACHABLE}
    assert "timeout" in found[silent_ones[0].pk].message
    assert found[healthy.pk].state == State.OK


@pytest.mark.django_db(transaction=True)
@pytest.mark.worker
def test_a_datastore_just_configured_and_check_now_are_checked_by_a_real_worker(
    celery_worker_thread: None, source_db: SourceDb, monkeypatch: Any
) -> None:
    """loadconfig names a variable the worker does not have: within seconds the datastore shows as not configured.
    Once the variable is set, Check now on its page makes it reachable."""
    from django.test import Client
    from django.urls import reverse

    from inventory.config import config_apply
    from tests.factories import EnvironmentFactory, user_in_groups
    from tests.support.local import wait_for

    monkeypatch.delenv("FIRST_DAY_URL", raising=False)
    EnvironmentFactory(name="staging")
    config_apply(
        {"datastores": [{"name": "first-db", "environment": "staging", "kind": "postgres", "url_env": "FIRST_DAY_URL"}]}
    )
    health = DatastoreHealth.objects.filter(datastore__name="first-db")
    wait_for(health.exists, timeout=30)
    assert health.get().state == State.UNCONFIGURED and "FIRST_DAY_URL is not set" in health.get().message

    monkeypatch.setenv("FIRST_DAY_URL", source_db.url)
    client = Client()
    client.force_login(user_in_groups("olga", "operator"))
    datastore = Datastore.objects.get(name="first-db")
    response = client.post(reverse("overview:datastore_health_check", args=[datastore.pk]))
    assert response.status_code == 302
    wait_for(lambda: health.get().state == State.OK, timeout=30)
    viewer = Client()
    viewer.force_login(user_in_groups("vera", "viewer"))
    assert viewer.post(reverse("overview:datastore_health_check", args=[datastore.pk])).status_code == 403
