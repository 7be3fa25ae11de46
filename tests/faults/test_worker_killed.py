"""A worker killed outright (SIGKILL: the OOM killer, Celery's hard time limit) in the middle of each kind of job.
The job must still end cleanly: the reaper fails the row with its "worker lost" message once the heartbeat is
stale, with an audit event and (where failures notify) a notification; no tool outlives the worker; no temporary
file stays; the lock goes once the tool is gone; nothing is listed as usable."""

from __future__ import annotations

import contextlib
import os
import threading
from pathlib import Path
from typing import Any

import psutil
import psycopg
import pytest
from django.core import mail

from audit.models import AuditEvent
from backups.copies import artifact_copies_reap_stale, artifact_copies_request
from backups.models import ArtifactCopy, BackupArtifact, BackupVerification
from backups.services import backup_artifact_request, backup_artifacts_reap_stale
from backups.verification import backup_verification_request, backup_verifications_reap_stale
from drills.models import DrillRun
from drills.services import drill_run_request, drill_runs_reap_stale
from inventory.locks import target_locks_release_stale
from inventory.models import TargetLock
from overview.selectors import datastore_dashboard_row
from reprocess.models import ReprocessBatch, ReprocessItem
from reprocess.services import reprocess_batch_send, reprocess_batches_reap_stale
from restores.models import RestoreRun
from restores.services import restore_run_request, restore_runs_reap_stale
from tests.factories import DatastoreFactory, EnvironmentFactory, ReprocessBatchFactory
from tests.faults.conftest import (
    CopyLocations,
    Database,
    Gate,
    SlowApi,
    assert_gone,
    assert_group_gone,
    assert_no_temporary_files,
    assert_nothing_copied,
    audit_actions,
    backends_of,
    database_exists,
    group_members,
    large_backup_taken,
    pathless_storage_env,
    tools_of,
    wait_stale,
    wait_until,
    with_password,
)
from tests.support.postgres import SourceDb, backup_taken
from tests.support.storage import stored_files


def process_alive(pid: int) -> bool:
    try:
        return bool(psutil.Process(pid).status() != psutil.STATUS_ZOMBIE)
    except psutil.NoSuchProcess:
        return False


pytestmark = [pytest.mark.worker, pytest.mark.django_db(transaction=True)]


def test_pool_child_killed_mid_dump_fails_the_backup_and_leaves_nothing(
    start_worker: Any, source_db: SourceDb, artifact_dir: Path, settings: Any
) -> None:
    datastore = DatastoreFactory(url_env=source_db.url_env)
    # pg_dump waits for a table we hold locked: the dump is under way (its temporary file open) and stays so.
    locker = psycopg.connect(source_db.url)
    locker.execute("LOCK TABLE public.chunks IN ACCESS EXCLUSIVE MODE")
    try:
        worker = start_worker(BACKUP_LOCK_WAIT_TIMEOUT="600")
        artifact = backup_artifact_request(datastore=datastore, trigger="test")
        worker.tool("pg_dump")
        wait_until(
            lambda: any(name.startswith("tmp/") for name in stored_files(artifact_dir)), what="the temporary file"
        )
        artifact.refresh_from_db()
        recorded_group = artifact.process_group
        assert artifact.status == BackupArtifact.Status.RUNNING and recorded_group is not None

        tools, names = worker.kill_pool_child()

        assert names == ["pg_dump"]
        assert_gone(tools, timeout=5)  # PR_SET_PDEATHSIG: pg_dump died with the pool child, before any reaper
        assert tools_of(source_db.name) == []
        assert TargetLock.objects.count() == 1  # nobody released it: the backup still says running
        # The server still runs the job's row count (waiting for the lock, then reading a table for nobody).
        assert [app for _pid, app, _query in backends_of(source_db.name) if app.startswith("dr-console ")]
        wait_stale(BackupArtifact, artifact.pk)
        assert backup_artifacts_reap_stale() == 1
        assert target_locks_release_stale() == 1
        # Nothing of the job's is left (its sessions are named "dr-console ..."); ours holds the lock still. The
        # failed backup asks a worker for a health check, whose own brief session may be connecting just now.
        left = backends_of(source_db.name)
        assert [(app, query) for _pid, app, query in left if app.startswith("dr-console ")] == []
        assert "LOCK TABLE public.chunks IN ACCESS EXCLUSIVE MODE" in [query for _pid, _app, query in left]
    finally:
        locker.close()

    artifact.refresh_from_db()
    assert artifact.status == BackupArtifact.Status.FAILED
    assert artifact.error == "worker lost: no heartbeat; the backup did not finish"
    assert [e.new_status for e in artifact.events.all()] == ["running", "failed"]
    assert AuditEvent.Action.BACKUP_FINISHED in audit_actions(artifact)
    assert [m.subject for m in mail.outbox] == [f"[DR Console] Backup #{artifact.pk} of {datastore.name} failed"]
    assert_group_gone(recorded_group)
    assert_no_temporary_files(artifact_dir, settings.DR_SCRATCH_DIR)
    assert TargetLock.objects.count() == 0
    assert artifact.storage_key == "" and artifact.sha256 == "" and stored_files(artifact_dir) == []
    row = datastore_dashboard_row(datastore.pk)
    assert row is not None and row.last_success is None and row.active is None

    # The worker's parent started a new pool child; the next backup of the datastore is accepted and succeeds.
    following = backup_artifact_request(datastore=datastore, trigger="test")
    wait_until(
        lambda: BackupArtifact.objects.get(pk=following.pk).status == BackupArtifact.Status.SUCCEEDED,
        what="the next backup",
        log=worker.log,
    )


@pytest.mark.parametrize(
    ("target_kind", "jobs"),
    [
        # pg_restore's forked worker outlives the worker (PR_SET_PDEATHSIG is not inherited): the reaper kills it.
        ("new_database", 2),
        # pg_restore dies with the worker, but the server goes on with its COPY: the reaper ends that session.
        ("datastore", 1),
    ],
)
def test_worker_killed_mid_restore_fails_the_run_and_cleans_up_after_its_tool(
    target_kind: str,
    jobs: int,
    start_worker: Any,
    source_db: SourceDb,
    empty_db: Database,
    new_database_name: str,
    gate: Gate,
    operator: Any,
    artifact_dir: Path,
    settings: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """pg_restore waits in the server for real (a COPY whose CHECK sleeps); the artifact storage has no local paths,
    so the run also holds a scratch copy of the backup and a passfile."""
    monkeypatch.setenv(source_db.url_env, with_password(source_db.url))
    gate.install(source_db.url)
    artifact = backup_taken(source_db.url_env)
    gate.close()
    worker = start_worker(**pathless_storage_env(artifact_dir))
    if target_kind == "new_database":
        run = restore_run_request(
            artifact=artifact,
            target_kind=target_kind,
            new_database_name=new_database_name,
            requested_by=operator,
            reason="fault test",
            jobs=jobs,
        )
        database = new_database_name
    else:
        run = restore_run_request(
            artifact=artifact,
            target_kind=target_kind,
            target_datastore=DatastoreFactory(url_env=empty_db.url_env),
            requested_by=operator,
            reason="fault test",
            jobs=jobs,
        )
        database = empty_db.name
    waiting = wait_until(lambda: gate.waiting_copies(database), what="the COPY to wait at the gate", log=worker.log)
    assert [app.rsplit(" ", 1)[0] for _pid, app, _query in waiting] == [f"dr-console restores.restorerun-{run.pk}"]
    scratch = sorted(p.name for p in Path(settings.DR_SCRATCH_DIR).iterdir())
    assert [name.split("--")[0] for name in scratch] == [
        f"dr-copy-restores.restorerun-{run.pk}",
        f"dr-pgpass-restores.restorerun-{run.pk}",
    ]
    run.refresh_from_db()
    recorded_group = run.process_group
    assert run.status == RestoreRun.Status.RUNNING and recorded_group is not None

    tools, names = worker.kill()

    assert "pg_restore" in names
    wait_until(lambda: not process_alive(recorded_group), timeout=5, what="pg_restore to die with its worker")
    if jobs > 1:
        assert group_members(recorded_group), "pg_restore's own worker was expected to outlive it"

    # Until the reaper has failed the run and its processes are gone, the lock stays.
    assert target_locks_release_stale() == 0
    wait_stale(RestoreRun, run.pk)
    assert target_locks_release_stale() == 0
    assert restore_runs_reap_stale() == 1
    assert target_locks_release_stale() == 1

    run.refresh_from_db()
    assert run.status == RestoreRun.Status.FAILED
    assert run.error == "worker lost: the target may be partly restored"
    assert [e.new_status for e in run.events.all()] == ["queued", "running", "failed"]
    assert AuditEvent.Action.RESTORE_FINISHED in audit_actions(run)
    assert any(m.subject.endswith(" failed") and m.to == [operator.email] for m in mail.outbox)
    assert_gone(tools)
    assert tools_of(database, source_db.name) == []
    assert_group_gone(recorded_group)
    assert gate.waiting_copies(database) == []
    assert backends_of(database) == []  # not even the server side of the COPY is left
    if target_kind == "new_database":
        assert not database_exists(new_database_name) and not run.database_created
    assert_no_temporary_files(artifact_dir, settings.DR_SCRATCH_DIR)
    assert TargetLock.objects.count() == 0


def test_pool_child_killed_mid_drill_fails_the_drill_and_drops_its_scratch_database(
    start_worker: Any,
    source_db: SourceDb,
    gate: Gate,
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
    drill.refresh_from_db()
    scratch_database = wait_until(
        lambda: DrillRun.objects.values_list("scratch_database", flat=True).get(pk=drill.pk), what="the scratch name"
    )
    wait_until(lambda: gate.waiting_copies(scratch_database), what="the COPY to wait at the gate", log=worker.log)
    drill.refresh_from_db()
    recorded_group = drill.process_group
    assert drill.status == DrillRun.Status.RUNNING and recorded_group is not None

    tools, names = worker.kill_pool_child()

    assert "pg_restore" in names
    wait_stale(DrillRun, drill.pk)
    assert drill_runs_reap_stale() == 1

    drill.refresh_from_db()
    assert drill.status == DrillRun.Status.FAILED
    assert drill.error == "worker lost: the drill did not finish"
    assert AuditEvent.Action.DRILL_FINISHED in audit_actions(drill)
    assert [m.subject for m in mail.outbox] == [f"[DR Console] Drill #{drill.pk} of {artifact.datastore.name} failed"]
    assert_gone(tools)
    assert tools_of(scratch_database, source_db.name) == []
    assert_group_gone(recorded_group)
    assert not database_exists(scratch_database) and drill.scratch_dropped is True
    assert_no_temporary_files(artifact_dir, settings.DR_SCRATCH_DIR)
    assert drill.rto is None  # no recovery time measured from a drill that did not finish


def test_pool_child_killed_mid_verification_leaves_the_backup_unverified(
    start_worker: Any, source_db: SourceDb, artifact_dir: Path, settings: Any
) -> None:
    """The storage stalls half-way through the file (a FIFO fed half the backup): pg_restore is reading it."""
    artifact = backup_taken(source_db.url_env)
    path = artifact_dir / artifact.storage_key
    content = path.read_bytes()
    path.unlink()
    os.mkfifo(path, 0o600)
    half_read, stalled = threading.Event(), threading.Event()

    def feed() -> None:
        with contextlib.suppress(BrokenPipeError), open(path, "wb") as fifo:
            fifo.write(content[: len(content) // 2])
            fifo.flush()
            half_read.set()
            stalled.wait(timeout=60)

    feeder = threading.Thread(target=feed, daemon=True)
    feeder.start()
    try:
        worker = start_worker()
        verification = backup_verification_request(artifact=artifact, trigger="test")
        worker.tool("pg_restore")
        wait_until(half_read.is_set, what="the first half to be read", log=worker.log)
        verification.refresh_from_db()
        recorded_group = verification.process_group
        assert verification.status == BackupVerification.Status.RUNNING and recorded_group is not None

        tools, names = worker.kill_pool_child()

        assert names == ["pg_restore"]
        assert_gone(tools, timeout=5)  # the reader died with the pool child
        wait_stale(BackupVerification, verification.pk)
        assert backup_verifications_reap_stale() == 1
    finally:
        stalled.set()
        feeder.join(timeout=10)

    verification.refresh_from_db()
    artifact.refresh_from_db()
    assert verification.status == BackupVerification.Status.FAILED
    assert verification.error == "verification interrupted: worker lost"
    assert AuditEvent.Action.VERIFY_FINISHED in audit_actions(artifact)
    assert_group_gone(recorded_group)
    assert_no_temporary_files(artifact_dir, settings.DR_SCRATCH_DIR)
    # Not listed as verified: the backup says it could not be told, and why.
    assert artifact.verification == BackupArtifact.Verification.UNVERIFIED
    assert artifact.verification_error == "verification interrupted: worker lost"
    row = datastore_dashboard_row(artifact.datastore_id)
    assert row is not None and row.last_verified is None and row.verifying is None


def test_pool_child_killed_mid_reprocess_batch_fails_the_batch(
    start_worker: Any, slow_api: SlowApi, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FAULTS_API_TOKEN", slow_api.token)
    environment = EnvironmentFactory(api_url=slow_api.url, api_token_env="FAULTS_API_TOKEN")
    batch = ReprocessBatchFactory(environment=environment, documents=[("ws1", "1"), ("ws1", "2"), ("ws1", "3")])
    slow_api.hold.set()  # the application takes its time answering
    worker = start_worker()
    reprocess_batch_send(batch=batch, requested_by=None, trigger="test")
    wait_until(lambda: slow_api.calls > 0, what="the first reprocess call", log=worker.log)

    worker.kill_pool_child()

    wait_stale(ReprocessBatch, batch.pk)
    assert reprocess_batches_reap_stale() == 1
    batch.refresh_from_db()
    assert batch.status == ReprocessBatch.Status.FAILED
    assert batch.error == "worker lost; send the batch again to go on"
    assert AuditEvent.Action.REPROCESS_FINISHED in audit_actions(batch)
    # Nothing counted as accepted that the application did not accept: every item can be sent again.
    assert batch.accepted == 0
    assert set(batch.items.values_list("status", flat=True)) == {ReprocessItem.Status.PENDING}


def test_pool_child_killed_mid_copy_fails_the_copy_and_sweeps_its_upload(
    start_worker: Any,
    source_db: SourceDb,
    copy_locations: CopyLocations,
    stalled_file: Any,
    artifact_dir: Path,
    settings: Any,
) -> None:
    """The primary storage stalls half-way through the file: the copy is under way, its temporary file at the
    off-site location open, when its worker is killed."""
    artifact = large_backup_taken(source_db)
    stalled = stalled_file(copy_locations.local / artifact.storage_key)
    worker = start_worker()
    (copy,) = artifact_copies_request(artifact_id=artifact.pk, trigger="test", locations=["offsite"])
    wait_until(
        lambda: (row := ArtifactCopy.objects.get(pk=copy.pk)).status == ArtifactCopy.Status.RUNNING and row.bytes_done,
        what="the copy to be under way",
        log=worker.log,
    )
    wait_until(stalled.half_read.is_set, what="the first half to be read", log=worker.log)
    assert [name for name in stored_files(copy_locations.offsite) if name.startswith("tmp/")]

    tools, names = worker.kill_pool_child()

    assert names == []  # a copy starts no tool: its threads died with the pool child
    wait_stale(ArtifactCopy, copy.pk)
    assert artifact_copies_reap_stale() == 1
    assert artifact_copies_reap_stale() == 0

    copy.refresh_from_db()
    assert copy.status == ArtifactCopy.Status.FAILED
    assert copy.error == "worker lost: no heartbeat; the copy did not finish"
    assert [e.new_status for e in copy.events.all()] == ["running", "failed"]
    assert AuditEvent.Action.COPY_FINISHED in audit_actions(artifact)
    assert [m.subject for m in mail.outbox] == [
        f"[DR Console] Copy to offsite #{copy.pk} of {artifact.datastore.name} failed"
    ]
    assert copy.process_group is None and not copy.cleanup_pending
    assert not copy.storage_key and not copy.verified_at
    assert_nothing_copied(copy_locations.offsite)  # the reaper swept the temporary file
    assert_no_temporary_files(artifact_dir, settings.DR_SCRATCH_DIR)

    # The worker's parent started a new pool child; the copy asked for again succeeds.
    stalled.release()
    (again,) = artifact_copies_request(artifact_id=artifact.pk, trigger="test", locations=["offsite"])
    wait_until(
        lambda: ArtifactCopy.objects.get(pk=again.pk).status in ArtifactCopy.TERMINAL, what="the copy", log=worker.log
    )
    again.refresh_from_db()
    assert again.status == ArtifactCopy.Status.VERIFIED, again.error
    assert stored_files(copy_locations.offsite) == [again.storage_key]
