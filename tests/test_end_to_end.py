"""End to end through a real Celery worker and the real Redis broker: what `manage.py ... --wait` does."""

from __future__ import annotations

import json
from typing import Any

import pytest
from django.core.management import call_command

from backups.models import BackupArtifact
from tests.factories import DatastoreFactory
from tests.support.postgres import SourceDb, database_url, table_fingerprints

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.worker]


def restore_into_protected_after_approval(
    capsys: pytest.CaptureFixture[str], backup_id: int, target: str, *options: str
) -> dict[str, Any]:
    """olga requests the restore on the command line (typed confirmation), it waits; abel approves and waits for
    the worker to run it. Returns the run as `--json` prints it."""
    call_command("restore", str(backup_id), "--into", target, "--as", "olga", "--confirm", target, "--json", *options)
    run = json.loads(capsys.readouterr().out)
    assert run["status"] == "awaiting_approval"
    call_command("approve", str(run["id"]), "--as", "abel", "--wait", "--json", "--timeout", "180")
    return dict(json.loads(capsys.readouterr().out))


def test_backup_verify_and_restore_through_a_worker(
    celery_worker_thread: None,
    source_db: SourceDb,
    new_database_name: str,
    operator: Any,
    capsys: pytest.CaptureFixture[str],
) -> None:
    DatastoreFactory(name="prod-db", url_env=source_db.url_env)

    call_command("backup", "prod-db", "--wait", "--json", "--timeout", "120")
    backup = json.loads(capsys.readouterr().out)
    assert backup["status"] == "succeeded", backup["error"]

    call_command("verify", str(backup["id"]), "--wait", "--json", "--timeout", "120")
    assert json.loads(capsys.readouterr().out)["verification"] == "verified"

    call_command(
        "restore",
        str(backup["id"]),
        "--new-database",
        new_database_name,
        "--as",
        operator.username,
        "--reason",
        "check the backup",
        "--wait",
        "--json",
        "--timeout",
        "120",
    )
    restore = json.loads(capsys.readouterr().out)
    assert restore["status"] == "succeeded", restore["error"]
    assert table_fingerprints(database_url(new_database_name)) == table_fingerprints(source_db.url)
    assert BackupArtifact.objects.get(pk=backup["id"]).trigger.startswith("cli:")


def test_prod_restore_requested_on_the_command_line_approved_by_another_user_runs_on_a_worker(
    celery_worker_thread: None,
    source_db: SourceDb,
    operator: Any,
    approver: Any,
    http_stub: Any,
    capsys: pytest.CaptureFixture[str],
) -> None:
    from audit.models import AuditEvent
    from tests.factories import EnvironmentFactory

    prod = EnvironmentFactory(name="prod", protected=True, api_url=http_stub.url)
    DatastoreFactory(name="prod-db", environment=prod, url_env=source_db.url_env)
    call_command("backup", "prod-db", "--as", "olga", "--wait", "--json", "--timeout", "120")
    backup = json.loads(capsys.readouterr().out)
    with source_db.connect() as conn:
        conn.execute("TRUNCATE chunks")  # the incident
    run = restore_into_protected_after_approval(
        capsys, backup["id"], "prod-db", "--reason", "chunks truncated by a bad job"
    )

    assert run["status"] == "succeeded", run["error"]
    assert {c["name"] for c in run["checks"] if c["ok"]} == {
        "SELECT 1",
        "SELECT now()",
        "row counts",
        "GET /healthz",
        "GET /readyz",
    }
    assert run["safety_backup_id"] is not None
    with source_db.connect() as conn:
        assert conn.execute("SELECT count(*) FROM chunks").fetchone()[0] == 2000  # type: ignore[index]
    steps = list(
        AuditEvent.objects.filter(object_id=str(run["id"]), object_type="restores.restorerun")
        .order_by("pk")
        .values_list("action", "actor_label")
    )
    assert steps == [
        ("restore.requested", "olga"),
        ("restore.approved", "abel"),
        ("restore.launched", "console"),
        ("restore.finished", "console"),
    ]
    assert AuditEvent.objects.filter(action="backup.requested", actor_label="olga").exists()


def test_a_lost_redis_queue_is_restored_after_approval_through_a_worker(
    celery_worker_thread: None,
    app_redis: Any,
    operator: Any,
    approver: Any,
    http_stub: Any,
    capsys: pytest.CaptureFixture[str],
) -> None:
    from tests.factories import EnvironmentFactory
    from tests.support.redis import redis_contents, redis_fill_all_types

    prod = EnvironmentFactory(name="prod", protected=True, api_url=http_stub.url)
    DatastoreFactory(name="prod-queue", environment=prod, kind="redis", url_env=app_redis.url_env)
    redis_fill_all_types(app_redis.client)
    before = redis_contents(app_redis.client)
    call_command("backup", "prod-queue", "--as", "olga", "--wait", "--json", "--timeout", "120")
    backup = json.loads(capsys.readouterr().out)
    assert backup["status"] == "succeeded", backup["error"]
    assert backup["format"] == "redis_snapshot" and backup["archive_entries"] == 15
    call_command("verify", str(backup["id"]), "--wait", "--json", "--timeout", "120")
    assert json.loads(capsys.readouterr().out)["verification"] == "verified"
    app_redis.client.flushdb()  # the incident: the queue's Redis is lost
    app_redis.client.set("s:plain", "written after the incident")

    run = restore_into_protected_after_approval(
        capsys, backup["id"], "prod-queue", "--replace", "--reason", "Redis lost its data"
    )

    assert run["status"] == "succeeded", run["error"]
    assert [(c["name"], c["ok"]) for c in run["checks"]] == [
        ("PING", True),
        ("keys restored", True),
        ("keys present", True),
        ("GET /healthz", True),
        ("GET /readyz", True),
    ]
    assert run["options"] == {"replace": True, "key_pattern": ""}
    assert redis_contents(app_redis.client) == before
    safety = BackupArtifact.objects.get(pk=run["safety_backup_id"])
    assert (safety.format, safety.archive_entries) == ("redis_snapshot", 1)
