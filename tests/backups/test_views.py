"""The backup pages and their HTMX endpoints: login, permissions, POST-only state changes, page vs partial,
polling that stops with 286, filters and keyset pagination, and a query count that does not grow with the data."""

from __future__ import annotations

import os
import re
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import redis
import time_machine
from django.contrib.auth.models import User
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from audit.models import AuditEvent
from backups.models import BackupArtifact, BackupArtifactEvent
from backups.selectors import BackupArtifactFilters, RpoState, backup_artifact_page
from inventory.models import Datastore
from overview.selectors import datastore_dashboard_rows
from restores.models import RestoreRun
from tests.factories import BackupArtifactFactory, DatastoreFactory, EnvironmentFactory, UserFactory, user_in_groups

pytestmark = pytest.mark.django_db

Status, Verification = BackupArtifact.Status, BackupArtifact.Verification
HTMX = {"HX-Request": "true"}


# --- helpers -----------------------------------------------------------------------------------------------------


def backup(datastore: Datastore | None = None, *, age: timedelta = timedelta(hours=1), **fields: Any) -> BackupArtifact:
    """A finished, verified backup taken `age` ago (override any field)."""
    started = timezone.now() - age
    values: dict[str, Any] = {
        "status": Status.SUCCEEDED,
        "verification": Verification.VERIFIED,
        "created_at": started,
        "started_at": started,
        "finished_at": started + timedelta(seconds=3),
        "duration": timedelta(seconds=3),
        "verified_at": started + timedelta(seconds=10),
        "size_bytes": 43_200_000,
        "sha256": "5f1c" * 16,
        "storage_key": "prod/prod-db/2026/11/prod-db-20261128T020000Z-1.dump",
        "tool_version": "pg_dump (PostgreSQL) 15.20",
        "server_version": "15.20",
        "archive_entries": 42,
        "row_counts": {"public.documents": 300, "public.chunks": 2000},
        **fields,
    }
    if datastore is not None:
        values["datastore"] = datastore
    return BackupArtifactFactory(**values)


def running(datastore: Datastore | None = None, **fields: Any) -> BackupArtifact:
    values: dict[str, Any] = {"status": Status.RUNNING, "started_at": timezone.now(), "bytes_done": 5_000_000, **fields}
    if datastore is not None:
        values["datastore"] = datastore
    return BackupArtifactFactory(**values)


def restore_run(artifact: BackupArtifact, **fields: Any) -> RestoreRun:
    values: dict[str, Any] = {
        "artifact": artifact,
        "artifact_sha256": artifact.sha256,
        "target_kind": RestoreRun.TargetKind.NEW_DATABASE,
        "target_datastore": artifact.datastore,
        "new_database_name": "check",
        "target_key": f"new:{artifact.datastore_id}:check",
        "reason": "check the backup",
        "status": RestoreRun.Status.SUCCEEDED,
        **fields,
    }
    return RestoreRun.objects.create(**values)


def logged_in(user: User) -> Client:
    client = Client()
    client.force_login(user)
    return client


@pytest.fixture
def viewer() -> User:
    return user_in_groups("vera", "viewer")


@pytest.fixture
def viewer_client(viewer: User) -> Client:
    return logged_in(viewer)


@pytest.fixture
def operator_client(operator: User) -> Client:
    return logged_in(operator)


@pytest.fixture
def broker() -> Any:
    """The tests' own Redis broker database; the messages a test queues are removed after it."""
    queue = redis.Redis.from_url(os.environ["CELERY_BROKER_URL"])
    queue.delete("celery")
    yield queue
    queue.delete("celery")


def template_names(response: Any) -> list[str]:
    return [t.name for t in response.templates if t.name]


def query_count(client: Client, url: str, **kwargs: Any) -> int:
    with CaptureQueriesContext(connection) as queries:
        response = client.get(url, **kwargs)
    assert response.status_code == 200, response.content.decode()[:500]
    return len(queries)


# --- every page and endpoint: login, permissions, methods -----------------------------------------------------


@pytest.fixture
def urls() -> dict[str, str]:
    artifact = backup()
    return {
        "dashboard": reverse("overview:dashboard"),
        "artifact_list": reverse("backups:artifact_list"),
        "artifact_detail": reverse("backups:artifact_detail", args=[artifact.pk]),
        "artifact_row": reverse("backups:artifact_row", args=[artifact.pk]),
        "artifact_status": reverse("backups:artifact_status", args=[artifact.pk]),
        "datastore_row": reverse("overview:datastore_row", args=[artifact.datastore_id]),
        "datastore_backup": reverse("overview:datastore_backup", args=[artifact.datastore_id]),
        "artifact_verify": reverse("backups:artifact_verify", args=[artifact.pk]),
        "datastore_options": reverse("backups:datastore_options"),
    }


GET_ENDPOINTS = [
    "dashboard",
    "artifact_list",
    "artifact_detail",
    "artifact_row",
    "artifact_status",
    "datastore_row",
    "datastore_options",
]
POST_ENDPOINTS = ["datastore_backup", "artifact_verify"]


@pytest.mark.parametrize("name", GET_ENDPOINTS + POST_ENDPOINTS)
@pytest.mark.parametrize("method", ["get", "post"])
def test_anonymous_users_are_sent_to_the_login_page(client: Client, urls: dict[str, str], name: str, method: str):
    response = getattr(client, method)(urls[name])
    assert response.status_code == 302
    assert response["Location"].startswith(reverse("login") + "?next=")
    assert BackupArtifact.objects.count() == 1  # nothing was started


@pytest.mark.parametrize("name", GET_ENDPOINTS)
def test_a_viewer_can_read_every_page(viewer_client: Client, urls: dict[str, str], name: str):
    response = viewer_client.get(urls[name])
    assert response.status_code in (200, 286)


@pytest.mark.parametrize("name", POST_ENDPOINTS)
@pytest.mark.parametrize("headers", [{}, HTMX])
def test_a_viewer_gets_403_on_every_post(viewer_client: Client, urls: dict[str, str], name: str, headers: dict):
    response = viewer_client.post(urls[name], headers=headers)
    assert response.status_code == 403
    assert BackupArtifact.objects.count() == 1
    # Nothing happened; the attempt itself is recorded (audit.middleware).
    assert list(AuditEvent.objects.values_list("action", flat=True)) == [AuditEvent.Action.ACCESS_REFUSED]


@pytest.mark.parametrize("name", GET_ENDPOINTS)
def test_a_user_without_the_view_permissions_gets_403(urls: dict[str, str], name: str):
    response = logged_in(UserFactory(username="nobody")).get(urls[name])
    assert response.status_code == 403


@pytest.mark.parametrize("name", POST_ENDPOINTS)
def test_post_endpoints_refuse_get_with_405(operator_client: Client, urls: dict[str, str], name: str):
    assert operator_client.get(urls[name]).status_code == 405
    assert BackupArtifact.objects.count() == 1


@pytest.mark.parametrize("name", GET_ENDPOINTS)
def test_pages_refuse_post_with_405(operator_client: Client, urls: dict[str, str], name: str):
    assert operator_client.post(urls[name]).status_code == 405


def test_state_changes_need_the_csrf_token(operator: User, urls: dict[str, str]):
    client = Client(enforce_csrf_checks=True)
    client.force_login(operator)
    assert client.post(urls["datastore_backup"]).status_code == 403
    assert client.post(urls["artifact_verify"], headers=HTMX).status_code == 403
    assert BackupArtifact.objects.count() == 1


# --- dashboard -----------------------------------------------------------------------------------------------------


def test_dashboard_without_datastores_says_how_to_add_one(client: Client):
    client.force_login(UserFactory(username="root", is_staff=True, is_superuser=True))
    page = client.get(reverse("overview:dashboard")).content.decode()
    assert "No datastores yet." in page
    assert reverse("admin:inventory_datastore_add") in page
    assert "manage.py loadconfig" in page


def test_dashboard_empty_state_for_a_viewer_has_no_admin_link(viewer_client: Client):
    page = viewer_client.get(reverse("overview:dashboard")).content.decode()
    assert "No datastores yet." in page and "manage.py loadconfig" in page
    assert reverse("admin:inventory_datastore_add") not in page


def test_dashboard_rows_judge_the_recovery_point_against_the_rpo_target():
    fresh, late, very_late, never, new = (DatastoreFactory(rpo_target=timedelta(hours=24)) for _ in range(5))
    Datastore.objects.exclude(pk=new.pk).update(created_at=timezone.now() - timedelta(days=3))
    backup(fresh, age=timedelta(hours=3))
    backup(late, age=timedelta(hours=30))
    backup(very_late, age=timedelta(hours=50))
    backup(never, age=timedelta(hours=1), verification=Verification.UNVERIFIED)  # not proven: no recovery point
    backup(late, age=timedelta(hours=1), verification=Verification.CORRUPT)  # a newer but corrupt one is no help
    states = {row.datastore.pk: row.rpo_state for row in datastore_dashboard_rows()}
    assert states == {
        fresh.pk: RpoState.OK,
        late.pk: RpoState.LATE,
        very_late.pk: RpoState.VERY_LATE,
        never.pk: RpoState.NONE,
        new.pk: RpoState.NEW,  # younger than its RPO target: its first backup is not due yet
    }


def test_dashboard_shows_each_datastore_with_badges_in_words(viewer_client: Client):
    prod = DatastoreFactory(name="prod-db", environment=EnvironmentFactory(name="prod", protected=True))
    staging = DatastoreFactory(name="staging-db", environment=EnvironmentFactory(name="staging"))
    ok = backup(prod, age=timedelta(hours=2))
    corrupt = backup(
        staging, age=timedelta(hours=1), verification=Verification.CORRUPT, verification_error="sha256 mismatch"
    )
    active = running(prod)
    Datastore.objects.filter(pk=staging.pk).update(created_at=timezone.now() - timedelta(days=2))
    page = viewer_client.get(reverse("overview:dashboard")).content.decode()
    assert "prod-db" in page and "staging-db" in page and "prod" in page
    assert '<span class="badge badge-ok" title="Newest verified backup is 2 h' in page and "Within RPO" in page
    assert '<span class="badge badge-bad" title="RPO target: 24 h">No verified backup</span>' in page
    assert "sha256 mismatch" in page  # the last verification's error
    assert '<span class="badge badge-bad">Corrupt</span>' in page
    assert '<span class="badge badge-info">Running</span>' in page
    assert reverse("backups:artifact_detail", args=[active.pk]) in page
    assert reverse("backups:artifact_detail", args=[ok.pk]) in page
    assert reverse("backups:artifact_detail", args=[corrupt.pk]) in page
    # the row with running work polls; the quiet one does not
    assert f'hx-get="{reverse("overview:datastore_row", args=[prod.pk])}"' in page
    assert f'hx-get="{reverse("overview:datastore_row", args=[staging.pk])}"' not in page
    assert "Back up now" not in page  # a viewer cannot start backups
    assert "<time datetime=" in page and "UTC" in page  # relative ages, exact time on hover


def test_dashboard_counts_restores_waiting_for_approval(viewer_client: Client):
    artifact = backup(DatastoreFactory(name="prod-db"))
    for _ in range(2):
        restore_run(artifact, status=RestoreRun.Status.AWAITING_APPROVAL)
    restore_run(artifact, status=RestoreRun.Status.SUCCEEDED)
    page = viewer_client.get(reverse("overview:dashboard")).content.decode()
    assert "2 restores are waiting for approval" in page
    assert reverse("restores:approval_list") in page


def test_an_operator_gets_back_up_now_buttons(operator_client: Client):
    datastore = DatastoreFactory(name="prod-db")
    busy = DatastoreFactory(name="busy-db")
    running(busy)
    page = operator_client.get(reverse("overview:dashboard")).content.decode()
    assert f'hx-post="{reverse("overview:datastore_backup", args=[datastore.pk])}"' in page
    assert page.count("Back up now") == 2
    assert "A backup of this datastore is already in progress." in page  # that button is disabled


def test_dashboard_query_count_does_not_grow_with_datastores_and_backups(
    viewer_client: Client, django_assert_max_num_queries: Any
):
    def populate(datastores: int, backups_each: int) -> None:
        for _ in range(datastores):
            datastore = DatastoreFactory()
            for i in range(backups_each):
                backup(datastore, age=timedelta(hours=i + 1))
            running(datastore)
            restore_run(datastore.artifacts.first(), status=RestoreRun.Status.AWAITING_APPROVAL)

    populate(3, 1)
    few = query_count(viewer_client, reverse("overview:dashboard"))
    populate(57, 3)
    assert Datastore.objects.count() == 60
    with django_assert_max_num_queries(few):
        page = viewer_client.get(reverse("overview:dashboard"))
    # Too many healthy ones to list: a line per environment, and the rows a page at a time once asked for.
    assert page.content.decode().count('<tr id="environment-') == 60
    with django_assert_max_num_queries(few):
        page = viewer_client.get(reverse("overview:dashboard"), {"state": "healthy", "page": 3})
    assert page.content.decode().count('id="datastore-row-') == 10  # 25, 25, then these 10


def test_loadconfig_rpo_hours_sets_the_target_the_dashboard_uses():
    from inventory.config import ConfigError, config_apply

    EnvironmentFactory(name="prod")
    entry = {"name": "prod-db", "environment": "prod", "kind": "postgres", "url_env": "PROD_DATABASE_URL"}
    config_apply({"datastores": [{**entry, "rpo_hours": 6}]})
    datastore = Datastore.objects.get(name="prod-db")
    assert datastore.rpo_target == timedelta(hours=6)
    backup(datastore, age=timedelta(hours=8))
    assert datastore_dashboard_rows()[0].rpo_state == RpoState.LATE
    config_apply({"datastores": [entry]})  # absent: back to the default
    assert Datastore.objects.get(name="prod-db").rpo_target == timedelta(hours=24)
    with pytest.raises(ConfigError, match=r"rpo_hours: must be 1 to 8784 hours, got 0"):
        config_apply({"datastores": [{**entry, "rpo_hours": 0}]})


# --- the dashboard row ----------------------------------------------------------------------------------------------


def test_datastore_row_polls_while_busy_and_stops_with_286(viewer_client: Client):
    datastore = DatastoreFactory()
    artifact = running(datastore)
    url = reverse("overview:datastore_row", args=[datastore.pk])
    response = viewer_client.get(url, headers=HTMX)
    assert response.status_code == 200
    assert template_names(response)[0] == "overview/partials/dashboard_row.html"
    assert f'hx-get="{url}"' in response.content.decode()

    BackupArtifact.objects.filter(pk=artifact.pk).update(status=Status.SUCCEEDED, verification=Verification.VERIFYING)
    assert viewer_client.get(url, headers=HTMX).status_code == 200  # the verification still runs

    BackupArtifact.objects.filter(pk=artifact.pk).update(verification=Verification.VERIFIED)
    response = viewer_client.get(url, headers=HTMX)
    assert response.status_code == 286
    assert "hx-get" not in response.content.decode()
    assert viewer_client.get(reverse("overview:datastore_row", args=[datastore.pk + 1000])).status_code == 404


# --- back up now -------------------------------------------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_operator_backs_up_now_and_the_job_reaches_the_real_broker(broker: Any):
    operator = user_in_groups("olga", "operator")
    datastore = DatastoreFactory(name="prod-db")
    response = logged_in(operator).post(
        reverse("overview:datastore_backup", args=[datastore.pk]),
        {"next": reverse("backups:artifact_list") + "?datastore=prod-db"},
        REMOTE_ADDR="10.1.2.3",
        follow=True,
    )
    artifact = BackupArtifact.objects.get(datastore=datastore)
    assert response.redirect_chain == [(reverse("backups:artifact_list") + "?datastore=prod-db", 302)]
    assert f"Backup #{artifact.pk} of prod-db queued." in response.content.decode()
    assert (artifact.status, artifact.trigger, artifact.triggered_by) == (Status.PENDING, "web:olga", operator)
    event = AuditEvent.objects.get(action=AuditEvent.Action.BACKUP_REQUESTED)
    assert (event.actor, event.client_ip) == (operator, "10.1.2.3")
    assert broker.llen("celery") == 1  # queued after the commit, on the real broker


def test_back_up_now_from_a_dashboard_row_answers_with_the_row(operator_client: Client):
    datastore = DatastoreFactory(name="prod-db")
    response = operator_client.post(
        reverse("overview:datastore_backup", args=[datastore.pk]),
        headers={**HTMX, "HX-Target": f"datastore-row-{datastore.pk}"},
    )
    artifact = BackupArtifact.objects.get(datastore=datastore)
    assert response.status_code == 200
    assert template_names(response)[0] == "overview/partials/dashboard_row.html"
    page = response.content.decode()
    assert f"Backup #{artifact.pk} of prod-db queued." in page
    assert '<span class="badge badge-info">Pending</span>' in page
    assert f'hx-get="{reverse("overview:datastore_row", args=[datastore.pk])}"' in page  # it now polls
    # The notice is in the row: nothing is left over for the next page.
    assert "queued" not in operator_client.get(reverse("overview:dashboard")).content.decode()


def test_back_up_now_with_htmx_elsewhere_redirects_the_client_back(operator_client: Client):
    datastore = DatastoreFactory(name="prod-db")
    back = reverse("backups:artifact_list") + "?datastore=prod-db"
    response = operator_client.post(
        reverse("overview:datastore_backup", args=[datastore.pk]), {"next": back}, headers=HTMX
    )
    assert response.status_code == 200 and response["HX-Redirect"] == back
    assert BackupArtifact.objects.filter(datastore=datastore, status=Status.PENDING).count() == 1
    assert "queued" in operator_client.get(back).content.decode()  # the message waits for that page


def test_back_up_now_never_redirects_off_site(operator_client: Client):
    datastore = DatastoreFactory()
    response = operator_client.post(
        reverse("overview:datastore_backup", args=[datastore.pk]), {"next": "https://evil.example/"}
    )
    assert response["Location"] == reverse("overview:dashboard")


@pytest.mark.parametrize("headers", [{}, HTMX])
def test_a_refused_backup_says_why_and_creates_nothing(
    operator_client: Client, headers: dict, monkeypatch: pytest.MonkeyPatch, settings: Any
):
    datastore = DatastoreFactory(name="prod-db")
    active = running(datastore)
    monkeypatch.setenv("QUEUE_URL", settings.CELERY_BROKER_URL)
    redis_store = DatastoreFactory(name="queue", kind=Datastore.Kind.REDIS, url_env="QUEUE_URL")
    for target, reason in [
        (datastore, f"a backup of prod-db is already running (#{active.pk})"),
        (redis_store, "queue (QUEUE_URL) is the console&#x27;s own task broker"),
    ]:
        response = operator_client.post(
            reverse("overview:datastore_backup", args=[target.pk]),
            headers={**headers, "HX-Target": f"datastore-row-{target.pk}"} if headers else {},
            follow=not headers,
        )
        assert response.status_code == 200
        assert f"No backup of {target.name}: {reason}" in response.content.decode()
    assert BackupArtifact.objects.count() == 1


def test_back_up_now_of_a_missing_datastore_is_404(operator_client: Client):
    assert operator_client.post(reverse("overview:datastore_backup", args=[999_999])).status_code == 404


# --- history -------------------------------------------------------------------------------------------------------


def test_history_is_a_page_normally_and_the_rows_partial_for_htmx(viewer_client: Client):
    backup()
    url = reverse("backups:artifact_list")
    page = viewer_client.get(url)
    assert "backups/artifact_list.html" in template_names(page)
    partial = viewer_client.get(url, headers=HTMX)
    assert template_names(partial)[0] == "backups/partials/artifact_results.html"
    assert "backups/artifact_list.html" not in template_names(partial)
    assert partial.content.decode().lstrip().startswith('<div id="artifact-results">')
    assert "HX-Request" in partial["Vary"]
    # A boosted link and a history restore (back button after a cache miss) need the whole page.
    for extra in ({"HX-Boosted": "true"}, {"HX-History-Restore-Request": "true"}):
        assert "backups/artifact_list.html" in template_names(viewer_client.get(url, headers={**HTMX, **extra}))


def test_history_without_backups_says_how_to_take_one(viewer_client: Client):
    page = viewer_client.get(reverse("backups:artifact_list")).content.decode()
    assert "No backups yet." in page and "manage.py backup DATASTORE" in page


# At noon of a fixed day: "an hour ago" must be today (it is yesterday at 00:30), and the page reads its
# reader's today. Back in time, so the session the fixture opened has not idled out.
@time_machine.travel(datetime(2026, 5, 1, 12, 0, tzinfo=UTC), tick=False)
def test_filters_narrow_the_history_and_the_url_round_trips(viewer_client: Client):
    prod = DatastoreFactory(name="prod-db", environment=EnvironmentFactory(name="prod"))
    other = DatastoreFactory(name="other-db", environment=EnvironmentFactory(name="prod"))
    staging = DatastoreFactory(name="staging-db", environment=EnvironmentFactory(name="staging"))
    old = backup(prod, age=timedelta(days=10))
    new = backup(prod, age=timedelta(hours=1), verification=Verification.UNVERIFIED)
    failed = BackupArtifactFactory(datastore=prod, status=Status.FAILED, error="pg_dump exited with status 1")
    in_other = backup(other)
    in_staging = backup(staging)

    def shown(query: str, **kwargs: Any) -> set[int]:
        response = viewer_client.get(reverse("backups:artifact_list") + query, **kwargs)
        assert response.status_code == 200
        return {a.pk for a in response.context["page"].items}

    assert shown("") == {old.pk, new.pk, failed.pk, in_other.pk, in_staging.pk}
    assert shown("?environment=prod") == {old.pk, new.pk, failed.pk, in_other.pk}
    assert shown("?datastore=prod-db") == {old.pk, new.pk, failed.pk}
    assert shown("?datastore=prod-db&status=failed") == {failed.pk}
    assert shown("?verification=unverified&status=succeeded") == {new.pk}
    five_days_ago = (timezone.localdate() - timedelta(days=5)).isoformat()
    assert shown(f"?datastore=prod-db&date_to={five_days_ago}") == {old.pk}
    assert shown(f"?datastore=prod-db&status=succeeded&date_from={five_days_ago}") == {new.pk}
    assert shown(f"?date_from={timezone.localdate().isoformat()}&date_to={timezone.localdate().isoformat()}") == {
        new.pk,
        failed.pk,
        in_other.pk,
        in_staging.pk,
    }

    # The form comes back filled in from the URL, so a shared link shows what it filters.
    page = viewer_client.get(reverse("backups:artifact_list") + "?datastore=prod-db&status=failed").content.decode()
    assert 'name="datastore" value="prod-db"' in page and '<option value="failed" selected>' in page
    # htmx sends the empty fields too; the URL pushed to the history is the tidy one.
    response = viewer_client.get(
        reverse("backups:artifact_list") + "?environment=&datastore=prod-db&status=failed&verification=&date_from=",
        headers=HTMX,
    )
    assert response["HX-Push-Url"] == reverse("backups:artifact_list") + "?datastore=prod-db&status=failed"
    assert {a.pk for a in response.context["page"].items} == {failed.pk}


def test_a_wrong_filter_value_is_reported_not_fatal(viewer_client: Client):
    artifact = backup()
    response = viewer_client.get(reverse("backups:artifact_list") + "?datastore=nope&date_from=2026-13-45")
    assert response.status_code == 200
    assert [a.pk for a in response.context["page"].items] == [artifact.pk]
    assert response.context["form"].errors.keys() == {"datastore", "date_from"}
    response = viewer_client.get(reverse("backups:artifact_list") + "?date_from=2026-02-01&date_to=2026-01-01")
    assert "The end date is before the start date." in response.content.decode()


def test_the_datastore_filter_is_a_field_with_suggestions_not_a_list_of_every_datastore(viewer_client: Client):
    prod = EnvironmentFactory(name="prod")
    for i in range(30):
        DatastoreFactory(environment=prod, name=f"orders-{i:02}")
    DatastoreFactory(environment=prod, name="archive-orders")
    wanted = backup(Datastore.objects.get(name="orders-07"))
    backup(Datastore.objects.get(name="orders-08"))
    page = viewer_client.get(reverse("backups:artifact_list")).content.decode()
    assert 'list="datastore-options"' in page
    assert "orders-2" not in page  # no option per datastore: a fleet's page would carry hundreds

    def suggested(typed: str) -> list[str]:
        html = viewer_client.get(reverse("backups:datastore_options"), {"datastore": typed}, headers=HTMX)
        return re.findall(r'<option value="([^"]+)">prod</option>', html.content.decode())

    assert suggested("orders-0") == [f"orders-{i:02}" for i in range(10)]
    assert suggested("ORDERS")[:1] == ["orders-00"]  # any case; names that start with it first
    assert len(suggested("orders")) == 20  # at most 20, whatever the fleet
    assert suggested("archive") == ["archive-orders"]
    assert suggested("rders-29") == ["orders-29"]
    assert suggested("<script>") == []

    shown = viewer_client.get(reverse("backups:artifact_list"), {"datastore": "orders-07"})
    assert [a.pk for a in shown.context["page"].items] == [wanted.pk]
    unknown = viewer_client.get(reverse("backups:artifact_list"), {"datastore": "orders-7"}).content.decode()
    assert "No datastore is named “orders-7”." in unknown


def test_no_match_offers_to_clear_the_filters(viewer_client: Client):
    backup()
    page = viewer_client.get(reverse("backups:artifact_list") + "?status=failed").content.decode()
    assert "No backups match these filters." in page


def test_history_rows_of_running_jobs_poll(viewer_client: Client):
    done = backup()
    busy = running()
    page = viewer_client.get(reverse("backups:artifact_list")).content.decode()
    assert f'hx-get="{reverse("backups:artifact_row", args=[busy.pk])}" hx-trigger="every 3s"' in page
    assert reverse("backups:artifact_row", args=[done.pk]) not in page


def test_back_up_now_on_the_history_for_the_filtered_datastore(operator_client: Client, viewer_client: Client):
    datastore = DatastoreFactory(name="prod-db")
    url = reverse("backups:artifact_list")
    action = reverse("overview:datastore_backup", args=[datastore.pk])
    assert action not in operator_client.get(url).content.decode()  # which datastore? none is filtered
    assert action in operator_client.get(url + "?datastore=prod-db").content.decode()
    assert action in operator_client.get(url + "?datastore=prod-db", headers=HTMX).content.decode()
    assert action not in viewer_client.get(url + "?datastore=prod-db").content.decode()


def test_keyset_pagination_walks_older_and_newer(viewer_client: Client, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr("backups.views.PAGE_SIZE", 3)
    datastore = DatastoreFactory(name="prod-db")
    noise = DatastoreFactory(name="noise-db")
    artifacts = [backup(datastore, age=timedelta(hours=h)) for h in range(8, 0, -1)]  # oldest first
    for h in range(5):
        backup(noise, age=timedelta(hours=h, minutes=30))
    newest_first = [a.pk for a in reversed(artifacts)]
    url = reverse("backups:artifact_list")

    first = viewer_client.get(url + "?datastore=prod-db")
    page = first.context["page"]
    assert [a.pk for a in page.items] == newest_first[:3]
    assert page.newer == "" and page.older.endswith(f"-{newest_first[2]}")
    assert f"?datastore=prod-db&amp;before={page.older}" in first.content.decode()  # the link keeps the filter

    second = viewer_client.get(url + f"?datastore=prod-db&before={page.older}", headers=HTMX)
    pushed = url + f"?datastore=prod-db&before={page.older}"
    page = second.context["page"]
    assert [a.pk for a in page.items] == newest_first[3:6]
    assert page.newer.endswith(f"-{newest_first[3]}") and page.older.endswith(f"-{newest_first[5]}")
    assert second["HX-Push-Url"] == pushed

    last = viewer_client.get(url + f"?datastore=prod-db&before={page.older}").context["page"]
    assert [a.pk for a in last.items] == newest_first[6:]
    assert last.older == ""

    back = viewer_client.get(url + f"?datastore=prod-db&after={last.newer}").context["page"]
    assert [a.pk for a in back.items] == newest_first[3:6]
    back = viewer_client.get(url + f"?datastore=prod-db&after={back.newer}").context["page"]
    assert [a.pk for a in back.items] == newest_first[:3] and back.newer == ""


def test_keyset_pagination_orders_by_time_then_id():
    """Backups with the same created_at (or ids out of time order) are neither skipped nor repeated."""
    datastore = DatastoreFactory()
    same_time = timezone.now() - timedelta(hours=1)
    made = [backup(datastore, created_at=same_time) for _ in range(4)]
    late_row_early_time = backup(datastore, created_at=same_time - timedelta(hours=1))
    seen: list[int] = []
    page = backup_artifact_page(BackupArtifactFilters(), per_page=2)
    while True:
        seen += [a.pk for a in page.items]
        if not page.older:
            break
        page = backup_artifact_page(BackupArtifactFilters(), before=page.older, per_page=2)
    assert seen == [*sorted((a.pk for a in made), reverse=True), late_row_early_time.pk]


def test_history_query_count_does_not_grow_with_backups(viewer_client: Client, django_assert_max_num_queries: Any):
    def populate(datastores: int, backups_each: int) -> None:
        for _ in range(datastores):
            datastore = DatastoreFactory()
            for i in range(backups_each):
                backup(datastore, age=timedelta(hours=i + 1), triggered_by=UserFactory())
            running(datastore)

    url = reverse("backups:artifact_list")
    populate(3, 1)
    few = query_count(viewer_client, url)
    few_page_two = query_count(viewer_client, url + f"?before={BackupArtifact.objects.order_by('pk')[2].pk}")
    populate(57, 2)
    assert BackupArtifact.objects.count() == 3 * 2 + 57 * 3
    with django_assert_max_num_queries(few):
        response = viewer_client.get(url)
    assert len(response.context["page"].items) == 50
    with django_assert_max_num_queries(few_page_two):
        viewer_client.get(url + f"?before={response.context['page'].older}")
    assert query_count(viewer_client, url + "?datastore=nope", headers=HTMX) <= few


# --- the history row -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        ({"status": Status.PENDING}, 200),
        ({"status": Status.RUNNING}, 200),
        ({"status": Status.SUCCEEDED, "verification": Verification.VERIFYING}, 200),
        ({"status": Status.SUCCEEDED, "verification": Verification.VERIFIED}, 286),
        ({"status": Status.SUCCEEDED, "verification": Verification.UNVERIFIED}, 286),
        ({"status": Status.FAILED}, 286),
    ],
)
def test_row_and_status_endpoints_poll_until_the_job_ends(viewer_client: Client, fields: dict, expected: int):
    artifact = BackupArtifactFactory(**fields)
    row = viewer_client.get(reverse("backups:artifact_row", args=[artifact.pk]), headers=HTMX)
    assert row.status_code == expected
    assert template_names(row) == ["backups/partials/artifact_row.html"]
    assert row.content.decode().lstrip().startswith(f'<tr id="artifact-row-{artifact.pk}"')
    assert ("hx-trigger" in row.content.decode()) == (expected == 200)

    status = viewer_client.get(reverse("backups:artifact_status", args=[artifact.pk]), headers=HTMX)
    assert status.status_code == expected
    assert template_names(status) == ["backups/partials/artifact_status.html"]
    # The job just ended: the page reloads to show all it recorded.
    assert status.get("HX-Refresh") == ("true" if expected == 286 else None)


def test_missing_backups_are_404(viewer_client: Client):
    for name in ("artifact_detail", "artifact_row", "artifact_status"):
        assert viewer_client.get(reverse(f"backups:{name}", args=[999_999])).status_code == 404


# --- one backup ----------------------------------------------------------------------------------------------------


def test_detail_shows_every_recorded_field(viewer_client: Client):
    datastore = DatastoreFactory(name="prod-db", environment=EnvironmentFactory(name="prod"))
    artifact = backup(
        datastore, triggered_by=UserFactory(username="olivia"), trigger="web:olivia", stderr_tail="pg_dump: warning: x"
    )
    BackupArtifactEvent.objects.create(job=artifact, old_status="pending", new_status="running")
    BackupArtifactEvent.objects.create(job=artifact, old_status="running", new_status="succeeded")
    run = restore_run(artifact)
    response = viewer_client.get(reverse("backups:artifact_detail", args=[artifact.pk]))
    assert "backups/artifact_detail.html" in template_names(response)
    page = response.content.decode()
    for text in [
        f"Backup #{artifact.pk} of prod-db (prod)",
        "41.2\xa0MB",
        "43200000 bytes",
        "5f1c" * 16,
        artifact.storage_key,
        "pg_dump (PostgreSQL) 15.20",
        "3.0 s",
        "olivia",
        "web:olivia",
        '<td class="mono">public.chunks</td><td>2,000</td>',
        '<pre class="log">pg_dump: warning: x</pre>',
        "Pending → Running",
        "Running → Succeeded",
        reverse("restores:run_detail", args=[run.pk]),
        '<span class="badge badge-ok">Verified</span>',
    ]:
        assert text in page, text
    # A viewer may neither verify nor restore.
    assert reverse("backups:artifact_verify", args=[artifact.pk]) not in page
    assert reverse("restores:run_create") not in page


def test_detail_timeline_names_the_states_in_the_readers_language(viewer_client: Client):
    artifact = backup()
    BackupArtifactEvent.objects.create(job=artifact, old_status="pending", new_status="running")
    BackupArtifactEvent.objects.create(job=artifact, old_status="running", new_status="succeeded")
    url = reverse("backups:artifact_detail", args=[artifact.pk])
    page = viewer_client.get(url, HTTP_ACCEPT_LANGUAGE="es").content.decode()
    assert "Pendiente → En curso" in page and "En curso → Completada" in page
    assert "pending → running" not in page


def test_an_operator_can_verify_and_restore_from_the_detail_page(operator_client: Client):
    artifact = backup()
    page = operator_client.get(reverse("backups:artifact_detail", args=[artifact.pk])).content.decode()
    assert f'hx-post="{reverse("backups:artifact_verify", args=[artifact.pk])}"' in page
    assert f'href="{reverse("restores:run_create")}?artifact={artifact.pk}"' in page


def test_a_corrupt_backup_offers_no_restore(operator_client: Client):
    artifact = backup(verification=Verification.CORRUPT, verification_error="sha256 mismatch: the stored file...")
    page = operator_client.get(reverse("backups:artifact_detail", args=[artifact.pk])).content.decode()
    assert "sha256 mismatch" in page and '<span class="badge badge-bad">Corrupt</span>' in page
    assert reverse("restores:run_create") not in page
    assert reverse("backups:artifact_verify", args=[artifact.pk]) in page  # it may be checked again


def test_a_failed_backup_shows_the_error_first_and_the_log_below(operator_client: Client):
    artifact = BackupArtifactFactory(
        status=Status.FAILED,
        error="pg_dump exited with status 1: connection refused",
        stderr_tail="pg_dump: error: connection to server failed: connection refused",
    )
    page = operator_client.get(reverse("backups:artifact_detail", args=[artifact.pk])).content.decode()
    error = page.index("pg_dump exited with status 1: connection refused")
    assert page.index('role="alert"') < error < page.index('<pre class="log">pg_dump: error: connection to server')
    assert reverse("backups:artifact_verify", args=[artifact.pk]) not in page  # nothing to verify


def test_a_running_backup_page_polls_its_status(viewer_client: Client):
    artifact = running()
    page = viewer_client.get(reverse("backups:artifact_detail", args=[artifact.pk])).content.decode()
    assert f'hx-get="{reverse("backups:artifact_status", args=[artifact.pk])}" hx-trigger="every 3s"' in page
    assert "4.8\xa0MB written so far." in page


def test_detail_query_count_does_not_grow_with_events_restores_and_tables(
    viewer_client: Client, django_assert_max_num_queries: Any
):
    def make(n: int) -> str:
        artifact = backup(row_counts={f"public.t{i}": i for i in range(n)}, triggered_by=UserFactory())
        for i in range(n):
            BackupArtifactEvent.objects.create(job=artifact, old_status="pending", new_status=f"s{i}")
            restore_run(artifact, triggered_by=UserFactory(), target_datastore=DatastoreFactory())
        return reverse("backups:artifact_detail", args=[artifact.pk])

    few = query_count(viewer_client, make(3))
    many = make(60)
    with django_assert_max_num_queries(few):
        page = viewer_client.get(many).content.decode()
    assert page.count("/restores/") >= 60


# --- verify ---------------------------------------------------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_operator_verifies_and_the_job_reaches_the_real_broker(broker: Any):
    operator = user_in_groups("olga", "operator")
    artifact = backup(verification=Verification.UNVERIFIED)
    response = logged_in(operator).post(
        reverse("backups:artifact_verify", args=[artifact.pk]), REMOTE_ADDR="10.9.8.7", follow=True
    )
    assert response.redirect_chain == [(reverse("backups:artifact_detail", args=[artifact.pk]), 302)]
    assert f"Verification of backup #{artifact.pk} queued." in response.content.decode()
    event = AuditEvent.objects.get(action=AuditEvent.Action.VERIFY_REQUESTED)
    assert (event.actor, event.client_ip) == (operator, "10.9.8.7")
    assert broker.llen("celery") == 1


def test_verify_with_htmx_answers_with_a_status_box_that_waits_for_the_worker(operator_client: Client):
    from backups.models import BackupVerification
    from backups.verification import VERIFICATION_JOB
    from dr_console.jobs import job_transition

    artifact = backup(verified_at=timezone.now() - timedelta(days=1))
    response = operator_client.post(reverse("backups:artifact_verify", args=[artifact.pk]), headers=HTMX)
    assert response.status_code == 200
    assert template_names(response) == ["backups/partials/artifact_status.html"]
    page = response.content.decode()
    assert f"Verification of backup #{artifact.pk} queued." in page
    assert "waiting for a worker to start it" in page
    assert reverse("backups:artifact_verify", args=[artifact.pk]) not in page  # no second click meanwhile
    status_url = reverse("backups:artifact_status", args=[artifact.pk])
    assert f'hx-get="{status_url}"' in page

    verification = BackupVerification.objects.get(artifact=artifact)
    assert operator_client.get(status_url, headers=HTMX).status_code == 200  # no worker yet: keep waiting
    job_transition(BackupVerification, pk=verification.pk, to=BackupVerification.Status.RUNNING)
    running = operator_client.get(status_url, headers=HTMX)
    assert running.status_code == 200 and "A worker is re-reading the stored file." in running.content.decode()
    job_transition(BackupVerification, pk=verification.pk, to=BackupVerification.Status.VERIFIED)
    VERIFICATION_JOB.on_finished(verification.pk)
    done = operator_client.get(status_url, headers=HTMX)
    assert done.status_code == 286 and done["HX-Refresh"] == "true"
    assert BackupArtifact.objects.get(pk=artifact.pk).verification == Verification.VERIFIED


def test_a_verification_no_worker_starts_keeps_polling_with_a_hint(operator_client: Client):
    from backups.models import BackupVerification
    from backups.verification import backup_verification_request

    artifact = backup()
    verification = backup_verification_request(artifact=artifact, trigger="test", enqueue=False)
    BackupVerification.objects.filter(pk=verification.pk).update(created_at=timezone.now() - timedelta(minutes=6))
    response = operator_client.get(reverse("backups:artifact_status", args=[artifact.pk]), headers=HTMX)
    assert response.status_code == 200
    assert "Check that a worker is running" in response.content.decode()


@pytest.mark.parametrize("headers", [{}, HTMX])
def test_verifying_a_failed_backup_is_refused_with_the_reason(operator_client: Client, headers: dict):
    artifact = BackupArtifactFactory(status=Status.FAILED)
    response = operator_client.post(
        reverse("backups:artifact_verify", args=[artifact.pk]), headers=headers, follow=not headers
    )
    assert response.status_code == 200
    assert (
        f"Backup #{artifact.pk} cannot be verified now: backup #{artifact.pk} is failed; "
        "only a succeeded backup can be verified"
    ) in response.content.decode()
    assert not AuditEvent.objects.exists()
