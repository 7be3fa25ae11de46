"""The restore primitive against a real PostgreSQL with the real pg_restore."""

from __future__ import annotations

import time
from pathlib import Path

import psutil
import psycopg
import pytest
from django.utils import timezone
from psycopg import sql

from backups.models import BackupArtifact
from restores.models import RestoreRun
from restores.services import (
    RestoreRefused,
    restore_run_cancel,
    restore_run_execute,
    restore_runs_reap_stale,
)
from tests.factories import DatastoreFactory
from tests.restores.helpers import REQUESTER, request, requester, restore  # noqa: F401 (requester: autouse)
from tests.support.local import start_thread
from tests.support.postgres import (
    SourceDb,
    admin_connection,
    backup_taken,
    database_exists,
    database_url,
    table_fingerprints,
)

pytestmark = pytest.mark.django_db(transaction=True)
Status = RestoreRun.Status
Kind = RestoreRun.TargetKind


@pytest.fixture
def backup(source_db: SourceDb) -> BackupArtifact:
    return backup_taken(source_db.url_env)  # type: ignore[no-any-return]


def test_round_trip_into_a_new_database_is_identical(
    backup: BackupArtifact, source_db: SourceDb, new_database_name: str
) -> None:
    run = restore(backup, target_kind=Kind.NEW_DATABASE, new_database_name=new_database_name)

    assert run.status == Status.SUCCEEDED, run.error
    assert table_fingerprints(database_url(new_database_name)) == table_fingerprints(source_db.url)
    assert [c["name"] for c in run.checks] == ["SELECT 1", "SELECT now()", "row counts"]
    assert all(c["ok"] for c in run.checks)
    assert run.exit_code == 0
    assert [(e.old_status, e.new_status) for e in run.events.all()] == [
        ("requested", "queued"),
        ("queued", "running"),
        ("running", "verifying"),
        ("verifying", "succeeded"),
    ]


def test_in_place_restore_brings_back_the_dumped_state(backup: BackupArtifact, source_db: SourceDb) -> None:
    before = table_fingerprints(source_db.url)
    with source_db.connect() as conn:
        conn.execute("DELETE FROM chunks WHERE id % 2 = 0")
        conn.execute("UPDATE workspaces SET name = 'oops'")
    assert table_fingerprints(source_db.url) != before

    run = restore(backup, target_kind=Kind.DATASTORE, target_datastore=backup.datastore)

    assert run.target_kind == Kind.IN_PLACE
    assert run.status == Status.SUCCEEDED, run.error
    assert table_fingerprints(source_db.url) == before


def test_existing_database_name_is_refused_at_request_time_and_left_alone(
    backup: BackupArtifact, source_db: SourceDb
) -> None:
    before = table_fingerprints(source_db.url)
    with pytest.raises(RestoreRefused, match=f"database {source_db.name} already exists on 127.0.0.1:5432"):
        restore(backup, target_kind=Kind.NEW_DATABASE, new_database_name=source_db.name)
    assert not RestoreRun.objects.exists()
    assert table_fingerprints(source_db.url) == before


def test_a_database_created_after_the_request_is_still_refused_when_the_run_starts(
    backup: BackupArtifact, source_db: SourceDb, new_database_name: str
) -> None:
    """Between the request (and its approval) and the run, someone else may take the name: the run checks again."""
    from restores.services import restore_run_execute
    from tests.support.postgres import create_database

    run = request(backup, target_kind=Kind.NEW_DATABASE, new_database_name=new_database_name)
    create_database(new_database_name)
    restore_run_execute(run_id=run.pk)
    run.refresh_from_db()
    assert run.status == Status.FAILED
    assert f"database {new_database_name} already exists" in run.error


def test_tampered_artifact_restores_nothing(backup: BackupArtifact, artifact_dir: Path, new_database_name: str) -> None:
    stored = artifact_dir / backup.storage_key
    data = bytearray(stored.read_bytes())
    data[-100] ^= 0x01
    stored.write_bytes(bytes(data))

    run = restore(backup, target_kind=Kind.NEW_DATABASE, new_database_name=new_database_name)

    assert run.status == Status.FAILED
    assert "sha256 mismatch" in run.error and "nothing was restored" in run.error
    assert not database_exists(new_database_name)  # the database it created for the run is gone again


def test_pg_restore_errors_fail_the_run(backup: BackupArtifact, source_db: SourceDb, new_database_name: str) -> None:
    """pg_restore's "errors ignored on restore" is a failure, not a success."""
    with admin_connection() as conn:
        conn.execute(f'CREATE DATABASE "{new_database_name}"')
    with psycopg.connect(database_url(new_database_name), autocommit=True) as conn:
        # A table the restore cannot drop (a view outside the dump depends on it) makes pg_restore report errors.
        conn.execute("CREATE TABLE workspaces (id uuid PRIMARY KEY, name text)")
        conn.execute("CREATE VIEW keeps_workspaces AS SELECT * FROM workspaces")
    target = DatastoreFactory(url_env="RESTORE_TARGET_URL")
    import os

    os.environ["RESTORE_TARGET_URL"] = database_url(new_database_name)
    try:
        run = restore(backup, target_kind=Kind.DATASTORE, target_datastore=target)
    finally:
        del os.environ["RESTORE_TARGET_URL"]
    assert run.status == Status.FAILED
    assert "pg_restore exited with status 1" in run.error
    assert "errors ignored on restore" in run.error
    assert run.stderr_tail


def test_row_count_check_fails_the_run_when_counts_differ(backup: BackupArtifact, new_database_name: str) -> None:
    BackupArtifact.objects.filter(pk=backup.pk).update(row_counts={**backup.row_counts, "public.chunks": 1999})
    backup.refresh_from_db()
    run = restore(backup, target_kind=Kind.NEW_DATABASE, new_database_name=new_database_name)
    assert run.status == Status.FAILED
    assert "row counts: public.chunks: expected 1999, found 2000" in run.error
    assert next(c for c in run.checks if c["name"] == "row counts")["ok"] is False


def test_two_restores_into_one_target_never_run_together(backup: BackupArtifact, source_db: SourceDb) -> None:
    """The target lock is a database row: the second run finds it taken and fails, touching nothing."""
    first, second = request(backup, target_kind=Kind.IN_PLACE), request(backup, target_kind=Kind.IN_PLACE)
    locker = psycopg.connect(source_db.url)
    locker.execute("LOCK TABLE public.chunks IN ACCESS EXCLUSIVE MODE")  # holds the first one inside pg_restore
    worker = start_thread(restore_run_execute, run_id=first.pk)
    try:
        for _ in range(100):
            if RestoreRun.objects.get(pk=first.pk).status == Status.RUNNING:
                break
            time.sleep(0.1)
        restore_run_execute(run_id=second.pk)
        second.refresh_from_db()
        assert second.status == Status.FAILED
        assert second.error == f"restore #{first.pk} is running against {backup.datastore.name}; nothing was restored"
    finally:
        locker.close()
    worker.join(timeout=60)
    first.refresh_from_db()
    assert first.status == Status.SUCCEEDED, first.error
    from inventory.models import TargetLock

    assert not TargetLock.objects.exists()  # released


def test_a_restore_waits_for_no_backup_it_fails_clearly_while_one_runs(backup: BackupArtifact) -> None:
    from backups.models import BackupArtifact as Artifact
    from backups.services import backup_artifact_request
    from inventory.identity import identity_from_env
    from inventory.locks import target_lock_acquire, target_lock_release

    running = backup_artifact_request(datastore=backup.datastore, trigger="test", enqueue=False)
    Artifact.objects.filter(pk=running.pk).update(status=Artifact.Status.RUNNING, heartbeat_at=timezone.now())
    key = identity_from_env("postgres", backup.datastore.url_env).lock_key  # the database's lock, not the record's
    assert target_lock_acquire(target_key=key, holder=running) is None
    try:
        run = restore(backup, target_kind=Kind.IN_PLACE)
    finally:
        target_lock_release(target_key=key, holder=running)
    assert run.status == Status.FAILED
    assert run.error.startswith(f"backup #{running.pk} is running against")


def test_corrupt_or_failed_backups_cannot_be_restored(backup: BackupArtifact) -> None:
    BackupArtifact.objects.filter(pk=backup.pk).update(verification="corrupt", verification_error="sha256 mismatch")
    backup.refresh_from_db()
    with pytest.raises(RestoreRefused, match="marked corrupt"):
        request(backup, target_kind=Kind.IN_PLACE)
    assert RestoreRun.objects.count() == 0


def test_running_the_restore_twice_runs_it_once(backup: BackupArtifact, new_database_name: str) -> None:
    run = restore(backup, target_kind=Kind.NEW_DATABASE, new_database_name=new_database_name)
    restore_run_execute(run_id=run.pk)  # a redelivered message
    run.refresh_from_db()
    assert run.status == Status.SUCCEEDED
    assert run.events.count() == 4


def test_cancel_stops_a_running_pg_restore(backup: BackupArtifact, source_db: SourceDb, new_database_name: str) -> None:
    """pg_restore blocks on a lock we hold; cancelling the run stops the process group."""
    run = request(backup, target_kind=Kind.IN_PLACE)
    locker = psycopg.connect(source_db.url)
    locker.execute("LOCK TABLE public.chunks IN ACCESS EXCLUSIVE MODE")
    worker = start_thread(restore_run_execute, run_id=run.pk)
    try:
        # The process starts a moment before its group is written to the row: wait for both, or cancel may come
        # between the two and find nothing to stop.
        for _ in range(200):
            restoring = [proc for proc in own_pg_restores() if "--clean" in proc.cmdline()]
            recorded = RestoreRun.objects.get(pk=run.pk).process_group
            if restoring and recorded:
                break
            time.sleep(0.1)
        assert recorded == restoring[0].pid  # recorded on the row
        assert restore_run_cancel(run_id=run.pk, cancelled_by=REQUESTER[0])
        worker.join(timeout=30)
        assert not worker.is_alive()
    finally:
        locker.close()
    run.refresh_from_db()
    assert run.status == Status.CANCELLED
    assert not own_pg_restores()  # this test's, not another suite's on the same machine
    assert run.process_group is None
    assert not restore_run_cancel(run_id=run.pk, cancelled_by=REQUESTER[0])  # already finished


def own_pg_restores() -> list[psutil.Process]:
    """The pg_restore processes this test process started (they are its children; other suites' are not)."""
    return [
        proc
        for proc in psutil.Process().children(recursive=True)
        if proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE and proc.name() == "pg_restore"
    ]


def test_reaper_fails_a_restore_whose_worker_died_and_never_reruns_it(backup: BackupArtifact) -> None:
    from datetime import timedelta

    from django.utils import timezone

    from dr_console.jobs import job_transition

    run = request(backup, target_kind=Kind.IN_PLACE)
    job_transition(RestoreRun, pk=run.pk, to=Status.RUNNING)
    RestoreRun.objects.filter(pk=run.pk).update(heartbeat_at=timezone.now() - timedelta(hours=1))

    assert restore_runs_reap_stale() == 1
    restore_run_execute(run_id=run.pk)  # a late redelivery does not resurrect it

    run.refresh_from_db()
    assert run.status == Status.FAILED
    assert run.error == "worker lost: the target may be partly restored"


# PostgreSQL identifiers may hold any character but NUL, and pg_restore's errors quote them as they are.
EVIL_TABLE = "evil\x1b[31m\x07table"
EVIL_SHOWN = "evil\\x1b[31m\\x07table"


def test_pg_restore_errors_quoting_a_control_character_are_stored_escaped(source_db: SourceDb) -> None:
    with source_db.connect() as conn:
        conn.execute(sql.SQL("CREATE TABLE {} (id int)").format(sql.Identifier(EVIL_TABLE)))
    backup = backup_taken(source_db.url_env)
    with source_db.connect() as conn:  # outside the dump: pg_restore --clean cannot drop the table under it
        conn.execute(sql.SQL("CREATE VIEW keeps_it AS SELECT * FROM {}").format(sql.Identifier(EVIL_TABLE)))

    run = restore(backup, target_kind=Kind.IN_PLACE)

    assert run.status == Status.FAILED
    assert run.error.startswith(
        f"pg_restore exited with status 1: error: could not execute query: ERROR:  cannot drop "
        f'table public."{EVIL_SHOWN}" because other objects depend on it'
    )
    assert f'DETAIL:  view public.keeps_it depends on table public."{EVIL_SHOWN}"\n' in run.stderr_tail  # lines kept
    assert "\x1b" not in run.error + run.stderr_tail and "\x07" not in run.stderr_tail


def test_a_row_count_mismatch_names_a_control_character_table_escaped(
    source_db: SourceDb, new_database_name: str
) -> None:
    with source_db.connect() as conn:
        conn.execute(sql.SQL("CREATE TABLE {} (id int)").format(sql.Identifier(EVIL_TABLE)))
    backup = backup_taken(source_db.url_env)
    BackupArtifact.objects.filter(pk=backup.pk).update(row_counts={**backup.row_counts, f"public.{EVIL_TABLE}": 9})
    backup.refresh_from_db()

    run = restore(backup, target_kind=Kind.NEW_DATABASE, new_database_name=new_database_name)

    assert run.status == Status.FAILED
    assert f"row counts: public.{EVIL_SHOWN}: expected 9, found 0" in run.error
    assert (
        f"public.{EVIL_SHOWN}: expected 9, found 0"
        in next(c for c in run.checks if c["name"] == "row counts")["detail"]
    )
