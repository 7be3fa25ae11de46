from __future__ import annotations

from datetime import timedelta
from typing import Any

import factory
from django.contrib.auth.hashers import make_password
from django.contrib.auth.models import User
from django.utils import timezone
from factory.django import DjangoModelFactory

from audit.models import AuditEvent
from backups.models import BackupArtifact, BackupVerification
from drills.models import DrillRun
from inventory.models import Datastore, DatastoreHealth, Environment
from reprocess.models import ReprocessBatch, ReprocessItem
from restores.models import RestoreRun

# What a job row holds in each state, as dr_console.jobs.job_transition leaves it: the Traits of the job factories
# below (`BackupArtifactFactory(succeeded=True)`) build on these. Fresh declarations for each trait.


def _running() -> dict[str, Any]:
    """Claimed by a worker a moment ago, with a fresh heartbeat."""
    return {"started_at": factory.LazyFunction(timezone.now), "heartbeat_at": factory.LazyFunction(timezone.now)}


def _finished(**fields: Any) -> dict[str, Any]:
    """Started 90 s ago and finished now; no heartbeat (a finished job has no lease)."""
    return {
        "started_at": factory.LazyFunction(lambda: timezone.now() - timedelta(seconds=90)),
        "finished_at": factory.LazyAttribute(lambda job: job.started_at + timedelta(seconds=90)),
        "duration": factory.LazyAttribute(lambda job: job.finished_at - job.started_at),
        "heartbeat_at": None,
        **fields,
    }


class UserFactory(DjangoModelFactory):
    class Meta:
        model = User
        django_get_or_create = ["username"]

    username = factory.Sequence(lambda n: f"user{n}")
    # Everyone's password is known to the tests: "<username>-password" (tests/conftest.py types it at the prompt).
    password = factory.LazyAttribute(lambda user: make_password(f"{user.username}-password"))


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


def one_datastore_of(url_env: str, **fields: Any) -> Datastore:
    """The datastore of the database in `url_env`, made once and then changed to `fields`: the console refuses two
    records of one database (inventory.services.datastore_check_target)."""
    datastore = Datastore.objects.filter(url_env=url_env).first()
    if datastore is None:
        return DatastoreFactory(url_env=url_env, **fields)
    for name, value in fields.items():
        setattr(datastore, name, value)
    datastore.save()
    return datastore


class DatastoreHealthFactory(DjangoModelFactory):
    """A datastore's newest health check: reachable; `unconfigured` (its URL variable unset on the worker),
    `unreachable` or `refused` (wrong password)."""

    class Meta:
        model = DatastoreHealth

    datastore = factory.SubFactory(DatastoreFactory)
    state = DatastoreHealth.State.OK
    server_version = "PostgreSQL 15.19"
    checked_at = factory.LazyFunction(timezone.now)
    checked_on = "worker-1"
    since = factory.LazyFunction(timezone.now)
    # Which database it reached (inventory.identity): one of its own, on a cluster of the tests' imagination.
    identity = factory.LazyAttribute(
        lambda o: {
            "kind": o.datastore.kind,
            "server": "7000000000000000001",
            "endpoint": "10.9.9.9:5432",
            "database": o.datastore.name,
        }
    )

    class Params:
        unconfigured = factory.Trait(
            state=DatastoreHealth.State.UNCONFIGURED,
            server_version="",
            message=factory.LazyAttribute(
                lambda o: (
                    f"environment variable {o.datastore.url_env} is not set in the process that ran the job "
                    "(host worker-1); set it to the database URL"
                )
            ),
        )
        unreachable = factory.Trait(
            state=DatastoreHealth.State.UNREACHABLE,
            server_version="",
            message="cannot connect to database 'app' at db.internal:5432: connection refused",
        )
        refused = factory.Trait(
            state=DatastoreHealth.State.REFUSED,
            server_version="",
            message="cannot connect to database 'app' at db.internal:5432: FATAL: password authentication failed",
        )


class BackupArtifactFactory(DjangoModelFactory):
    """A pending backup; `running`, `succeeded` (a stored file with its checksum), `failed` or `expired`."""

    class Meta:
        model = BackupArtifact

    datastore = factory.SubFactory(DatastoreFactory)
    trigger = "test"

    class Params:
        running = factory.Trait(status=BackupArtifact.Status.RUNNING, **_running())
        succeeded = factory.Trait(
            status=BackupArtifact.Status.SUCCEEDED,
            **_finished(
                size_bytes=4096,
                sha256=factory.Sequence(lambda n: f"{n:064x}"),
                storage_key=factory.Sequence(lambda n: f"test/backup-{n}.dump"),
            ),
        )
        failed = factory.Trait(status=BackupArtifact.Status.FAILED, **_finished(error="pg_dump exited with status 1"))
        expired = factory.Trait(
            status=BackupArtifact.Status.EXPIRED,
            **_finished(
                sha256=factory.Sequence(lambda n: f"{n:064x}"),
                storage_key=factory.Sequence(lambda n: f"test/backup-{n}.dump"),
                expired_at=factory.LazyFunction(timezone.now),
                file_deleted_at=factory.LazyFunction(timezone.now),
            ),
        )


class ReprocessBatchFactory(DjangoModelFactory):
    """A draft batch; pass `documents=[(workspace_id, document_id), ...]` to give it items. Traits: `queued`,
    `running`, `succeeded`, `failed`, `cancelled`, `discarded` (the status and timings; the counters stay yours)."""

    class Meta:
        model = ReprocessBatch
        skip_postgeneration_save = True

    environment = factory.SubFactory(EnvironmentFactory)
    source = ReprocessBatch.Source.CSV
    trigger = "test"

    class Params:
        queued = factory.Trait(status=ReprocessBatch.Status.QUEUED, heartbeat_at=factory.LazyFunction(timezone.now))
        running = factory.Trait(
            status=ReprocessBatch.Status.RUNNING,
            runs=1,
            run_started_at=factory.SelfAttribute("started_at"),
            **_running(),
        )
        succeeded = factory.Trait(status=ReprocessBatch.Status.SUCCEEDED, runs=1, **_finished())
        failed = factory.Trait(
            status=ReprocessBatch.Status.FAILED, runs=1, **_finished(error="documents were not accepted")
        )
        cancelled = factory.Trait(status=ReprocessBatch.Status.CANCELLED, runs=1, **_finished(error="cancelled"))
        discarded = factory.Trait(  # a draft nobody sent: it never started
            status=ReprocessBatch.Status.DISCARDED, finished_at=factory.LazyFunction(timezone.now)
        )

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

    class Params:
        awaiting_approval = factory.Trait(
            status=RestoreRun.Status.AWAITING_APPROVAL,
            required_approvals=1,
            heartbeat_at=factory.LazyFunction(timezone.now),
        )
        queued = factory.Trait(status=RestoreRun.Status.QUEUED, heartbeat_at=factory.LazyFunction(timezone.now))
        running = factory.Trait(status=RestoreRun.Status.RUNNING, **_running())
        succeeded = factory.Trait(status=RestoreRun.Status.SUCCEEDED, **_finished(exit_code=0))
        failed = factory.Trait(
            status=RestoreRun.Status.FAILED, **_finished(exit_code=1, error="pg_restore exited with status 1")
        )
        cancelled = factory.Trait(status=RestoreRun.Status.CANCELLED, **_finished(error="cancelled by olga"))


class DrillRunFactory(DjangoModelFactory):
    """A queued drill of a datastore, on the server its drills restore into; pass `artifact=` for the backup it
    restores. Traits: `running`, `succeeded` (with a measured RTO, its scratch database dropped), `failed`,
    `cancelled`."""

    class Meta:
        model = DrillRun

    datastore = factory.SubFactory(DatastoreFactory)
    artifact = None
    server_url_env = factory.LazyAttribute(lambda run: run.datastore.drill_url_env)
    trigger = "test"

    class Params:
        running = factory.Trait(
            status=DrillRun.Status.RUNNING,
            scratch_database=factory.Sequence(lambda n: f"dr_drill_{n}_0123abcd"),
            **_running(),
        )
        succeeded = factory.Trait(
            status=DrillRun.Status.SUCCEEDED,
            **_finished(
                rto=timedelta(seconds=42),
                exit_code=0,
                scratch_database=factory.Sequence(lambda n: f"dr_drill_{n}_0123abcd"),
                scratch_dropped=True,
            ),
        )
        failed = factory.Trait(
            status=DrillRun.Status.FAILED,
            **_finished(error="check failed: row counts: public.documents: expected 301, found 300", exit_code=0),
        )
        cancelled = factory.Trait(status=DrillRun.Status.CANCELLED, **_finished(error="cancelled by olga"))


class BackupVerificationFactory(DjangoModelFactory):
    """A queued verification of a succeeded backup. Traits: `running`, `verified`, `corrupt`, `failed` (could not
    tell: the storage was unreachable), `errored`, `cancelled`."""

    class Meta:
        model = BackupVerification

    artifact = factory.SubFactory(BackupArtifactFactory, succeeded=True)
    trigger = "test"
    heartbeat_at = factory.LazyFunction(timezone.now)

    class Params:
        running = factory.Trait(status=BackupVerification.Status.RUNNING, **_running())
        verified = factory.Trait(status=BackupVerification.Status.VERIFIED, **_finished())
        corrupt = factory.Trait(
            status=BackupVerification.Status.CORRUPT,
            **_finished(error="sha256 mismatch: the stored file hashes to 00ff, the backup recorded 5f1c"),
        )
        failed = factory.Trait(
            status=BackupVerification.Status.FAILED,
            **_finished(error="cannot reach the artifact storage: [Errno 110] Connection timed out"),
        )
        errored = factory.Trait(
            status=BackupVerification.Status.ERRORED, **_finished(error="internal error: KeyError: 'format'")
        )
        cancelled = factory.Trait(status=BackupVerification.Status.CANCELLED, **_finished(error="cancelled by olga"))


class AuditEventFactory(DjangoModelFactory):
    """An audit event as audit_record writes it (for history that happened before the test)."""

    class Meta:
        model = AuditEvent

    actor = None
    actor_label = factory.LazyAttribute(lambda event: event.actor.get_username() if event.actor else "console")
