"""The reprocess pages: who may do what, building a batch from a pasted or uploaded CSV (shown before anything
is sent), and a batch sent through a real Celery worker to a real HTTP server, watched through its polled part."""

from __future__ import annotations

import html
import time
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import Client
from django.urls import reverse

from audit.models import AuditEvent
from inventory.models import Environment
from reprocess.models import ReprocessBatch, ReprocessItem
from tests.factories import DatastoreFactory, EnvironmentFactory, ReprocessBatchFactory, user_in_groups
from tests.reprocess.conftest import ReprocessStub
from tests.support.postgres import SourceDb

HTMX = {"HX-Request": "true"}


@pytest.fixture
def viewer(db: None) -> User:
    return user_in_groups("vera", "viewer")


@pytest.fixture
def prod(db: None, reprocess_stub: ReprocessStub, monkeypatch: pytest.MonkeyPatch) -> Environment:
    monkeypatch.setenv("TEST_APP_TOKEN", reprocess_stub.token)
    return EnvironmentFactory(name="prod", api_url=reprocess_stub.url, api_token_env="TEST_APP_TOKEN")


def logged_in(client: Client, user: User) -> Client:
    client.force_login(user)
    return client


@pytest.mark.django_db
def test_viewers_see_batches_but_may_not_build_send_or_cancel(client: Client, viewer: User, prod: Environment) -> None:
    batch = ReprocessBatchFactory(environment=prod, documents=[("ws-1", "1")])
    logged_in(client, viewer)
    assert client.get(reverse("reprocess:batch_list")).status_code == 200
    page = client.get(reverse("reprocess:batch_detail", args=[batch.pk]))
    assert page.status_code == 200 and b"Send 1 document" not in page.content
    assert client.get(reverse("reprocess:batch_create")).status_code == 403
    for name in ("batch_create", "batch_send", "batch_cancel", "batch_discard"):
        args = [] if name == "batch_create" else [batch.pk]
        assert client.post(reverse(f"reprocess:{name}", args=args)).status_code == 403, name
    assert ReprocessBatch.objects.get(pk=batch.pk).status == ReprocessBatch.Status.DRAFT


@pytest.mark.django_db
def test_pages_need_a_login(client: Client, prod: Environment) -> None:
    response = client.get(reverse("reprocess:batch_list"))
    assert response.status_code == 302 and "/accounts/login/" in response["Location"]


@pytest.mark.django_db
def test_state_changes_are_post_only(client: Client, operator: User, prod: Environment) -> None:
    batch = ReprocessBatchFactory(environment=prod, documents=[("ws-1", "1")])
    logged_in(client, operator)
    assert client.get(reverse("reprocess:batch_send", args=[batch.pk])).status_code == 405


@pytest.mark.django_db
def test_a_pasted_csv_builds_a_draft_shown_before_anything_is_sent(
    client: Client, operator: User, prod: Environment, reprocess_stub: ReprocessStub
) -> None:
    logged_in(client, operator)
    response = client.post(
        reverse("reprocess:batch_create"),
        {"environment": prod.pk, "source": "csv", "csv_text": "workspace_id,document_id\nws-1,10\nws-2,11\nws-1,10\n"},
        follow=True,
    )
    batch = ReprocessBatch.objects.get()
    assert batch.status == ReprocessBatch.Status.DRAFT and batch.total == 2
    page = response.content.decode()
    assert f"Batch #{batch.pk} holds 2 documents" in page
    assert "Send 2 documents" in page and "ws-2" in page and "1 duplicate lines ignored" in page
    assert "TEST_APP_TOKEN" in page and reprocess_stub.token not in page
    assert not reprocess_stub.calls  # nothing sent yet
    assert AuditEvent.objects.get(action="reprocess.created").actor == operator


@pytest.mark.django_db
def test_a_bad_csv_upload_lists_every_bad_line_and_builds_nothing(
    client: Client, operator: User, prod: Environment
) -> None:
    logged_in(client, operator)
    upload = SimpleUploadedFile("lost.csv", b"ws-1,10\nws-1;11\nws-1,\n", content_type="text/csv")
    response = client.post(
        reverse("reprocess:batch_create"), {"environment": prod.pk, "source": "csv", "csv_file": upload}
    )
    page = response.content.decode()
    assert response.status_code == 200
    assert "line 2: expected 2 columns (workspace_id,document_id), got 1" in page
    assert "line 3: document_id is empty" in page
    assert not ReprocessBatch.objects.exists()


@pytest.mark.django_db
def test_a_reprocess_query_that_writes_is_refused_on_the_page_in_the_readers_language(
    client: Client, operator: User, prod: Environment, source_db: SourceDb
) -> None:
    prod.postgres_datastore = DatastoreFactory(environment=prod, name="app-db", url_env=source_db.url_env)
    prod.reprocess_query = "SELECT workspace_id, id AS document_id FROM documents FOR UPDATE"
    prod.save()
    logged_in(client, operator)
    response = client.post(
        reverse("reprocess:batch_create"), {"environment": prod.pk, "source": "query"}, HTTP_ACCEPT_LANGUAGE="es"
    )
    assert response.status_code == 200
    assert (
        "la consola rechazó la consulta de reprocesamiento en app-db: la consulta intentó escribir o bloquear filas "
        "(cannot execute SELECT FOR UPDATE in a read-only transaction)"
    ) in html.unescape(response.content.decode())
    assert not ReprocessBatch.objects.exists()
    assert AuditEvent.objects.get(action=AuditEvent.Action.QUERY_REFUSED).actor == operator


@pytest.mark.django_db
def test_a_non_utf8_upload_is_refused_clearly(client: Client, operator: User, prod: Environment) -> None:
    logged_in(client, operator)
    upload = SimpleUploadedFile("lost.csv", "ws,ñ\n".encode("latin-1"), content_type="text/csv")
    response = client.post(
        reverse("reprocess:batch_create"), {"environment": prod.pk, "source": "csv", "csv_file": upload}
    )
    assert "The file is not UTF-8 text" in response.content.decode()
    assert not ReprocessBatch.objects.exists()


@pytest.mark.django_db
def test_discarding_a_draft(client: Client, operator: User, prod: Environment) -> None:
    batch = ReprocessBatchFactory(environment=prod, documents=[("ws-1", "1")])
    logged_in(client, operator)
    client.post(reverse("reprocess:batch_discard", args=[batch.pk]))
    assert ReprocessBatch.objects.get(pk=batch.pk).status == ReprocessBatch.Status.DISCARDED
    response = client.post(reverse("reprocess:batch_send", args=[batch.pk]), follow=True)
    assert "is discarded; it cannot be sent now" in response.content.decode()


@pytest.mark.django_db
def test_item_filter_returns_the_partial_for_htmx(client: Client, viewer: User, prod: Environment) -> None:
    batch = ReprocessBatchFactory(environment=prod, documents=[("ws-1", "1"), ("ws-1", "2")])
    ReprocessItem.objects.filter(batch=batch, document_id="2").update(status="failed", last_error="404 Not Found")
    logged_in(client, viewer)
    response = client.get(
        reverse("reprocess:batch_detail", args=[batch.pk]),
        {"status": "failed"},
        headers={**HTMX, "HX-Target": "batch-items"},
    )
    page = response.content.decode()
    assert page.lstrip().startswith('<div id="batch-items">')
    assert "404 Not Found" in page and ">1<" not in page


@pytest.mark.django_db
def test_batch_page_queries_do_not_grow_with_items(
    client: Client, viewer: User, prod: Environment, django_assert_max_num_queries: Any
) -> None:
    batch = ReprocessBatchFactory(environment=prod, documents=[("ws-1", str(i)) for i in range(3000)])
    logged_in(client, viewer)
    with django_assert_max_num_queries(12):
        assert client.get(reverse("reprocess:batch_detail", args=[batch.pk])).status_code == 200
    with django_assert_max_num_queries(12):
        assert client.get(reverse("reprocess:batch_list")).status_code == 200


@pytest.mark.django_db(transaction=True)
def test_an_operator_sends_a_batch_and_watches_it_finish(
    client: Client, operator: User, prod: Environment, reprocess_stub: ReprocessStub, celery_worker_thread: None
) -> None:
    batch = ReprocessBatchFactory(environment=prod, documents=[(f"ws-{i % 2}", str(i)) for i in range(60)])
    reprocess_stub.script = {"7": [503]}
    logged_in(client, operator)
    response = client.post(reverse("reprocess:batch_send", args=[batch.pk]), follow=True)
    assert "is sending 60 documents" in response.content.decode()

    progress_url = reverse("reprocess:batch_progress", args=[batch.pk])
    deadline = time.monotonic() + 60
    while True:
        poll = client.get(progress_url, headers=HTMX)
        if poll.status_code == 286 or time.monotonic() > deadline:
            break
        assert poll.status_code == 200 and 'hx-trigger="every 1s"' in poll.content.decode()
        time.sleep(0.3)
    assert poll.status_code == 286, "the polled part should stop polling once the batch ended"
    page = poll.content.decode()
    assert "Every document was accepted by the application." in page and "60 / 60" in page
    assert 'hx-trigger="every 1s"' not in page
    assert sum(reprocess_stub.accepted.values()) == 60 and reprocess_stub.calls["7"] == 2
    actions = list(AuditEvent.objects.order_by("pk").values_list("action", flat=True))
    assert actions[-3:] == ["reprocess.queued", "reprocess.started", "reprocess.finished"]
