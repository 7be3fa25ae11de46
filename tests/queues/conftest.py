"""Fixtures for the queue pages: an environment whose queue Redis is the tests' own database, and helpers that
put real RQ jobs in it and run a real rq worker over them."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pytest
import redis
from rq import Queue, SimpleWorker, Worker
from rq.job import Job
from rq.timeouts import TimerDeathPenalty

from inventory.models import Datastore, Environment
from tests.factories import DatastoreFactory, EnvironmentFactory
from tests.queues import jobs
from tests.support.redis import AppRedis

QUEUE = "documents"


@dataclass
class QueueEnv:
    environment: Environment
    redis: AppRedis

    @property
    def connection(self) -> redis.Redis:
        return self.redis.client

    def queue(self, name: str = QUEUE) -> Queue:
        return Queue(name, connection=self.connection)

    def enqueue(self, document_id: int, *, func: Any = jobs.process, queue: str = QUEUE, **options: Any) -> Job:
        return self.queue(queue).enqueue(func, "ws-1", document_id, **options)

    def fail(self, *document_ids: int, queue: str = QUEUE) -> list[Job]:
        """Real failed jobs: enqueue them broken and let a real worker try them."""
        for document_id in document_ids:
            self.connection.set(f"broken:{document_id}", 1)
        enqueued = [self.enqueue(document_id, queue=queue) for document_id in document_ids]
        self.work(queue)
        return enqueued

    def work(self, queue: str = QUEUE) -> None:
        """A real rq worker, in this process, until the queue is empty. The timer death penalty leaves SIGALRM to
        pytest-timeout."""
        worker = _InProcessWorker([self.queue(queue)], connection=self.connection)
        worker.work(burst=True, logging_level="WARNING")


class _InProcessWorker(SimpleWorker):
    death_penalty_class = TimerDeathPenalty


def queue_environment(app_redis: AppRedis, name: str = "prod") -> Environment:
    environment = EnvironmentFactory(name=name)
    store = DatastoreFactory(
        environment=environment, name=f"{name}-redis", kind=Datastore.Kind.REDIS, url_env=app_redis.url_env
    )
    environment.redis_datastore = store
    environment.save()
    return Environment.objects.get(pk=environment.pk)


@pytest.fixture
def queue_env(db: None, app_redis: AppRedis) -> QueueEnv:
    return QueueEnv(environment=queue_environment(app_redis), redis=app_redis)


@pytest.fixture
def registered_worker(queue_env: QueueEnv) -> Any:
    """A real rq worker registered in the queue Redis with a fresh heartbeat (not working: nothing runs)."""
    worker = Worker([queue_env.queue()], connection=queue_env.connection, name="worker-on-host-1")
    worker.register_birth()
    worker.heartbeat()
    yield worker
    worker.register_death()
