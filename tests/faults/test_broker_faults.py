"""The broker misbehaving: a message handed out twice while its job runs (Redis's visibility timeout), and a message
lost before any worker took it (a broker restarted without persistence, a FLUSHDB)."""

from __future__ import annotations

import contextlib
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest
import redis
from django.core import mail

from audit.models import AuditEvent
from backups.copies import artifact_copies_reap_stale, artifact_copies_request
from backups.models import ArtifactCopy, BackupArtifact, BackupVerification
from backups.services import backup_artifact_request, backup_artifacts_reap_stale
from backups.verification import backup_verification_request, backup_verifications_reap_stale
from dr_console.jobs import JobModel, broker_has_message
from drills.models import DrillRun
from drills.services import drill_run_request, drill_runs_reap_stale
from reprocess.models import ReprocessBatch
from reprocess.services import reprocess_batch_send, reprocess_batches_reap_stale
from restores.models import RestoreRun
from restores.services import restore_run_request, restore_runs_reap_stale
from tests.factories import DatastoreFactory, EnvironmentFactory, ReprocessBatchFactory
from tests.faults.conftest import Gate, SlowApi, audit_actions, tools_of, wait_queued_stale, wait_until
from tests.support.postgres import SourceDb, backup_taken

pytestmark = [pytest.mark.worker, pytest.mark.django_db(transaction=True)]


class ToolSampler(threading.Thread):
    """Records the process group of every pg_dump/pg_restore working on `database`, every 20 ms, until stopped:
    how many tools ever ran, not only how many run at the end."""

    def __init__(self, database: str) -> None:
        super().__init__(daemon=True)
        self.database = database
        self.groups: set[int] = set()
        self._done = threading.Event()

    def run(self) -> None:
        while not self._done.wait(0.02):
            for process in tools_of(self.database):
                with contextlib.suppress(OSError):
                    self.groups.add(os.getpgid(process.pid))

    def stop(self) -> set[int]:
        self._done.set()
        self.join(timeout=5)
        return self.groups


def test_a_restore_redelivered_while_it_runs_runs_pg_restore_once(
    start_worker: Any,
    source_db: SourceDb,
    new_database_name: str,
    gate: Gate,
    operator: Any,
    broker: redis.Redis,
) -> None:
    gate.install(source_db.url)
    artifact = backup_taken(source_db.url_env)
    gate.close()
    short = {"CELERY_VISIBILITY_TIMEOUT": "1"}
    first = start_worker(**short)
    sampler = ToolSampler(new_database_name)
    sampler.start()
    run = restore_run_request(
        artifact=artifact,
        target_kind=RestoreRun.TargetKind.NEW_DATABASE,
        new_database_name=new_database_name,
        requested_by=operator,
        reason="fault test",
        jobs=1,
    )
    wait_until(lambda: gate.waiting_copies(new_database_name), what="pg_restore to be under way", log=first.log)
    # Unacknowledged for longer than the visibility timeout: Redis hands the message to the next worker that looks
    # (a worker starting up looks at once).
    wait_until(
        lambda: any(score < time.time() - 1 for _tag, score in broker.zrange("unacked_index", 0, -1, withscores=True)),
        what="the message to outlive its visibility timeout",
    )
    second = start_worker(**short)
    wait_until(
        lambda: f"restore #{run.pk} not started: it is already running" in second.log(lines=200),
        what="the second worker to receive the message again",
        log=second.log,
    )
    wait_until(lambda: not broker_has_message(run.task_id), what="the second delivery to be acknowledged")
    gate.open()
    wait_until(
        lambda: RestoreRun.objects.get(pk=run.pk).status in RestoreRun.TERMINAL, what="the restore", log=first.log
    )
    groups = sampler.stop()

    run.refresh_from_db()
    assert run.status == RestoreRun.Status.SUCCEEDED, run.error
    assert len(groups) == 1  # one pg_restore, ever
    assert [e.new_status for e in run.events.all()] == ["queued", "running", "verifying", "succeeded"]
    assert audit_actions(run).count(AuditEvent.Action.RESTORE_LAUNCHED) == 1


# --- a message lost before any worker took it, for each job type ----------------------------------------------------


@dataclass
class JobKind:
    """How a test requests one kind of job (again), and what its reaper says when the message is lost."""

    model: type[JobModel]
    reap: Callable[[], int]
    lost_message: str
    finished_action: str
    notifies: bool
    succeeded: str = "succeeded"


KINDS = {
    "backup": JobKind(
        BackupArtifact,
        backup_artifacts_reap_stale,
        "the broker lost the message that hands this backup to a worker; nothing was backed up",
        AuditEvent.Action.BACKUP_FINISHED,
        notifies=True,
    ),
    "verification": JobKind(
        BackupVerification,
        backup_verifications_reap_stale,
        "the broker lost the message that hands this verification to a worker; ask for it again",
        AuditEvent.Action.VERIFY_FINISHED,
        notifies=False,
        succeeded="verified",
    ),
    "restore": JobKind(
        RestoreRun,
        restore_runs_reap_stale,
        "the broker lost the message that hands this restore to a worker; nothing was restored. Request it again",
        AuditEvent.Action.RESTORE_FINISHED,
        notifies=True,
    ),
    "drill": JobKind(
        DrillRun,
        drill_runs_reap_stale,
        "the broker lost the message that hands this drill to a worker; nothing was restored",
        AuditEvent.Action.DRILL_FINISHED,
        notifies=True,
    ),
    "copy": JobKind(
        ArtifactCopy,
        artifact_copies_reap_stale,
        "the broker lost the message that hands this copy to a worker; ask for it again",
        AuditEvent.Action.COPY_FINISHED,
        notifies=True,
        succeeded="verified",
    ),
    "reprocess": JobKind(
        ReprocessBatch,
        reprocess_batches_reap_stale,
        "the broker lost the message that hands this batch to a worker; nothing was sent. Send it again",
        AuditEvent.Action.REPROCESS_FINISHED,
        notifies=False,
    ),
}


def _requester(
    kind: str,
    source_db: SourceDb,
    new_database_name: str,
    operator: Any,
    slow_api: SlowApi,
    monkeypatch: Any,
    request: pytest.FixtureRequest,
) -> Callable[[], JobModel]:
    """A function that requests one job of `kind`, on the same datastore (environment, backup) each time."""
    if kind == "copy":
        request.getfixturevalue("copy_locations")  # a `local` primary and an encrypted `offsite` copy location
        backup = backup_taken(source_db.url_env, storage_locations=["local"])

        def copy() -> JobModel:
            (asked,) = artifact_copies_request(artifact_id=backup.pk, trigger="test", locations=["offsite"])
            return asked

        return copy
    if kind == "backup":
        datastore = DatastoreFactory(url_env=source_db.url_env)
        return lambda: backup_artifact_request(datastore=datastore, trigger="test")
    if kind == "reprocess":
        monkeypatch.setenv("FAULTS_API_TOKEN", slow_api.token)
        environment = EnvironmentFactory(api_url=slow_api.url, api_token_env="FAULTS_API_TOKEN")
        batch = ReprocessBatchFactory(environment=environment, documents=[("ws1", "1"), ("ws1", "2")])

        def send() -> JobModel:
            batch.refresh_from_db()
            reprocess_batch_send(batch=batch, requested_by=None, trigger="test")
            batch.refresh_from_db()
            return batch

        return send
    artifact = backup_taken(source_db.url_env)
    if kind == "verification":
        return lambda: backup_verification_request(artifact=artifact, trigger="test")
    if kind == "drill":
        return lambda: drill_run_request(datastore=artifact.datastore, trigger="test")
    return lambda: restore_run_request(
        artifact=artifact,
        target_kind=RestoreRun.TargetKind.NEW_DATABASE,
        new_database_name=new_database_name,  # the lost run created nothing: the next one may use the same name
        requested_by=operator,
        reason="fault test",
    )


@pytest.mark.parametrize("kind", list(KINDS))
def test_a_job_whose_message_was_lost_fails_and_the_next_one_runs(
    kind: str,
    start_worker: Any,
    broker: redis.Redis,
    source_db: SourceDb,
    new_database_name: str,
    operator: Any,
    slow_api: SlowApi,
    monkeypatch: pytest.MonkeyPatch,
    request: pytest.FixtureRequest,
) -> None:
    job_kind = KINDS[kind]
    model = job_kind.model
    ask = _requester(kind, source_db, new_database_name, operator, slow_api, monkeypatch, request)
    lost = ask()
    lost.refresh_from_db()
    assert lost.task_id and broker_has_message(lost.task_id)
    mail.outbox.clear()

    broker.flushdb()  # no worker has taken it yet; now nobody will

    wait_queued_stale(model, lost.pk)
    assert job_kind.reap() == 1
    lost.refresh_from_db()
    assert lost.status == "failed"
    assert lost.error == job_kind.lost_message
    finished = AuditEvent.objects.filter(action=job_kind.finished_action).values_list("details", flat=True)
    assert [details["status"] for details in finished] == ["failed"]
    assert bool(mail.outbox) == job_kind.notifies

    # The converse: the next job of the same datastore is accepted, and while its message waits in the queue for a
    # worker, however long, the reaper leaves it alone.
    following = ask()
    queued_status = following.status
    wait_queued_stale(model, following.pk)
    assert job_kind.reap() == 0
    following.refresh_from_db()
    assert following.status == queued_status

    worker = start_worker()
    wait_until(
        lambda: model._default_manager.get(pk=following.pk).status in model.TERMINAL, what=f"the {kind}", log=worker.log
    )
    following.refresh_from_db()
    assert following.status == job_kind.succeeded, following.error
