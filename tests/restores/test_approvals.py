"""Restores into protected environments: approvals, expiry, safety backup, application checks, audit log.
Real PostgreSQL, real pg_dump/pg_restore, a real HTTP server for /healthz and /readyz and the webhook."""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

import pytest
from django.core import mail
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db import DatabaseError, connection
from django.utils import timezone

from audit.models import AppendOnlyError, AuditEvent
from backups.models import BackupArtifact
from backups.services import backup_artifact_execute, backup_artifact_request
from dr_console.jobs import IllegalTransition, job_transition
from inventory.models import Datastore, Environment
from restores.models import RestoreRun
from restores.services import (
    ApprovalRefused,
    RestoreRefused,
    restore_run_approve,
    restore_run_execute,
    restore_run_reject,
    restore_run_request,
    restore_runs_expire,
)
from tests.factories import APPROVER_PERMS, OPERATOR_PERMS, DatastoreFactory, EnvironmentFactory, user_with_perms
from tests.support.http import HttpStub
from tests.support.postgres import SourceDb, table_fingerprints

pytestmark = pytest.mark.django_db(transaction=True)
Status = RestoreRun.Status
Kind = RestoreRun.TargetKind


@pytest.fixture
def prod(http_stub: HttpStub, webhook_env: str) -> Environment:
    return EnvironmentFactory(
        name="prod", protected=True, required_approvals=1, api_url=http_stub.url, webhook_url_env=webhook_env
    )


@pytest.fixture
def prod_db(prod: Environment, source_db: SourceDb) -> Datastore:
    return DatastoreFactory(name="prod-db", environment=prod, url_env=source_db.url_env)


@pytest.fixture
def backup(prod_db: Datastore) -> BackupArtifact:
    artifact = backup_artifact_request(datastore=prod_db, trigger="test", enqueue=False)
    backup_artifact_execute(artifact_id=artifact.pk, verify_after=False)
    artifact.refresh_from_db()
    assert artifact.status == BackupArtifact.Status.SUCCEEDED, artifact.error
    return artifact


def request_in_place(backup: BackupArtifact, requester: Any, **kwargs: Any) -> RestoreRun:
    kwargs.setdefault("confirm", backup.datastore.name)
    kwargs.setdefault("reason", "bad migration at 10:02 dropped documents")
    return restore_run_request(
        artifact=backup, target_kind=Kind.IN_PLACE, requested_by=requester, enqueue=False, **kwargs
    )


def test_protected_target_needs_the_typed_name(backup: BackupArtifact, operator: Any) -> None:
    with pytest.raises(RestoreRefused, match=r"prod-db is in the protected environment prod: type its name"):
        request_in_place(backup, operator, confirm="")
    # A wrong name is not a missing one: the message says what was typed did not match.
    with pytest.raises(RestoreRefused, match=r"the confirmation 'prod' does not match: type prod-db exactly"):
        request_in_place(backup, operator, confirm="prod")
    assert not RestoreRun.objects.exists()


def test_a_reason_and_the_operator_role_are_required(backup: BackupArtifact, operator: Any) -> None:
    with pytest.raises(RestoreRefused, match="a reason is required"):
        request_in_place(backup, operator, reason="  ")
    viewer = user_with_perms("vera")
    with pytest.raises(RestoreRefused, match="vera may not request restores"):
        request_in_place(backup, viewer)
    assert not RestoreRun.objects.exists()


def test_request_into_protected_environment_waits_and_tells_the_approvers(
    backup: BackupArtifact, operator: Any, approver: Any, http_stub: HttpStub
) -> None:
    run = request_in_place(backup, operator)
    assert run.status == Status.AWAITING_APPROVAL and run.required_approvals == 1
    assert [m.to for m in mail.outbox] == [["abel@example.test", "olga@example.test"]]
    assert "needs your approval" in mail.outbox[0].subject
    assert [path for path, _ in http_stub.posts] == ["/hook"]
    assert "needs your approval" in json.loads(http_stub.posts[0][1])["text"]


def test_requester_can_never_approve_their_own_run_not_even_as_superuser(backup: BackupArtifact) -> None:
    boss = user_with_perms("boss", *OPERATOR_PERMS, is_superuser=True)
    run = request_in_place(backup, boss)
    with pytest.raises(ApprovalRefused, match="boss requested restore #\\d+ and cannot decide on it"):
        restore_run_approve(run_id=run.pk, approver=boss)
    run.refresh_from_db()
    assert run.status == Status.AWAITING_APPROVAL and not run.approvals.exists()


def test_approving_needs_the_approve_permission(backup: BackupArtifact, operator: Any) -> None:
    run = request_in_place(backup, operator)
    other_operator = user_with_perms("otto", *OPERATOR_PERMS)
    with pytest.raises(ApprovalRefused, match="otto may not approve or reject restores"):
        restore_run_approve(run_id=run.pk, approver=other_operator)
    with pytest.raises(ApprovalRefused):
        restore_run_reject(run_id=run.pk, approver=other_operator, reason="no")
    run.refresh_from_db()
    assert run.status == Status.AWAITING_APPROVAL


def test_two_required_approvals_need_two_distinct_people(backup: BackupArtifact, operator: Any, approver: Any) -> None:
    Environment.objects.filter(name="prod").update(required_approvals=2)
    backup.datastore.environment.refresh_from_db()
    run = request_in_place(backup, operator)
    assert run.required_approvals == 2

    restore_run_approve(run_id=run.pk, approver=approver, enqueue=False)
    run.refresh_from_db()
    assert run.status == Status.AWAITING_APPROVAL
    with pytest.raises(ApprovalRefused, match="abel already decided"):
        restore_run_approve(run_id=run.pk, approver=approver, enqueue=False)

    second = user_with_perms("bea", *APPROVER_PERMS)
    restore_run_approve(run_id=run.pk, approver=second, enqueue=False)
    run.refresh_from_db()
    assert run.status == Status.QUEUED
    assert [(e.old_status, e.new_status) for e in run.events.all()] == [
        ("requested", "awaiting_approval"),
        ("awaiting_approval", "approved"),
        ("approved", "queued"),
    ]


def test_one_rejection_ends_the_run(backup: BackupArtifact, operator: Any, approver: Any) -> None:
    run = request_in_place(backup, operator)
    restore_run_reject(run_id=run.pk, approver=approver, reason="wrong backup: take the 09:00 one")
    run.refresh_from_db()
    assert run.status == Status.REJECTED
    assert run.error == "rejected by abel: wrong backup: take the 09:00 one"
    other = user_with_perms("bea", *APPROVER_PERMS)
    with pytest.raises(ApprovalRefused, match="is rejected, not awaiting approval"):
        restore_run_approve(run_id=run.pk, approver=other)


def test_an_approval_not_launched_in_time_expires(backup: BackupArtifact, operator: Any, approver: Any) -> None:
    run = request_in_place(backup, operator)
    RestoreRun.objects.filter(pk=run.pk).update(created_at=timezone.now() - timedelta(hours=5))
    with pytest.raises(ApprovalRefused, match="is expired, not awaiting approval"):
        restore_run_approve(run_id=run.pk, approver=approver)
    run.refresh_from_db()
    assert run.status == Status.EXPIRED
    assert "not launched within 4 h of the request" in run.error
    assert AuditEvent.objects.filter(action="restore.expired", object_id=str(run.pk)).exists()


def test_a_queued_run_past_its_approval_window_expires_instead_of_running(
    backup: BackupArtifact, operator: Any, approver: Any
) -> None:
    run = request_in_place(backup, operator)
    restore_run_approve(run_id=run.pk, approver=approver, enqueue=False)
    RestoreRun.objects.filter(pk=run.pk).update(
        created_at=timezone.now() - timedelta(hours=6), approved_at=timezone.now() - timedelta(hours=5)
    )
    restore_run_execute(run_id=run.pk)
    run.refresh_from_db()
    assert run.status == Status.EXPIRED and run.started_at is None
    assert run.error == "not launched within 4 h of its approval; request it again"


def test_a_run_approved_late_gets_the_whole_window_from_its_approval(
    backup: BackupArtifact, operator: Any, approver: Any, source_db: SourceDb, settings: Any
) -> None:
    """Approved 3 h 59 min after the request, then queued behind busy workers for an hour: it still runs, because
    the time to live counts from the approval once there is one."""
    run = request_in_place(backup, operator)
    RestoreRun.objects.filter(pk=run.pk).update(created_at=timezone.now() - timedelta(hours=3, minutes=59))
    restore_run_approve(run_id=run.pk, approver=approver, enqueue=False)
    RestoreRun.objects.filter(pk=run.pk).update(
        created_at=timezone.now() - timedelta(hours=4, minutes=59),
        approved_at=timezone.now() - timedelta(hours=1),
    )
    assert restore_runs_expire() == 0
    restore_run_execute(run_id=run.pk)
    run.refresh_from_db()
    assert run.status == Status.SUCCEEDED, run.error
    assert run.started_at is not None


def test_illegal_transition_raises_and_changes_nothing(backup: BackupArtifact, operator: Any) -> None:
    run = request_in_place(backup, operator)
    with pytest.raises(IllegalTransition, match="cannot go from awaiting_approval to running"):
        job_transition(RestoreRun, pk=run.pk, to=Status.RUNNING)
    run.refresh_from_db()
    assert run.status == Status.AWAITING_APPROVAL and run.events.count() == 1


def test_approved_prod_restore_takes_a_safety_backup_runs_checks_and_is_audited(
    backup: BackupArtifact, operator: Any, approver: Any, source_db: SourceDb, http_stub: HttpStub
) -> None:
    dumped = table_fingerprints(source_db.url)
    with source_db.connect() as conn:  # the incident: rows lost after the backup
        conn.execute("DELETE FROM chunks WHERE id > 1000")
    damaged = table_fingerprints(source_db.url)

    run = request_in_place(backup, operator)
    restore_run_approve(run_id=run.pk, approver=approver, comment="checked the timeline", enqueue=False)
    restore_run_execute(run_id=run.pk)
    run.refresh_from_db()

    assert run.status == Status.SUCCEEDED, run.error
    assert table_fingerprints(source_db.url) == dumped
    assert {c["name"]: c["ok"] for c in run.checks} == {
        "SELECT 1": True,
        "SELECT now()": True,
        "row counts": True,
        "GET /healthz": True,
        "GET /readyz": True,
    }
    assert {c["name"]: c.get("status_code") for c in run.checks if c["name"].startswith("GET")} == {
        "GET /healthz": 200,
        "GET /readyz": 200,
    }
    # The safety backup holds the damaged state, so this restore can itself be undone.
    safety = run.safety_backup
    assert safety is not None and safety.status == BackupArtifact.Status.SUCCEEDED
    assert safety.row_counts["public.chunks"] == 1000 and safety.trigger == f"safety backup before restore #{run.pk}"
    undo = request_in_place(safety, operator, reason="undo restore")
    restore_run_approve(run_id=undo.pk, approver=approver, enqueue=False)
    restore_run_execute(run_id=undo.pk)
    undo.refresh_from_db()
    assert undo.status == Status.SUCCEEDED, undo.error
    assert table_fingerprints(source_db.url) == damaged

    trail = [
        (e.action, e.actor_label)
        for e in AuditEvent.objects.filter(object_type="restores.restorerun", object_id=str(run.pk)).order_by("pk")
    ]
    assert trail == [
        ("restore.requested", "olga"),
        ("restore.approved", "abel"),
        ("restore.launched", "console"),
        ("restore.finished", "console"),
    ]
    finished = AuditEvent.objects.get(action="restore.finished", object_id=str(run.pk))
    assert finished.details["status"] == "succeeded" and finished.details["safety_backup"] == safety.pk
    assert any("succeeded" in m.subject for m in mail.outbox)


def test_a_failing_readyz_fails_the_run_and_says_which_check(
    backup: BackupArtifact, operator: Any, approver: Any, http_stub: HttpStub
) -> None:
    http_stub.statuses["/readyz"] = 503
    run = request_in_place(backup, operator)
    restore_run_approve(run_id=run.pk, approver=approver, enqueue=False)
    restore_run_execute(run_id=run.pk)
    run.refresh_from_db()
    assert run.status == Status.FAILED
    assert run.error.startswith("check failed: GET /readyz: 503 Service Unavailable")
    assert [c["name"] for c in run.checks if not c["ok"]] == ["GET /readyz"]


def test_an_application_answer_holding_nul_and_control_characters_is_recorded_escaped(
    backup: BackupArtifact, operator: Any, approver: Any, http_stub: HttpStub
) -> None:
    http_stub.statuses["/readyz"] = 503
    http_stub.bodies["/readyz"] = b'{"redis": "down\x00\x1b[2J", "key": "s:bin\xff"}'
    run = request_in_place(backup, operator)
    restore_run_approve(run_id=run.pk, approver=approver, enqueue=False)
    restore_run_execute(run_id=run.pk)

    run.refresh_from_db()
    assert run.status == Status.FAILED
    shown = '503 Service Unavailable: {"redis": "down\\x00\\x1b[2J", "key": "s:bin\ufffd"}'
    assert next(c for c in run.checks if c["name"] == "GET /readyz")["detail"] == shown
    assert run.error == f"check failed: GET /readyz: {shown}"


def test_an_unreachable_application_is_a_failed_check_not_a_crash(
    backup: BackupArtifact, operator: Any, approver: Any, settings: Any
) -> None:
    settings.APP_CHECK_CONNECT_RETRIES = 0
    Environment.objects.filter(name="prod").update(api_url="http://127.0.0.1:1")
    run = request_in_place(backup, operator)
    restore_run_approve(run_id=run.pk, approver=approver, enqueue=False)
    restore_run_execute(run_id=run.pk)
    run.refresh_from_db()
    assert run.status == Status.FAILED
    assert "GET /healthz: GET http://127.0.0.1:1/healthz: ConnectError" in run.error


def test_no_password_in_any_record_log_or_audit_event(
    prod: Environment,
    operator: Any,
    approver: Any,
    source_db: SourceDb,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    secret = "Hunter2-" + "q" * 10
    # The shared server trusts every client, so a password in the URL is accepted and must still never show.
    monkeypatch.setenv(source_db.url_env, source_db.url.replace("postgres@", f"postgres:{secret}@"))
    datastore = DatastoreFactory(name="prod-db", environment=prod, url_env=source_db.url_env)
    artifact = backup_artifact_request(datastore=datastore, trigger="test", triggered_by=operator, enqueue=False)
    backup_artifact_execute(artifact_id=artifact.pk, verify_after=False)
    run = request_in_place(BackupArtifact.objects.get(pk=artifact.pk), operator)
    restore_run_approve(run_id=run.pk, approver=approver, enqueue=False)
    restore_run_execute(run_id=run.pk)
    assert RestoreRun.objects.get(pk=run.pk).status == Status.SUCCEEDED

    with connection.cursor() as cursor:  # every text column of every table the console writes
        dumps = []
        for table in (
            "restores_restorerun",
            "restores_restorerunevent",
            "restores_restoreapproval",
            "backups_backupartifact",
            "backups_backupartifactevent",
            "audit_auditevent",
            "backups_datastore",
            "backups_environment",
        ):
            cursor.execute(f"SELECT row_to_json(t)::text FROM {table} t")
            dumps += [row[0] for row in cursor.fetchall()]
    assert dumps and not any(secret in row for row in dumps)
    assert secret not in caplog.text
    assert not any(secret in m.body for m in mail.outbox)


def test_audit_events_cannot_be_changed_or_deleted(backup: BackupArtifact, operator: Any) -> None:
    request_in_place(backup, operator)
    event = AuditEvent.objects.filter(action="restore.requested").get()
    with pytest.raises(AppendOnlyError):
        event.save()
    with pytest.raises(AppendOnlyError):
        event.delete()
    with pytest.raises(AppendOnlyError):
        AuditEvent.objects.all().update(actor_label="someone else")
    with pytest.raises(DatabaseError, match="append-only"), connection.cursor() as cursor:  # the database too
        cursor.execute("UPDATE audit_auditevent SET actor_label = 'x'")
    assert AuditEvent.objects.get(pk=event.pk).actor_label == "olga"


def test_command_line_request_approve_and_run(
    backup: BackupArtifact, operator: Any, approver: Any, source_db: SourceDb, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(CommandError, match="type its name to confirm \\(--confirm prod-db\\)"):
        call_command("restore", str(backup.pk), "--into", "prod-db", "--as", "olga", "--reason", "incident 42")

    call_command(
        "restore",
        str(backup.pk),
        "--into",
        "prod-db",
        "--as",
        "olga",
        "--reason",
        "incident 42",
        "--confirm",
        "prod-db",
        "--json",
    )
    requested = json.loads(capsys.readouterr().out)
    assert requested["status"] == "awaiting_approval" and requested["requested_by"] == "olga"

    with pytest.raises(CommandError, match="olga may not approve or reject restores"):
        call_command("approve", str(requested["id"]), "--as", "olga")
    with pytest.raises(CommandError, match="wrong user name or password for ghost"):
        call_command("approve", str(requested["id"]), "--as", "ghost")

    call_command("reject", str(requested["id"]), "--as", "abel", "--reason", "use last night's backup", "--json")
    rejected = json.loads(capsys.readouterr().out)
    assert rejected["status"] == "rejected"
    assert rejected["approvals"][0]["decision"] == "rejected"


def test_cancel_from_the_command_line_is_the_requesters_or_a_changers(
    backup: BackupArtifact, operator: Any, approver: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    run = request_in_place(backup, operator)
    with pytest.raises(CommandError, match="abel may only cancel their own restores"):
        call_command("cancel", str(run.pk), "--as", "abel")
    call_command("cancel", str(run.pk), "--as", "olga", "--json")
    assert json.loads(capsys.readouterr().out)["status"] == "cancelled"
    with pytest.raises(CommandError, match="had already ended \\(cancelled\\)"):
        call_command("cancel", str(run.pk), "--as", "olga")
    assert AuditEvent.objects.filter(action="restore.cancelled", actor_label="olga").count() == 1


def test_no_room_for_the_temporary_copy_is_refused_before_anything_is_touched(
    backup: BackupArtifact, operator: Any, approver: Any, source_db: SourceDb, settings: Any
) -> None:
    from django.core.files.storage import storages

    from backups import artifacts

    # Move the artifact to a storage without local paths (like S3): a restore must copy it to scratch first.
    with open(artifacts.local_path(backup.storage_key) or "", "rb") as handle:
        data = handle.read()
    settings.STORAGES = {**settings.STORAGES, "artifacts": {"BACKEND": "django.core.files.storage.InMemoryStorage"}}
    from django.core.files.base import ContentFile

    storages["artifacts"].save(backup.storage_key, ContentFile(data))
    BackupArtifact.objects.filter(pk=backup.pk).update(size_bytes=10**15)  # a petabyte will not fit
    before = table_fingerprints(source_db.url)

    run = request_in_place(BackupArtifact.objects.get(pk=backup.pk), operator)
    restore_run_approve(run_id=run.pk, approver=approver, enqueue=False)
    restore_run_execute(run_id=run.pk)
    run.refresh_from_db()

    assert run.status == Status.FAILED
    assert run.error.startswith("not enough room for a temporary copy in DR_SCRATCH_DIR")
    assert run.safety_backup is None
    assert table_fingerprints(source_db.url) == before


def test_a_reaped_restore_keeps_its_lock_until_the_database_it_created_is_dropped(
    backup: BackupArtifact, operator: Any, source_db: SourceDb, new_database_name: str, monkeypatch: Any
) -> None:
    """The worker died after creating the new database; the server cannot be reached when the reaper first runs:
    the run is failed at once but its target stays locked until a later run has dropped that database."""
    from inventory.locks import target_lock_acquire, target_locks_release_stale
    from inventory.models import TargetLock
    from restores.services import restore_runs_reap_stale
    from tests.support.postgres import admin_connection, database_exists

    Environment.objects.filter(name="prod").update(protected_data=False)  # queued at once: no approval needed
    run = restore_run_request(
        artifact=BackupArtifact.objects.select_related("datastore__environment").get(pk=backup.pk),
        target_kind=Kind.NEW_DATABASE,
        new_database_name=new_database_name,
        requested_by=operator,
        reason="r",
        enqueue=False,
    )
    job_transition(RestoreRun, pk=run.pk, to=Status.RUNNING)
    assert target_lock_acquire(target_key=run.target_key, holder=run) is None
    with admin_connection() as conn:
        conn.execute(f'CREATE DATABASE "{new_database_name}"')
    RestoreRun.objects.filter(pk=run.pk).update(database_created=True, heartbeat_at=timezone.now() - timedelta(hours=1))

    monkeypatch.delenv(source_db.url_env)  # the target cannot be reached for now
    assert restore_runs_reap_stale() == 1
    run.refresh_from_db()
    assert run.status == Status.FAILED and run.cleanup_pending
    target_locks_release_stale()
    assert TargetLock.objects.filter(target_key=run.target_key).exists()  # not while the database is there
    assert database_exists(new_database_name)

    monkeypatch.setenv(source_db.url_env, source_db.url)
    assert restore_runs_reap_stale() == 0  # nothing new to end; the cleanup is tried again
    target_locks_release_stale()
    run.refresh_from_db()
    assert not run.cleanup_pending and not run.database_created
    assert not database_exists(new_database_name)
    assert not TargetLock.objects.filter(target_key=run.target_key).exists()


def test_reaped_restore_releases_its_target_lock(backup: BackupArtifact, operator: Any) -> None:
    from inventory.locks import target_lock_acquire, target_locks_release_stale
    from inventory.models import TargetLock
    from restores.services import restore_runs_reap_stale

    Environment.objects.filter(name="prod").update(protected=False)
    run = restore_run_request(
        artifact=BackupArtifact.objects.select_related("datastore__environment").get(pk=backup.pk),
        target_kind=Kind.IN_PLACE,
        requested_by=operator,
        reason="r",
        enqueue=False,
    )
    job_transition(RestoreRun, pk=run.pk, to=Status.RUNNING)
    assert target_lock_acquire(target_key=run.target_key, holder=run) is None
    RestoreRun.objects.filter(pk=run.pk).update(heartbeat_at=timezone.now() - timedelta(hours=1))

    assert target_locks_release_stale() == 0  # the run still says running: the job reaper ends it first
    assert restore_runs_reap_stale() == 1
    target_locks_release_stale()

    assert RestoreRun.objects.get(pk=run.pk).error == "worker lost: the target may be partly restored"
    assert not TargetLock.objects.exists()


def test_loading_configuration_is_audited(tmp_path: Any) -> None:
    config = tmp_path / "dr.toml"
    config.write_text("[environments.prod]\nprotected = true\nsafety_backup = false\n")
    call_command("loadconfig", str(config))
    event = AuditEvent.objects.get(action="config.loaded")
    assert event.details["changes"] == ["environment prod: created"]
    assert Environment.objects.get(name="prod").takes_safety_backup is False


def test_a_new_database_on_the_protected_server_needs_no_approval_when_its_data_is_not_protected(
    backup: BackupArtifact, operator: Any, new_database_name: str, source_db: SourceDb
) -> None:
    """It overwrites nothing; with `protected_data` off, a copy of the data may be made without approval (with it on,
    the default, it waits: tests/test_target_identity.py)."""
    from tests.support.postgres import database_url

    Environment.objects.filter(name="prod").update(protected_data=False)
    run = restore_run_request(
        artifact=BackupArtifact.objects.select_related("datastore__environment").get(pk=backup.pk),
        target_kind=Kind.NEW_DATABASE,
        new_database_name=new_database_name,
        requested_by=operator,
        reason="does last night's backup restore?",
        enqueue=False,
    )
    assert run.status == Status.QUEUED and run.required_approvals == 0
    restore_run_execute(run_id=run.pk)
    run.refresh_from_db()
    assert run.status == Status.SUCCEEDED, run.error
    assert run.safety_backup is None  # nothing was overwritten, nothing to save first
    assert table_fingerprints(database_url(new_database_name)) == table_fingerprints(source_db.url)
