from __future__ import annotations

import factory
from django.contrib.auth.models import User
from factory.django import DjangoModelFactory

from audit.models import AuditEvent
from backups.models import BackupArtifact
from inventory.models import Datastore, Environment
from reprocess.models import ReprocessBatch, ReprocessItem
from restores.models import RestoreRun


class UserFactory(DjangoModelFactory):
    class Meta:
        model = User
        django_get_or_create = ["username"]

    username = factory.Sequence(lambda n: f"user{n}")


class EnvironmentFactory(DjangoModelFactory):
    class Meta:
        model = Environment
        django_get_or_create = ["name"]

    name = factory.Sequence(lambda n: f"env{n}")
    protected = False


class DatastoreFactory(DjangoModelFactory):
    class Meta:
        model = Datastore

    environment = factory.SubFactory(EnvironmentFactory)
    name = factory.Sequence(lambda n: f"db{n}")
    kind = Datastore.Kind.POSTGRES
    url_env = factory.Sequence(lambda n: f"TEST_DB{n}_URL")


class BackupArtifactFactory(DjangoModelFactory):
    class Meta:
        model = BackupArtifact

    datastore = factory.SubFactory(DatastoreFactory)
    trigger = "test"


class ReprocessBatchFactory(DjangoModelFactory):
    """A draft batch; pass `documents=[(workspace_id, document_id), ...]` to give it items."""

    class Meta:
        model = ReprocessBatch
        skip_postgeneration_save = True

    environment = factory.SubFactory(EnvironmentFactory)
    source = ReprocessBatch.Source.CSV
    trigger = "test"

    @factory.post_generation
    def documents(self, create: bool, extracted: list[tuple[str, str]] | None, **kwargs: object) -> None:
        if not extracted:
            return
        ReprocessItem.objects.bulk_create(
            ReprocessItem(batch=self, workspace_id=ws, document_id=doc) for ws, doc in extracted
        )
        self.total = len(extracted)
        self.save(update_fields=["total"])


def user_with_perms(username: str, *perms: str, **fields: object) -> User:
    """A user holding exactly `perms` ("app_label.codename"), as the roles of the console grant them."""
    from django.contrib.auth.models import Permission

    user = UserFactory(username=username, email=f"{username}@example.test", **fields)
    for perm in perms:
        app_label, codename = perm.split(".")
        user.user_permissions.add(Permission.objects.get(content_type__app_label=app_label, codename=codename))
    return User.objects.get(pk=user.pk)  # fresh: the permission cache is empty


OPERATOR_PERMS = ("backups.add_backupartifact", "restores.add_restorerun")
APPROVER_PERMS = ("restores.approve_restorerun",)


def user_in_groups(username: str, *groups: str) -> User:
    from django.contrib.auth.models import Group, Permission

    from dr_console.roles import roles_ensure

    roles_ensure(Group, Permission)  # a transactional test's flush empties the groups the migration made
    user = UserFactory(username=username, email=f"{username}@example.test")
    user.groups.set(Group.objects.filter(name__in=groups))
    return User.objects.get(pk=user.pk)


class RestoreRunFactory(DjangoModelFactory):
    """A restore run as restore_run_request freezes it; by default into a new database on the backup's server."""

    class Meta:
        model = RestoreRun

    artifact = factory.SubFactory(BackupArtifactFactory)
    artifact_sha256 = factory.LazyAttribute(lambda run: run.artifact.sha256)
    target_kind = RestoreRun.TargetKind.NEW_DATABASE
    target_datastore = factory.LazyAttribute(lambda run: run.artifact.datastore)
    new_database_name = "check"
    target_key = factory.LazyAttribute(lambda run: f"datastore:{run.target_datastore.pk}:new:{run.new_database_name}")
    options = factory.LazyFunction(lambda: {"jobs": 2, "no_owner": False})
    reason = "check the backup"
    trigger = "test"


class AuditEventFactory(DjangoModelFactory):
    """An audit event as audit_record writes it (for history that happened before the test)."""

    class Meta:
        model = AuditEvent

    actor = None
    actor_label = factory.LazyAttribute(lambda event: event.actor.get_username() if event.actor else "console")
