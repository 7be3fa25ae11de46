"""The catalog rebuilt from a location's manifests: a console that lost its database gets its backups back with the
same ids and checksums, and restores from the encrypted off-site copy; altered manifests, missing files and
conflicting ids are said and skipped; twice is once; a dry run records nothing. Real files, real pg_dump and
pg_restore, the real age key."""

from __future__ import annotations

import json
from io import StringIO
from pathlib import Path
from typing import Any

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db import connection
from django.test import Client
from django.urls import reverse

from audit.models import AuditEvent
from backups.manifests import _digest, manifest_key, manifest_parse
from backups.models import ArtifactCopy, BackupArtifact, BackupVerification
from backups.services import backup_artifact_request
from inventory.models import Datastore, Environment
from restores.models import RestoreRun
from tests.backups.test_locations import backed_up, restored
from tests.support.cli import manage
from tests.support.postgres import SourceDb, database_url, table_fingerprints

pytestmark = pytest.mark.django_db(transaction=True)

BACKUP_FIELDS = [
    "pk",
    "format",
    "compression_level",
    "created_at",
    "started_at",
    "finished_at",
    "plaintext_sha256",
    "plaintext_size",
    "archive_entries",
    "row_counts",
    "tool_version",
    "server_version",
    "trigger",
]


def console_database_lost() -> None:
    """What a console that lost its database has after `migrate` and before `loadconfig`: no backups, copies or
    verifications, no datastore, no environment; the id sequence starts again at 1. The storage locations stay
    (the configuration file loadconfig reads defines them), and so do the files."""
    ArtifactCopy.objects.all().delete()
    BackupVerification.objects.all().delete()
    BackupArtifact.objects.all().delete()
    Environment.objects.update(postgres_datastore=None, redis_datastore=None)
    Datastore.objects.all().delete()
    Environment.objects.all().delete()
    with connection.cursor() as cursor:
        table = BackupArtifact._meta.db_table
        cursor.execute(f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), 1, false)")


def rebuild(location: str, *options: str) -> dict[str, Any]:
    out = StringIO()
    call_command("catalog", "rebuild", "--location", location, "--json", *options, stdout=out, stderr=StringIO())
    return json.loads(out.getvalue())


def rebuild_refused(location: str, *options: str) -> dict[str, Any]:
    """A rebuild that skipped or conflicted: exit status 1, and still its one JSON document naming each one."""
    out = StringIO()
    with pytest.raises(CommandError, match="not imported"):
        call_command("catalog", "rebuild", "--location", location, "--json", *options, stdout=out, stderr=StringIO())
    return json.loads(out.getvalue())


def outcomes(report: dict[str, Any]) -> list[tuple[str, int | None]]:
    return [(entry["outcome"], entry["backup_id"]) for entry in report["entries"]]


def snapshot(artifact: BackupArtifact) -> dict[str, Any]:
    return {name: getattr(artifact, name) for name in BACKUP_FIELDS}


def test_a_console_that_lost_its_database_rebuilds_its_catalog_and_restores_from_the_off_site_copy(
    source_db: SourceDb,
    two_locations: tuple[Path, Path],
    operator: Any,
    new_database_name: str,
    client: Client,
) -> None:
    original = backed_up(source_db)
    copy = original.copies.get()
    before, datastore, environment = snapshot(original), original.datastore, original.datastore.environment
    console_database_lost()

    report = rebuild("offsite")

    assert outcomes(report) == [("imported", original.pk)]
    assert report["datastores_created"] == [datastore.name]
    assert report["environments_created"] == [environment.name]
    artifact = BackupArtifact.objects.select_related("datastore__environment").get()
    assert snapshot(artifact) == before  # the same id, times, checksums, row counts and versions
    assert artifact.status == BackupArtifact.Status.SUCCEEDED
    assert artifact.verification == BackupArtifact.Verification.UNVERIFIED  # nothing has read it whole since
    assert (artifact.origin, artifact.origin_detail) == (BackupArtifact.Origin.REBUILT, "catalog:offsite")
    # Its file is the one this console can read: the encrypted off-site copy.
    assert (artifact.location, artifact.storage_key, artifact.sha256) == ("offsite", copy.storage_key, copy.sha256)
    assert (artifact.size_bytes, artifact.recipients) == (copy.size_bytes, copy.recipients)
    rebuilt = artifact.datastore
    assert (rebuilt.name, rebuilt.kind, rebuilt.url_env) == (datastore.name, datastore.kind, datastore.url_env)
    # An environment the configuration has not described yet is protected until it says otherwise.
    assert rebuilt.environment.name == environment.name and rebuilt.environment.protected
    event = AuditEvent.objects.get(action=AuditEvent.Action.CATALOG_REBUILT)
    assert event.details["location"] == "offsite" and event.details["imported"] == [original.pk]
    assert event.details["environments_created"] == [environment.name]

    # The next backup does not take a rebuilt id: the sequence was moved past it.
    Environment.objects.update(protected=False)  # what loadconfig does when the file says so
    assert backup_artifact_request(datastore=rebuilt, trigger="test", enqueue=False).pk > original.pk
    BackupArtifact.objects.exclude(pk=original.pk).delete()

    # The page says that the rebuilt record's file has not been read since.
    client.force_login(operator)
    page = client.get(reverse("backups:artifact_detail", args=[artifact.pk])).content.decode()
    assert "Rebuilt from a location&#x27;s manifests" in page and "catalog:offsite" in page
    assert "nothing has read the whole file since" in page

    # The restore decrypts the off-site copy with OFFSITE_AGE_IDENTITY, and the database comes back exact.
    run = restored(BackupArtifact.objects.get(pk=artifact.pk), operator, new_database_name)
    assert run.status == RestoreRun.Status.SUCCEEDED, run.error
    assert "read from offsite (primary)" in run.source_note
    assert table_fingerprints(database_url(new_database_name)) == table_fingerprints(source_db.url)

    # The local location's file comes back as a verified copy; then running either again records nothing.
    assert outcomes(rebuild("local")) == [("copy", original.pk)]
    local = artifact.copies.get()
    assert (local.location, local.status, local.storage_key) == ("local", "verified", original.storage_key)
    assert (local.sha256, local.recipients) == (original.sha256, [])
    assert outcomes(rebuild("offsite")) == [("present", original.pk)]
    assert outcomes(rebuild("local")) == [("present", original.pk)]
    assert BackupArtifact.objects.count() == 1 and ArtifactCopy.objects.count() == 1
    assert AuditEvent.objects.filter(action=AuditEvent.Action.CATALOG_REBUILT).count() == 4


def test_the_rebuild_runs_as_a_script_would_and_prints_one_json_document(
    source_db: SourceDb, two_locations: tuple[Path, Path]
) -> None:
    original = backed_up(source_db)
    console_database_lost()

    done = manage("catalog", "rebuild", "--location", "offsite", "--json")

    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)  # the whole of stdout is one document
    assert outcomes(report) == [("imported", original.pk)] and report["hashed"] is True
    assert BackupArtifact.objects.get().pk == original.pk

    again = manage("catalog", "rebuild", "--location", "offsite")
    assert again.returncode == 0, again.stderr
    assert "0 backup(s) imported" in again.stdout and "1 already in the catalog" in again.stdout

    unknown = manage("catalog", "rebuild", "--location", "nowhere", "--json")
    assert unknown.returncode == 1
    assert json.loads(unknown.stdout) == {
        "error": "no storage location is named nowhere; configured: local, offsite (and default); load the "
        "configuration first (`manage.py loadconfig FILE`)"
    }
    assert "Traceback" not in unknown.stderr


def test_a_dry_run_reads_and_hashes_but_records_nothing(source_db: SourceDb, two_locations: tuple[Path, Path]) -> None:
    original = backed_up(source_db)
    name = original.datastore.name
    console_database_lost()
    audited = AuditEvent.objects.count()

    report = rebuild("offsite", "--dry-run")

    assert report["dry_run"] is True and outcomes(report) == [("imported", original.pk)]
    assert report["datastores_created"] == [name]
    assert not BackupArtifact.objects.exists() and not Datastore.objects.exists() and not Environment.objects.exists()
    assert AuditEvent.objects.count() == audited


def test_altered_manifests_missing_files_and_forged_keys_are_said_and_skipped(
    source_db: SourceDb, two_locations: tuple[Path, Path]
) -> None:
    local, offsite = two_locations
    original = backed_up(source_db)
    copy = original.copies.get()
    console_database_lost()
    # Off site: one byte of the manifest changed (its checksum no longer matches).
    manifest = offsite / manifest_key(copy.storage_key)
    manifest.write_text(manifest.read_text().replace('"trigger": "test"', '"trigger": "tesT"'))
    # Locally: the backup's file deleted by hand, and a forged manifest (its checksum recomputed, as anyone who can
    # write there can) that points at a file that is not next to it.
    (local / original.storage_key).unlink()
    body = manifest_parse((local / manifest_key(original.storage_key)).read_bytes(), where="test").body
    forged = {**body, "key": "../../../etc/passwd"}
    (local / "forged.manifest.json").write_text(json.dumps({**forged, "manifest_sha256": _digest(forged)}))

    altered = rebuild_refused("offsite")
    assert outcomes(altered) == [("skipped", None)]
    assert "its checksum does not match its content" in altered["entries"][0]["message"]
    missing = {entry["manifest"]: entry for entry in rebuild_refused("local")["entries"]}
    assert missing.keys() == {"forged.manifest.json", manifest_key(original.storage_key)}
    assert "it describes ../../../etc/passwd, not the file next to it" in missing["forged.manifest.json"]["message"]
    lost = missing[manifest_key(original.storage_key)]
    assert (lost["outcome"], lost["backup_id"]) == ("skipped", original.pk)
    assert f"the file {original.storage_key} is missing from local" in lost["message"]
    assert not BackupArtifact.objects.exists() and not Datastore.objects.exists()


def test_an_altered_file_is_not_imported_and_a_taken_id_is_a_conflict(
    source_db: SourceDb, two_locations: tuple[Path, Path], operator: Any
) -> None:
    local, _offsite = two_locations
    original = backed_up(source_db)
    console_database_lost()
    data = bytearray((local / original.storage_key).read_bytes())
    data[-50] ^= 0x01  # the same size: only hashing finds it
    (local / original.storage_key).write_bytes(bytes(data))

    assert "hashes to" in rebuild_refused("local")["entries"][0]["message"]
    # Without hashing, only the size is checked: the row comes back not verified, and the report says so.
    assert outcomes(rebuild("local", "--no-hash", "--as", operator.username)) == [("imported", original.pk)]
    assert BackupArtifact.objects.get().verification == BackupArtifact.Verification.UNVERIFIED
    event = AuditEvent.objects.filter(action=AuditEvent.Action.CATALOG_REBUILT).latest("pk")
    assert (event.actor, event.details["hashed"], event.details["imported"]) == (operator, False, [original.pk])
    # Unhashed, the off-site file is not recorded as a copy: a copy row means its bytes were read there.
    assert "recorded as a copy only once hashed" in rebuild_refused("offsite", "--no-hash")["entries"][0]["message"]
    # The same id with other content is another backup: a conflict, never overwritten.
    BackupArtifact.objects.update(plaintext_sha256="0" * 64)
    conflict = rebuild_refused("offsite")
    assert outcomes(conflict) == [("conflict", original.pk)]
    assert "not overwritten" in conflict["entries"][0]["message"]
    assert BackupArtifact.objects.get().plaintext_sha256 == "0" * 64 and not ArtifactCopy.objects.exists()


def test_write_manifests_gives_older_backups_the_manifest_a_rebuild_needs(
    source_db: SourceDb, two_locations: tuple[Path, Path]
) -> None:
    local, offsite = two_locations
    original = backed_up(source_db)
    copy = original.copies.get()
    written_then = manifest_parse((offsite / manifest_key(copy.storage_key)).read_bytes(), where="test").body
    for path in (local / manifest_key(original.storage_key), offsite / manifest_key(copy.storage_key)):
        path.unlink()  # taken before manifests existed

    out = StringIO()
    call_command("catalog", "write-manifests", "--location", "offsite", "--dry-run", stdout=out)
    assert "1 manifest(s) to write" in out.getvalue() and not (offsite / manifest_key(copy.storage_key)).exists()
    for location in ("local", "offsite"):
        out = StringIO()
        call_command("catalog", "write-manifests", "--location", location, "--json", stdout=out)
        assert json.loads(out.getvalue())["written"] != []
    again = StringIO()
    call_command("catalog", "write-manifests", "--location", "offsite", "--json", stdout=again)
    assert json.loads(again.getvalue())["written"] == [] and json.loads(again.getvalue())["already_there"] == 1
    assert manifest_parse((offsite / manifest_key(copy.storage_key)).read_bytes(), where="test").body == written_then

    console_database_lost()
    assert outcomes(rebuild("offsite")) == [("imported", original.pk)]
