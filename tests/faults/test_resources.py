"""A backup that meets a full disk or a table another session keeps locked, a copy that meets a full disk at its copy
location: one clear error, no file left, the row failed with an audit event and a
notification, the lock released (a copy takes none: it can be asked for again, and succeeds)."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from django.core import mail

from audit.models import AuditEvent
from backups.copies import artifact_copies_request, artifact_copy_execute
from backups.models import ArtifactCopy, BackupArtifact
from backups.services import backup_artifact_execute, backup_artifact_request
from inventory.models import StorageLocation, TargetLock
from tests.factories import DatastoreFactory
from tests.faults.conftest import (
    CopyLocations,
    assert_no_temporary_files,
    assert_nothing_copied,
    audit_actions,
    large_backup_taken,
)
from tests.support.postgres import SourceDb
from tests.support.storage import stored_files

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def tiny_mount(tmp_path: Path) -> Iterator[Path]:
    """A 64 KiB tmpfs: far less than a dump (mount needs root, which CI has here)."""
    mount = tmp_path / "tiny"
    mount.mkdir()
    result = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(mount)], capture_output=True)
    assert result.returncode == 0, f"cannot mount a tmpfs for the full-disk test: {result.stderr.decode().strip()}"
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


@pytest.fixture
def tiny_disk(tiny_mount: Path, settings: Any) -> Path:
    """The tiny tmpfs as the artifact storage."""
    settings.STORAGES = {
        **settings.STORAGES,
        "artifacts": {
            "BACKEND": "django.core.files.storage.FileSystemStorage",
            "OPTIONS": {"location": str(tiny_mount)},
        },
    }
    return tiny_mount


def backup_now(url_env: str, settings: Any) -> BackupArtifact:
    settings.ALERT_EMAILS = ["oncall@example.test"]  # pytest-django's settings fixture: undone after the test
    datastore = DatastoreFactory(url_env=url_env)
    artifact = backup_artifact_request(datastore=datastore, trigger="test", enqueue=False)
    backup_artifact_execute(artifact_id=artifact.pk, verify_after=False)
    artifact.refresh_from_db()
    return artifact


def assert_failed_cleanly(artifact: BackupArtifact) -> None:
    assert artifact.status == BackupArtifact.Status.FAILED
    assert not artifact.storage_key
    assert AuditEvent.Action.BACKUP_FINISHED in audit_actions(artifact)
    assert [m.subject for m in mail.outbox] == [
        f"[DR Console] Backup #{artifact.pk} of {artifact.datastore.name} failed"
    ]
    assert not TargetLock.objects.exists()


def test_a_full_disk_mid_dump_is_one_clear_error_and_leaves_no_file(
    source_db: SourceDb, tiny_disk: Path, settings: Any
) -> None:
    with psycopg.connect(source_db.url, autocommit=True) as conn:  # well over 64 KiB, even compressed
        conn.execute(
            "CREATE TABLE filler AS SELECT md5(random()::text) || md5(random()::text) AS x "
            "FROM generate_series(1, 20000)"
        )
    artifact = backup_now(source_db.url_env, settings)
    assert artifact.error == "cannot write the artifact to storage: [Errno 28] No space left on device"
    assert_failed_cleanly(artifact)
    assert stored_files(tiny_disk) == []  # the temporary file went too


def test_a_table_held_locked_fails_the_dump_within_the_lock_wait_naming_it(source_db: SourceDb, settings: Any) -> None:
    settings.BACKUP_LOCK_WAIT_TIMEOUT = 2
    with psycopg.connect(source_db.url) as locker:
        locker.execute("LOCK TABLE public.chunks IN ACCESS EXCLUSIVE MODE")
        artifact = backup_now(source_db.url_env, settings)
    assert artifact.error.startswith(
        "pg_dump exited with status 1: table public.chunks stayed locked by another "
        "session for more than 2 s (BACKUP_LOCK_WAIT_TIMEOUT)"
    ), artifact.error
    assert artifact.duration is not None and artifact.duration.total_seconds() < 60  # not the 6 h time limit
    assert_failed_cleanly(artifact)


def copied(artifact: BackupArtifact, location: str) -> ArtifactCopy:
    """A copy of `artifact` to `location`, run in this process."""
    (copy,) = artifact_copies_request(artifact_id=artifact.pk, trigger="test", locations=[location], enqueue=False)
    artifact_copy_execute(copy_id=copy.pk)
    copy.refresh_from_db()
    return copy


def test_a_full_copy_location_is_one_clear_error_and_leaves_no_partial_copy(
    source_db: SourceDb, copy_locations: CopyLocations, tiny_mount: Path, artifact_dir: Path, settings: Any
) -> None:
    settings.ALERT_EMAILS = ["oncall@example.test"]
    StorageLocation.objects.create(
        name="tiny",
        role="copy",
        backend="django.core.files.storage.FileSystemStorage",
        options={"location": str(tiny_mount)},
        recipients=[copy_locations.recipient],
    )
    artifact = large_backup_taken(source_db)

    copy = copied(artifact, "tiny")

    assert copy.status == ArtifactCopy.Status.FAILED
    assert copy.error == "cannot copy to tiny: [Errno 28] No space left on device"
    assert AuditEvent.Action.COPY_FINISHED in audit_actions(artifact)
    assert [m.subject for m in mail.outbox] == [
        f"[DR Console] Copy to tiny #{copy.pk} of {artifact.datastore.name} failed"
    ]
    assert not copy.storage_key and not copy.verified_at
    assert_nothing_copied(tiny_mount)  # the temporary file went too
    assert_no_temporary_files(artifact_dir, settings.DR_SCRATCH_DIR)

    # Room is made; the copy asked for again succeeds.
    subprocess.run(["mount", "-o", "remount,size=16m", str(tiny_mount)], check=True, capture_output=True)
    again = copied(artifact, "tiny")
    assert again.status == ArtifactCopy.Status.VERIFIED, again.error
    assert stored_files(tiny_mount) == [again.storage_key]
