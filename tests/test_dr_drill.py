"""The runbook's Redis-loss drill, played for real through the console: the sample application is running with
documents in flight; its PostgreSQL is backed up; its Redis is lost (FLUSHDB on its own database number); the
PostgreSQL backup is restored in place with a second person's approval, and the application's /healthz and /readyz
are checked; a reprocess batch built from the default query is sent; the application's own RQ worker processes
every document. Nothing is mocked: real PostgreSQL, pg_dump/pg_restore, Redis, Celery worker, HTTP and RQ."""

from __future__ import annotations

import json
from typing import Any

import pytest
from django.core.management import call_command

from inventory.models import Datastore
from reprocess.models import ReprocessBatch
from tests.factories import DatastoreFactory, EnvironmentFactory
from tests.support.sampleapp import SampleApp

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.worker]


def test_redis_loss_drill_every_document_ends_ready_and_none_is_sent_twice(
    celery_worker_thread: None,
    sampleapp: SampleApp,
    operator: Any,
    approver: Any,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    # The console's configuration: the URLs and the token are in environment variables, named here.
    monkeypatch.setenv("DRILL_APP_DATABASE_URL", sampleapp.database_url)
    monkeypatch.setenv("DRILL_APP_REDIS_URL", sampleapp.redis_url)
    monkeypatch.setenv("DRILL_APP_TOKEN", sampleapp.token)
    prod = EnvironmentFactory(name="prod", protected=True, api_url=sampleapp.url, api_token_env="DRILL_APP_TOKEN")
    prod.postgres_datastore = DatastoreFactory(name="prod-db", environment=prod, url_env="DRILL_APP_DATABASE_URL")
    prod.redis_datastore = DatastoreFactory(
        name="prod-redis", environment=prod, kind=Datastore.Kind.REDIS, url_env="DRILL_APP_REDIS_URL"
    )
    prod.save()

    # Before the incident: 30 documents done, 45 waiting in the queue, 15 half-way through processing.
    documents = sampleapp.seed(90)
    sampleapp.stop_worker()
    with sampleapp.connect() as conn:
        conn.execute("UPDATE documents SET status = 'READY' WHERE id <= %s", (documents[29][1],))
        conn.execute("UPDATE documents SET status = 'PROCESSING' WHERE id > %s", (documents[74][1],))
    call_command("backup", "prod-db", "--as", "olga", "--wait", "--json", "--timeout", "120")
    backup = json.loads(capsys.readouterr().out)
    assert backup["status"] == "succeeded", backup["error"]

    # The incident: Redis loses every queued and running job.
    sampleapp.redis().flushdb()

    # Restore the data in place; production needs someone else's approval.
    call_command(
        "restore",
        str(backup["id"]),
        "--into",
        "prod-db",
        "--as",
        "olga",
        "--reason",
        "runbook: Redis lost, bring the documents table back to the backup",
        "--confirm",
        "prod-db",
        "--json",
    )
    run = json.loads(capsys.readouterr().out)
    assert run["status"] == "awaiting_approval"
    call_command("approve", str(run["id"]), "--as", "abel", "--wait", "--json", "--timeout", "240")
    run = json.loads(capsys.readouterr().out)
    assert run["status"] == "succeeded", run["error"]
    checks = {check["name"]: check["ok"] for check in run["checks"]}
    assert checks["GET /healthz"] and checks["GET /readyz"] and checks["row counts"]
    after_restore = sampleapp.accepted_counts()

    # Recover the lost jobs: the default query finds the PENDING and PROCESSING documents.
    sampleapp.start_worker()
    call_command("reprocess", "prod", "--query", "--as", "olga", "--wait", "--json", "--timeout", "120")
    summary = json.loads(capsys.readouterr().out)
    assert summary["status"] == "succeeded", summary["error"]
    assert summary["total"] == summary["accepted"] == 60

    statuses = sampleapp.wait_for_statuses("READY", timeout=60)
    assert len(statuses) == 90
    sent = {doc_id: count - after_restore[doc_id] for doc_id, count in sampleapp.accepted_counts().items()}
    assert sorted(set(sent.values())) == [0, 1]  # none was accepted twice
    assert sum(sent.values()) == 60  # the 30 already READY were left alone

    # Running it again finds nothing left to do.
    with pytest.raises(Exception, match="no documents to reprocess in prod"):
        call_command("reprocess", "prod", "--query", "--as", "olga")
    assert ReprocessBatch.objects.count() == 1
