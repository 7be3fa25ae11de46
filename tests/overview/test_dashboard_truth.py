"""The dashboard tells the truth first (issue #11): a failed newest backup, a datastore no worker can reach, and a
new datastore's first RPO period, on the dashboard and the datastore page alike; what needs attention is listed
first, and filters list the rest."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
import time_machine
from django.contrib.auth.models import User
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from backups.models import BackupArtifact
from drills.models import ObjectiveBreach
from inventory.models import Datastore
from overview.selectors import Problem, datastore_dashboard_row
from overview.services import objectives_check
from tests.factories import (
    BackupArtifactFactory,
    DatastoreFactory,
    DatastoreHealthFactory,
    EnvironmentFactory,
    user_in_groups,
)

pytestmark = pytest.mark.django_db
UNSET = "environment variable STAGING_DATABASE_URL is not set in the process that ran the job (host vm)"


@pytest.fixture
def viewer() -> Client:
    client = Client()
    client.force_login(user_in_groups("vera", "viewer"))
    return client


@pytest.fixture
def operator() -> Client:
    client = Client()
    client.force_login(user_in_groups("olga", "operator"))
    return client


def page_of(client: Client, url: str, **params: Any) -> str:
    response = client.get(url, params)
    assert response.status_code == 200
    return response.content.decode()


def section(page: str, element_id: str) -> str:
    start = page.index(f'id="{element_id}"')
    return page[start : page.index("</section>", start)]


def verified(datastore: Datastore, hours: float) -> BackupArtifact:
    when = timezone.now() - timedelta(hours=hours)
    return BackupArtifactFactory(
        datastore=datastore,
        succeeded=True,
        verification=BackupArtifact.Verification.VERIFIED,
        verified_at=when,
        created_at=when,
        started_at=when,
        finished_at=when,
    )


def test_a_failed_newest_backup_is_the_first_thing_on_the_dashboard_and_its_page(viewer: Client) -> None:
    staging = DatastoreFactory(
        name="staging-db",
        url_env="STAGING_DATABASE_URL",
        backup_schedule="0 3 * * *",
        backup_schedule_since=timezone.now() - timedelta(minutes=5),
    )
    healthy = DatastoreFactory(name="prod-db")
    verified(healthy, hours=1)
    verified(staging, hours=2)  # within its RPO: the RPO alone would call it fine
    failed = BackupArtifactFactory(datastore=staging, failed=True, error=UNSET)

    page = page_of(viewer, reverse("overview:dashboard"))
    assert "1 of 2 datastores needs attention" in page
    attention = section(page, "attention")
    assert "staging-db" in attention and "prod-db" not in attention
    link = f'<a href="{reverse("backups:artifact_detail", args=[failed.pk])}">#{failed.pk}</a>'
    assert f"Last backup attempt {link} failed" in attention
    assert "STAGING_DATABASE_URL is not set in the process that ran the job (host vm)" in attention
    assert page.index('id="attention"') < page.index('id="healthy"')  # problems first
    assert "On schedule" not in attention and '<span class="badge badge-muted">Scheduled</span>' in attention

    detail = page_of(viewer, reverse("overview:datastore_detail", args=["staging-db"]))
    assert "Last attempt:" in detail and '<span class="badge badge-bad">Failed</span>' in detail
    assert "STAGING_DATABASE_URL is not set" in section(detail, "attention")

    verified(staging, hours=0)  # a newer backup succeeded: the failure is history
    row = datastore_dashboard_row(staging.pk)
    assert row is not None and row.problems == []
    assert 'id="attention"' not in page_of(viewer, reverse("overview:dashboard"))


def test_a_datastore_no_worker_can_reach_is_shown_with_what_the_check_found(viewer: Client) -> None:
    datastore = DatastoreFactory(name="staging-db", url_env="STAGING_DATABASE_URL")
    verified(datastore, hours=1)
    DatastoreHealthFactory(datastore=datastore, unconfigured=True, checked_on="vm")
    page = page_of(viewer, reverse("overview:dashboard"))
    attention = section(page, "attention")
    assert "Not configured (checked" in attention and "on vm" in attention
    assert "STAGING_DATABASE_URL is not set" in attention

    detail = page_of(viewer, reverse("overview:datastore_detail", args=["staging-db"]))
    health = section(detail, "health")
    assert '<span class="badge badge-bad">Not configured</span>' in health
    assert "STAGING_DATABASE_URL is not set" in health and "on vm" in health


def test_an_unchecked_or_healthy_datastore_says_so_on_its_page(viewer: Client) -> None:
    datastore = DatastoreFactory(name="prod-db")
    url = reverse("overview:datastore_detail", args=["prod-db"])
    assert "Not checked yet" in section(page_of(viewer, url), "health")
    DatastoreHealthFactory(datastore=datastore)
    health = section(page_of(viewer, url), "health")
    assert '<span class="badge badge-ok">Reachable</span>' in health and "PostgreSQL 15.19" in health


def test_day_one_the_banner_and_the_breaches_agree_that_nothing_is_due_yet(viewer: Client) -> None:
    """Seconds after loadconfig the dashboard showed a red "2 datastores miss their RPO or RTO" while no breach was
    recorded and the README promises one RPO period before the first backup is due."""
    from inventory.config import config_apply

    EnvironmentFactory(name="staging")
    config_apply(
        {
            "datastores": [
                {"name": name, "environment": "staging", "kind": "postgres", "url_env": f"{name.upper()}_URL"}
                for name in ("api", "jobs")
            ]
        }
    )
    page = page_of(viewer, reverse("overview:dashboard"))
    assert "badge-bad" not in page.split('id="objectives-summary"', 1)[1].split("</p>", 1)[0]
    assert "All 2 datastores are healthy" in page
    assert "First backup due 23\xa0hours from now" in page
    assert objectives_check() == (0, 0)

    with time_machine.travel(timezone.now() + timedelta(hours=25)):
        viewer.force_login(User.objects.get(username="vera"))  # a day later: the session timed out (12 h at most)
        page = page_of(viewer, reverse("overview:dashboard"))
        assert "2 of 2 datastores need attention" in page
        assert "No verified backup, and the first was due" in section(page, "attention")
        assert objectives_check() == (2, 0)
    assert ObjectiveBreach.objects.filter(closed_at__isnull=True).count() == 2


def test_problems_are_listed_worst_first(viewer: Client) -> None:
    late = DatastoreFactory(name="a-late", rpo_target=timedelta(hours=1))
    verified(late, hours=3)
    broken = DatastoreFactory(name="z-broken")
    verified(broken, hours=0.1)
    BackupArtifactFactory(datastore=broken, failed=True)
    rows = {name: datastore_dashboard_row(ds.pk) for name, ds in (("late", late), ("broken", broken))}
    assert rows["late"].problems == [Problem.RPO_MISSED]  # type: ignore[union-attr]
    assert rows["broken"].problems == [Problem.LAST_ATTEMPT_FAILED]  # type: ignore[union-attr]
    attention = section(page_of(viewer, reverse("overview:dashboard")), "attention")
    assert attention.index("z-broken") < attention.index("a-late")  # a failed attempt before a late one


def test_filters_list_by_name_environment_and_state(viewer: Client) -> None:
    prod, staging = EnvironmentFactory(name="prod"), EnvironmentFactory(name="staging")
    for name, env in (("orders-db", prod), ("users-db", prod), ("orders-stg", staging)):
        verified(DatastoreFactory(name=name, environment=env), hours=1)
    BackupArtifactFactory(datastore=Datastore.objects.get(name="users-db"), failed=True)

    page = page_of(viewer, reverse("overview:dashboard"), q="ORDERS")
    assert "orders-db" in page and "orders-stg" in page and "users-db" not in page.split('id="dashboard-filters"')[1]
    page = page_of(viewer, reverse("overview:dashboard"), environment="staging")
    assert "orders-stg" in page and ">orders-db<" not in page
    page = page_of(viewer, reverse("overview:dashboard"), state="attention")
    assert 'id="healthy"' not in page and "users-db" in section(page, "attention")
    page = page_of(viewer, reverse("overview:dashboard"), q="nothing-like-this")
    assert "No healthy datastore matches these filters." in page
    # The banner counts every datastore whatever the filters: a filter never hides that something is wrong.
    assert "1 of 3 datastores needs attention" in page
    assert page_of(viewer, reverse("overview:dashboard"), state="bogus", page="x")  # bad input: the whole board


def test_the_datastore_page_backs_up_now(operator: Client, viewer: Client) -> None:
    datastore = DatastoreFactory(name="prod-db")
    detail_url = reverse("overview:datastore_detail", args=["prod-db"])
    page = page_of(operator, detail_url)
    assert "Back up now" in page and "Check now" in page
    assert "Back up now" not in page_of(viewer, detail_url)  # a viewer cannot start one

    response = operator.post(
        reverse("overview:datastore_backup", args=[datastore.pk]), {"next": detail_url}, follow=True
    )
    assert response.redirect_chain[-1][0] == detail_url
    backup = BackupArtifact.objects.get(datastore=datastore)
    assert f"Backup #{backup.pk} of prod-db queued." in response.content.decode()


def test_a_backup_that_failed_before_pg_dump_ran_does_not_say_what_pg_dump_wrote(viewer: Client) -> None:
    failed = BackupArtifactFactory(datastore=DatastoreFactory(name="staging-db"), failed=True, error=UNSET)
    page = page_of(viewer, reverse("backups:artifact_detail", args=[failed.pk]))
    assert "pg_dump wrote nothing" not in page
    assert "the backup ended before pg_dump wrote any" in page
    ok = BackupArtifactFactory(datastore=failed.datastore, succeeded=True)
    assert "pg_dump wrote nothing to its error output." in page_of(
        viewer, reverse("backups:artifact_detail", args=[ok.pk])
    )


def test_a_chart_with_one_backup_draws_it(viewer: Client) -> None:
    """A line needs two points: with one backup the chart showed only its labels, while Numbers listed it."""
    datastore = DatastoreFactory(name="prod-db")
    verified(datastore, hours=1)
    chart = page_of(viewer, reverse("overview:datastore_chart", args=[datastore.pk]))
    assert "<polyline" not in chart
    assert chart.count('class="chart-point"') == 2  # its size and its duration


def test_a_backup_has_one_taken_time_on_every_page(viewer: Client, operator: Client) -> None:
    """Requested 12 minutes ago, its dump started 2 minutes ago: "taken 2 minutes ago" everywhere."""
    now = timezone.now()
    datastore = DatastoreFactory(name="prod-db")
    backup = BackupArtifactFactory(
        datastore=datastore,
        succeeded=True,
        verification=BackupArtifact.Verification.VERIFIED,
        created_at=now - timedelta(minutes=12),
        started_at=now - timedelta(minutes=2),
        finished_at=now - timedelta(minutes=1),
    )
    pages = {
        "dashboard": page_of(viewer, reverse("overview:dashboard")),
        "datastore": page_of(viewer, reverse("overview:datastore_detail", args=["prod-db"])),
        "backups": page_of(viewer, reverse("backups:artifact_list")),
        "restore form": page_of(operator, reverse("restores:run_create") + f"?artifact={backup.pk}"),
    }
    for name, page in pages.items():
        assert "2\xa0minutes ago" in page, name
        assert "12\xa0minutes ago" not in page, name
