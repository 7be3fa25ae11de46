"""The restore form lets the operator choose where the backup is read from (issue #13): the choice is frozen in the
run's options, shown to approvers on the run's page, with where the run did read it (`source_note`)."""

from __future__ import annotations

import pytest
from django.contrib.auth.models import User
from django.test import Client
from django.urls import reverse

from backups.models import ArtifactCopy, BackupArtifact
from inventory.models import StorageLocation
from restores.models import RestoreRun
from restores.services import RestoreRefused, restore_run_request
from tests.factories import BackupArtifactFactory, DatastoreFactory, DatastoreHealthFactory, EnvironmentFactory
from tests.support.web import logged_in_with_password

pytestmark = pytest.mark.django_db


@pytest.fixture
def backup() -> BackupArtifact:
    fs = "django.core.files.storage.FileSystemStorage"
    StorageLocation.objects.create(name="local", backend=fs, options={"location": "/tmp/l"})
    StorageLocation.objects.create(name="offsite", role="copy", region="eu-west", backend=fs, options={})
    prod = EnvironmentFactory(name="prod", protected=True, required_approvals=2)
    datastore = DatastoreFactory(name="prod-db", environment=prod, storage_locations=["local", "offsite"])
    DatastoreHealthFactory(datastore=datastore)
    artifact = BackupArtifactFactory(
        datastore=datastore, status="succeeded", sha256="a" * 64, storage_key="k", location="local"
    )
    ArtifactCopy.objects.create(artifact=artifact, location="offsite", status="verified", storage_key="k.age")
    return artifact


def test_the_chosen_location_is_frozen_in_the_options_and_shown_on_the_run_page(
    client: Client, operator: User, backup: BackupArtifact
) -> None:
    logged_in_with_password(client, operator)
    url = f"{reverse('restores:run_create')}?artifact={backup.pk}"
    form = client.get(url).content.decode()
    copy = backup.copies.get()
    assert '<option value="" selected>Any: the primary first, then the copies</option>' in form
    assert '<option value="local">local (primary)</option>' in form
    assert f'<option value="offsite">offsite (copy #{copy.pk})</option>' in form

    data = {"target_kind": "in_place", "reason": "incident 42", "confirm": "prod-db", "jobs": 2, "location": "offsite"}
    response = client.post(url, data)
    run = RestoreRun.objects.get()
    assert response.status_code == 302 and run.status == RestoreRun.Status.AWAITING_APPROVAL
    assert run.options == {"jobs": 2, "no_owner": False, "location": "offsite"}

    RestoreRun.objects.filter(pk=run.pk).update(
        source_note=f"read from offsite (copy #{copy.pk}), after: local (primary): the file k is missing"
    )
    page = client.get(reverse("restores:run_detail", args=[run.pk])).content.decode()
    read_from = page[page.index('id="run-location"') :]
    assert read_from.startswith('id="run-location">offsite')
    assert f"read from offsite (copy #{copy.pk}), after: local (primary): the file k is missing" in read_from


def test_no_choice_reads_any_and_a_location_without_the_file_is_refused(operator: User, backup: BackupArtifact) -> None:
    run = restore_run_request(
        artifact=backup, target_kind="in_place", requested_by=operator, reason="r", confirm="prod-db", enqueue=False
    )
    assert "location" not in run.options
    with pytest.raises(RestoreRefused, match="has no readable file at vault"):
        restore_run_request(
            artifact=backup,
            target_kind="in_place",
            requested_by=operator,
            reason="r",
            confirm="prod-db",
            location="vault",
            enqueue=False,
        )
