"""Restore drills against a real PostgreSQL with the real pg_restore: the scratch database is always dropped."""

from __future__ import annotations

import json
import time
from datetime import timedelta
from typing import Any

import pytest
from django.core import mail
from django.utils import timezone

from audit.models import AuditEvent
from backups.models import BackupArtifact
from drills.models import DrillRun
from drills.services import (
    DrillRefused,
    drill_run_cancel,
    drill_run_execute,
    drill_run_request,
    drill_runs_reap_stale,
)
from restores import pg_restore as primitive
from tests.factories import DatastoreFactory
from tests.support.http import HttpStub
from tests.support.local import start_thread
from tests.support.postgres import (
    QUERY_ATTACKS,
    WRITING_FUNCTION,
    PasswordServer,
    SourceDb,
    admin_connection,
    backup_taken,
    database_exists,
)

pytestmark = pytest.mark.django_db(transaction=True)
Status = DrillRun.Status


def drill(artifact: BackupArtifact) -> DrillRun:
    run = drill_run_request(datastore=artifact.datastore, trigger="test", enqueue=False)
    drill_run_execute(run_id=run.pk)
    run.refresh_from_db()
    return run


def check_names(run: DrillRun) -> dict[str, bool]:
    return {check["name"]: check["ok"] for check in run.checks}


def test_a_drill_restores_the_newest_backup_records_its_rto_and_drops_the_scratch_database(
    source_db: SourceDb,
) -> None:
    older = backup_taken(source_db.url_env, drill_probes="SELECT count(*) = 300 FROM documents\n\n")
    newest = BackupArtifact.objects.create(datastore=older.datastore, status="failed", trigger="test")
    run = drill(older)
    assert run.status == Status.SUCCEEDED, run.error
    assert run.artifact_id == older.pk != newest.pk  # the newest *succeeded* backup
    assert run.rto is not None and timedelta(0) < run.rto <= run.duration
    assert check_names(run) == {
        "SELECT 1": True,
        "SELECT now()": True,
        "row counts": True,
        "probe: SELECT count(*) = 300 FROM documents": True,
    }
    assert run.scratch_database.startswith("dr_drill_") and run.scratch_dropped is True
    assert not database_exists(run.scratch_database)
    assert [e.new_status for e in run.events.all()] == ["running", "checking", "succeeded"]
    finished = AuditEvent.objects.get(action=AuditEvent.Action.DRILL_FINISHED, object_id=str(run.pk))
    assert finished.details["status"] == "succeeded" and finished.details["rto_seconds"] == run.rto_seconds
    assert AuditEvent.objects.filter(action=AuditEvent.Action.DRILL_REQUESTED, object_id=str(run.pk)).exists()
    assert mail.outbox == []  # a drill that succeeded tells nobody


def test_a_failing_probe_fails_the_drill_keeps_its_rto_drops_the_database_and_notifies(
    source_db: SourceDb, http_stub: HttpStub, webhook_env: str, settings: Any
) -> None:
    settings.ALERT_EMAILS = ["oncall@example.test"]
    artifact = backup_taken(
        source_db.url_env,
        environment__webhook_url_env=webhook_env,
        drill_probes="SELECT count(*) > 0 FROM documents\nSELECT count(*) = 0 FROM documents\nSELECT * FROM nowhere",
    )
    run = drill(artifact)
    assert run.status == Status.FAILED
    assert run.rto is not None  # the restore itself worked and was timed
    checks = {check["name"]: check for check in run.checks}
    assert checks["probe: SELECT count(*) > 0 FROM documents"]["ok"] is True
    failing = checks["probe: SELECT count(*) = 0 FROM documents"]
    assert (failing["ok"], failing["detail"]) == (False, "returned False")
    # The console's words are kept as notes too: a page shows them in its reader's language.
    assert failing["detail_note"] == {"code": "returned", "params": {"value": "False"}}
    assert checks["probe: SELECT * FROM nowhere"]["ok"] is False
    assert 'relation "nowhere" does not exist' in checks["probe: SELECT * FROM nowhere"]["detail"]
    assert run.error.startswith("check failed: probe: SELECT count(*) = 0 FROM documents: returned False")
    assert run.scratch_dropped is True and not database_exists(run.scratch_database)
    [message] = mail.outbox
    assert message.subject == f"[DR Console] Drill #{run.pk} of {artifact.datastore.name} failed"
    assert message.to == ["oncall@example.test"]
    [(path, body)] = http_stub.posts
    assert path == "/hook" and "check failed" in json.loads(body)["text"]


def test_a_probe_cannot_change_the_restored_copy(source_db: SourceDb) -> None:
    artifact = backup_taken(source_db.url_env, drill_probes="WITH gone AS (DELETE FROM chunks RETURNING 1) SELECT true")
    run = drill(artifact)
    assert run.status == Status.FAILED
    assert "read-only transaction" in run.checks[-1]["detail"]


def test_probes_that_try_to_write_or_run_too_long_are_refused_audited_and_change_nothing(
    source_db: SourceDb, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(primitive, "PROBE_TIMEOUT_MS", 1000)
    with source_db.connect() as conn:
        conn.execute(WRITING_FUNCTION)  # restored with the data: the probes may call it
    attacks = {param.values[0]: param.values[1] for param in QUERY_ATTACKS}
    slow = "SELECT pg_sleep(10) IS NOT NULL"
    unchanged = "SELECT count(*) = 300 AND count(*) FILTER (WHERE title = 'pwned') = 0 FROM documents"
    artifact = backup_taken(source_db.url_env, drill_probes="\n".join([*attacks, slow, unchanged]))
    started = time.monotonic()
    run = drill(artifact)
    assert time.monotonic() - started < 60
    assert run.status == Status.FAILED
    checks = {check["name"].removeprefix("probe: "): check for check in run.checks}
    for probe, words in attacks.items():
        assert checks[probe]["ok"] is False and words in checks[probe]["detail"], probe
        assert checks[probe]["detail_note"]["code"].startswith("query_")  # shown in the reader's language
    assert checks[slow]["detail"] == "the query ran longer than 1 s and was stopped"
    assert checks[unchanged]["ok"] is True, checks[unchanged]  # the restored copy is as the backup left it
    refused = AuditEvent.objects.filter(action=AuditEvent.Action.QUERY_REFUSED)
    assert sorted(event.details["query"] for event in refused) == sorted(attacks)
    assert {(e.object_type, e.object_id, e.details["purpose"]) for e in refused} == {
        ("drills.drillrun", str(run.pk), "drill probe")
    }


def test_a_row_count_that_differs_from_the_dump_fails_the_drill(source_db: SourceDb) -> None:
    artifact = backup_taken(source_db.url_env)
    BackupArtifact.objects.filter(pk=artifact.pk).update(row_counts={**artifact.row_counts, "public.documents": 301})
    run = drill(artifact)
    assert run.status == Status.FAILED
    assert check_names(run)["row counts"] is False
    assert "public.documents: expected 301, found 300" in run.error
    assert not database_exists(run.scratch_database)


def test_a_drill_restores_on_the_configured_drill_server(
    source_db: SourceDb, password_server: PasswordServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TEST_DRILL_SERVER_URL", password_server.url())
    artifact = backup_taken(source_db.url_env, drill_server_url_env="TEST_DRILL_SERVER_URL")
    seen: list[bool] = []
    real_run_checks = primitive.run_checks

    def checks_while_there(database: Any, expected: dict[str, int]) -> Any:
        seen.append(database_exists(database.dbname, password_server.url()))
        return real_run_checks(database, expected)

    monkeypatch.setattr(primitive, "run_checks", checks_while_there)
    run = drill(artifact)
    assert run.status == Status.SUCCEEDED, run.error
    assert run.server_url_env == "TEST_DRILL_SERVER_URL"
    assert seen == [True]  # restored on the drill server...
    assert not database_exists(run.scratch_database, password_server.url())  # ...and dropped there
    assert not database_exists(run.scratch_database)


def test_a_datastore_without_a_backup_gets_a_failed_drill_that_notifies(settings: Any) -> None:
    settings.ALERT_EMAILS = ["oncall@example.test"]
    datastore = DatastoreFactory()
    run = drill_run_request(datastore=datastore, trigger="schedule", enqueue=False)
    assert run.status == Status.FAILED
    assert run.error == f"no succeeded backup of {datastore.name} to restore"
    assert len(mail.outbox) == 1


def test_a_second_drill_of_the_same_datastore_is_refused_while_one_is_active(source_db: SourceDb) -> None:
    artifact = backup_taken(source_db.url_env)
    first = drill_run_request(datastore=artifact.datastore, trigger="test", enqueue=False)
    with pytest.raises(DrillRefused, match=rf"already queued \(#{first.pk}\)"):
        drill_run_request(datastore=artifact.datastore, trigger="test", enqueue=False)


def test_a_redelivered_drill_runs_once(source_db: SourceDb) -> None:
    artifact = backup_taken(source_db.url_env)
    run = drill(artifact)
    drill_run_execute(run_id=run.pk)
    assert [e.new_status for e in run.events.all()] == ["running", "checking", "succeeded"]


def test_a_drill_cancelled_while_it_checks_drops_its_scratch_database(source_db: SourceDb) -> None:
    artifact = backup_taken(source_db.url_env, drill_probes="SELECT pg_sleep(2) IS NOT NULL")
    run = drill_run_request(datastore=artifact.datastore, trigger="test", enqueue=False)
    thread = start_thread(drill_run_execute, run_id=run.pk)
    deadline = time.monotonic() + 60
    while DrillRun.objects.get(pk=run.pk).status != Status.CHECKING:
        assert time.monotonic() < deadline, "the drill never reached its checks"
        time.sleep(0.05)
    assert drill_run_cancel(run_id=run.pk, cancelled_by=None)
    thread.join(timeout=60)
    run.refresh_from_db()
    assert run.status == Status.CANCELLED
    assert run.scratch_dropped is True and not database_exists(run.scratch_database)
    assert not drill_run_cancel(run_id=run.pk, cancelled_by=None)  # already ended


def test_the_reaper_fails_a_drill_whose_worker_died_and_drops_its_scratch_database(
    source_db: SourceDb, settings: Any
) -> None:
    artifact = backup_taken(source_db.url_env)
    run = drill_run_request(datastore=artifact.datastore, trigger="test", enqueue=False)
    name = f"dr_drill_{run.pk}_deadbeef"
    with admin_connection() as conn:  # what a worker killed in the middle of pg_restore leaves
        conn.execute(f'CREATE DATABASE "{name}"')
    stale = timezone.now() - timedelta(seconds=settings.JOB_STALE_AFTER_SECONDS + 60)
    DrillRun.objects.filter(pk=run.pk).update(
        status=Status.RUNNING, heartbeat_at=stale, started_at=stale, scratch_database=name
    )
    assert drill_runs_reap_stale() == 1
    run.refresh_from_db()
    assert run.status == Status.FAILED and run.error == "worker lost: the drill did not finish"
    assert run.scratch_dropped is True and not database_exists(name)
    assert drill_runs_reap_stale() == 0


def test_a_failed_backup_notifies_like_a_failed_drill(settings: Any, http_stub: HttpStub, webhook_env: str) -> None:
    from backups.services import backup_artifact_execute, backup_artifact_request

    settings.ALERT_EMAILS = ["oncall@example.test"]
    datastore = DatastoreFactory(url_env="TEST_NOWHERE_URL", environment__webhook_url_env=webhook_env)
    artifact = backup_artifact_request(datastore=datastore, trigger="test", enqueue=False)
    backup_artifact_execute(artifact_id=artifact.pk)
    [message] = mail.outbox
    assert message.subject == f"[DR Console] Backup #{artifact.pk} of {datastore.name} failed"
    assert "TEST_NOWHERE_URL" in message.body
    assert len(http_stub.posts) == 1


def test_a_drill_stopped_by_its_time_limit_during_pg_restore_drops_its_scratch_database(
    source_db: SourceDb, monkeypatch: pytest.MonkeyPatch
) -> None:
    from celery.exceptions import SoftTimeLimitExceeded

    artifact = backup_taken(source_db.url_env)
    real_restore = primitive.pg_restore_run
    created: list[str] = []

    def restore_then_time_out(**kwargs: Any) -> Any:
        real_restore(**kwargs)  # the scratch database exists and holds data when Celery's soft limit fires
        created.append(kwargs["database"].dbname)
        raise SoftTimeLimitExceeded()

    monkeypatch.setattr(primitive, "pg_restore_run", restore_then_time_out)
    run = drill(artifact)
    assert run.status == Status.FAILED and run.error.startswith("time limit of ")
    assert created == [run.scratch_database]
    assert run.scratch_dropped is True and not database_exists(run.scratch_database)


def test_a_drill_that_cannot_reach_the_broker_fails_at_once_and_says_why(
    source_db: SourceDb, broker_down: str, django_capture_on_commit_callbacks: Any
) -> None:
    from dr_console.jobs import BrokerUnavailable

    artifact = backup_taken(source_db.url_env)
    refused = pytest.raises(BrokerUnavailable, match="could not reach the task broker")
    with refused, django_capture_on_commit_callbacks(execute=True):
        drill_run_request(datastore=artifact.datastore, trigger="test")
    run = DrillRun.objects.get()
    assert run.status == Status.FAILED and run.error.startswith("could not reach the task broker at redis://127.0.0.1:")
    assert "@" not in run.error  # no credentials
