"""The backup job against a real PostgreSQL with the real pg_dump: what a user would notice."""

from __future__ import annotations

import os
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import psutil
import psycopg
import pytest
from psycopg import sql

from backups.models import BackupArtifact
from backups.postgres import pg_connection_from_env
from backups.services import (
    BackupRefused,
    backup_artifact_execute,
    backup_artifact_request,
    backup_artifacts_reap_stale,
)
from backups.verification import backup_artifact_verify
from dr_console.jobs import IllegalTransition, job_transition
from tests.factories import BackupArtifactFactory, DatastoreFactory, one_datastore_of
from tests.support.local import start_thread
from tests.support.postgres import (
    PasswordServer,
    SourceDb,
    admin_connection,
    database_url,
    drop_database,
    table_fingerprints,
)
from tests.support.storage import stored_files

pytestmark = pytest.mark.django_db(transaction=True)
Status = BackupArtifact.Status


def take_backup(source: SourceDb, **datastore_fields: Any) -> BackupArtifact:
    datastore = one_datastore_of(source.url_env, **datastore_fields)
    artifact = backup_artifact_request(datastore=datastore, trigger="test", enqueue=False)
    backup_artifact_execute(artifact_id=artifact.pk, verify_after=False)
    artifact.refresh_from_db()
    return artifact


def test_backup_records_checksum_size_versions_and_exact_row_counts(source_db: SourceDb, artifact_dir: Path) -> None:
    artifact = take_backup(source_db)

    assert artifact.status == Status.SUCCEEDED, artifact.error
    stored = artifact_dir / artifact.storage_key
    assert stored.stat().st_size == artifact.size_bytes
    import hashlib

    assert hashlib.sha256(stored.read_bytes()).hexdigest() == artifact.sha256
    assert oct(stored.stat().st_mode & 0o777) == "0o600"
    assert artifact.row_counts == {
        "audit.events": 50,
        "public.chunks": 2000,
        "public.documents": 300,
        "public.empty_table": 0,
        "public.workspaces": 5,
    }
    assert artifact.tool_version.startswith("pg_dump (PostgreSQL)")
    assert artifact.server_version.startswith("PostgreSQL 1")
    assert artifact.archive_entries and artifact.archive_entries > 10
    assert artifact.duration is not None and artifact.started_at and artifact.finished_at
    assert stored_files(artifact_dir) == [artifact.storage_key]  # no temporary file left behind
    assert [(e.old_status, e.new_status) for e in artifact.events.all()] == [
        ("pending", "running"),
        ("running", "succeeded"),
    ]


def test_row_counts_come_from_the_dumps_own_snapshot(source_db: SourceDb) -> None:
    """Rows committed while the dump runs are neither in the archive nor in the recorded counts."""
    datastore = DatastoreFactory(url_env=source_db.url_env)
    artifact = backup_artifact_request(datastore=datastore, trigger="test", enqueue=False)
    stop = threading.Event()

    def keep_inserting() -> None:
        with psycopg.connect(source_db.url, autocommit=True) as conn:
            while not stop.is_set():
                conn.execute("INSERT INTO audit.events (note) VALUES ('during dump')")

    writer = threading.Thread(target=keep_inserting)
    writer.start()
    try:
        time.sleep(0.2)
        backup_artifact_execute(artifact_id=artifact.pk, verify_after=False)
    finally:
        stop.set()
        writer.join()
    artifact.refresh_from_db()
    assert artifact.status == Status.SUCCEEDED, artifact.error
    with psycopg.connect(source_db.url) as conn:
        now_count = conn.execute("SELECT count(*) FROM audit.events").fetchone()[0]  # type: ignore[index]
    assert artifact.row_counts["audit.events"] < now_count  # inserts went on after the snapshot
    # ...and the archive holds exactly the counted rows: restore it and count.
    from restores.pg_restore import run_checks

    target = pg_connection_from_env(source_db.url_env)
    import subprocess

    from tests.support.postgres import database_url, drop_database

    scratch = f"{source_db.name}_snap"
    drop_database(scratch)
    with psycopg.connect(database_url("postgres"), autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{scratch}"')
    try:
        from django.conf import settings

        path = os.path.join(settings.STORAGES["artifacts"]["OPTIONS"]["location"], artifact.storage_key)
        subprocess.run(["pg_restore", "-d", database_url(scratch), path], check=True, capture_output=True)
        checks = run_checks(target.with_dbname(scratch), artifact.row_counts)
        assert all(c["ok"] for c in checks), checks
    finally:
        drop_database(scratch)


def test_running_the_job_twice_dumps_once(source_db: SourceDb, artifact_dir: Path) -> None:
    artifact = take_backup(source_db)
    first_key, first_sha = artifact.storage_key, artifact.sha256

    backup_artifact_execute(artifact_id=artifact.pk)  # a redelivered message

    artifact.refresh_from_db()
    assert (artifact.status, artifact.storage_key, artifact.sha256) == (Status.SUCCEEDED, first_key, first_sha)
    assert artifact.events.count() == 2
    assert stored_files(artifact_dir) == [first_key]


def test_two_workers_racing_for_one_backup_only_one_dumps(source_db: SourceDb, artifact_dir: Path) -> None:
    datastore = DatastoreFactory(url_env=source_db.url_env)
    artifact = backup_artifact_request(datastore=datastore, trigger="test", enqueue=False)
    threads = [start_thread(backup_artifact_execute, artifact_id=artifact.pk, verify_after=False) for _ in range(2)]
    for thread in threads:
        thread.join()
    artifact.refresh_from_db()
    assert artifact.status == Status.SUCCEEDED
    assert [(e.old_status, e.new_status) for e in artifact.events.all()] == [
        ("pending", "running"),
        ("running", "succeeded"),
    ]
    assert stored_files(artifact_dir) == [artifact.storage_key]


def test_second_backup_of_a_datastore_is_refused_while_one_is_active(source_db: SourceDb) -> None:
    datastore = DatastoreFactory(url_env=source_db.url_env)
    first = backup_artifact_request(datastore=datastore, trigger="test", enqueue=False)
    with pytest.raises(BackupRefused, match=f"already pending \\(#{first.pk}\\)"):
        backup_artifact_request(datastore=datastore, trigger="test", enqueue=False)
    assert BackupArtifact.objects.count() == 1


def test_a_finished_backup_cannot_move_back(source_db: SourceDb) -> None:
    artifact = take_backup(source_db)
    with pytest.raises(IllegalTransition, match="cannot go from succeeded to running"):
        job_transition(BackupArtifact, pk=artifact.pk, to=Status.RUNNING)
    artifact.refresh_from_db()
    assert artifact.status == Status.SUCCEEDED


def test_killed_pg_dump_leaves_no_file_and_a_failed_row(source_db: SourceDb, artifact_dir: Path) -> None:
    """pg_dump waits on a lock we hold; we kill it while it has already started writing."""
    datastore = DatastoreFactory(url_env=source_db.url_env)
    artifact = backup_artifact_request(datastore=datastore, trigger="test", enqueue=False)
    locker = psycopg.connect(source_db.url)
    locker.execute("LOCK TABLE public.chunks IN ACCESS EXCLUSIVE MODE")
    job = start_thread(backup_artifact_execute, artifact_id=artifact.pk, verify_after=False)
    try:
        pg_dump = None
        for _ in range(100):
            pg_dump = next(
                (
                    p
                    for p in psutil.process_iter(["name", "environ"])
                    if p.info["name"] == "pg_dump" and (p.info["environ"] or {}).get("PGDATABASE") == source_db.name
                ),
                None,
            )
            if pg_dump:
                break
            time.sleep(0.1)
        assert pg_dump is not None, "pg_dump did not start"
        time.sleep(0.3)
        pg_dump.kill()
        job.join(timeout=60)
    finally:
        locker.close()
    artifact.refresh_from_db()
    assert artifact.status == Status.FAILED
    assert "pg_dump was killed by SIGKILL" in artifact.error
    assert artifact.storage_key == "" and artifact.sha256 == ""
    assert stored_files(artifact_dir) == []


def test_wrong_password_gives_a_clear_error_without_the_password(
    password_server: PasswordServer,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    artifact_dir: Path,
) -> None:
    wrong = "Wr0ng-pa55word-" + "x" * 8
    monkeypatch.setenv("PWPG_URL", password_server.url(password=wrong))
    datastore = DatastoreFactory(url_env="PWPG_URL")
    artifact = backup_artifact_request(datastore=datastore, trigger="test", enqueue=False)
    backup_artifact_execute(artifact_id=artifact.pk, verify_after=False)
    artifact.refresh_from_db()

    assert artifact.status == Status.FAILED
    assert "password authentication failed" in artifact.error
    assert f"127.0.0.1:{password_server.port}" in artifact.error
    everything = artifact.error + artifact.stderr_tail + caplog.text + "".join(e.message for e in artifact.events.all())
    assert wrong not in everything
    assert stored_files(artifact_dir) == []


def test_right_password_reaches_pg_dump_through_the_passfile(
    password_server: PasswordServer,
    monkeypatch: pytest.MonkeyPatch,
    settings: Any,
) -> None:
    monkeypatch.setenv("PWPG_URL", password_server.url())
    datastore = DatastoreFactory(url_env="PWPG_URL")
    artifact = backup_artifact_request(datastore=datastore, trigger="test", enqueue=False)
    backup_artifact_execute(artifact_id=artifact.pk, verify_after=False)
    artifact.refresh_from_db()
    assert artifact.status == Status.SUCCEEDED, artifact.error
    assert password_server.password not in repr(pg_connection_from_env("PWPG_URL"))
    assert not list(Path(settings.DR_SCRATCH_DIR).glob("dr-pgpass-*"))  # the passfile is gone


def test_passfile_is_private_and_deleted_after_the_run(monkeypatch: pytest.MonkeyPatch, settings: Any) -> None:
    monkeypatch.setenv("SOME_DB_URL", "postgresql://app:p%3Ass@db.example:6543/appdb?sslmode=require")
    target = pg_connection_from_env("SOME_DB_URL")
    with target.subprocess_env() as env:
        passfile = Path(env["PGPASSFILE"])
        assert oct(passfile.stat().st_mode & 0o777) == "0o600"
        assert passfile.read_text() == "*:*:*:*:p\\:ss\n"
        assert (env["PGHOST"], env["PGPORT"], env["PGDATABASE"], env["PGUSER"], env["PGSSLMODE"]) == (
            "db.example",
            "6543",
            "appdb",
            "app",
            "require",
        )
        assert "SOME_DB_URL" not in env  # the child does not inherit the variable holding the URL
        assert not any("p:ss" in value for key, value in env.items() if key != "PGPASSFILE")
    assert not passfile.exists()


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (None, "environment variable MISSING_URL is not set in the process that ran the job"),
        ("redis://127.0.0.1:6379/3", "does not hold a PostgreSQL URL"),
        ("postgresql://u:hunter2@h/db?bogus_option=1", "unsupported connection parameter(s) bogus_option"),
    ],
)
def test_a_bad_url_variable_fails_the_backup_naming_the_variable_not_its_value(
    value: str | None, message: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    if value is not None:
        monkeypatch.setenv("MISSING_URL", value)
    datastore = DatastoreFactory(url_env="MISSING_URL")
    artifact = backup_artifact_request(datastore=datastore, trigger="test", enqueue=False)
    backup_artifact_execute(artifact_id=artifact.pk)
    artifact.refresh_from_db()
    assert artifact.status == Status.FAILED
    assert message in artifact.error
    assert "hunter2" not in artifact.error


def test_unreachable_server_fails_with_the_address(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DOWN_URL", "postgresql://postgres:pw@127.0.0.1:1/nothing")
    artifact = backup_artifact_request(datastore=DatastoreFactory(url_env="DOWN_URL"), trigger="test", enqueue=False)
    backup_artifact_execute(artifact_id=artifact.pk)
    artifact.refresh_from_db()
    assert artifact.status == Status.FAILED
    assert "cannot connect to database 'nothing' at 127.0.0.1:1" in artifact.error


def test_missing_pg_dump_binary_is_named(source_db: SourceDb, settings: Any, tmp_path: Path) -> None:
    settings.PG_BIN_DIR = str(tmp_path / "no-such-bin")
    artifact = take_backup(source_db)
    assert artifact.status == Status.FAILED
    assert artifact.error == f"pg_dump not found in PG_BIN_DIR={tmp_path / 'no-such-bin'}"


def test_verify_detects_a_tampered_file(source_db: SourceDb, artifact_dir: Path) -> None:
    artifact = take_backup(source_db)
    assert backup_artifact_verify(artifact_id=artifact.pk) == "verified"

    stored = artifact_dir / artifact.storage_key
    data = bytearray(stored.read_bytes())
    data[len(data) // 2] ^= 0xFF  # one flipped byte in the middle of the data
    stored.write_bytes(bytes(data))

    assert backup_artifact_verify(artifact_id=artifact.pk) == "corrupt"
    artifact.refresh_from_db()
    assert artifact.verification == BackupArtifact.Verification.CORRUPT
    assert "sha256 mismatch" in artifact.verification_error


def test_verify_reports_a_missing_file(source_db: SourceDb, artifact_dir: Path) -> None:
    artifact = take_backup(source_db)
    (artifact_dir / artifact.storage_key).unlink()
    assert backup_artifact_verify(artifact_id=artifact.pk) == "corrupt"
    artifact.refresh_from_db()
    assert "is missing" in artifact.verification_error


def test_verify_detects_an_unreadable_archive_with_a_matching_checksum(source_db: SourceDb, artifact_dir: Path) -> None:
    """A file that was broken before it was hashed (truncated) is caught by reading it through pg_restore."""
    artifact = take_backup(source_db)
    stored = artifact_dir / artifact.storage_key
    truncated = stored.read_bytes()[: artifact.size_bytes // 2]  # type: ignore[operator]
    stored.write_bytes(truncated)
    import hashlib

    BackupArtifact.objects.filter(pk=artifact.pk).update(
        sha256=hashlib.sha256(truncated).hexdigest(), size_bytes=len(truncated)
    )
    assert backup_artifact_verify(artifact_id=artifact.pk) == "corrupt"
    artifact.refresh_from_db()
    assert "the archive is unreadable" in artifact.verification_error


def test_compression_level_is_the_datastores(source_db: SourceDb) -> None:
    plain = take_backup(source_db, compression_level=0)
    BackupArtifact.objects.all().delete()
    squeezed = take_backup(source_db, compression_level=9)
    assert plain.compression_level == 0 and squeezed.compression_level == 9
    assert squeezed.size_bytes < plain.size_bytes  # type: ignore[operator]


def test_reaper_fails_a_backup_whose_worker_died_and_deletes_its_temporary_file(
    artifact_dir: Path, settings: Any
) -> None:
    from datetime import timedelta

    from django.utils import timezone

    artifact = BackupArtifactFactory()
    job_transition(BackupArtifact, pk=artifact.pk, to=Status.RUNNING)
    BackupArtifact.objects.filter(pk=artifact.pk).update(heartbeat_at=timezone.now() - timedelta(hours=1))
    orphan = artifact_dir / "tmp" / f"{artifact.pk}-abc-x.dump.partial"
    orphan.parent.mkdir(parents=True)
    orphan.write_bytes(b"half a dump")

    assert backup_artifacts_reap_stale() == 1

    artifact.refresh_from_db()
    assert artifact.status == Status.FAILED
    assert artifact.error.startswith("worker lost")
    assert not orphan.exists()


def test_a_redis_datastore_that_is_the_broker_is_refused(monkeypatch: pytest.MonkeyPatch, settings: Any) -> None:
    from inventory.models import Datastore
    from inventory.services import DatastoreRefused, datastore_check_target, datastore_identity

    settings.CELERY_BROKER_URL = "redis://127.0.0.1:6379/15"
    monkeypatch.setenv("QUEUE_URL", "redis://localhost:6379/15")
    queue = DatastoreFactory.build(kind=Datastore.Kind.REDIS, url_env="QUEUE_URL")
    with pytest.raises(DatastoreRefused, match="is the console's own task broker"):
        datastore_check_target(queue, datastore_identity(queue))
    monkeypatch.setenv("QUEUE_URL", "redis://localhost:6379/3")  # same server, another database: fine
    datastore_check_target(queue, datastore_identity(queue))


def test_fingerprints_differ_when_content_differs(source_db: SourceDb) -> None:
    """The comparison the round-trip tests rely on can fail."""
    before = table_fingerprints(source_db.url)
    with source_db.connect() as conn:
        conn.execute("UPDATE documents SET title = 'changed' WHERE id = 1")
    assert table_fingerprints(source_db.url) != before


def test_a_dump_waiting_on_a_lock_keeps_its_heartbeat_and_is_not_reaped(
    source_db: SourceDb, settings: Any, artifact_dir: Path
) -> None:
    """pg_dump writes nothing while it waits for a lock; the side-thread heartbeat keeps the lease anyway."""
    settings.JOB_STALE_AFTER_SECONDS = 3
    datastore = DatastoreFactory(url_env=source_db.url_env)
    artifact = backup_artifact_request(datastore=datastore, trigger="test", enqueue=False)
    locker = psycopg.connect(source_db.url)
    locker.execute("LOCK TABLE public.chunks IN ACCESS EXCLUSIVE MODE")
    job = start_thread(backup_artifact_execute, artifact_id=artifact.pk, verify_after=False)
    try:
        for _ in range(6):  # 6 s of silence from pg_dump, twice the stale limit
            time.sleep(1)
            assert backup_artifacts_reap_stale() == 0
    finally:
        locker.close()
    job.join(timeout=60)
    artifact.refresh_from_db()
    assert artifact.status == Status.SUCCEEDED, artifact.error


def test_a_reaped_backup_stops_its_pg_dump_and_leaves_no_file(source_db: SourceDb, artifact_dir: Path) -> None:
    datastore = DatastoreFactory(url_env=source_db.url_env)
    artifact = backup_artifact_request(datastore=datastore, trigger="test", enqueue=False)
    locker = psycopg.connect(source_db.url)
    locker.execute("LOCK TABLE public.chunks IN ACCESS EXCLUSIVE MODE")
    job = start_thread(backup_artifact_execute, artifact_id=artifact.pk, verify_after=False)
    try:
        for _ in range(100):
            if BackupArtifact.objects.get(pk=artifact.pk).status == Status.RUNNING:
                break
            time.sleep(0.1)
        # What the reaper does to a job it believes lost:
        job_transition(BackupArtifact, pk=artifact.pk, to=Status.FAILED, error="worker lost: no heartbeat")
        job.join(timeout=30)
        assert not job.is_alive()
    finally:
        locker.close()
    artifact.refresh_from_db()
    assert artifact.status == Status.FAILED and artifact.error == "worker lost: no heartbeat"
    assert not any(
        p.info["name"] == "pg_dump" and (p.info["environ"] or {}).get("PGDATABASE") == source_db.name
        for p in psutil.process_iter(["name", "environ"])
    )
    assert stored_files(artifact_dir) == []


@pytest.mark.parametrize(
    "password",
    ["S3cr3t/Pw_xyz", "S3cr3t@Pw_xyz", "S3cr3t?Pw_xyz", "S3cr3t#Pw_xyz"],
)
def test_an_unencoded_special_character_in_the_password_never_leaks_any_part_of_it(
    password: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TYPO_DB_URL", f"postgresql://app:{password}@127.0.0.1:5432/review_src")
    artifact = backup_artifact_request(datastore=DatastoreFactory(url_env="TYPO_DB_URL"), trigger="t", enqueue=False)
    backup_artifact_execute(artifact_id=artifact.pk)
    artifact.refresh_from_db()
    assert artifact.status == Status.FAILED
    assert "holds a malformed PostgreSQL URL: percent-encode special characters" in artifact.error
    assert "Pw_xyz" not in artifact.error and "S3cr3t" not in artifact.error
    from audit.models import AuditEvent

    assert not any("Pw_xyz" in str(e.details) for e in AuditEvent.objects.all())


def test_a_percent_encoded_password_works(monkeypatch: pytest.MonkeyPatch, source_db: SourceDb) -> None:
    encoded = source_db.url.replace("postgres@", "postgres:S3cr3t%2FPw%40x%3F@")
    monkeypatch.setenv(source_db.url_env, encoded)
    assert pg_connection_from_env(source_db.url_env).password == "S3cr3t/Pw@x?"
    assert take_backup(source_db).status == Status.SUCCEEDED


def test_pg_dumps_error_quoting_a_control_character_is_stored_escaped(monkeypatch: pytest.MonkeyPatch) -> None:
    """PostgreSQL identifiers may hold any character but NUL; pg_dump's errors quote them as they are."""
    suffix = uuid.uuid4().hex[:10]
    name, role, sequence = f"drt_src_{suffix}", f"drt_no_rights_{suffix}", "evil\x1b[31m\x07seq"
    with admin_connection() as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        conn.execute(sql.SQL("CREATE ROLE {} LOGIN").format(sql.Identifier(role)))
    try:
        with psycopg.connect(database_url(name), autocommit=True) as conn:
            conn.execute(sql.SQL("CREATE SEQUENCE {}").format(sql.Identifier(sequence)))
        # The role may connect but not read the sequence (and there is no table to count): pg_dump fails naming it.
        monkeypatch.setenv("TEST_NO_RIGHTS_URL", database_url(name).replace("postgres@", f"{role}@"))
        artifact = take_backup(SourceDb(name=name, url_env="TEST_NO_RIGHTS_URL", url=database_url(name)))
    finally:
        drop_database(name)
        with admin_connection() as conn:
            conn.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(role)))

    assert artifact.status == Status.FAILED
    assert artifact.error == (
        "pg_dump exited with status 1: query failed: ERROR:  permission denied for sequence evil\\x1b[31m\\x07seq"
    )
    assert artifact.stderr_tail.endswith(
        '\npg_dump: detail: Query was: SELECT last_value, is_called FROM public."evil\\x1b[31m\\x07seq"'
    )  # its lines kept, its control characters escaped
    assert "\x1b" not in artifact.stderr_tail + artifact.error
