"""End to end through a real Celery worker and the real Redis broker: what `manage.py ... --wait` does."""

from __future__ import annotations

import json
from typing import Any

import pytest
from django.core.management import call_command

from backups.models import BackupArtifact
from tests.conftest import SourceDb, database_url, table_fingerprints
from tests.factories import DatastoreFactory

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.worker]


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
