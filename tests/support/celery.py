"""The Celery side of the suite: a real worker (in a thread of this process, on the real Redis broker's own
database number) for the end-to-end tests, and a broker that is down. No CELERY_TASK_ALWAYS_EAGER: it hides
on-commit bugs."""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import pytest
import redis

from tests.support.local import free_port


def _reset_connection_pools() -> None:
    from dr_console.celery import app

    app._pool = None
    app.amqp._producer_pool = None
    app.control.mailbox.__dict__.pop("producer_pool", None)  # the broadcast mailbox caches its own


@pytest.fixture
def broker_down(settings: Any, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """The broker setting points at a port nobody listens on. Celery reads CELERY_BROKER_URL from the
    environment before its configuration, so both change; the connection pools made for the real broker go."""
    url = f"redis://127.0.0.1:{free_port()}/0"
    settings.CELERY_BROKER_URL = url
    monkeypatch.setenv("CELERY_BROKER_URL", url)
    _reset_connection_pools()
    yield url
    monkeypatch.undo()
    _reset_connection_pools()


# --- a real Celery worker --------------------------------------------------------------------------------------


@pytest.fixture
def celery_worker_thread(settings: Any) -> Iterator[None]:
    """A real Celery worker consuming from the real Redis broker (its own database number), in a thread of
    this process so it sees the test's settings and storage."""
    from celery.contrib.testing.worker import start_worker

    from dr_console.celery import app

    redis.Redis.from_url(os.environ["CELERY_BROKER_URL"]).flushdb()  # only the tests' own broker database
    queues = ["celery", settings.MAINTENANCE_QUEUE]  # the jobs and the periodic tasks, as `make run` runs them
    with start_worker(
        app, pool="solo", perform_ping_check=False, shutdown_timeout=30, loglevel="WARNING", queues=queues
    ):
        yield
