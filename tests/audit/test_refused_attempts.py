"""A signed-in person's refused attempt to change something is in the audit log: who, which method and path, from
where. Reading a page one may not see is not audited (it is logged), and nothing is changed either way."""

from __future__ import annotations

import pytest
from django.test import Client
from django.urls import reverse

from audit.models import AuditEvent
from backups.models import BackupArtifact
from tests.factories import DatastoreFactory, user_in_groups

pytestmark = pytest.mark.django_db
Action = AuditEvent.Action


def test_a_viewer_who_posts_back_up_now_is_refused_and_the_attempt_is_audited() -> None:
    datastore = DatastoreFactory(name="prod-db")
    client = Client()
    client.force_login(user_in_groups("vera", "viewer"))
    url = reverse("overview:datastore_backup", args=[datastore.pk])
    assert client.post(url, REMOTE_ADDR="10.0.0.7").status_code == 403
    assert not BackupArtifact.objects.exists()
    event = AuditEvent.objects.get(action=Action.ACCESS_REFUSED)
    assert (event.actor_label, event.details, event.client_ip, event.via) == (
        "vera",
        {"method": "POST", "path": url},
        "10.0.0.7",
        "web",
    )


def test_a_forged_post_without_the_csrf_token_is_refused_and_audited() -> None:
    datastore = DatastoreFactory(name="prod-db")
    client = Client(enforce_csrf_checks=True)
    client.force_login(user_in_groups("olga", "operator"))
    assert client.post(reverse("overview:datastore_backup", args=[datastore.pk])).status_code == 403
    assert not BackupArtifact.objects.exists()
    assert AuditEvent.objects.filter(action=Action.ACCESS_REFUSED, actor_label="olga").count() == 1


def test_reading_a_page_one_may_not_see_is_not_an_audited_attempt() -> None:
    client = Client()
    client.force_login(user_in_groups("nobody"))
    assert client.get(reverse("overview:dashboard")).status_code == 403
    assert not AuditEvent.objects.filter(action=Action.ACCESS_REFUSED).exists()
