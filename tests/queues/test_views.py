"""The RQ queue pages against a real Redis with real RQ jobs run by a real rq worker: what viewers see, what
operators can do (and viewers cannot), page vs HTMX partial, clear pages when Redis cannot be read, and query
counts that do not grow with the jobs."""

from __future__ import annotations

import json
import time
from datetime import timedelta
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone
from rq import Queue, Worker
from rq.job import Job
from rq.registry import FailedJobRegistry

from audit.models import AuditEvent
from queues import services
from queues.selectors import JobList
from tests.factories import EnvironmentFactory, UserFactory, user_in_groups
from tests.queues import jobs
from tests.queues.conftest import QUEUE, QueueEnv, queue_environment
from tests.support.local import free_port

pytestmark = pytest.mark.django_db
HTMX = {"HX-Request": "true"}


@pytest.fixture
def viewer_client() -> Client:
    return _client(user_in_groups("vera", "viewer"))


@pytest.fixture
def operator_client(operator: User) -> Client:
    return _client(operator)


def _client(user: User) -> Client:
    client = Client()
    client.force_login(user)
    return client


def _templates(response: Any) -> list[str]:
    return [t.name for t in response.templates if t.name]


def _page_url(queue_env: QueueEnv) -> str:
    return reverse("queues:environment_queues", args=[queue_env.environment.name])


def _list_url(queue_env: QueueEnv, job_list: str = "failed", queue: str = QUEUE) -> str:
    return reverse("queues:job_list", args=[queue_env.environment.name, queue, job_list])


def _requeue_url(queue_env: QueueEnv, job_id: str) -> str:
    return reverse("queues:failed_requeue", args=[queue_env.environment.name, QUEUE, job_id])


def _requeue_all_url(queue_env: QueueEnv) -> str:
    return reverse("queues:failed_requeue_all", args=[queue_env.environment.name, QUEUE])


def _failed_ids(queue_env: QueueEnv) -> list[str]:
    return FailedJobRegistry(QUEUE, connection=queue_env.connection).get_job_ids()


# --- reading -------------------------------------------------------------------------------------------------------


def test_index_lists_environments_and_says_which_cannot_be_read(viewer_client: Client, queue_env: QueueEnv) -> None:
    EnvironmentFactory(name="staging")  # no queue Redis linked
    unset = queue_environment(queue_env.redis, name="dev")
    unset.redis_datastore.url_env = "TEST_NOT_SET_ANYWHERE_URL"
    unset.redis_datastore.save()
    response = viewer_client.get(reverse("queues:environment_list"))
    assert response.status_code == 200
    content = response.content.decode()
    assert _page_url(queue_env) in content
    assert "No Redis datastore linked" in content
    assert "TEST_NOT_SET_ANYWHERE_URL is not set" in content
    assert queue_env.redis.url not in content
    assert 'href="/queues/"' in viewer_client.get(reverse("overview:dashboard")).content.decode()  # the nav link


def test_page_shows_each_queue_its_registries_and_the_workers(
    viewer_client: Client, queue_env: QueueEnv, registered_worker: Any
) -> None:
    queue_env.fail(1, 2)
    parent = queue_env.enqueue(3)
    queue_env.enqueue(4)
    queue_env.queue().enqueue(jobs.process, "ws-1", 5, depends_on=parent)  # waits for 3: deferred
    queue_env.queue().enqueue_in(timedelta(hours=1), jobs.process, "ws-1", 6)
    queue_env.enqueue(7, queue="emails")

    response = viewer_client.get(_page_url(queue_env))

    assert response.status_code == 200
    assert _templates(response)[:2] == ["queues/environment_queues.html", "base.html"]
    assert "queues/partials/queue_overview.html" in _templates(response)
    overview = response.context["overview"]
    assert [(q.name, q.counts) for q in overview.queues] == [
        (QUEUE, {JobList.QUEUED: 2, JobList.STARTED: 0, JobList.FAILED: 2, JobList.DEFERRED: 1, JobList.SCHEDULED: 1}),
        (
            "emails",
            {JobList.QUEUED: 1, JobList.STARTED: 0, JobList.FAILED: 0, JobList.DEFERRED: 0, JobList.SCHEDULED: 0},
        ),
    ]
    [worker] = overview.workers
    assert worker.name == "worker-on-host-1" and worker.last_heartbeat is not None
    content = response.content.decode()
    assert "worker-on-host-1" in content
    assert _list_url(queue_env, "failed") in content and _list_url(queue_env, "scheduled") in content


def test_overview_partial_is_polled_and_stops_when_redis_cannot_be_read(
    viewer_client: Client, queue_env: QueueEnv, monkeypatch: pytest.MonkeyPatch
) -> None:
    queue_env.enqueue(1)
    url = reverse("queues:overview", args=[queue_env.environment.name])
    response = viewer_client.get(url, headers=HTMX)
    assert response.status_code == 200
    assert _templates(response) == ["queues/partials/queue_overview.html"]
    assert 'hx-trigger="every 5s, queues-changed from:body"' in response.content.decode()
    monkeypatch.setenv(queue_env.redis.url_env, f"redis://127.0.0.1:{free_port()}/0")
    response = viewer_client.get(url, headers=HTMX)
    assert response.status_code == 286
    assert "does not answer: connection refused or lost" in response.content.decode()


def test_failed_jobs_show_function_arguments_times_and_error(viewer_client: Client, queue_env: QueueEnv) -> None:
    [job] = queue_env.fail(7)
    response = viewer_client.get(_list_url(queue_env), headers=HTMX)
    assert response.status_code == 200
    assert _templates(response) == ["queues/partials/job_list.html"]
    [detail] = response.context["job_page"].jobs
    assert detail.id == job.id
    assert detail.func_name == "tests.queues.jobs.process"
    assert detail.args == "'ws-1', 7"
    assert detail.enqueued_at is not None and detail.ended_at is not None
    assert "RuntimeError: cannot process document 7" in detail.exception
    content = response.content.decode()
    assert "tests.queues.jobs.process(&#x27;ws-1&#x27;, 7)" in content
    assert "cannot process document 7" in content
    assert "Requeue" not in content  # a viewer is not offered the buttons


def test_a_failed_job_is_summed_up_by_its_error_not_by_the_lines_after_it(
    viewer_client: Client, queue_env: QueueEnv
) -> None:
    queue_env.enqueue(7, func=jobs.update_missing_table)
    queue_env.work()
    response = viewer_client.get(_list_url(queue_env), headers=HTMX)
    [detail] = response.context["job_page"].jobs
    assert detail.exception.rstrip().endswith("^")  # the caret under the statement is the traceback's last line
    summary = 'psycopg.errors.UndefinedTable: relation "documents_being_restored" does not exist'
    assert detail.exception_headline == summary
    assert f'<summary class="error">{summary.replace(chr(34), "&quot;")}</summary>' in response.content.decode()


@pytest.mark.filterwarnings("ignore:CLIENT SETNAME:Warning")  # Redis refuses the odd worker name as a client name
def test_what_the_applications_redis_holds_is_shown_escaped(viewer_client: Client, queue_env: QueueEnv) -> None:
    odd_queue = "odd\x1b[31m"
    queue_env.connection.set("broken:7\x1b[31m", 1)
    queue_env.queue().enqueue(jobs.process, "ws-1", "7\x1b[31m", description="import\x00\x1b[2J")
    queue_env.work()
    queue_env.enqueue(8, queue=odd_queue)
    worker = Worker([queue_env.queue(odd_queue)], connection=queue_env.connection, name="w\x1b[31m\x07")
    worker.register_birth()
    try:
        page = viewer_client.get(_page_url(queue_env))
        failed = viewer_client.get(_list_url(queue_env), headers=HTMX)
        queued = viewer_client.get(_list_url(queue_env, "queued", queue=odd_queue), headers=HTMX)
    finally:
        worker.register_death()

    for response in (page, failed, queued):
        assert response.status_code == 200
        assert not {"\x00", "\x07", "\x1b"} & set(response.content.decode())
    assert '<th scope="row">odd\\x1b[31m</th>' in page.content.decode()
    [worker_row] = page.context["overview"].workers
    assert (worker_row.name, worker_row.queues) == ("w\\x1b[31m\\x07", ["odd\\x1b[31m"])
    assert _list_url(queue_env, "queued", queue=odd_queue) in page.content.decode()  # the link keeps the real name
    [detail] = failed.context["job_page"].jobs
    assert detail.description == "import\\x00\\x1b[2J"
    assert detail.args == "'ws-1', '7\\x1b[31m'"
    assert detail.exception_headline == "RuntimeError: cannot process document 7\\x1b[31m"
    assert "Queued jobs of odd\\x1b[31m" in queued.content.decode()


def test_job_list_without_htmx_is_the_whole_page(viewer_client: Client, queue_env: QueueEnv) -> None:
    queue_env.enqueue(1)
    response = viewer_client.get(_list_url(queue_env, "queued"))
    assert response.status_code == 200
    assert "queues/environment_queues.html" in _templates(response)
    assert "queues/partials/job_list.html" in _templates(response)
    assert response.context["job_page"].total == 1


def test_started_scheduled_and_deferred_jobs_are_listed(viewer_client: Client, queue_env: QueueEnv) -> None:
    parent = queue_env.enqueue(1)
    child = queue_env.queue().enqueue(jobs.process, "ws-1", 2, depends_on=parent)
    later = queue_env.queue().enqueue_in(timedelta(hours=2), jobs.process, "ws-1", 3)
    [deferred] = viewer_client.get(_list_url(queue_env, "deferred"), headers=HTMX).context["job_page"].jobs
    assert deferred.id == child.id
    [scheduled] = viewer_client.get(_list_url(queue_env, "scheduled"), headers=HTMX).context["job_page"].jobs
    assert scheduled.id == later.id
    assert timedelta(minutes=119) < scheduled.scheduled_for - timezone.now() < timedelta(minutes=121)


def test_job_lists_are_paginated(viewer_client: Client, queue_env: QueueEnv) -> None:
    queue_env.fail(*range(1, 61))
    first = viewer_client.get(_list_url(queue_env), headers=HTMX).context["job_page"]
    assert (first.total, len(first.jobs), first.pages, first.next_page) == (60, 25, 3, 2)
    last = viewer_client.get(_list_url(queue_env) + "?page=3", headers=HTMX).context["job_page"]
    assert (len(last.jobs), last.first_index, last.last_index, last.next_page) == (10, 51, 60, None)
    shown = {job.id for page in (1, 2, 3) for job in _page(viewer_client, queue_env, page).jobs}
    assert shown == set(_failed_ids(queue_env))
    assert viewer_client.get(_list_url(queue_env) + "?page=abc", headers=HTMX).context["job_page"].page == 1


def _page(client: Client, queue_env: QueueEnv, page: int) -> Any:
    return client.get(_list_url(queue_env) + f"?page={page}", headers=HTMX).context["job_page"]


def test_a_job_whose_arguments_would_run_code_is_not_unpickled(
    viewer_client: Client, queue_env: QueueEnv, tmp_path: Any
) -> None:
    witness = tmp_path / "pwned"
    queue_env.queue().enqueue(jobs.process, jobs.Payload(str(witness)), 1, description="process(payload, 1)")
    response = viewer_client.get(_list_url(queue_env, "queued"), headers=HTMX)
    [detail] = response.context["job_page"].jobs
    assert detail.undecodable and detail.func_name is None
    assert "Not decoded" in response.content.decode() and "process(payload, 1)" in response.content.decode()
    assert not witness.exists()


def test_jobs_of_an_application_using_rqs_json_serializer_are_decoded(
    viewer_client: Client, queue_env: QueueEnv
) -> None:
    from rq.serializers import JSONSerializer

    Queue("json-queue", connection=queue_env.connection, serializer=JSONSerializer).enqueue(jobs.process, "ws-2", 3)
    response = viewer_client.get(_list_url(queue_env, "queued", queue="json-queue"), headers=HTMX)
    [detail] = response.context["job_page"].jobs
    assert (detail.func_name, detail.args, detail.undecodable) == ("tests.queues.jobs.process", "'ws-2', 3", False)


def test_unknown_environment_queue_or_list_is_404(viewer_client: Client, queue_env: QueueEnv) -> None:
    queue_env.enqueue(1)
    name = queue_env.environment.name
    assert viewer_client.get(reverse("queues:environment_queues", args=["nope"])).status_code == 404
    assert viewer_client.get(reverse("queues:job_list", args=[name, "nope", "failed"])).status_code == 404
    assert viewer_client.get(reverse("queues:job_list", args=[name, QUEUE, "finished"])).status_code == 404


@pytest.mark.parametrize("problem", ["no_datastore", "variable_unset", "unreachable"])
def test_page_says_plainly_why_the_queues_cannot_be_read(
    viewer_client: Client, queue_env: QueueEnv, monkeypatch: pytest.MonkeyPatch, problem: str
) -> None:
    environment = queue_env.environment
    if problem == "no_datastore":
        environment.redis_datastore = None
        environment.save()
        expected = "No Redis datastore is linked to prod"
    elif problem == "variable_unset":
        monkeypatch.delenv(queue_env.redis.url_env)
        expected = f"{queue_env.redis.url_env} (the URL of prod-redis) is not set"
    else:
        monkeypatch.setenv(queue_env.redis.url_env, f"redis://:s3cret@127.0.0.1:{free_port()}/0")
        expected = "The Redis of prod-redis does not answer: connection refused or lost"
    for url in (_page_url(queue_env), _list_url(queue_env)):
        response = viewer_client.get(url)
        assert response.status_code == 200
        content = response.content.decode()
        assert expected in content
        assert "s3cret" not in content and "127.0.0.1" not in content


def test_viewer_cannot_requeue(viewer_client: Client, queue_env: QueueEnv) -> None:
    [job] = queue_env.fail(1)
    assert viewer_client.post(_requeue_url(queue_env, job.id), headers=HTMX).status_code == 403
    assert viewer_client.post(_requeue_all_url(queue_env)).status_code == 403
    assert _failed_ids(queue_env) == [job.id]
    # Nothing was requeued; the two attempts are recorded (audit.middleware).
    assert list(AuditEvent.objects.values_list("action", flat=True)) == [AuditEvent.Action.ACCESS_REFUSED] * 2


def test_requeue_is_post_only(operator_client: Client, queue_env: QueueEnv) -> None:
    [job] = queue_env.fail(1)
    assert operator_client.get(_requeue_url(queue_env, job.id)).status_code == 405
    assert operator_client.get(_requeue_all_url(queue_env)).status_code == 405
    assert _failed_ids(queue_env) == [job.id]


def test_csrf_is_checked(operator: User, queue_env: QueueEnv) -> None:
    [job] = queue_env.fail(1)
    client = Client(enforce_csrf_checks=True)
    client.force_login(operator)
    assert client.post(_requeue_url(queue_env, job.id)).status_code == 403
    assert _failed_ids(queue_env) == [job.id]


def test_operator_requeues_one_failed_job_and_the_worker_runs_it(
    operator_client: Client, operator: User, queue_env: QueueEnv
) -> None:
    failed = queue_env.fail(1, 2)
    queue_env.connection.delete("broken:1")
    response = operator_client.post(_requeue_url(queue_env, failed[0].id), headers=HTMX, REMOTE_ADDR="10.0.0.9")
    assert response.status_code == 200
    assert _templates(response) == ["queues/partials/job_list.html"]
    assert json.loads(response.headers["HX-Trigger"]) == {"queues-changed": {}}
    assert f"Job {failed[0].id} is back in queue {QUEUE}." in response.content.decode()
    assert [job.id for job in response.context["job_page"].jobs] == [failed[1].id]
    assert queue_env.queue().get_job_ids() == [failed[0].id]
    queue_env.work()  # the application's own worker reads the requeued job as it was stored
    assert Job.fetch(failed[0].id, connection=queue_env.connection).get_status() == "finished"
    [event] = AuditEvent.objects.all()
    assert (event.action, event.actor, event.client_ip) == ("queue.job_requeued", operator, "10.0.0.9")
    assert event.object_repr == "prod"
    assert event.details == {"queue": QUEUE, "job_id": failed[0].id, "outcome": "requeued"}


def test_requeue_of_a_job_no_longer_failed_says_so(operator_client: Client, queue_env: QueueEnv) -> None:
    [job] = queue_env.fail(1)
    assert operator_client.post(_requeue_url(queue_env, job.id)).status_code == 302
    response = operator_client.post(_requeue_url(queue_env, job.id), headers=HTMX)
    assert f"Job {job.id} is not in the failed jobs of {QUEUE} any more." in response.content.decode()
    assert queue_env.queue().get_job_ids() == [job.id]  # once, not twice
    assert [e.details["outcome"] for e in AuditEvent.objects.order_by("pk")] == ["requeued", "absent"]


def test_operator_requeues_all_failed_jobs(operator_client: Client, queue_env: QueueEnv) -> None:
    failed = queue_env.fail(*range(1, 31))
    response = operator_client.post(_requeue_all_url(queue_env), follow=True)
    assert response.redirect_chain == [(_list_url(queue_env), 302)]
    assert "30 failed jobs are back in queue documents." in response.content.decode()
    assert _failed_ids(queue_env) == []
    assert sorted(queue_env.queue().get_job_ids()) == sorted(job.id for job in failed)
    [event] = AuditEvent.objects.all()
    assert event.action == "queue.failed_requeued"
    assert event.details == {"queue": QUEUE, "requeued": 30, "gone": 0, "remaining": 0}


def test_requeue_all_is_bounded_per_request_and_says_what_remains(
    operator_client: Client, queue_env: QueueEnv, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(services, "REQUEUE_ALL_LIMIT", 5)
    queue_env.fail(*range(1, 13))
    response = operator_client.post(_requeue_all_url(queue_env), headers=HTMX)
    content = response.content.decode()
    assert "5 failed jobs are back in queue documents. 7 are still failed: requeue again to continue." in content
    assert len(_failed_ids(queue_env)) == 7 and len(queue_env.queue()) == 5
    assert response.context["job_page"].total == 7


def test_requeue_all_drops_failed_jobs_whose_data_expired(operator_client: Client, queue_env: QueueEnv) -> None:
    kept, expired = queue_env.fail(1, 2)
    expired.delete(remove_from_queue=False, delete_dependents=False)
    queue_env.connection.zadd(FailedJobRegistry(QUEUE, connection=queue_env.connection).key, {expired.id: 1e12})
    response = operator_client.post(_requeue_all_url(queue_env), headers=HTMX)
    assert "1 had expired and was removed from the list." in response.content.decode()
    assert _failed_ids(queue_env) == [] and queue_env.queue().get_job_ids() == [kept.id]


def test_requeue_when_redis_cannot_be_read_changes_nothing(
    operator_client: Client, queue_env: QueueEnv, monkeypatch: pytest.MonkeyPatch
) -> None:
    [job] = queue_env.fail(1)
    monkeypatch.setenv(queue_env.redis.url_env, f"redis://127.0.0.1:{free_port()}/0")
    response = operator_client.post(_requeue_url(queue_env, job.id), headers=HTMX)
    assert "Nothing requeued: The Redis of prod-redis does not answer" in response.content.decode()
    assert not AuditEvent.objects.exists()
    monkeypatch.setenv(queue_env.redis.url_env, queue_env.redis.url)
    assert _failed_ids(queue_env) == [job.id]


def test_each_environment_shows_its_own_redis(viewer_client: Client, queue_env: QueueEnv, second_redis: Any) -> None:
    other = queue_environment(second_redis, name="staging")
    queue_env.enqueue(1, queue="prod-only")
    response = viewer_client.get(reverse("queues:environment_queues", args=[other.name]))
    assert response.context["overview"].queues == []
    assert "No RQ queue in this Redis yet." in response.content.decode()


def test_query_count_does_not_grow_with_jobs_or_queues(viewer_client: Client, queue_env: QueueEnv) -> None:
    queue_env.fail(1, 2)
    small = (_queries(viewer_client, _page_url(queue_env)), _queries(viewer_client, _list_url(queue_env), HTMX))
    queue_env.fail(*range(3, 40))
    for name in ("a", "b", "c"):
        queue_env.enqueue(1, queue=name)
    large = (_queries(viewer_client, _page_url(queue_env)), _queries(viewer_client, _list_url(queue_env), HTMX))
    assert small == large


def _queries(client: Client, url: str, headers: dict[str, str] | None = None) -> int:
    with CaptureQueriesContext(connection) as queries:
        response = client.get(url, headers=headers or {})
    assert response.status_code == 200
    return len(queries)


def test_the_sample_applications_running_job_shows_as_started_with_its_worker(
    viewer_client: Client, sampleapp_factory: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    import httpx

    from tests.support.redis import AppRedis

    app = sampleapp_factory(job_seconds=3.0)
    monkeypatch.setenv("TEST_SAMPLEAPP_REDIS_URL", app.redis_url)
    environment = queue_environment(AppRedis(url=app.redis_url, url_env="TEST_SAMPLEAPP_REDIS_URL", client=app.redis()))
    [(workspace_id, document_id)] = app.seed(1)
    job_id = httpx.post(app.reprocess_url(workspace_id, document_id), headers=app.headers).json()["job_id"]
    deadline = time.monotonic() + 10
    while app.statuses()[document_id] != "PROCESSING" and time.monotonic() < deadline:
        time.sleep(0.05)

    page = viewer_client.get(reverse("queues:environment_queues", args=[environment.name]))
    [queue] = page.context["overview"].queues
    assert (queue.name, queue.counts[JobList.STARTED]) == ("documents", 1)
    [worker] = page.context["overview"].workers
    assert worker.current_job_id == job_id and worker.state == "busy"
    url = reverse("queues:job_list", args=[environment.name, "documents", "started"])
    [started] = viewer_client.get(url, headers=HTMX).context["job_page"].jobs
    assert (started.id, started.func_name, started.worker_name) == (
        job_id,
        "sampleapp.jobs.reprocess_document",
        worker.name,
    )
    assert started.args == f"{workspace_id!r}, {document_id}"


def test_every_page_needs_a_login_and_the_view_permission(queue_env: QueueEnv) -> None:
    [job] = queue_env.fail(1)
    name = queue_env.environment.name
    pages = [
        reverse("queues:environment_list"),
        _page_url(queue_env),
        reverse("queues:overview", args=[name]),
        _list_url(queue_env),
    ]
    anonymous = Client()
    for url in pages:
        assert anonymous.get(url).status_code == 302, url
    assert anonymous.post(_requeue_url(queue_env, job.id)).status_code == 302
    nobody = _client(UserFactory(username="nobody"))
    for url in pages:
        assert nobody.get(url).status_code == 403, url
    assert nobody.post(_requeue_all_url(queue_env)).status_code == 403
    assert _failed_ids(queue_env) == [job.id]
