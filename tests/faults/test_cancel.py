"""Cancel, for every job type, while its tool runs on a real worker: from the job's page and from `manage.py cancel`.
Each ends cleanly: the row cancelled, an audit event, the tool's process group gone, no temporary file, the lock
released, and a second cancel harmless."""

from __future__ import annotations

import contextlib
import os
import threading
import time
from pathlib import Path
from typing import Any

import psycopg
import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.test import Client
from django.urls import reverse

from audit.models import AuditEvent
from backups.copies import artifact_copies_request, artifact_copy_cancel
from backups.models import ArtifactCopy, BackupArtifact, BackupVerification
from backups.services import backup_artifact_request
from backups.verification import backup_verification_request
from drills.models import DrillRun
from drills.services import drill_run_request
from inventory.models import StorageLocation, TargetLock
from reprocess.models import ReprocessBatch
from reprocess.sender import FLUSH_SECONDS
from reprocess.services import reprocess_batch_send
from restores.models import RestoreRun
from restores.services import restore_run_request
from tests.factories import EnvironmentFactory, ReprocessBatchFactory
from tests.faults.conftest import (
    CopyLocations,
    Gate,
    SlowApi,
    assert_gone,
    assert_group_gone,
    assert_no_temporary_files,
    assert_nothing_copied,
    audit_actions,
    database_exists,
    large_backup_taken,
    wait_until,
    with_password,
)
from tests.support.postgres import SourceDb, backup_taken
from tests.support.storage import stored_files

VIA = ["page", "cli"]


def cancel(via: str, client: Client, *, kind: str, job: Any, url: str) -> None:
    """Cancel from the page (a POST, as the button sends it) or the command line; then again, harmlessly."""
    if via == "page":
        assert client.post(url, follow=True).status_code == 200
        page = client.post(url, follow=True).content.decode()
        assert "nothing to cancel" in page or "had already ended" in page
    else:
        call_command("cancel", kind, str(job.pk), "--as", "olga")
        with pytest.raises(CommandError, match="nothing to cancel"):
            call_command("cancel", kind, str(job.pk), "--as", "olga")


def ended(model: Any, pk: int) -> Any:
    return wait_until(lambda: (row := model.objects.get(pk=pk)).is_finished and row, what="the job to end")


@pytest.fixture
def operator_client(operator: Any) -> Client:
    client = Client()
    client.force_login(operator)
    return client


@pytest.mark.parametrize("via", VIA)
def test_cancel_a_backup_while_pg_dump_runs(
    via: str, start_worker: Any, source_db: SourceDb, operator_client: Client, artifact_dir: Path, settings: Any
) -> None:
    artifact = backup_taken(source_db.url_env)
    datastore = artifact.datastore
    worker = start_worker(BACKUP_LOCK_WAIT_TIMEOUT="300")
    with psycopg.connect(source_db.url) as locker:  # pg_dump waits for this lock: it is running, not done
        locker.execute("LOCK TABLE public.chunks IN ACCESS EXCLUSIVE MODE")
        running = backup_artifact_request(datastore=datastore, trigger="test")
        group = wait_until(
            lambda: BackupArtifact.objects.get(pk=running.pk).process_group, what="the group", log=worker.log
        )
        tool = next(p for p in worker.tree() if p.pid == group)  # the dump itself, not a version probe
        url = reverse("backups:artifact_cancel", args=[running.pk])
        cancel(via, operator_client, kind="backup", job=running, url=url)
        running = ended(BackupArtifact, running.pk)
    assert running.status == BackupArtifact.Status.CANCELLED and running.error == "cancelled by olga"
    assert_gone([tool])
    assert_group_gone(tool.pid)
    assert AuditEvent.Action.BACKUP_CANCELLED in audit_actions(running)
    # The worker's own end comes a moment after the cancel: it stopped pg_dump, then it records it.
    wait_until(lambda: AuditEvent.Action.BACKUP_FINISHED in audit_actions(running), what="the backup's end event")
    assert not running.storage_key
    assert_no_temporary_files(artifact_dir, settings.DR_SCRATCH_DIR)
    assert not TargetLock.objects.exists()
    assert backup_artifact_request(datastore=datastore, trigger="test", enqueue=False)  # the next one may start


@pytest.mark.parametrize("via", VIA)
def test_cancel_a_verification_while_pg_restore_reads_the_file(
    via: str, start_worker: Any, source_db: SourceDb, operator_client: Client, artifact_dir: Path, settings: Any
) -> None:
    artifact = backup_taken(source_db.url_env)
    path = artifact_dir / artifact.storage_key
    content = path.read_bytes()
    path.unlink()
    os.mkfifo(path, 0o600)  # the storage stalls half-way through the file: the reader is busy, not finished
    stalled = threading.Event()

    def feed() -> None:
        with contextlib.suppress(BrokenPipeError), open(path, "wb") as fifo:
            fifo.write(content[: len(content) // 2])
            fifo.flush()
            stalled.wait(timeout=60)

    feeder = threading.Thread(target=feed, daemon=True)
    feeder.start()
    try:
        worker = start_worker()
        verification = backup_verification_request(artifact=artifact, trigger="test")
        tool = worker.tool("pg_restore")
        url = reverse("backups:artifact_cancel", args=[artifact.pk])
        cancel(via, operator_client, kind="verification", job=verification, url=url)
        verification = ended(BackupVerification, verification.pk)
    finally:
        stalled.set()
        feeder.join(timeout=10)
    assert verification.status == BackupVerification.Status.CANCELLED
    assert_gone([tool])
    assert AuditEvent.Action.VERIFY_CANCELLED in audit_actions(artifact)
    artifact.refresh_from_db()
    assert artifact.verification == BackupArtifact.Verification.UNVERIFIED  # never listed as verified
    assert artifact.verification_error == "cancelled by olga"
    assert_no_temporary_files(artifact_dir, settings.DR_SCRATCH_DIR)


@pytest.mark.parametrize("via", VIA)
def test_cancel_a_restore_while_its_copy_waits(
    via: str,
    start_worker: Any,
    source_db: SourceDb,
    gate: Gate,
    operator: Any,
    operator_client: Client,
    new_database_name: str,
    artifact_dir: Path,
    settings: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv(source_db.url_env, with_password(source_db.url))
    gate.install(source_db.url)
    artifact = backup_taken(source_db.url_env)
    gate.close()
    worker = start_worker()
    run = restore_run_request(
        artifact=artifact,
        target_kind=RestoreRun.TargetKind.NEW_DATABASE,
        new_database_name=new_database_name,
        requested_by=operator,
        reason="cancel test",
    )
    wait_until(lambda: gate.waiting_copies(new_database_name), what="the COPY to wait at the gate", log=worker.log)
    tool = worker.tool("pg_restore")
    cancel(via, operator_client, kind="restore", job=run, url=reverse("restores:run_cancel", args=[run.pk]))
    run = ended(RestoreRun, run.pk)
    # The worker's own end comes a moment after the cancel: it stops pg_restore, drops the database, then says so.
    wait_until(lambda: AuditEvent.Action.RESTORE_FINISHED in audit_actions(run), what="the restore's end event")
    assert run.status == RestoreRun.Status.CANCELLED
    assert_gone([tool])
    assert AuditEvent.Action.RESTORE_CANCELLED in audit_actions(run)
    assert not database_exists(new_database_name)  # the database it created went with it
    assert_no_temporary_files(artifact_dir, settings.DR_SCRATCH_DIR)
    assert not TargetLock.objects.exists()


@pytest.mark.parametrize("via", VIA)
def test_cancel_a_drill_while_its_copy_waits(
    via: str,
    start_worker: Any,
    source_db: SourceDb,
    gate: Gate,
    operator_client: Client,
    artifact_dir: Path,
    settings: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv(source_db.url_env, with_password(source_db.url))
    gate.install(source_db.url)
    artifact = backup_taken(source_db.url_env)
    gate.close()
    worker = start_worker()
    drill = drill_run_request(datastore=artifact.datastore, trigger="test")
    scratch = wait_until(
        lambda: DrillRun.objects.values_list("scratch_database", flat=True).get(pk=drill.pk), what="the scratch name"
    )
    wait_until(lambda: gate.waiting_copies(scratch), what="the COPY to wait at the gate", log=worker.log)
    tool = worker.tool("pg_restore")
    cancel(via, operator_client, kind="drill", job=drill, url=reverse("drills:drill_cancel", args=[drill.pk]))
    drill = ended(DrillRun, drill.pk)
    assert drill.status == DrillRun.Status.CANCELLED
    assert_gone([tool])
    assert AuditEvent.Action.DRILL_CANCELLED in audit_actions(drill)
    wait_until(lambda: DrillRun.objects.get(pk=drill.pk).scratch_dropped is True, what="the scratch database drop")
    assert not database_exists(scratch)
    assert_no_temporary_files(artifact_dir, settings.DR_SCRATCH_DIR)


@pytest.mark.parametrize("via", VIA)
def test_cancel_a_batch_while_the_application_is_slow(
    via: str, start_worker: Any, slow_api: SlowApi, operator_client: Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FAULTS_API_TOKEN", slow_api.token)
    environment = EnvironmentFactory(api_url=slow_api.url, api_token_env="FAULTS_API_TOKEN", reprocess_concurrency=1)
    batch = ReprocessBatchFactory(environment=environment, documents=[("ws1", "1"), ("ws1", "2"), ("ws1", "3")])
    slow_api.hold.set()
    worker = start_worker()
    reprocess_batch_send(batch=batch, requested_by=None, trigger="test")
    wait_until(lambda: slow_api.calls > 0, what="the first reprocess call", log=worker.log)
    url = reverse("reprocess:batch_cancel", args=[batch.pk])
    if via == "page":
        assert operator_client.post(url, follow=True).status_code == 200
    else:
        call_command("cancel", "reprocess", str(batch.pk), "--as", "olga")
    time.sleep(3 * FLUSH_SECONDS)  # the sender notices the cancel at its next write (every FLUSH_SECONDS)
    slow_api.released.set()  # the call in flight is answered, and recorded; nothing new is sent
    wait_until(lambda: AuditEvent.Action.REPROCESS_FINISHED in audit_actions(batch), what="the sender to stop")
    batch.refresh_from_db()
    assert batch.status == ReprocessBatch.Status.CANCELLED
    assert AuditEvent.Action.REPROCESS_CANCELLED in audit_actions(batch)
    assert slow_api.calls == 1  # one call was in flight; nothing was sent after the cancel
    assert batch.accepted == 1  # and its answer was still recorded: it is never sent again
    if via == "cli":
        with pytest.raises(CommandError):
            call_command("cancel", "reprocess", str(batch.pk), "--as", "olga")


@pytest.mark.parametrize("location", ["offsite", "nearby"])  # encrypted to its own recipient / as the primary is
def test_cancel_a_copy_while_the_primary_storage_stalls_mid_read(
    location: str,
    start_worker: Any,
    source_db: SourceDb,
    copy_locations: CopyLocations,
    stalled_file: Any,
    operator: Any,
    tmp_path: Path,
    artifact_dir: Path,
    settings: Any,
) -> None:
    """The copy is under way (encrypting to the off-site location, or passing the bytes as they are) when the
    primary storage stops sending and hangs: the cancel is noticed while the read still hangs, the partial upload
    goes, and no thread of the copy outlives the stall."""
    StorageLocation.objects.create(
        name="nearby",
        role="copy",
        backend="django.core.files.storage.FileSystemStorage",
        options={"location": str(tmp_path / "nearby")},
    )
    target = copy_locations.offsite if location == "offsite" else tmp_path / "nearby"
    artifact = large_backup_taken(source_db)
    stalled = stalled_file(copy_locations.local / artifact.storage_key)
    worker = start_worker()
    child = worker.pool_child()
    idle_threads = child.num_threads()
    (copy,) = artifact_copies_request(artifact_id=artifact.pk, trigger="test", locations=[location])
    wait_until(
        lambda: (row := ArtifactCopy.objects.get(pk=copy.pk)).status == ArtifactCopy.Status.RUNNING and row.bytes_done,
        what="the copy to be under way",
        log=worker.log,
    )
    wait_until(stalled.half_read.is_set, what="the first half to be read", log=worker.log)
    assert [name for name in stored_files(target) if name.startswith("tmp/")]  # the upload

    assert artifact_copy_cancel(copy_id=copy.pk, cancelled_by=operator) is True
    assert artifact_copy_cancel(copy_id=copy.pk, cancelled_by=operator) is False  # a second click is harmless

    # The worker's own end, while the primary storage still stalls.
    wait_until(
        lambda: AuditEvent.Action.COPY_FINISHED in audit_actions(artifact), what="the copy's end event", log=worker.log
    )
    copy.refresh_from_db()
    assert copy.status == ArtifactCopy.Status.CANCELLED and copy.error == "cancelled by olga"
    assert copy.process_group is None
    assert AuditEvent.Action.COPY_CANCELLED in audit_actions(artifact)
    assert not copy.storage_key and not copy.verified_at
    assert_nothing_copied(target)
    assert_no_temporary_files(artifact_dir, settings.DR_SCRATCH_DIR)

    stalled.release()  # the stalled read returns: the thread that was in it ends
    wait_until(lambda: child.num_threads() == idle_threads, what="the copy's threads to end", log=worker.log)
    # The same worker takes the next copy, which succeeds.
    (again,) = artifact_copies_request(artifact_id=artifact.pk, trigger="test", locations=[location])
    wait_until(
        lambda: ArtifactCopy.objects.get(pk=again.pk).status in ArtifactCopy.TERMINAL, what="the copy", log=worker.log
    )
    again.refresh_from_db()
    assert again.status == ArtifactCopy.Status.VERIFIED, again.error
    assert stored_files(target) == [again.storage_key]
    assert worker.pool_child().pid == child.pid
