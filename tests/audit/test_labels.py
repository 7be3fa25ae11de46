"""The audit log reads in its reader's language (issue #11): the objects and the actors that are not people are
stored as codes and parameters beside their English words, which exports and old rows keep."""

from __future__ import annotations

from typing import Any

import pytest
from django.test import Client
from django.urls import reverse

from audit.models import AuditEvent
from audit.services import audit_record
from tests.factories import BackupArtifactFactory, DatastoreFactory, RestoreRunFactory, user_in_groups

pytestmark = pytest.mark.django_db


def log_page(language: str) -> str:
    client = Client()
    client.force_login(user_in_groups("vera", "viewer"))
    return client.get(reverse("audit:event_list"), HTTP_ACCEPT_LANGUAGE=language).content.decode()


def test_objects_and_console_actors_are_in_the_readers_language(operator: Any) -> None:
    backup = BackupArtifactFactory(datastore=DatastoreFactory(name="nc-app"), succeeded=True)
    run = RestoreRunFactory(artifact=backup)
    audit_record(action=AuditEvent.Action.BACKUP_FINISHED, actor_label="console", obj=backup)
    audit_record(
        action=AuditEvent.Action.BACKUP_REQUESTED, actor_label=f"safety backup before restore #{run.pk}", obj=backup
    )
    audit_record(action=AuditEvent.Action.RESTORE_REQUESTED, actor=operator, obj=run)

    spanish = log_page("es")
    assert f"copia de seguridad #{backup.pk} de nc-app" in spanish
    assert f"restauración #{run.pk}" in spanish
    assert f"copia de seguridad preventiva antes de la restauración #{run.pk}" in spanish
    assert ">consola<" in spanish and ">olga<" in spanish  # a person's name stays as it is
    assert f"backup #{backup.pk} of nc-app" not in spanish

    english = log_page("en")
    assert f"backup #{backup.pk} of nc-app" in english and ">console<" in english
    # The stored English words stay for exports and for rows written before the labels.
    event = AuditEvent.objects.get(action=AuditEvent.Action.BACKUP_FINISHED)
    assert (event.object_repr, event.actor_label) == (f"backup #{backup.pk} of nc-app", "console")


def test_an_event_without_labels_shows_its_stored_words(operator: Any) -> None:
    audit_record(action=AuditEvent.Action.CONFIG_LOADED, actor_label="cli:root")
    assert "cli:root" in log_page("es")
