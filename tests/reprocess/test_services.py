"""Building and sending reprocess batches against a real HTTP server and a real PostgreSQL."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest

from audit.models import AuditEvent
from inventory.models import Environment
from reprocess.models import ReprocessBatch, ReprocessItem
from reprocess.services import (
    ReprocessRefused,
    reprocess_batch_build,
    reprocess_batch_cancel,
    reprocess_batch_execute,
    reprocess_batch_send,
)
from reprocess.sources import SourceError, documents_from_csv
from tests.factories import DatastoreFactory, EnvironmentFactory, ReprocessBatchFactory
from tests.queues import jobs
from tests.reprocess.conftest import ReprocessStub
from tests.support.postgres import (
    QUERY_ATTACKS,
    WRITING_FUNCTION,
    SourceDb,
    admin_connection,
    database_url,
    drop_database,
    table_fingerprints,
)

pytestmark = pytest.mark.django_db(transaction=True)  # the sender writes from its own thread


@pytest.fixture(autouse=True)
def _fast_retries(settings: Any) -> None:
    settings.REPROCESS_BACKOFF_SECONDS = 0.01
    settings.REPROCESS_BACKOFF_MAX_SECONDS = 0.05


@pytest.fixture
def app_env(reprocess_stub: ReprocessStub, monkeypatch: pytest.MonkeyPatch) -> Environment:
    monkeypatch.setenv("TEST_APP_TOKEN", reprocess_stub.token)
    return EnvironmentFactory(
        name="prod", api_url=reprocess_stub.url, api_token_env="TEST_APP_TOKEN", reprocess_concurrency=8
    )


def documents(n: int) -> list[tuple[str, str]]:
    return [(f"ws-{i % 3}", str(1000 + i)) for i in range(n)]


def not_accepted(batch: ReprocessBatch) -> list[tuple[str, int, str]]:
    return list(batch.items.exclude(status="accepted").values_list("document_id", "attempts", "last_error")[:5])


def send_now(batch: ReprocessBatch) -> ReprocessBatch:
    reprocess_batch_send(batch=batch, requested_by=None, trigger="test", enqueue=False)
    reprocess_batch_execute(batch_id=batch.pk)
    batch.refresh_from_db()
    return batch


# --- CSV ------------------------------------------------------------------------------------------------------


def test_csv_with_header_blank_lines_and_duplicates() -> None:
    pairs, duplicates = documents_from_csv("\ufeffworkspace_id,document_id\nws-1,10\n\nws-1,11\nws-1,10\n ws-2 , 12 \n")
    assert pairs == [("ws-1", "10"), ("ws-1", "11"), ("ws-2", "12")]
    assert duplicates == 1


def test_csv_errors_name_every_bad_line() -> None:
    with pytest.raises(SourceError) as caught:
        documents_from_csv("ws-1,10\nws-1;11\nws-1,\n,12\nws-1,13,extra\n" + "w," + "9" * 65 + "\n")
    assert caught.value.errors == [
        "line 2: expected 2 columns (workspace_id,document_id), got 1",
        "line 3: document_id is empty",
        "line 4: workspace_id is empty",
        "line 5: expected 2 columns (workspace_id,document_id), got 3",
        "line 6: document_id is longer than 64 characters",
    ]


def test_ids_with_control_characters_are_refused_not_altered() -> None:
    with pytest.raises(SourceError) as refused:
        documents_from_csv("ws-1,10\nws-1,1\x00\nws\x1b[31m,12\n")
    assert refused.value.errors == [
        "line 2: document_id holds a control character: 1\\x00",
        "line 3: workspace_id holds a control character: ws\\x1b[31m",
    ]


def test_a_bad_csv_builds_nothing(app_env: Environment) -> None:
    with pytest.raises(SourceError):
        reprocess_batch_build(environment=app_env, source="csv", csv_content="ws,1\nbad\n", requested_by=None)
    assert not ReprocessBatch.objects.exists() and not ReprocessItem.objects.exists()


# --- the configured query ---------------------------------------------------------------------------------------


@pytest.fixture
def documents_db(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """The application's own database: a documents table in every status."""
    name = f"drt_docs_{int(time.time() * 1000) % 10**9}"
    with admin_connection() as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    url = database_url(name)
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(
            "CREATE TABLE documents (id bigserial PRIMARY KEY, workspace_id text NOT NULL, status text NOT NULL, "
            "updated_at timestamptz DEFAULT now())"
        )
        conn.execute(
            "INSERT INTO documents (workspace_id, status) SELECT 'ws-' || (i % 4), "
            "(ARRAY['PENDING', 'PROCESSING', 'READY', 'FAILED'])[1 + i % 4] FROM generate_series(1, 40) i"
        )
    monkeypatch.setenv("TEST_DOCS_URL", url)
    yield url
    drop_database(name)


def test_default_query_takes_pending_and_processing_documents(app_env: Environment, documents_db: str) -> None:
    app_env.postgres_datastore = DatastoreFactory(environment=app_env, name="app-db", url_env="TEST_DOCS_URL")
    app_env.save()
    batch = reprocess_batch_build(environment=app_env, source="query", requested_by=None)
    with psycopg.connect(documents_db) as conn:
        expected = conn.execute(
            "SELECT workspace_id, id::text FROM documents "
            "WHERE status IN ('PENDING', 'PROCESSING') ORDER BY documents.id"
        ).fetchall()
    assert list(batch.items.order_by("pk").values_list("workspace_id", "document_id")) == expected
    assert batch.total == 20 and batch.status == ReprocessBatch.Status.DRAFT
    assert batch.source_detail == "default query (PENDING or PROCESSING)"


@pytest.mark.parametrize(
    ("query", "error"),
    [
        ("DELETE FROM documents RETURNING workspace_id, id", "cannot execute DELETE in a read-only transaction"),
        ("SELECT pg_sleep(10), 1", "failed on app-db: the query ran longer than 1 s and was stopped"),
        ("SELECT id FROM documents", "must return workspace_id, document_id"),
        ("SELECT workspace_id, id FROM nope", 'relation "nope" does not exist'),
    ],
)
def test_a_bad_configured_query_is_refused_and_changes_nothing(
    app_env: Environment, documents_db: str, settings: Any, query: str, error: str
) -> None:
    settings.REPROCESS_QUERY_TIMEOUT = 1
    app_env.postgres_datastore = DatastoreFactory(environment=app_env, name="app-db", url_env="TEST_DOCS_URL")
    app_env.reprocess_query = query
    app_env.save()
    with pytest.raises(SourceError, match=error):
        reprocess_batch_build(environment=app_env, source="query", requested_by=None)
    with psycopg.connect(documents_db) as conn:
        assert conn.execute("SELECT count(*) FROM documents").fetchone() == (40,)
    assert not ReprocessBatch.objects.exists()


@pytest.mark.parametrize(("query", "words"), QUERY_ATTACKS)
def test_a_reprocess_query_that_tries_to_write_is_refused_changes_nothing_and_is_audited(
    app_env: Environment, source_db: SourceDb, operator: Any, query: str, words: str
) -> None:
    with source_db.connect() as conn:
        conn.execute(WRITING_FUNCTION)
    app_env.postgres_datastore = DatastoreFactory(environment=app_env, name="app-db", url_env=source_db.url_env)
    app_env.reprocess_query = query  # saved without the form's check, as before the check existed
    app_env.save()
    before = table_fingerprints(source_db.url)
    with pytest.raises(SourceError) as caught:
        reprocess_batch_build(environment=app_env, source="query", requested_by=operator)
    [message] = caught.value.errors
    assert message.startswith("the console refused the reprocess query on app-db: the query ") and words in message
    assert table_fingerprints(source_db.url) == before
    assert not ReprocessBatch.objects.exists()
    event = AuditEvent.objects.get(action=AuditEvent.Action.QUERY_REFUSED)
    assert (event.actor, event.object_type, event.object_id) == (operator, "inventory.environment", str(app_env.pk))
    assert event.details["purpose"] == "reprocess query" and event.details["query"] == query


@pytest.fixture
def reader_role(source_db: SourceDb, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """A role that can only read the documents, as docs/configuration.md says to create, its URL in a variable."""
    role = f"drt_reader_{uuid.uuid4().hex[:8]}"
    with source_db.connect() as conn:
        conn.execute(f"CREATE ROLE {role} LOGIN")
        conn.execute(f'GRANT CONNECT ON DATABASE "{source_db.name}" TO {role}')
        conn.execute(f"GRANT USAGE ON SCHEMA public TO {role}")
        conn.execute(f"GRANT SELECT ON documents TO {role}")
    monkeypatch.setenv("TEST_READER_URL", source_db.url.replace("postgres@", f"{role}@", 1))
    yield role
    with source_db.connect() as conn:
        conn.execute(f"DROP OWNED BY {role}")
        conn.execute(f"DROP ROLE {role}")


def test_the_reprocess_query_connects_as_the_read_only_role_when_one_is_set(
    app_env: Environment, source_db: SourceDb, reader_role: str
) -> None:
    app_env.postgres_datastore = DatastoreFactory(environment=app_env, name="app-db", url_env=source_db.url_env)
    app_env.reprocess_query_url_env = "TEST_READER_URL"
    app_env.reprocess_query = "SELECT current_user AS workspace_id, id AS document_id FROM documents WHERE id < 3"
    app_env.save()
    batch = reprocess_batch_build(environment=app_env, source="query", requested_by=None)
    assert set(batch.items.values_list("workspace_id", flat=True)) == {reader_role}


def test_query_without_a_postgres_datastore_says_what_to_set(app_env: Environment) -> None:
    with pytest.raises(SourceError, match="environment prod has no postgres_datastore"):
        reprocess_batch_build(environment=app_env, source="query", requested_by=None)


def test_an_empty_result_builds_no_batch(app_env: Environment, documents_db: str) -> None:
    app_env.postgres_datastore = DatastoreFactory(environment=app_env, name="app-db", url_env="TEST_DOCS_URL")
    app_env.reprocess_query = "SELECT workspace_id, id FROM documents WHERE false"
    app_env.save()
    with pytest.raises(ReprocessRefused, match="no documents to reprocess in prod"):
        reprocess_batch_build(environment=app_env, source="query", requested_by=None)


# --- sending ------------------------------------------------------------------------------------------------------


def test_transient_failures_are_retried_until_every_item_is_accepted(
    app_env: Environment, reprocess_stub: ReprocessStub
) -> None:
    docs = documents(100)
    for index, (_, doc) in enumerate(docs):
        if index % 5 == 0:  # 20% answer 503 first, some twice, and one a 429
            reprocess_stub.script[doc] = [503, 503] if index % 10 == 0 else [503]
    reprocess_stub.script[docs[1][1]] = [429]
    batch = send_now(ReprocessBatchFactory(environment=app_env, documents=docs))

    assert batch.status == ReprocessBatch.Status.SUCCEEDED, not_accepted(batch)
    assert (batch.accepted, batch.failed, batch.total) == (100, 0, 100)
    assert batch.sent == 100 + 10 * 2 + 10 + 1
    assert set(reprocess_stub.accepted.values()) == {1}  # every document accepted exactly once
    assert len(set(reprocess_stub.idempotency_keys)) == 100  # a retry repeats its item's key
    assert ReprocessItem.objects.get(batch=batch, document_id=docs[0][1]).attempts == 3


def test_refusals_fail_the_item_at_once_with_the_reason(app_env: Environment, reprocess_stub: ReprocessStub) -> None:
    docs = documents(10)
    reprocess_stub.refuse = {docs[2][1]: 404, docs[3][1]: 409}
    batch = send_now(ReprocessBatchFactory(environment=app_env, documents=docs))

    assert batch.status == ReprocessBatch.Status.FAILED
    assert batch.error == "2 of 10 items were not accepted; see the items"
    assert (batch.accepted, batch.failed) == (8, 2)
    item = ReprocessItem.objects.get(batch=batch, document_id=docs[2][1])
    assert (item.status, item.attempts, item.last_status_code) == ("failed", 1, 404)
    assert item.last_error.startswith("404 Not Found")
    assert reprocess_stub.calls[docs[2][1]] == 1


def test_a_refusal_whose_body_holds_nul_and_control_characters_is_recorded_escaped(
    app_env: Environment, reprocess_stub: ReprocessStub
) -> None:
    docs = documents(3)
    reprocess_stub.refuse = {docs[1][1]: 404}
    reprocess_stub.refusal_body = b'{"error": "no document\x00 \x1b[31mhere\x1b[0m"}'

    batch = send_now(ReprocessBatchFactory(environment=app_env, documents=docs))

    assert (batch.status, batch.accepted, batch.failed) == (ReprocessBatch.Status.FAILED, 2, 1)
    item = ReprocessItem.objects.get(batch=batch, document_id=docs[1][1])
    assert item.last_error == '404 Not Found: {"error": "no document\\x00 \\x1b[31mhere\\x1b[0m"}'


def test_sending_again_sends_only_what_was_not_accepted(app_env: Environment, reprocess_stub: ReprocessStub) -> None:
    docs = documents(20)
    reprocess_stub.refuse = {docs[0][1]: 503}  # down for this document: retried, then given up
    batch = send_now(ReprocessBatchFactory(environment=app_env, documents=docs))
    assert batch.status == ReprocessBatch.Status.FAILED and batch.accepted == 19
    assert "gave up after 6 attempts" in ReprocessItem.objects.get(batch=batch, document_id=docs[0][1]).last_error

    reprocess_stub.refuse = {}
    batch = send_now(batch)
    assert batch.status == ReprocessBatch.Status.SUCCEEDED and (batch.accepted, batch.failed) == (20, 0)
    assert batch.runs == 2 and batch.run_accepted == 1
    assert set(reprocess_stub.accepted.values()) == {1}
    with pytest.raises(ReprocessRefused, match="every item of batch .* was already accepted"):
        reprocess_batch_send(batch=batch, requested_by=None, enqueue=False)


def test_retry_after_is_honoured(app_env: Environment, reprocess_stub: ReprocessStub, settings: Any) -> None:
    settings.REPROCESS_BACKOFF_MAX_SECONDS = 5
    reprocess_stub.retry_after = "1"
    reprocess_stub.script = {"1000": [429]}
    started = time.monotonic()
    batch = send_now(ReprocessBatchFactory(environment=app_env, documents=documents(1)))
    assert batch.status == ReprocessBatch.Status.SUCCEEDED
    assert time.monotonic() - started >= 1.0  # waited what the server asked, not the 10 ms backoff


def test_cancel_stops_sending_and_keeps_what_was_accepted(app_env: Environment, reprocess_stub: ReprocessStub) -> None:
    reprocess_stub.latency = 0.05
    app_env.reprocess_concurrency = 2
    app_env.save()
    batch = ReprocessBatchFactory(environment=app_env, documents=documents(400))
    reprocess_batch_send(batch=batch, requested_by=None, enqueue=False)
    sender = threading.Thread(target=reprocess_batch_execute, kwargs={"batch_id": batch.pk})
    sender.start()
    while ReprocessBatch.objects.get(pk=batch.pk).accepted < 10:
        time.sleep(0.05)
    reprocess_batch_cancel(batch=batch, requested_by=None, trigger="test")
    sender.join(timeout=10)
    assert not sender.is_alive()

    batch.refresh_from_db()
    assert batch.status == ReprocessBatch.Status.CANCELLED
    calls_at_cancel = sum(reprocess_stub.calls.values())
    assert calls_at_cancel < 100  # stopped long before the 400
    # Every call the application accepted is recorded as accepted: nothing would be sent twice.
    assert batch.accepted == sum(reprocess_stub.accepted.values())
    assert ReprocessItem.objects.filter(batch=batch, status="accepted").count() == batch.accepted

    reprocess_stub.latency = 0
    batch = send_now(batch)
    assert batch.status == ReprocessBatch.Status.SUCCEEDED, not_accepted(batch)
    assert batch.accepted == 400
    assert set(reprocess_stub.accepted.values()) == {1}


def test_a_missing_token_fails_the_batch_with_what_to_do(app_env: Environment, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TEST_APP_TOKEN")
    batch = send_now(ReprocessBatchFactory(environment=app_env, documents=documents(3)))
    assert batch.status == ReprocessBatch.Status.FAILED
    assert batch.error == (
        "environment variable TEST_APP_TOKEN is not set in the worker's environment; set it to the application's "
        "API token and restart the worker"
    )
    assert batch.accepted == 0


def test_a_wrong_token_fails_every_item_without_retrying(
    app_env: Environment, reprocess_stub: ReprocessStub, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TEST_APP_TOKEN", "wrong")
    batch = send_now(ReprocessBatchFactory(environment=app_env, documents=documents(5)))
    assert batch.failed == 5 and batch.sent == 5
    assert ReprocessItem.objects.filter(batch=batch, last_status_code=401).count() == 5


def test_an_unreachable_application_fails_items_after_retries(app_env: Environment) -> None:
    app_env.api_url = "http://127.0.0.1:9"  # discard port: nothing listens
    app_env.save()
    batch = send_now(ReprocessBatchFactory(environment=app_env, documents=documents(2)))
    assert batch.status == ReprocessBatch.Status.FAILED and batch.failed == 2
    assert "cannot reach the application (ConnectError" in batch.items.first().last_error  # type: ignore[union-attr]


def test_the_token_never_reaches_the_database_or_the_audit_log(
    app_env: Environment, reprocess_stub: ReprocessStub
) -> None:
    reprocess_stub.refuse = {"1000": 401}
    send_now(ReprocessBatchFactory(environment=app_env, documents=documents(2)))
    for event in AuditEvent.objects.all():
        assert reprocess_stub.token not in str(event.details)
    for item in ReprocessItem.objects.all():
        assert reprocess_stub.token not in item.last_error
    actions = list(AuditEvent.objects.order_by("pk").values_list("action", flat=True))
    assert actions == ["reprocess.queued", "reprocess.started", "reprocess.finished"]


def test_one_batch_at_a_time_per_environment(app_env: Environment) -> None:
    first = ReprocessBatchFactory(environment=app_env, documents=documents(2))
    second = ReprocessBatchFactory(environment=app_env, documents=documents(2))
    reprocess_batch_send(batch=first, requested_by=None, enqueue=False)
    with pytest.raises(ReprocessRefused, match=f"batch #{first.pk} is already sending to prod"):
        reprocess_batch_send(batch=second, requested_by=None, enqueue=False)
    assert ReprocessBatch.objects.get(pk=second.pk).status == ReprocessBatch.Status.DRAFT


# --- the failed RQ jobs -------------------------------------------------------------------------------------------


def test_failed_rq_jobs_build_a_batch_and_sending_it_reaches_the_application(
    app_redis: Any, reprocess_stub: ReprocessStub, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tests.queues.conftest import QueueEnv, queue_environment

    monkeypatch.setenv("TEST_APP_TOKEN", reprocess_stub.token)
    queue_env = QueueEnv(environment=queue_environment(app_redis), redis=app_redis)
    queue_env.fail(11, 12, 13)
    queue_env.fail(12, queue="other")  # the same document failed twice: sent once
    queue_env.queue().enqueue(print, "not a document job")
    queue_env.connection.set("broken:99", 1)
    environment = queue_env.environment
    environment.api_url, environment.api_token_env = reprocess_stub.url, "TEST_APP_TOKEN"
    environment.save()

    batch = reprocess_batch_build(environment=environment, source="failed_jobs", requested_by=None)
    assert sorted(batch.items.values_list("workspace_id", "document_id")) == [
        ("ws-1", "11"),
        ("ws-1", "12"),
        ("ws-1", "13"),
    ]
    batch = send_now(batch)
    assert batch.status == ReprocessBatch.Status.SUCCEEDED
    assert sorted(reprocess_stub.accepted) == ["11", "12", "13"]


def test_failed_rq_jobs_whose_ids_hold_control_characters_are_left_out(app_redis: Any) -> None:
    from tests.queues.conftest import QueueEnv, queue_environment

    queue_env = QueueEnv(environment=queue_environment(app_redis), redis=app_redis)
    queue_env.fail(11)
    for odd in ("12\x00", "13\x1b[31m"):
        queue_env.connection.set(f"broken:{odd}", 1)
        queue_env.queue().enqueue(jobs.process, "ws-1", odd)
    queue_env.work()

    batch = reprocess_batch_build(environment=queue_env.environment, source="failed_jobs", requested_by=None)

    assert list(batch.items.values_list("workspace_id", "document_id")) == [("ws-1", "11")]


def test_failed_jobs_without_a_reachable_redis_say_so(app_redis: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    from tests.queues.conftest import queue_environment

    environment = queue_environment(app_redis)
    monkeypatch.setenv(app_redis.url_env, "redis://127.0.0.1:9/0")
    with pytest.raises(SourceError, match="prod-redis"):
        reprocess_batch_build(environment=environment, source="failed_jobs", requested_by=None)
    assert not ReprocessBatch.objects.exists()
