"""Objectives: the dashboard judges RPO and RTO and draws 30 days per datastore in a constant number of queries;
a breach is told once when it opens and once when it closes."""

from __future__ import annotations

import json
import re
from datetime import timedelta
from typing import Any

import pytest
import time_machine
from django.core import mail
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from audit.models import AuditEvent
from backups.models import BackupArtifact
from drills.models import DrillRun, ObjectiveBreach
from inventory.models import Datastore
from overview.services import objectives_check
from tests.factories import BackupArtifactFactory, DatastoreFactory, DrillRunFactory, user_in_groups
from tests.support.http import HttpStub

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def _alerts(settings: Any) -> None:
    settings.ALERT_EMAILS = ["oncall@example.test"]


def verified_backup(datastore: Datastore, age: timedelta, size: int = 40_000_000, seconds: float = 3.0) -> Any:
    started = timezone.now() - age
    return BackupArtifactFactory(
        datastore=datastore,
        status=BackupArtifact.Status.SUCCEEDED,
        verification=BackupArtifact.Verification.VERIFIED,
        created_at=started,
        started_at=started,
        finished_at=started + timedelta(seconds=seconds),
        duration=timedelta(seconds=seconds),
        size_bytes=size,
    )


def finished_drill(datastore: Datastore, age: timedelta, rto: float | None, ok: bool = True) -> DrillRun:
    at = timezone.now() - age
    return DrillRun.objects.create(
        datastore=datastore,
        server_url_env="X",
        status=DrillRun.Status.SUCCEEDED if ok else DrillRun.Status.FAILED,
        error="" if ok else "check failed: row counts: public.documents: expected 301, found 300",
        created_at=at,
        started_at=at,
        finished_at=at + timedelta(minutes=2),
        rto=None if rto is None else timedelta(seconds=rto),
    )


def subjects() -> list[str]:
    return [message.subject for message in mail.outbox]


def test_an_rpo_breach_is_told_once_and_its_recovery_once(http_stub: HttpStub, webhook_env: str) -> None:
    datastore = DatastoreFactory(
        name="prod-db", rpo_target=timedelta(hours=24), environment__webhook_url_env=webhook_env
    )
    Datastore.objects.filter(pk=datastore.pk).update(created_at=timezone.now() - timedelta(days=10))
    verified_backup(datastore, age=timedelta(hours=30))
    assert objectives_check() == (1, 0)
    assert objectives_check() == (0, 0)  # still late: nobody is told again
    assert objectives_check() == (0, 0)
    assert subjects() == ["[DR Console] prod-db misses its RPO"]
    assert "is 30 h old, over the RPO target of 24 h" in mail.outbox[0].body
    assert [json.loads(body)["text"].splitlines()[0] for _path, body in http_stub.posts] == [
        "[DR Console] prod-db misses its RPO"
    ]
    breach = ObjectiveBreach.objects.get()
    assert breach.is_open and breach.objective == "rpo"

    verified_backup(datastore, age=timedelta(hours=1))
    assert objectives_check() == (0, 1)
    assert objectives_check() == (0, 0)
    assert subjects()[1:] == ["[DR Console] prod-db meets its RPO again"]
    breach.refresh_from_db()
    assert not breach.is_open
    actions = AuditEvent.objects.filter(object_type="drills.objectivebreach").values_list("action", flat=True)
    assert sorted(actions) == ["objective.breached", "objective.recovered"]


def test_a_new_datastore_has_one_rpo_period_for_its_first_verified_backup() -> None:
    datastore = DatastoreFactory(name="new-db", rpo_target=timedelta(hours=24))
    assert objectives_check() == (0, 0)
    Datastore.objects.filter(pk=datastore.pk).update(created_at=timezone.now() - timedelta(hours=25))
    assert objectives_check() == (1, 0)
    assert ObjectiveBreach.objects.get().reason == "new-db has no verified backup (RPO target 24 h)"


def test_a_failed_drill_and_a_slow_drill_breach_the_rto_until_a_drill_meets_it() -> None:
    datastore = DatastoreFactory(name="prod-db", rto_target=timedelta(minutes=10))
    verified_backup(datastore, age=timedelta(hours=1))
    finished_drill(datastore, age=timedelta(days=2), rto=60)
    assert objectives_check() == (0, 0)

    failed = finished_drill(datastore, age=timedelta(days=1), rto=None, ok=False)
    assert objectives_check() == (1, 0)
    breach = ObjectiveBreach.objects.get()
    assert breach.objective == "rto"
    assert breach.reason.startswith(f"drill #{failed.pk} of prod-db failed: check failed: row counts")

    finished_drill(datastore, age=timedelta(hours=12), rto=900)  # works now, but too slowly: still breached
    assert objectives_check() == (0, 0)
    finished_drill(datastore, age=timedelta(hours=1), rto=120)
    assert objectives_check() == (0, 1)
    assert subjects() == ["[DR Console] prod-db misses its RTO", "[DR Console] prod-db meets its RTO again"]

    finished_drill(datastore, age=timedelta(minutes=5), rto=900)  # a new breach after a recovery is a new one
    assert objectives_check() == (1, 0)
    assert (
        ObjectiveBreach.objects.filter(closed_at__isnull=True)
        .get()
        .reason.endswith("restored in 15 min, over the RTO target of 10 min")
    )


def dashboard(client: Client) -> str:
    response = client.get(reverse("overview:dashboard"))
    assert response.status_code == 200
    return response.content.decode()


def test_the_dashboard_says_in_one_look_whether_every_datastore_meets_its_objectives(client: Client) -> None:
    client.force_login(user_in_groups("vera", "viewer"))
    good = DatastoreFactory(name="good-db", rto_target=timedelta(minutes=10))
    verified_backup(good, age=timedelta(hours=1))
    finished_drill(good, age=timedelta(hours=2), rto=95)
    page = dashboard(client)
    assert "The datastore is healthy" in page
    assert "Within RTO" in page and "restored in 1 min 35 s; target 10 min" in page

    slow = DatastoreFactory(name="slow-db", rto_target=timedelta(minutes=1))
    verified_backup(slow, age=timedelta(hours=1))
    finished_drill(slow, age=timedelta(hours=2), rto=95)
    page = dashboard(client)
    assert "1 of 2 datastores needs attention" in page
    assert "Over RTO" in page
    attention = page[page.index('id="attention"') : page.index('id="healthy"')]
    assert "slow-db" in attention and "good-db" not in attention
    assert "restored in 1 min 35 s: over the RTO target of 1 min" in attention


def test_the_chart_is_inline_svg_described_for_screen_readers_with_the_numbers_as_text(client: Client) -> None:
    datastore = DatastoreFactory(name="prod-db", rto_target=timedelta(minutes=10))
    with time_machine.travel(timezone.now().replace(hour=12), tick=False):
        # Logged in at the travelled-to time: noon may be more than the idle timeout from now.
        client.force_login(user_in_groups("vera", "viewer"))
        for days in (1, 2, 40):  # 40 days ago: outside the chart
            verified_backup(datastore, age=timedelta(days=days), size=(50 - days) * 1_000_000, seconds=days * 10)
        finished_drill(datastore, age=timedelta(days=1), rto=300)
        finished_drill(datastore, age=timedelta(days=3), rto=None, ok=False)
        page = client.get(reverse("overview:datastore_chart", args=[datastore.pk])).content.decode()
    svg = re.search(r'<svg role="img" aria-labelledby="chart-title-(\d+) chart-desc-\1".*?</svg>', page, re.S)
    assert svg is not None
    assert '<title id="chart-title-' in svg.group(0) and "prod-db: backups and drills, last 30 days" in svg.group(0)
    assert "Backup size and duration on 2 days, and drill restore times on 2 days, against an RTO target of 10 min" in (
        svg.group(0)
    )
    assert svg.group(0).count('class="chart-dot chart-failed"') == 1
    assert 'class="chart-target"' in svg.group(0)
    assert not re.search(r'c[xy]="\d+,\d', svg.group(0))  # numbers for the SVG, never localized
    table = page[page.index("<summary>Numbers</summary>") :]
    assert "45.8\xa0MB" in table and "20.0 s" in table and "5 min" in table and "1 failed" in table
    assert "<script" not in page  # no chart library


def test_the_dashboard_query_count_does_not_grow_with_datastores_backups_and_drills(
    client: Client, django_assert_max_num_queries: Any
) -> None:
    client.force_login(user_in_groups("vera", "viewer"))

    def populate(datastores: int, days: int) -> None:
        for _ in range(datastores):
            datastore = DatastoreFactory()
            for day in range(days):
                verified_backup(datastore, age=timedelta(days=day, hours=1))
                finished_drill(datastore, age=timedelta(days=day, hours=2), rto=60, ok=day % 3 != 0)
            DrillRunFactory(datastore=datastore, running=True)

    populate(2, 1)
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    with CaptureQueriesContext(connection) as few:
        dashboard(client)
    populate(20, 12)
    with django_assert_max_num_queries(len(few.captured_queries)):
        page = dashboard(client)
    # Every row is listed, its chart loaded once it is on screen.
    assert page.count('hx-trigger="revealed"') == 22 and '<svg role="img"' not in page
    for _ in range(31):  # too many healthy ones to list: summarised by environment
        verified_backup(DatastoreFactory(), age=timedelta(hours=1))
    with django_assert_max_num_queries(len(few.captured_queries)):
        page = dashboard(client)
    assert 'id="environment-summary"' in page
