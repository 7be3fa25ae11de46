"""A backup's copies on its page and in the list (issue #13), and the Copy now / Retry copy button."""

from __future__ import annotations

import pytest
from django.test import Client
from django.urls import reverse

from audit.models import AuditEvent
from backups.models import ArtifactCopy, BackupArtifact
from inventory.models import StorageLocation
from tests.factories import BackupArtifactFactory, DatastoreFactory, user_in_groups

pytestmark = pytest.mark.django_db
RECIPIENT = "age1" + "q" * 58


@pytest.fixture
def artifact() -> BackupArtifact:
    fs = "django.core.files.storage.FileSystemStorage"
    StorageLocation.objects.create(name="local", backend=fs, options={"location": "/tmp/l"})
    StorageLocation.objects.create(name="offsite", role="copy", region="eu-west", backend=fs, options={})
    StorageLocation.objects.create(name="vault", role="copy", backend=fs, options={})
    datastore = DatastoreFactory(name="prod-db", storage_locations=["local", "offsite", "vault"])
    backup = BackupArtifactFactory(datastore=datastore, succeeded=True, location="local")
    ArtifactCopy.objects.create(
        artifact=backup, location="offsite", status="verified", storage_key="k.age", size_bytes=2048,
        recipients=[RECIPIENT], verified_at=backup.finished_at,
    )  # fmt: skip
    ArtifactCopy.objects.create(artifact=backup, location="vault", status="failed", error="vault: disk full")
    return backup


def test_the_backup_page_shows_each_copy_and_retries_the_failed_one(artifact: BackupArtifact) -> None:
    client = Client()
    client.force_login(user_in_groups("olga", "operator"))
    page = client.get(reverse("backups:artifact_detail", args=[artifact.pk])).content.decode()
    copies = page[page.index('id="copies"') : page.index("</section>", page.index('id="copies"'))]
    assert "offsite" in copies and "eu-west" in copies and "Verified" in copies and "2.0" in copies
    assert "age1qqqqqqqq…qqqqqq" in copies and RECIPIENT not in copies
    assert "vault: disk full" in copies and "Retry copy" in copies
    assert copies.count("<button") == 1  # the verified copy has nothing to ask for

    listing = client.get(reverse("backups:artifact_list")).content.decode()
    warning = 'title="A copy location has no verified copy of this backup.">1 of 2 copies verified</span>'
    assert f'<span class="badge badge-warn" {warning}' in listing

    response = client.post(reverse("backups:artifact_copy", args=[artifact.pk]), {"location": "vault"})
    assert response.status_code == 302
    queued = artifact.copies.get(location="vault", status=ArtifactCopy.Status.QUEUED)
    event = AuditEvent.objects.get(action=AuditEvent.Action.COPY_REQUESTED)
    assert event.details == {"copy": queued.pk, "location": "vault"} and event.actor_label == "olga"


def test_all_copies_verified_and_a_viewer_may_not_copy(artifact: BackupArtifact) -> None:
    ArtifactCopy.objects.filter(location="vault").update(status="verified", storage_key="v")
    client = Client()
    client.force_login(user_in_groups("vera", "viewer"))
    listing = client.get(reverse("backups:artifact_list")).content.decode()
    assert '<span class="badge badge-ok">2 of 2 copies</span>' in listing
    assert client.post(reverse("backups:artifact_copy", args=[artifact.pk])).status_code == 403
