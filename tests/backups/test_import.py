"""Importing a pg_dump file as a backup: a real dump of a real database, stored, verified, restored into a new
database with the same content; anything else refused in one line, leaving nothing behind."""

from __future__ import annotations

import hashlib
import json
import subprocess
from pathlib import Path
from typing import Any

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.test import Client
from django.urls import reverse

from audit.models import AuditEvent
from backups.models import BackupArtifact, BackupVerification
from backups.postgres import archive_toc, pg_tool
from backups.verification import backup_verification_execute
from inventory.models import Datastore
from restores.models import RestoreRun
from restores.services import restore_run_execute, restore_run_request
from tests.factories import DatastoreFactory
from tests.support.postgres import SourceDb, database_url, table_fingerprints
from tests.support.storage import stored_files

pytestmark = pytest.mark.django_db


def pg_dump(url: str, path: Path, fmt: str) -> Path:
    subprocess.run(["pg_dump", f"--format={fmt}", f"--file={path}", url], check=True)
    return path


@pytest.fixture
def datastore(source_db: SourceDb) -> Datastore:
    return DatastoreFactory(name="orders", url_env=source_db.url_env)


def test_a_real_dump_is_imported_verified_and_restorable(
    datastore: Datastore,
    source_db: SourceDb,
    operator: Any,
    tmp_path: Path,
    artifact_dir: Path,
    new_database_name: str,
    capsys: pytest.CaptureFixture[str],
    django_capture_on_commit_callbacks: Any,
) -> None:
    dump = pg_dump(source_db.url, tmp_path / "orders-2026-12-01.dump", "custom")
    with django_capture_on_commit_callbacks(execute=True):
        call_command("import-backup", "orders", str(dump), "--as", "olga", "--json")
    summary = json.loads(capsys.readouterr().out)
    artifact = BackupArtifact.objects.get(pk=summary["id"])
    data = dump.read_bytes()
    assert artifact.status == BackupArtifact.Status.SUCCEEDED
    assert artifact.origin == BackupArtifact.Origin.IMPORTED and artifact.origin_detail == "orders-2026-12-01.dump"
    assert artifact.format == BackupArtifact.Format.PG_CUSTOM and artifact.triggered_by == operator
    assert artifact.sha256 == artifact.plaintext_sha256 == hashlib.sha256(data).hexdigest()
    assert artifact.size_bytes == artifact.plaintext_size == len(data)
    assert artifact.archive_entries == len(archive_toc(pg_tool("pg_restore"), path=str(dump)))
    assert artifact.row_counts == {}
    assert artifact.tool_version.startswith("pg_dump 1") and artifact.tool_version.endswith("(imported)")
    assert artifact.server_version.startswith("PostgreSQL 1")
    assert (artifact_dir / artifact.storage_key).read_bytes() == data
    assert f"{artifact.storage_key}.manifest.json" in stored_files(artifact_dir, manifests=True)
    (event,) = AuditEvent.objects.filter(action=AuditEvent.Action.BACKUP_IMPORTED)
    assert event.actor == operator and event.details["file"] == "orders-2026-12-01.dump"

    # Like after a backup, a verification was queued; run it here.
    verification = BackupVerification.objects.get(artifact=artifact)
    backup_verification_execute(verification_id=verification.pk)
    artifact.refresh_from_db()
    assert artifact.verification == BackupArtifact.Verification.VERIFIED

    run = restore_run_request(
        artifact=artifact,
        requested_by=operator,
        target_kind=RestoreRun.TargetKind.NEW_DATABASE,
        new_database_name=new_database_name,
        reason="check the imported dump",
        enqueue=False,
    )
    restore_run_execute(run_id=run.pk)
    run.refresh_from_db()
    assert run.status == RestoreRun.Status.SUCCEEDED, run.error
    assert table_fingerprints(database_url(new_database_name)) == table_fingerprints(source_db.url)


def test_the_pages_say_imported(datastore: Datastore, source_db: SourceDb, viewer: Any, tmp_path: Path) -> None:
    from backups.imports import backup_artifact_import

    dump = pg_dump(source_db.url, tmp_path / "orders.dump", "custom")
    artifact = backup_artifact_import(datastore=datastore, path=str(dump), imported_by=None, verify=False)
    client = Client()
    client.force_login(viewer)
    page = client.get(reverse("backups:artifact_detail", args=[artifact.pk])).content.decode()
    assert "Imported" in page and "orders.dump" in page and "its rows were not counted" in page
    assert "Imported" in client.get(reverse("backups:artifact_list")).content.decode()


@pytest.mark.parametrize(
    ("make", "message"),
    [
        pytest.param(
            lambda url, tmp: (tmp / "junk.dump").write_bytes(b"PGDMP but not really" * 100) and tmp / "junk.dump",
            "junk.dump is not a pg_dump custom-format archive",
            id="garbage",
        ),
        pytest.param(
            lambda url, tmp: pg_dump(url, tmp / "plain.sql", "plain"),
            "plain.sql is not a pg_dump custom-format archive",
            id="plain-sql",
        ),
        pytest.param(
            lambda url, tmp: pg_dump(url, tmp / "dump.tar", "tar"),
            "dump.tar is a TAR archive: only the custom format",
            id="tar",
        ),
    ],
)
def test_anything_but_a_custom_archive_is_refused_in_one_line_leaving_nothing(
    datastore: Datastore, source_db: SourceDb, tmp_path: Path, artifact_dir: Path, make: Any, message: str
) -> None:
    path = make(source_db.url, tmp_path)
    with pytest.raises(CommandError) as refused:
        call_command("import-backup", "orders", str(path))
    assert message in str(refused.value) and "\n" not in str(refused.value)
    assert not BackupArtifact.objects.exists()
    assert stored_files(artifact_dir, manifests=True) == []
    assert not AuditEvent.objects.filter(action=AuditEvent.Action.BACKUP_IMPORTED).exists()


def test_a_redis_datastore_refuses_an_import(source_db: SourceDb, tmp_path: Path) -> None:
    DatastoreFactory(name="cache", kind=Datastore.Kind.REDIS)
    dump = pg_dump(source_db.url, tmp_path / "x.dump", "custom")
    with pytest.raises(CommandError, match="cache is a Redis datastore: only pg_dump custom-format files"):
        call_command("import-backup", "cache", str(dump))
    assert not BackupArtifact.objects.exists()


def test_a_viewer_may_not_import(datastore: Datastore, source_db: SourceDb, viewer: Any, tmp_path: Path) -> None:
    dump = pg_dump(source_db.url, tmp_path / "x.dump", "custom")
    with pytest.raises(CommandError, match="may not import backups"):
        call_command("import-backup", "orders", str(dump), "--as", "vera")
    assert not BackupArtifact.objects.exists()
