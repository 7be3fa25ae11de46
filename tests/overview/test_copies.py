"""Copies on the dashboard (issue #13): a copy location without a verified copy of the newest backup after the
grace period, and a copy location whose newest verified copy is older than the RPO target, are problems, said on
the dashboard and the datastore page like the others."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
import time_machine
from django.test import Client
from django.urls import reverse

from backups.models import ArtifactCopy, BackupArtifact
from dr_console.formatting import duration_short
from inventory.models import Datastore, StorageLocation
from overview.selectors import Problem, datastore_dashboard_row, datastore_standings
from tests.factories import BackupArtifactFactory, DatastoreFactory, user_in_groups

pytestmark = pytest.mark.django_db
NOW = datetime(2026, 5, 4, 12, tzinfo=UTC)


@pytest.fixture
def viewer() -> Client:
    client = Client()
    client.force_login(user_in_groups("vera", "viewer"))
    return client


@pytest.fixture
def datastore() -> Datastore:
    fs = "django.core.files.storage.FileSystemStorage"
    StorageLocation.objects.create(name="local", backend=fs, options={"location": "/tmp/local"})
    StorageLocation.objects.create(name="offsite", role="copy", region="eu-west", backend=fs, options={})
    return DatastoreFactory(
        name="prod-db", storage_locations=["local", "offsite"], rpo_target=timedelta(hours=24), created_at=NOW
    )


def backup(datastore: Datastore, at: datetime, *, copy: str | None = None) -> BackupArtifact:
    artifact = BackupArtifactFactory(
        datastore=datastore,
        succeeded=True,
        verification=BackupArtifact.Verification.VERIFIED,
        verified_at=at,
        created_at=at,
        started_at=at,
        finished_at=at + timedelta(minutes=5),
    )
    if copy:
        ArtifactCopy.objects.create(artifact=artifact, location="offsite", status=copy, storage_key="k", size_bytes=1)
    return artifact


def problems_at(datastore: Datastore, when: datetime) -> list[Problem]:
    with time_machine.travel(when, tick=False):
        return datastore_dashboard_row(datastore.pk).problems  # type: ignore[union-attr]


def test_a_copy_missing_after_the_grace_period_is_a_problem_on_the_dashboard(
    datastore: Datastore, viewer: Client
) -> None:
    backup(datastore, NOW - timedelta(hours=20), copy=ArtifactCopy.Status.VERIFIED)
    newest = backup(datastore, NOW - timedelta(minutes=30), copy=ArtifactCopy.Status.FAILED)

    assert problems_at(datastore, NOW) == []  # within COPY_GRACE_SECONDS (an hour): the copy may still come
    assert problems_at(datastore, NOW + timedelta(minutes=40)) == [Problem.COPY_MISSING]

    with time_machine.travel(NOW + timedelta(minutes=40), tick=False):
        page = viewer.get(reverse("overview:dashboard")).content.decode()
        detail = viewer.get(reverse("overview:datastore_detail", args=["prod-db"])).content.decode()
    said = f'Off-site copy missing: offsite (eu-west) has no verified copy of backup <a href="/backups/{newest.pk}/">'
    assert said in page and said in detail

    ArtifactCopy.objects.create(artifact=newest, location="offsite", status="verified", storage_key="k2")
    assert problems_at(datastore, NOW + timedelta(minutes=40)) == []


def test_an_off_site_copy_older_than_the_rpo_is_a_problem(datastore: Datastore, viewer: Client) -> None:
    old = backup(datastore, NOW - timedelta(hours=30), copy=ArtifactCopy.Status.VERIFIED)
    backup(datastore, NOW - timedelta(minutes=20))  # its copy may still come (the grace period)

    # The primary is within its RPO; the off-site recovery point is 30 hours old.
    assert problems_at(datastore, NOW) == [Problem.COPY_RPO_MISSED]
    with time_machine.travel(NOW, tick=False):
        page = viewer.get(reverse("overview:dashboard")).content.decode()
    assert (
        "Off-site copy older than the RPO at offsite (eu-west): its newest verified copy, of backup "
        f'<a href="/backups/{old.pk}/">#{old.pk}</a>, is {duration_short(timedelta(hours=30))} old '
        f"(RPO target {duration_short(timedelta(hours=24))})."
    ) in page
    # Past the grace period the newest backup's missing copy is said too.
    assert problems_at(datastore, NOW + timedelta(hours=1)) == [Problem.COPY_MISSING, Problem.COPY_RPO_MISSED]


def test_a_datastore_without_copy_locations_has_no_copy_problem(datastore: Datastore) -> None:
    plain = DatastoreFactory(name="plain-db", created_at=NOW)
    backup(plain, NOW - timedelta(hours=1))
    backup(datastore, NOW - timedelta(hours=2), copy=ArtifactCopy.Status.VERIFIED)
    with time_machine.travel(NOW, tick=False):
        standings = {s.datastore.name: s for s in datastore_standings()}
    assert standings["plain-db"].copies == [] and standings["plain-db"].problems == []
    copy = standings["prod-db"].copies[0]
    assert (copy.location, copy.missing, copy.late, copy.age) == ("offsite", False, False, timedelta(hours=2))
