"""The issue's walk-through, as a test: a local folder and an S3-compatible bucket with Object Lock and
encryption; a backup whose off-site copy verifies; the local file deleted by hand; a restore that falls back to
the off-site copy, decrypted, every check passing."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import pytest

from backups.copies import artifact_copies_run_inline
from backups.models import ArtifactCopy, BackupArtifact
from backups.object_store import ObjectLocked, object_delete, object_retention
from backups.services import backup_artifact_execute, backup_artifact_request
from inventory.models import StorageLocation
from restores.models import RestoreRun
from restores.services import restore_run_execute, restore_run_request
from tests.factories import DatastoreFactory
from tests.support.age import age_keypair
from tests.support.postgres import SourceDb, database_url, table_fingerprints
from tests.support.s3 import FAKE_KEYS, REGION, S3Bucket

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def offsite(tmp_path: Path, s3_locked_bucket: S3Bucket, monkeypatch: pytest.MonkeyPatch) -> tuple[S3Bucket, Path]:
    key_file = tmp_path / "offsite-key.txt"
    recipient, text = age_keypair(key_file)
    monkeypatch.setenv("OFFSITE_AGE_IDENTITY", text)
    monkeypatch.setenv("OFFSITE_ACCESS_KEY_ID", FAKE_KEYS["access_key"])
    monkeypatch.setenv("OFFSITE_SECRET_ACCESS_KEY", FAKE_KEYS["secret_key"])
    StorageLocation.objects.create(
        name="local",
        backend="django.core.files.storage.FileSystemStorage",
        options={"location": str(tmp_path / "local")},
    )
    StorageLocation.objects.create(
        name="offsite",
        role="copy",
        region="eu-west",
        backend="storages.backends.s3.S3Storage",
        options={
            "bucket_name": s3_locked_bucket.name,
            "endpoint_url": s3_locked_bucket.endpoint_url,
            "region_name": REGION,
            "addressing_style": "path",
        },
        secret_options={"access_key": "OFFSITE_ACCESS_KEY_ID", "secret_key": "OFFSITE_SECRET_ACCESS_KEY"},
        object_lock="compliance",
        object_lock_days=1,
        recipients=[recipient],
        identity_env="OFFSITE_AGE_IDENTITY",
    )
    return s3_locked_bucket, key_file


def test_back_up_copy_off_site_lose_the_local_file_and_restore_from_the_locked_encrypted_copy(
    source_db: SourceDb,
    offsite: tuple[S3Bucket, Path],
    tmp_path: Path,
    operator: Any,
    new_database_name: str,
    settings: Any,
) -> None:
    bucket, key_file = offsite
    datastore = DatastoreFactory(url_env=source_db.url_env, storage_locations=["local", "offsite"])
    artifact = backup_artifact_request(datastore=datastore, trigger="test", enqueue=False)
    backup_artifact_execute(artifact_id=artifact.pk, verify_after=False)
    artifact.refresh_from_db()
    assert artifact.status == BackupArtifact.Status.SUCCEEDED, artifact.error

    (copy,) = artifact_copies_run_inline(artifact_id=artifact.pk)
    assert copy.status == ArtifactCopy.Status.VERIFIED, copy.error
    assert copy.retain_until is not None
    # In the bucket: the encrypted copy and its manifest, both locked for a day, and nothing else (no temporary
    # key, no unfinished upload).
    keys = sorted(v["Key"] for v in bucket.versions())
    assert keys == sorted([copy.storage_key, copy.storage_key + ".manifest.json"])
    assert bucket.uploads() == []
    mode, until = object_retention(bucket.storage, copy.storage_key)  # type: ignore[misc]
    assert mode == "COMPLIANCE" and until is not None and until > dt.datetime.now(dt.UTC)
    with pytest.raises(ObjectLocked):
        object_delete(bucket.storage, copy.storage_key)  # nobody deletes it before its date, the console neither
    body = bucket.client.get_object(Bucket=bucket.name, Key=copy.storage_key)["Body"].read()
    assert body.startswith(b"age-encryption.org/v1")

    (tmp_path / "local" / artifact.storage_key).unlink()  # the local file, deleted by hand

    run = restore_run_request(
        requested_by=operator,
        reason="the local disk is gone",
        artifact=artifact,
        target_kind=RestoreRun.TargetKind.NEW_DATABASE,
        new_database_name=new_database_name,
        trigger="test",
        enqueue=False,
    )
    restore_run_execute(run_id=run.pk)
    run.refresh_from_db()
    assert run.status == RestoreRun.Status.SUCCEEDED, run.error
    assert run.source_note.startswith(f"read from offsite (copy #{copy.pk}), after: local (primary): the file")
    assert table_fingerprints(database_url(new_database_name)) == table_fingerprints(source_db.url)
    assert all(check["ok"] for check in run.checks), run.checks
    assert list(Path(settings.DR_SCRATCH_DIR).iterdir()) == []


def test_the_reaper_aborts_the_upload_a_dead_job_left_and_keeps_a_running_one(
    source_db: SourceDb, offsite: tuple[S3Bucket, Path]
) -> None:
    """A worker killed mid-upload leaves an unfinished multipart upload (parts the bucket keeps and bills): the
    reaper's sweep aborts it once its job has ended, and never one whose job still runs."""
    from backups.services import backup_artifacts_delete_orphans

    bucket, _key_file = offsite
    datastore = DatastoreFactory(url_env=source_db.url_env, storage_locations=["local", "offsite"])
    ended = backup_artifact_request(datastore=datastore, trigger="test", enqueue=False)
    BackupArtifact.objects.filter(pk=ended.pk).update(status=BackupArtifact.Status.FAILED)
    running = backup_artifact_request(datastore=datastore, trigger="test", enqueue=False)
    for artifact in (ended, running):
        bucket.client.create_multipart_upload(Bucket=bucket.name, Key=f"env/db/2026/12/db-x-{artifact.pk}.dump.age")

    backup_artifacts_delete_orphans()

    assert [upload["Key"] for upload in bucket.uploads()] == [f"env/db/2026/12/db-x-{running.pk}.dump.age"]
