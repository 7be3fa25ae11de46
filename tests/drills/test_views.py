"""Drills on the pages: the datastore page (settings, recent drills, Run a drill now) and the backup page."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from django.test import Client
from django.urls import reverse

from audit.models import AuditEvent
from drills.models import DrillRun
from tests.factories import BackupArtifactFactory, DatastoreFactory, user_in_groups

pytestmark = pytest.mark.django_db


@pytest.fixture
def datastore() -> Any:
    return DatastoreFactory(
        name="prod-db",
        drill_schedule="0 5 * * 0",
        drill_probes="SELECT count(*) > 0 FROM documents",
        rto_target=timedelta(minutes=10),
    )


def logged_in(client: Client, *groups: str) -> Client:
    client.force_login(user_in_groups("someone", *groups))
    return client


def drill_of(datastore: Any) -> DrillRun:
    artifact = BackupArtifactFactory(datastore=datastore, status="succeeded", storage_key="k", sha256="0" * 64)
    return DrillRun.objects.create(
        datastore=datastore,
        artifact=artifact,
        server_url_env="X",
        status=DrillRun.Status.FAILED,
        error="check failed: probe: SELECT count(*) > 0 FROM documents: returned False",
        rto=timedelta(seconds=42),
        scratch_database="dr_drill_1_abcdef12",
        scratch_dropped=True,
        checks=[
            {"name": "row counts", "ok": True, "detail": "3 tables match the dump"},
            {"name": "probe: SELECT count(*) > 0 FROM documents", "ok": False, "detail": "returned False"},
        ],
    )


def test_the_datastore_page_shows_the_drill_settings_and_its_drills(client: Client, datastore: Any) -> None:
    drill = drill_of(datastore)
    page = logged_in(client, "viewer").get(reverse("overview:datastore_detail", args=["prod-db"])).content.decode()
    assert '<section class="card" id="drills">' in page
    assert "<code>0 5 * * 0</code>" in page and "<code>SELECT count(*) &gt; 0 FROM documents</code>" in page
    assert f'id="drill-{drill.pk}"' in page and "42.0 s" in page and "returned False" in page
    assert "Drill failed" in page
    assert "Run a drill now" not in page  # a viewer may not start one


def test_the_backup_page_lists_the_drills_that_restored_it(client: Client, datastore: Any) -> None:
    drill = drill_of(datastore)
    page = logged_in(client, "viewer").get(reverse("backups:artifact_detail", args=[drill.artifact_id]))
    assert f'id="drill-{drill.pk}"' in page.content.decode()
    assert "dr_drill_1_abcdef12" in page.content.decode()


def test_an_operator_starts_a_drill_from_the_datastore_page(
    client: Client, datastore: Any, django_capture_on_commit_callbacks: Any
) -> None:
    BackupArtifactFactory(datastore=datastore, status="succeeded", storage_key="k", sha256="0" * 64)
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        response = logged_in(client, "operator").post(reverse("drills:drill_start", args=["prod-db"]))
    assert response.status_code == 302 and response["Location"].endswith("/datastores/prod-db/#drills")
    run = DrillRun.objects.get()
    assert (run.status, run.trigger) == (DrillRun.Status.QUEUED, "web:someone")
    assert len(callbacks) == 1  # the task is sent once the row is committed
    requested = AuditEvent.objects.get(action=AuditEvent.Action.DRILL_REQUESTED)
    assert requested.actor_label == "someone" and requested.client_ip == "127.0.0.1"


def test_a_viewer_cannot_start_a_drill_and_get_is_refused(client: Client, datastore: Any) -> None:
    viewer = logged_in(client, "viewer")
    assert viewer.post(reverse("drills:drill_start", args=["prod-db"])).status_code == 403
    assert viewer.get(reverse("drills:drill_start", args=["prod-db"])).status_code == 405
    assert not DrillRun.objects.exists()
