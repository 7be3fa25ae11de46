"""The approval follows the database, not the record (issue #12). Each test tries a way round the four-eyes rule or
the console's own guards, as an insider would, against the real PostgreSQL and Redis, and checks that it is refused
with a clear message, that nothing was touched and that the attempt is in the audit log."""

from __future__ import annotations

import os
import re
from typing import Any
from urllib.parse import urlsplit

import psutil
import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db import connection
from django.test import Client
from django.urls import reverse

from audit.models import AuditEvent
from backups.health import datastore_health_check
from backups.models import BackupArtifact
from backups.services import BackupRefused, backup_artifact_execute, backup_artifact_request
from inventory.identity import identity_from_env
from inventory.models import Datastore, DatastoreHealth, Environment, TargetLock
from restores.models import RestoreRun
from restores.services import RestoreRefused, restore_run_approve, restore_run_execute, restore_run_request
from tests.factories import DatastoreFactory, EnvironmentFactory, UserFactory
from tests.support.postgres import SourceDb, create_database, database_url, drop_database, table_fingerprints
from tests.support.redis import AppRedis

pytestmark = pytest.mark.django_db(transaction=True)
Kind = RestoreRun.TargetKind
Status = RestoreRun.Status


@pytest.fixture
def prod(source_db: SourceDb) -> Datastore:
    environment = EnvironmentFactory(name="prod", protected=True, required_approvals=1)
    return DatastoreFactory(name="prod-db", environment=environment, url_env=source_db.url_env)


@pytest.fixture
def prod_backup(prod: Datastore) -> BackupArtifact:
    artifact = backup_artifact_request(datastore=prod, trigger="test", enqueue=False)
    backup_artifact_execute(artifact_id=artifact.pk, verify_after=False)
    artifact.refresh_from_db()
    assert artifact.status == BackupArtifact.Status.SUCCEEDED, artifact.error
    return artifact


@pytest.fixture
def dev() -> Environment:
    return EnvironmentFactory(name="dev", protected=False)


@pytest.fixture
def admin_client(client: Client) -> Client:
    client.force_login(UserFactory(username="root", is_staff=True, is_superuser=True))
    return client


def other_spelling(url: str) -> str:
    """The same database, spelled differently: localhost for 127.0.0.1, and a harmless parameter."""
    parts = urlsplit(url)
    return parts._replace(netloc=parts.netloc.replace("127.0.0.1", "localhost"), query="application_name=x").geturl()


def admin_add_datastore(client: Client, environment: Environment, name: str, kind: str, url_env: str) -> str:
    response = client.post(
        reverse("admin:inventory_datastore_add"),
        {
            "environment": environment.pk,
            "name": name,
            "kind": kind,
            "url_env": url_env,
            "rpo_target": "1 00:00:00",
            "rto_target": "01:00:00",
            "backup_schedule_timezone": "UTC",
        },
    )
    assert response.status_code == 200, "the admin accepted it"
    return response.content.decode()


def request_into(artifact: BackupArtifact, target: Datastore, operator: Any) -> RestoreRun:
    return restore_run_request(
        artifact=artifact,
        target_kind=Kind.DATASTORE,
        target_datastore=target,
        requested_by=operator,
        reason="refresh dev",
        enqueue=False,
    )


def refusals(action: str = AuditEvent.Action.RESTORE_REFUSED) -> list[str]:
    return [str(event.details.get("refused")) for event in AuditEvent.objects.filter(action=action).order_by("pk")]


# --- identity -------------------------------------------------------------------------------------------------------


def test_two_spellings_of_one_database_have_one_identity(source_db: SourceDb, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ALIAS_URL", other_spelling(source_db.url))
    monkeypatch.setenv("POSTGRES_DB_URL", database_url("postgres"))
    same = identity_from_env("postgres", source_db.url_env)
    alias = identity_from_env("postgres", "ALIAS_URL")
    other = identity_from_env("postgres", "POSTGRES_DB_URL")
    assert same.server and same.server == other.server  # the cluster's system_identifier
    assert alias.same_database(same) and alias.lock_key == same.lock_key
    assert not other.same_database(same) and other.lock_key != same.lock_key


def test_a_redis_url_is_the_database_its_client_selects(monkeypatch: pytest.MonkeyPatch) -> None:
    broker = urlsplit(os.environ["CELERY_BROKER_URL"])
    number = broker.path.strip("/")
    monkeypatch.setenv("QUERY_DB_URL", f"redis://127.0.0.1:6379/{(int(number) + 1) % 16}?db={number}")
    monkeypatch.setenv("LOCALHOST_URL", f"redis://localhost:6379/{number}")
    found = identity_from_env("redis", "QUERY_DB_URL")
    assert found.database == number  # ?db= wins over the path, as in redis-py
    assert found.same_database(identity_from_env("redis", "LOCALHOST_URL"))


# --- two records, one database --------------------------------------------------------------------------------------


def test_an_alias_in_an_unprotected_environment_cannot_restore_over_production(
    prod_backup: BackupArtifact,
    source_db: SourceDb,
    dev: Environment,
    operator: Any,
    admin_client: Client,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The review's attack: `prod-alias` in `dev` reaches the production database; restoring it in place would
    overwrite production with no approval."""
    before = table_fingerprints(source_db.url)
    monkeypatch.setenv("PROD_ALIAS_URL", other_spelling(source_db.url))
    for url_env in (source_db.url_env, "PROD_ALIAS_URL"):  # the same variable, and another spelling of the URL
        page = admin_add_datastore(admin_client, dev, "prod-alias", "postgres", url_env)
        assert "reaches the same database as prod-db (prod)" in page
    assert not Datastore.objects.filter(name="prod-alias").exists()
    assert len(refusals(AuditEvent.Action.CONFIG_REFUSED)) == 2

    # Created behind the admin's back (a fixture, a script, the shell): every job still refuses it.
    alias = DatastoreFactory(name="prod-alias", environment=dev, url_env="PROD_ALIAS_URL")
    with pytest.raises(RestoreRefused, match="prod-alias .* reaches the same database as prod-db"):
        request_into(prod_backup, alias, operator)
    datastore_health_check()  # a worker's check stores both identities, which a backup request reads
    with pytest.raises(BackupRefused, match="reaches the same database as prod-db"):
        backup_artifact_request(datastore=alias, trigger="test", enqueue=False)
    assert not RestoreRun.objects.exists()
    assert "reaches the same database as prod-db" in refusals()[0]
    assert table_fingerprints(source_db.url) == before
    health = {row.datastore.name: row for row in DatastoreHealth.objects.select_related("datastore")}
    assert health["prod-alias"].state == health["prod-db"].state == DatastoreHealth.State.CONFLICT
    assert "reaches the same database as prod-alias" in health["prod-db"].message


def test_loadconfig_refuses_two_records_of_one_database(
    source_db: SourceDb, tmp_path: Any, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("ALIAS_URL", other_spelling(source_db.url))
    config = tmp_path / "console.toml"
    config.write_text(
        "[environments.prod]\nprotected = true\n[environments.dev]\n"
        f'[[datastores]]\nname = "prod-db"\nenvironment = "prod"\nkind = "postgres"\nurl_env = "{source_db.url_env}"\n'
        '[[datastores]]\nname = "prod-alias"\nenvironment = "dev"\nkind = "postgres"\nurl_env = "ALIAS_URL"\n'
    )
    with pytest.raises(CommandError, match="1 error"):
        call_command("loadconfig", str(config))
    assert "prod-alias (ALIAS_URL) reaches the same database as prod-db" in capsys.readouterr().err
    assert not Datastore.objects.exists()
    assert AuditEvent.objects.filter(action=AuditEvent.Action.CONFIG_REFUSED).exists()


# --- the URL changes after the approval -----------------------------------------------------------------------------


@pytest.fixture
def other_db() -> Any:
    name = "drt_other_" + os.urandom(5).hex()
    create_database(name)
    yield database_url(name)
    drop_database(name)


def test_a_target_that_moved_after_the_approval_fails_before_anything_is_touched(
    prod_backup: BackupArtifact,
    prod: Datastore,
    source_db: SourceDb,
    other_db: str,
    operator: Any,
    approver: Any,
    admin_client: Client,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    run = restore_run_request(
        artifact=prod_backup,
        target_kind=Kind.IN_PLACE,
        confirm="prod-db",
        requested_by=operator,
        reason="bad migration",
        enqueue=False,
    )
    restore_run_approve(run_id=run.pk, approver=approver, enqueue=False)

    # Changing the record's variable while the run is active is refused ...
    monkeypatch.setenv("OTHER_URL", other_db)
    response = admin_client.post(
        reverse("admin:inventory_datastore_change", args=[prod.pk]),
        {
            "environment": prod.environment_id,
            "name": "prod-db",
            "kind": "postgres",
            "url_env": "OTHER_URL",
            "rpo_target": "1 00:00:00",
            "rto_target": "01:00:00",
            "backup_schedule_timezone": "UTC",
        },
    )
    page = response.content.decode()
    assert f"prod-db has active runs (restore #{run.pk} (queued)): its url_env cannot change" in page, re.findall(
        r'class="errorlist[^"]*">(.*?)</ul>', page, re.S
    )
    prod.refresh_from_db()
    assert prod.url_env == source_db.url_env

    # ... and a URL changed where the worker reads it is caught at launch.
    monkeypatch.setenv(source_db.url_env, other_db)
    before = table_fingerprints(other_db)
    restore_run_execute(run_id=run.pk)

    run.refresh_from_db()
    assert run.status == Status.FAILED
    assert "is not the database this restore was requested for" in run.error
    assert "nothing was restored" in run.error
    assert table_fingerprints(other_db) == before
    assert not TargetLock.objects.exists()
    assert run.safety_backup_id is None
    assert not [p for p in psutil.Process().children(recursive=True) if p.name() in ("pg_restore", "pg_dump")]
    finished = AuditEvent.objects.get(action=AuditEvent.Action.RESTORE_FINISHED, object_id=str(run.pk))
    assert finished.details["status"] == Status.FAILED


# --- the console's own database and broker --------------------------------------------------------------------------


def test_the_consoles_own_database_is_never_a_target(
    prod_backup: BackupArtifact,
    dev: Environment,
    operator: Any,
    admin_client: Client,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """`pg_restore --clean` over the console's database would drop the audit table: a record reaching it is
    refused, however its URL is spelled."""
    own = connection.settings_dict
    own_url = f"postgresql://{own['USER'] or 'postgres'}@localhost:{own['PORT'] or 5432}/{own['NAME']}"
    monkeypatch.setenv("SNEAKY_URL", own_url)
    page = admin_add_datastore(admin_client, dev, "sneaky", "postgres", "SNEAKY_URL")
    assert "is the console&#x27;s own database" in page

    sneaky = DatastoreFactory(name="sneaky", environment=dev, url_env="SNEAKY_URL")
    with pytest.raises(RestoreRefused, match="is the console's own database"):
        request_into(prod_backup, sneaky, operator)
    assert AuditEvent.objects.filter(action=AuditEvent.Action.RESTORE_REFUSED).count() == 1
    datastore_health_check(datastore_ids=[sneaky.pk])
    assert DatastoreHealth.objects.get(datastore=sneaky).state == DatastoreHealth.State.CONFLICT


@pytest.mark.parametrize("spelling", ["query", "localhost"])
def test_the_broker_is_refused_whatever_the_spelling(
    spelling: str, dev: Environment, admin_client: Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    number = urlsplit(os.environ["CELERY_BROKER_URL"]).path.strip("/")
    url = {
        "query": f"redis://127.0.0.1:6379/{(int(number) + 1) % 16}?db={number}",
        "localhost": f"redis://localhost:6379/{number}",
    }[spelling]
    monkeypatch.setenv("QUEUE_URL", url)
    page = admin_add_datastore(admin_client, dev, "queue", "redis", "QUEUE_URL")
    assert "is the console&#x27;s own task broker" in page
    assert not Datastore.objects.filter(name="queue").exists()


def test_with_the_embedded_broker_a_redis_datastore_is_accepted(
    app_redis: AppRedis, dev: Environment, admin_client: Client, settings: Any
) -> None:
    """The embedded broker is not Redis: no Redis datastore is its broker (each was refused before)."""
    settings.CELERY_BROKER_URL = "filesystem://localhost/"
    response = admin_client.post(
        reverse("admin:inventory_datastore_add"),
        {
            "environment": dev.pk,
            "name": "jobs",
            "kind": "redis",
            "url_env": app_redis.url_env,
            "rpo_target": "1 00:00:00",
            "rto_target": "01:00:00",
            "backup_schedule_timezone": "UTC",
        },
    )
    assert response.status_code == 302, response.content.decode()[:2000]
    assert Datastore.objects.filter(name="jobs").exists()


# --- protected data -------------------------------------------------------------------------------------------------


def test_production_data_leaves_its_environment_only_with_approval(
    prod_backup: BackupArtifact,
    prod: Datastore,
    dev: Environment,
    new_database_name: str,
    operator: Any,
    app_redis: AppRedis,
) -> None:
    """A new database overwrites nothing, but it copies production data where the operator can read it."""
    run = restore_run_request(
        artifact=prod_backup,
        target_kind=Kind.NEW_DATABASE,
        new_database_name=new_database_name,
        requested_by=operator,
        reason="look at yesterday's rows",
        enqueue=False,
    )
    assert run.status == Status.AWAITING_APPROVAL and run.required_approvals == 1
    requested = AuditEvent.objects.get(action=AuditEvent.Action.RESTORE_REQUESTED, object_id=str(run.pk))
    assert requested.details["protected_data"] is True
    assert requested.details["target_identity"]["database"] == new_database_name

    # The environment can say its data is not protected, separately from its targets.
    Environment.objects.filter(pk=prod.environment_id).update(protected_data=False)
    prod_backup.refresh_from_db()
    again = restore_run_request(
        artifact=prod_backup,
        target_kind=Kind.NEW_DATABASE,
        new_database_name=new_database_name + "_b",
        requested_by=operator,
        reason="look at yesterday's rows",
        enqueue=False,
    )
    assert again.status == Status.QUEUED and again.required_approvals == 0
