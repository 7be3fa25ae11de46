"""Handing a job to the workers, and asking the broker whether a job's message is still there.

A job row is created first and its message published after the commit (never inside a transaction). The message's
task id is recorded on the row, so that the reaper can tell a job waiting for a free worker (its message is in a
queue, or reserved by a worker) from a job whose message was lost (a broker restarted without persistence, a
FLUSHDB): only the second is failed.
"""

from __future__ import annotations

import contextlib
import json
import logging
import uuid
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from django.conf import settings
from kombu.exceptions import OperationalError as KombuOperationalError

from dr_console.jobs.models import JobModel
from dr_console.jobs.transitions import IllegalTransition, job_transition

logger = logging.getLogger(__name__)


class BrokerUnavailable(Exception):
    """The job row exists but could not be handed to a worker; it has been marked failed."""


def broker_label() -> str:
    """The broker URL without credentials, safe to show."""
    parts = urlsplit(settings.CELERY_BROKER_URL)
    host = parts.hostname or ""
    return f"{parts.scheme}://{host}{':' + str(parts.port) if parts.port else ''}{parts.path}"


def job_enqueue(task: Any, model: type[JobModel], *, pk: int, failed: str = "failed", **kwargs: Any) -> None:
    """Hand job `pk` to the workers (`task.apply_async(kwargs=...)`), recording the message's task id on the row.

    A broker that cannot be reached fails the row (so it does not wait forever) and raises BrokerUnavailable with a
    message that names no credentials. Call it from `transaction.on_commit`, never inside the transaction."""
    task_id = str(uuid.uuid4())
    model._default_manager.filter(pk=pk).update(task_id=task_id)
    try:
        task.apply_async(kwargs=kwargs, task_id=task_id, retry=True)
    except KombuOperationalError as exc:
        message = f"could not reach the task broker at {broker_label()}: {exc}"
        with contextlib.suppress(IllegalTransition):  # it ended meanwhile (cancelled before the broker answered)
            job_transition(model, pk=pk, to=failed, error=message)
        raise BrokerUnavailable(message) from None


# --- is the message still there? --------------------------------------------------------------------------------


def broker_has_message(task_id: str) -> bool:
    """Whether the broker still holds the message of `task_id`: waiting in a queue, or delivered to a worker and
    not acknowledged yet. True when it cannot tell (another transport, the broker unreachable): a job is never
    failed as lost on a guess."""
    if not task_id:
        return False
    url = settings.CELERY_BROKER_URL
    try:
        if url.startswith(("redis://", "rediss://", "unix://")):
            return _redis_has_message(url, task_id)
        if url.startswith("filesystem://"):
            return _filesystem_has_message(task_id)
    except Exception:
        logger.warning("cannot look for message %s on the broker", task_id, exc_info=True)
    return True


def _mentions(raw: bytes | str, task_id: str) -> bool:
    needle = task_id.encode() if isinstance(raw, bytes) else task_id
    return needle in raw  # type: ignore[operator]


def _redis_has_message(url: str, task_id: str) -> bool:
    import redis

    client = redis.Redis.from_url(url, socket_connect_timeout=5, socket_timeout=10)
    try:
        # Delivered, not acknowledged yet (kombu keeps them in the "unacked" hash until the task ends: acks_late).
        for raw in client.hvals("unacked"):
            if _mentions(raw, task_id):
                return True
        # Waiting in a queue: kombu keeps each queue (and each priority of it) in a list.
        for key in client.scan_iter(count=1000, _type="list"):
            for raw in client.lrange(key, 0, -1):
                if _mentions(raw, task_id):
                    return True
        return False
    finally:
        client.close()


def _filesystem_has_message(task_id: str) -> bool:
    options = settings.CELERY_BROKER_TRANSPORT_OPTIONS
    for folder_key in ("data_folder_in", "data_folder_out", "processed_folder"):
        folder = options.get(folder_key)
        if not folder or folder_key == "processed_folder":
            continue
        for path in Path(str(folder)).glob("*"):
            try:
                body = path.read_bytes()
            except OSError:
                continue  # taken by a worker meanwhile
            if _mentions(body, task_id):
                return True
            try:
                if json.loads(body).get("headers", {}).get("id") == task_id:
                    return True
            except (ValueError, AttributeError):
                continue
    return False
