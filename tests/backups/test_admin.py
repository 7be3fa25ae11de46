"""The Django admin: configuration is editable, history is read-only, secrets never show."""

from __future__ import annotations

import os

import pytest
import redis
from django.test import Client
from django.urls import reverse

from audit.models import AuditEvent
from backups.models import BackupArtifact, BackupVerification
from restores.models import RestoreRun
from tests.factories import BackupArtifactFactory, DatastoreFactory, UserFactory, user_in_groups

pytestmark = pytest.mark.django_db


@pytest.fixture
def admin_client_logged_in(client: Client) -> Client:
    client.force_login(UserFactory(username="root", is_staff=True, is_superuser=True))
    return client


def test_pages_need_a_staff_login(client: Client) -> None:
    response = client.get(reverse("admin:backups_backupartifact_changelist"))
    assert response.status_code == 302 and response["Location"].startswith("/accounts/login/?next=/admin/")


def test_datastore_page_says_whether_the_url_is_set_but_never_shows_it(
    admin_client_logged_in: Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SHOWN_DB_URL", "postgresql://app:Very-Secret-pw@db.internal:5432/app")
    datastore = DatastoreFactory(url_env="SHOWN_DB_URL")
    for url in (
        reverse("admin:inventory_datastore_changelist"),
        reverse("admin:inventory_datastore_change", args=[datastore.pk]),
    ):
        response = admin_client_logged_in.get(url)
        assert response.status_code == 200
        assert b"Very-Secret-pw" not in response.content and b"db.internal" not in response.content
    assert b"SHOWN_DB_URL" in admin_client_logged_in.get(reverse("admin:inventory_datastore_changelist")).content


def test_backup_history_is_read_only(admin_client_logged_in: Client) -> None:
    artifact = BackupArtifactFactory(status=BackupArtifact.Status.FAILED, error="pg_dump exited with status 1")
    change_url = reverse("admin:backups_backupartifact_change", args=[artifact.pk])
    response = admin_client_logged_in.get(change_url)
    assert response.status_code == 200
    assert b"pg_dump exited with status 1" in response.content
    assert b'name="status"' not in response.content  # no editable field
    assert admin_client_logged_in.get(reverse("admin:backups_backupartifact_add")).status_code == 403
    delete = admin_client_logged_in.post(
        reverse("admin:backups_backupartifact_delete", args=[artifact.pk]), {"post": "yes"}
    )
    assert delete.status_code == 403
    assert BackupArtifact.objects.filter(pk=artifact.pk).exists()
    assert admin_client_logged_in.get(reverse("admin:restores_restorerun_changelist")).status_code == 200
    assert admin_client_logged_in.get(reverse("admin:restores_restorerun_add")).status_code == 403


@pytest.mark.django_db(transaction=True)
def test_back_up_now_action_queues_a_backup_on_the_real_broker(admin_client_logged_in: Client) -> None:
    broker = redis.Redis.from_url(os.environ["CELERY_BROKER_URL"])
    broker.delete("celery")
    datastore = DatastoreFactory(name="prod-db")
    response = admin_client_logged_in.post(
        reverse("admin:inventory_datastore_changelist"),
        {"action": "back_up_now", "_selected_action": [datastore.pk]},
        follow=True,
    )
    artifact = BackupArtifact.objects.get(datastore=datastore)
    assert f"Backup #{artifact.pk} of prod-db queued" in response.content.decode()
    assert artifact.trigger == "admin:root" and artifact.triggered_by.username == "root"
    assert broker.llen("celery") == 1  # the message is on the broker, after the commit
    broker.delete("celery")

    response = admin_client_logged_in.post(
        reverse("admin:inventory_datastore_changelist"),
        {"action": "back_up_now", "_selected_action": [datastore.pk]},
        follow=True,
    )
    assert f"No backup of prod-db: a backup of prod-db is already pending (#{artifact.pk})" in response.content.decode()
    assert RestoreRun.objects.count() == 0


def test_admin_refuses_a_redis_datastore_that_is_the_console_broker(
    admin_client_logged_in: Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tests.factories import EnvironmentFactory

    monkeypatch.setenv("QUEUE_REDIS_URL", os.environ["CELERY_BROKER_URL"])
    environment = EnvironmentFactory(name="prod")
    response = admin_client_logged_in.post(
        reverse("admin:inventory_datastore_add"),
        {"environment": environment.pk, "name": "prod-redis", "kind": "redis", "url_env": "QUEUE_REDIS_URL"},
    )
    assert response.status_code == 200
    assert "is the console&#x27;s own task broker" in response.content.decode()
    from inventory.models import Datastore

    assert not Datastore.objects.exists()


@pytest.mark.django_db(transaction=True)
def test_back_up_now_is_audited_with_the_client_ip(admin_client_logged_in: Client) -> None:
    from audit.models import AuditEvent

    datastore = DatastoreFactory(name="prod-db")
    admin_client_logged_in.post(
        reverse("admin:inventory_datastore_changelist"),
        {"action": "back_up_now", "_selected_action": [datastore.pk]},
        REMOTE_ADDR="10.1.2.3",
    )
    redis.Redis.from_url(os.environ["CELERY_BROKER_URL"]).delete("celery")
    event = AuditEvent.objects.get(action="backup.requested")
    assert (event.actor_label, event.client_ip) == ("root", "10.1.2.3")


def test_configuration_edited_in_the_admin_is_audited(admin_client_logged_in: Client) -> None:
    from audit.models import AuditEvent

    response = admin_client_logged_in.post(
        reverse("admin:inventory_environment_add"),
        {
            "name": "staging",
            "required_approvals": 1,
            "description": "",
            "api_url": "",
            "webhook_url_env": "",
            "safety_backup": "unknown",
            "reprocess_concurrency": 16,
        },
    )
    assert response.status_code == 302, response.content.decode()[:2000]
    event = AuditEvent.objects.get(action="config.changed")
    assert event.object_repr == "staging" and event.details["created"] is True and event.client_ip == "127.0.0.1"


def test_a_user_with_history_cannot_be_deleted_only_deactivated(admin_client_logged_in: Client) -> None:
    from audit.services import audit_record

    carol = UserFactory(username="carol")
    audit_record(action="backup.requested", actor=carol)
    response = admin_client_logged_in.post(reverse("admin:auth_user_delete", args=[carol.pk]), {"post": "yes"})
    assert response.status_code == 200  # the admin explains what protects her, no error page
    assert "Cannot delete user" in response.content.decode()
    assert type(carol).objects.filter(pk=carol.pk).exists()


def test_healthz_answers_without_login_and_without_https_redirect(client: Client, settings: object) -> None:
    settings.SECURE_SSL_REDIRECT = True  # type: ignore[attr-defined]
    response = client.get("/healthz")
    assert response.status_code == 200 and response.json() == {"status": "ok"}
    assert client.post("/healthz").status_code == 405


@pytest.mark.parametrize(("role", "allowed"), [("viewer", False), ("operator", True)])
def test_the_verify_action_needs_the_operator_role_as_on_the_pages(client: Client, role: str, allowed: bool) -> None:
    """The changelist needs only the view permission; its Verify action queues work, which the backup's page
    and `manage.py verify` leave to operators (backups.add_backupartifact)."""
    user = user_in_groups(f"staff-{role}", role)
    user.is_staff = True
    user.save()
    client.force_login(user)
    artifact = BackupArtifactFactory(status=BackupArtifact.Status.SUCCEEDED)
    changelist = reverse("admin:backups_backupartifact_changelist")

    assert client.get(changelist).status_code == 200
    assert ("Verify selected backups" in client.get(changelist).content.decode()) is allowed
    response = client.post(changelist, {"action": "verify", "_selected_action": [artifact.pk]}, follow=True)

    assert response.status_code == (200 if allowed else 403)
    verifications = BackupVerification.objects.filter(artifact=artifact)
    audited = AuditEvent.objects.filter(action=AuditEvent.Action.VERIFY_REQUESTED)
    if allowed:
        assert verifications.count() == 1 and audited.count() == 1
        assert f"Verification of backup #{artifact.pk} queued" in response.content.decode()
    else:
        assert not verifications.exists() and not audited.exists()
        artifact.refresh_from_db()
        assert artifact.verification == BackupArtifact._meta.get_field("verification").default
