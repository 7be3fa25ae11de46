"""Artifact storage works with any Django storage backend: here one with no local paths (like S3), so the
copy-based promotion and the streamed scratch copy for restores are the paths taken."""

from __future__ import annotations

from typing import Any

import pytest
from django.core.files.storage import storages

from backups.models import BackupArtifact
from backups.services import backup_artifact_execute, backup_artifact_request
from backups.verification import backup_artifact_verify
from restores.models import RestoreRun
from restores.services import restore_run_execute, restore_run_request
from tests.factories import DatastoreFactory
from tests.support.postgres import SourceDb, database_url, table_fingerprints

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def remote_like_storage(settings: Any) -> Any:
    settings.STORAGES = {**settings.STORAGES, "artifacts": {"BACKEND": "django.core.files.storage.InMemoryStorage"}}
    return storages["artifacts"]


def test_backup_verify_restore_through_a_storage_without_local_paths(
    remote_like_storage: Any, source_db: SourceDb, new_database_name: str, settings: Any, operator: Any
) -> None:
    datastore = DatastoreFactory(url_env=source_db.url_env)
    artifact = backup_artifact_request(datastore=datastore, trigger="test", enqueue=False)
    backup_artifact_execute(artifact_id=artifact.pk, verify_after=False)
    artifact.refresh_from_db()
    assert artifact.status == BackupArtifact.Status.SUCCEEDED, artifact.error
    assert remote_like_storage.exists(artifact.storage_key)
    assert remote_like_storage.size(artifact.storage_key) == artifact.size_bytes
    assert remote_like_storage.listdir("tmp")[1] == []  # the temporary copy was removed after promotion

    assert backup_artifact_verify(artifact_id=artifact.pk) == "verified"

    run = restore_run_request(
        requested_by=operator,
        reason="check",
        artifact=artifact,
        target_kind=RestoreRun.TargetKind.NEW_DATABASE,
        new_database_name=new_database_name,
        trigger="test",
        enqueue=False,
    )
    restore_run_execute(run_id=run.pk)
    run.refresh_from_db()
    assert run.status == RestoreRun.Status.SUCCEEDED, run.error
    assert table_fingerprints(database_url(new_database_name)) == table_fingerprints(source_db.url)
    from pathlib import Path

    assert list(Path(settings.DR_SCRATCH_DIR).iterdir()) == []  # the scratch copy is gone too
