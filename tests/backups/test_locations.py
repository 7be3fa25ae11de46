"""Storage locations: a backup goes to its primary location and is copied to each copy location, encrypted there to
its recipients; a restore falls back to a copy when the primary file is gone, and says so."""

from __future__ import annotations

import hashlib
import subprocess
from pathlib import Path
from typing import Any

import pytest

from backups.copies import artifact_copies_run_inline
from backups.models import ArtifactCopy, BackupArtifact
from backups.services import backup_artifact_execute, backup_artifact_request
from backups.verification import backup_artifact_verify
from inventory.models import StorageLocation
from restores.models import RestoreRun
from restores.services import restore_run_execute, restore_run_request
from tests.factories import DatastoreFactory
from tests.support.postgres import SourceDb, database_url, table_fingerprints
from tests.support.storage import stored_files

pytestmark = pytest.mark.django_db(transaction=True)


def backed_up(source_db: SourceDb) -> BackupArtifact:
    datastore = DatastoreFactory(url_env=source_db.url_env, storage_locations=["local", "offsite"])
    artifact = backup_artifact_request(datastore=datastore, trigger="test", enqueue=False)
    backup_artifact_execute(artifact_id=artifact.pk, verify_after=False)
    artifact.refresh_from_db()
    assert artifact.status == BackupArtifact.Status.SUCCEEDED, artifact.error
    artifact_copies_run_inline(artifact_id=artifact.pk)
    return artifact


def restored(artifact: BackupArtifact, operator: Any, name: str, **options: Any) -> RestoreRun:
    run = restore_run_request(
        requested_by=operator,
        reason="check",
        artifact=artifact,
        target_kind=RestoreRun.TargetKind.NEW_DATABASE,
        new_database_name=name,
        trigger="test",
        enqueue=False,
        **options,
    )
    restore_run_execute(run_id=run.pk)
    run.refresh_from_db()
    return run


def test_a_backup_is_copied_encrypted_off_site_and_the_copy_is_verified_there(
    source_db: SourceDb, two_locations: tuple[Path, Path], age_key: tuple[str, Path]
) -> None:
    local, offsite = two_locations
    artifact = backed_up(source_db)

    assert artifact.location == "local" and artifact.recipients == []
    assert stored_files(local) == [artifact.storage_key]
    copy = artifact.copies.get()
    assert copy.status == ArtifactCopy.Status.VERIFIED, copy.error
    assert copy.location == "offsite" and copy.storage_key == artifact.storage_key + ".age"
    assert copy.recipients == [age_key[0]]
    stored = (offsite / copy.storage_key).read_bytes()
    assert stored.startswith(b"age-encryption.org/v1")
    assert hashlib.sha256(stored).hexdigest() == copy.sha256
    # Both locations hold a manifest next to the file.
    assert stored_files(offsite, manifests=True) == sorted([copy.storage_key, copy.storage_key + ".manifest.json"])
    assert (local / (artifact.storage_key + ".manifest.json")).exists()
    # The standard tool opens the copy without the console: the plaintext is the dump the backup recorded.
    plain = subprocess.run(
        ["age", "-d", "-i", str(age_key[1]), str(offsite / copy.storage_key)], check=True, capture_output=True
    ).stdout
    assert hashlib.sha256(plain).hexdigest() == artifact.content_sha256 == artifact.sha256
    listing = subprocess.run(["pg_restore", "--list"], input=plain, check=True, capture_output=True).stdout.decode()
    assert "TABLE DATA public documents" in listing


def test_a_restore_falls_back_to_the_off_site_copy_when_the_local_file_is_gone(
    source_db: SourceDb, two_locations: tuple[Path, Path], operator: Any, new_database_name: str, settings: Any
) -> None:
    local, _offsite = two_locations
    artifact = backed_up(source_db)
    (local / artifact.storage_key).unlink()  # deleted by hand

    run = restored(artifact, operator, new_database_name)

    assert run.status == RestoreRun.Status.SUCCEEDED, run.error
    assert "read from offsite (copy #" in run.source_note
    assert f"local (primary): the file {artifact.storage_key} is missing" in run.source_note
    assert table_fingerprints(database_url(new_database_name)) == table_fingerprints(source_db.url)
    assert list(Path(settings.DR_SCRATCH_DIR).iterdir()) == []  # the decrypted scratch copy is gone


def test_a_corrupt_local_file_falls_back_and_a_missing_key_is_named(
    source_db: SourceDb,
    two_locations: tuple[Path, Path],
    operator: Any,
    new_database_name: str,
    monkeypatch: pytest.MonkeyPatch,
    age_key: tuple[str, Path],
) -> None:
    local, _offsite = two_locations
    artifact = backed_up(source_db)
    data = bytearray((local / artifact.storage_key).read_bytes())
    data[-50] ^= 0x01
    (local / artifact.storage_key).write_bytes(bytes(data))
    monkeypatch.delenv("OFFSITE_AGE_IDENTITY")

    run = restored(artifact, operator, new_database_name)

    assert run.status == RestoreRun.Status.FAILED
    assert "local (primary): sha256 mismatch" in run.error
    assert "OFFSITE_AGE_IDENTITY" in run.error and "nothing was restored" in run.error


def test_verification_of_an_encrypted_primary_needs_its_key(
    source_db: SourceDb, tmp_path: Path, age_key: tuple[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    StorageLocation.objects.create(
        name="sealed",
        backend="django.core.files.storage.FileSystemStorage",
        options={"location": str(tmp_path / "sealed")},
        recipients=[age_key[0]],
        identity_env="OFFSITE_AGE_IDENTITY",
    )
    datastore = DatastoreFactory(url_env=source_db.url_env, storage_locations=["sealed"])
    artifact = backup_artifact_request(datastore=datastore, trigger="test", enqueue=False)
    backup_artifact_execute(artifact_id=artifact.pk, verify_after=False)
    artifact.refresh_from_db()
    assert artifact.status == BackupArtifact.Status.SUCCEEDED, artifact.error
    assert artifact.storage_key.endswith(".dump.age") and artifact.sha256 != artifact.plaintext_sha256
    assert artifact.archive_entries  # the table of contents was read from the stream, before encryption

    assert backup_artifact_verify(artifact_id=artifact.pk) == "verified"
    monkeypatch.delenv("OFFSITE_AGE_IDENTITY")
    assert backup_artifact_verify(artifact_id=artifact.pk) == "unverified"
    artifact.refresh_from_db()
    assert "OFFSITE_AGE_IDENTITY" in artifact.verification_error


def test_a_restore_reads_the_location_the_operator_chose(
    source_db: SourceDb, two_locations: tuple[Path, Path], operator: Any, new_database_name: str
) -> None:
    artifact = backed_up(source_db)

    run = restored(artifact, operator, new_database_name, location="offsite")

    assert run.status == RestoreRun.Status.SUCCEEDED, run.error
    assert run.options["location"] == "offsite"
    assert run.source_note == f"read from offsite (copy #{artifact.copies.get().pk})"
    assert table_fingerprints(database_url(new_database_name)) == table_fingerprints(source_db.url)
