"""environment_failed_jobs: what a reprocess batch is built from, read in chunks through rq."""

from __future__ import annotations

import pytest

from queues.rqclient import QueueUnavailable
from queues.selectors import FailedJob, environment_failed_jobs
from tests.queues import jobs
from tests.queues.conftest import QueueEnv

pytestmark = pytest.mark.django_db


def test_failed_jobs_of_every_queue_with_their_documents(queue_env: QueueEnv) -> None:
    documents = queue_env.fail(*range(1, 8))
    emails = queue_env.fail(100, queue="emails")
    queue_env.enqueue(200)  # queued, not failed

    found = list(environment_failed_jobs(environment=queue_env.environment, chunk_size=3))

    assert sorted(job.job_id for job in found) == sorted(job.id for job in documents + emails)
    by_id = {job.job_id: job for job in found}
    first = by_id[documents[0].id]
    assert first == FailedJob("documents", documents[0].id, "tests.queues.jobs.process", ("ws-1", 1), {})
    assert first.document_key() == ("ws-1", "1")
    assert by_id[emails[0].id].queue == "emails"


def test_document_key_reads_keyword_arguments_too() -> None:
    job = FailedJob("q", "id", "app.reprocess", (), {"workspace_id": "w", "document_id": 9})
    assert job.document_key() == ("w", "9")
    assert FailedJob("q", "id", "app.other", ("only-one",), {}).document_key() is None


def test_undecodable_failed_jobs_come_without_arguments(queue_env: QueueEnv, tmp_path) -> None:
    witness = tmp_path / "pwned"
    queue_env.connection.set("broken:1", 1)
    queue_env.queue().enqueue(jobs.process, jobs.Payload(str(witness)), 1)
    queue_env.work()  # the worker unpickles it (it is the application's own worker): it runs and fails
    witness.unlink()
    [job] = environment_failed_jobs(environment=queue_env.environment)
    assert (job.func_name, job.args, job.document_key()) == (None, (), None)
    assert not witness.exists()  # the console did not unpickle it


def test_unconfigured_environment_raises_one_clear_error(queue_env: QueueEnv) -> None:
    queue_env.environment.redis_datastore = None
    with pytest.raises(QueueUnavailable, match="No Redis datastore is linked to prod"):
        list(environment_failed_jobs(environment=queue_env.environment))
