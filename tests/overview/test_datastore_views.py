"""The datastore page (schedule, missed runs, retention preview and save) and pinning from a backup's page:
permissions per role, POST-only changes, the preview partial changing nothing, audit entries."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
import time_machine
from django.contrib.auth.models import User
from django.test import Client
from django.urls import reverse
from pytest_django.asserts import assertTemplateUsed

from audit.models import AuditEvent
from backups.models import BackupArtifact, ScheduledBackup
from backups.scheduling import datastore_schedule_sync
from inventory.models import Datastore
from tests.factories import BackupArtifactFactory, DatastoreFactory, user_in_groups
from tests.support.web import logged_in_with_password

pytestmark = pytest.mark.django_db
HTMX = {"HX-Request": "true"}


def logged_in(user: User) -> Client:
    return logged_in_with_password(Client(), user)  # pinning and retention need a recent password


@pytest.fixture
def viewer_client() -> Client:
    return logged_in(user_in_groups("vera", "viewer"))


@pytest.fixture
def operator_client(operator: User) -> Client:
    return logged_in(operator)


@pytest.fixture
def datastore() -> Datastore:
    """prod-db with a week of daily backups, the newest verified."""
    store = DatastoreFactory(name="prod-db", retention_keep_last=3)
    base = datetime(2026, 3, 1, 3, tzinfo=UTC)
    for day in range(7):
        taken = base + timedelta(days=day)
        BackupArtifactFactory(
            datastore=store,
            status=BackupArtifact.Status.SUCCEEDED,
            verification=BackupArtifact.Verification.VERIFIED if day == 6 else BackupArtifact.Verification.UNVERIFIED,
            created_at=taken,
            started_at=taken,
            storage_key=f"prod-db/{day}.dump",
            size_bytes=1000,
        )
    return store


def page_url(store: Datastore) -> str:
    return reverse("overview:datastore_detail", args=[store.name])


def test_the_page_needs_a_login_and_the_view_permission(datastore: Datastore) -> None:
    response = Client().get(page_url(datastore))
    assert response.status_code == 302 and response["Location"].startswith(reverse("login"))
    assert logged_in(user_in_groups("nobody")).get(page_url(datastore)).status_code == 403
    assert (
        logged_in(user_in_groups("vera", "viewer")).get(reverse("overview:datastore_detail", args=["nope"])).status_code
        == 404
    )


def test_a_viewer_sees_the_saved_policys_plan_but_no_form(viewer_client: Client, datastore: Datastore) -> None:
    response = viewer_client.get(page_url(datastore))
    assert response.status_code == 200
    assertTemplateUsed(response, "overview/datastore_detail.html")
    page = response.content.decode()
    assert "What the saved policy does now" in page
    assert "4 backups would be expired" in page and "3 kept" in page
    assert 'id="retention-form"' not in page
    preview = response.context["preview"]
    assert [d.keep for d in preview.decisions] == [True, True, True, False, False, False, False]


def test_an_operator_previews_a_policy_with_htmx_and_nothing_changes(
    operator_client: Client, datastore: Datastore
) -> None:
    page = operator_client.get(page_url(datastore)).content.decode()
    assert 'id="retention-form"' in page
    url = reverse("overview:retention_preview", args=[datastore.name])
    policy = {"keep_last": 1, "keep_daily": 0, "keep_weekly": 0, "keep_monthly": 0}

    response = operator_client.post(url, policy, headers=HTMX)

    assert response.status_code == 200
    assertTemplateUsed(response, "overview/partials/retention_preview.html")
    body = response.content.decode()
    assert "Preview: what this policy would do now (not saved)" in body
    assert "6 backups would be expired" in body
    assert "one of the 1 newest" in body and "newest verified backup" in body
    datastore.refresh_from_db()
    assert datastore.retention_keep_last == 3  # not saved
    assert not AuditEvent.objects.filter(action=AuditEvent.Action.RETENTION_CHANGED).exists()

    without_js = operator_client.post(url, policy)  # the Preview button without htmx: the whole page
    assertTemplateUsed(without_js, "overview/datastore_detail.html")
    assert without_js.context["proposed"] is True

    bad = operator_client.post(url, {**policy, "keep_daily": -1}, headers=HTMX)
    assert bad.status_code == 400 and "greater than or equal to 0" in bad.content.decode()


def test_only_operators_preview_or_save_a_policy_and_only_by_post(viewer_client: Client, datastore: Datastore) -> None:
    policy = {"keep_last": 1, "keep_daily": 0, "keep_weekly": 0, "keep_monthly": 0}
    for name in ("overview:retention_preview", "overview:retention_update"):
        url = reverse(name, args=[datastore.name])
        assert viewer_client.post(url, policy).status_code == 403
    operator = logged_in(user_in_groups("otto", "operator"))
    assert operator.get(reverse("overview:retention_update", args=[datastore.name])).status_code == 405
    datastore.refresh_from_db()
    assert datastore.retention_keep_last == 3


def test_saving_a_policy_is_audited(operator_client: Client, datastore: Datastore) -> None:
    url = reverse("overview:retention_update", args=[datastore.name])
    response = operator_client.post(url, {"keep_last": 2, "keep_daily": 7, "keep_weekly": 4, "keep_monthly": 12})
    assert response.status_code == 302 and response["Location"] == page_url(datastore)
    datastore.refresh_from_db()
    assert (datastore.retention_keep_last, datastore.retention_keep_daily) == (2, 7)
    event = AuditEvent.objects.get(action=AuditEvent.Action.RETENTION_CHANGED)
    assert event.actor.username == "olga" and event.details["after"]["keep_monthly"] == 12
    assert event.details["before"]["keep_last"] == 3
    assert BackupArtifact.objects.filter(status=BackupArtifact.Status.EXPIRED).count() == 0  # the periodic run expires

    bad = operator_client.post(url, {"keep_last": "many", "keep_daily": 0, "keep_weekly": 0, "keep_monthly": 0})
    assert bad.status_code == 400 and "Enter a whole number" in bad.content.decode()


def test_pin_and_unpin_from_the_backup_page(
    operator_client: Client, viewer_client: Client, datastore: Datastore
) -> None:
    artifact = datastore.artifacts.order_by("created_at").first()
    pin_url = reverse("backups:artifact_pin", args=[artifact.pk])
    unpin_url = reverse("backups:artifact_unpin", args=[artifact.pk])
    detail = reverse("backups:artifact_detail", args=[artifact.pk])
    assert 'action="' + pin_url not in viewer_client.get(detail).content.decode()
    assert viewer_client.post(pin_url, {"reason": "legal hold"}).status_code == 403
    assert 'action="' + pin_url in operator_client.get(detail).content.decode()

    refused = operator_client.post(pin_url, {"reason": "   "}, follow=True)
    assert "say why this backup must be kept" in refused.content.decode()

    response = operator_client.post(pin_url, {"reason": "legal hold, case 14"}, REMOTE_ADDR="10.0.0.9")
    assert response.status_code == 302
    artifact.refresh_from_db()
    assert artifact.pin_reason == "legal hold, case 14" and artifact.pinned_by.username == "olga"
    event = AuditEvent.objects.get(action=AuditEvent.Action.BACKUP_PINNED)
    assert (event.details["reason"], event.client_ip) == ("legal hold, case 14", "10.0.0.9")
    page = operator_client.get(page_url(datastore)).content.decode()
    assert "pinned: legal hold, case 14" in page  # the plan says why it is kept

    again = operator_client.post(pin_url, {"reason": "twice"}, follow=True)
    assert "is already pinned" in again.content.decode()
    assert viewer_client.post(unpin_url).status_code == 403
    operator_client.post(unpin_url)
    artifact.refresh_from_db()
    assert artifact.pinned_at is None and artifact.pin_reason == ""
    assert AuditEvent.objects.get(action=AuditEvent.Action.BACKUP_UNPINNED).details["reason"] == "legal hold, case 14"


def test_the_page_and_the_dashboard_show_skipped_and_missed_runs(viewer_client: Client) -> None:
    with time_machine.travel(datetime(2026, 5, 1, 10, 0, tzinfo=UTC), tick=False) as clock:
        store = DatastoreFactory(name="prod-db", backup_schedule="0 3 * * *")
        datastore_schedule_sync(datastore=store)
        running = BackupArtifactFactory(datastore=store, status=BackupArtifact.Status.RUNNING)
        ScheduledBackup.objects.create(
            datastore=store,
            expected_at=datetime(2026, 5, 2, 3, tzinfo=UTC),
            fired_at=datetime(2026, 5, 2, 3, 0, 1, tzinfo=UTC),
            outcome=ScheduledBackup.Outcome.SKIPPED,
            message=f"backup #{running.pk} was still running",
        )
        clock.move_to(datetime(2026, 5, 2, 9, 0, tzinfo=UTC))
        page = viewer_client.get(page_url(store)).content.decode()
        assert "Skipped: the previous backup was still running" in page
        assert f"backup #{running.pk} was still running" in page
        assert "scheduled run was missed" not in page

        clock.move_to(datetime(2026, 5, 4, 9, 0, tzinfo=UTC))  # no firing on the 3rd and the 4th
        page = viewer_client.get(page_url(store)).content.decode()
        assert "2 scheduled runs were missed." in page
        assert "check that Celery beat (and a worker) are running" in page
        dashboard = viewer_client.get(reverse("overview:dashboard")).content.decode()
        assert "Missed 2 runs" in dashboard
        assert page_url(store) in dashboard


def test_an_expired_backup_says_so_and_offers_no_pin(operator_client: Client, datastore: Datastore) -> None:
    artifact = datastore.artifacts.order_by("created_at").first()
    BackupArtifact.objects.filter(pk=artifact.pk).update(
        status=BackupArtifact.Status.EXPIRED, expired_at=datetime(2026, 3, 20, tzinfo=UTC)
    )
    page = operator_client.get(reverse("backups:artifact_detail", args=[artifact.pk])).content.decode()
    assert "Expired by the retention policy" in page
    assert "Its stored file is still to be deleted" in page
    assert reverse("backups:artifact_pin", args=[artifact.pk]) not in page
    refused = operator_client.post(reverse("backups:artifact_pin", args=[artifact.pk]), {"reason": "x"}, follow=True)
    assert "only a stored backup can be pinned" in refused.content.decode()


def test_the_backup_page_links_to_its_datastore_page(viewer_client: Client, datastore: Datastore) -> None:
    artifact = datastore.artifacts.first()
    detail = viewer_client.get(reverse("backups:artifact_detail", args=[artifact.pk])).content.decode()
    assert page_url(datastore) in detail


def daily_backups(store: Datastore, days: int) -> None:
    """A succeeded backup a day from 2026-01-01, written at once."""
    base = datetime(2026, 1, 1, 3, tzinfo=UTC)
    BackupArtifact.objects.bulk_create(
        BackupArtifact(
            datastore=store,
            status=BackupArtifact.Status.SUCCEEDED,
            created_at=base + timedelta(days=d),
            started_at=base + timedelta(days=d),
            storage_key=f"k{d}",
        )
        for d in range(days)
    )


def test_a_long_history_lists_the_kept_backups_and_the_newest_expired_ones(
    viewer_client: Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = DatastoreFactory(name="big-db", retention_keep_monthly=2)
    daily_backups(store, 60)
    monkeypatch.setattr("backups.retention.PREVIEW_EXPIRED_SHOWN", 10)
    page = viewer_client.get(page_url(store)).content.decode()
    assert "58 backups would be expired" in page
    assert page.count('class="keep"') == 2 and page.count('class="expire"') == 10
    assert "…and 48 older backups to expire, not listed" in page


def test_with_no_policy_the_preview_lists_the_newest_kept_backups_and_counts_the_rest(
    viewer_client: Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every backup is kept: a long history drew thousands of rows (a second per view at 2,000 backups)."""
    store = DatastoreFactory(name="kept-db")
    daily_backups(store, 8)
    monkeypatch.setattr("backups.retention.PREVIEW_KEPT_SHOWN", 5)
    page = viewer_client.get(page_url(store)).content.decode()
    assert "No retention policy: every backup is kept." in page
    assert page.count('class="keep"') == 5 and 'class="expire"' not in page
    newest = BackupArtifact.objects.order_by("-created_at").first()
    assert newest is not None and f'id="retention-{newest.pk}"' in page
    assert "…and 3 older backups kept, not listed." in page
