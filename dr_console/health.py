"""Readiness of the console itself: its database, the task broker, the artifact storage and the workers.

/readyz (dr_console/urls.py) runs every check; `manage.py checkworker` runs the worker check alone for container
health checks. A check's `error` says what failed in plain words and never carries a URL, a host or a secret:
the endpoint needs no login, so anyone who can reach it reads it. The full exception goes to the log, without
credentials (broker_label).
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass

from django.conf import settings
from django.core.files.base import ContentFile
from django.db import connection

logger = logging.getLogger(__name__)


@dataclass
class CheckResult:
    name: str
    ok: bool
    error: str = ""
    detail: str = ""

    def as_dict(self) -> dict[str, object]:
        result: dict[str, object] = {"ok": self.ok}
        if self.error:
            result["error"] = self.error
        if self.detail:
            result["detail"] = self.detail
        return result


def check_database() -> CheckResult:
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
            cursor.fetchone()
    except Exception as exc:
        logger.warning("readiness: the console's database failed: %s", type(exc).__name__)
        return CheckResult("database", False, f"the console's database does not answer ({type(exc).__name__})")
    return CheckResult("database", True)


def check_broker() -> CheckResult:
    from dr_console.celery import app
    from dr_console.jobs import broker_label

    try:
        with app.connection_for_write() as conn:
            conn.ensure_connection(max_retries=1, interval_start=0, timeout=max(1, settings.READYZ_BROKER_TIMEOUT))
    except Exception as exc:
        logger.warning("readiness: the task broker at %s failed: %s", broker_label(), exc)
        return CheckResult("broker", False, f"the task broker cannot be reached ({type(exc).__name__})")
    return CheckResult("broker", True)


def check_artifact_storage() -> CheckResult:
    """Write a small probe file through the storage API and delete it: a read-only or full storage fails."""
    from backups.artifacts import TMP_PREFIX, artifact_storage

    storage = artifact_storage()
    try:
        name = storage.save(f"{TMP_PREFIX}readyz-{uuid.uuid4().hex}", ContentFile(b"readyz\n"))
        storage.delete(name)
    except Exception as exc:
        logger.warning("readiness: the artifact storage is not writable: %s", exc)
        return CheckResult("artifact_storage", False, f"the artifact storage is not writable ({type(exc).__name__})")
    return CheckResult("artifact_storage", True)


def check_worker(*, timeout: float | None = None, destination: str = "") -> CheckResult:
    """At least one Celery worker (or the named one) answers a ping within `timeout` seconds."""
    from dr_console.celery import app

    wait = settings.READYZ_WORKER_TIMEOUT if timeout is None else timeout
    try:
        replies = app.control.ping(timeout=wait, destination=[destination] if destination else None)
    except Exception as exc:
        logger.warning("readiness: cannot ping the workers: %r", exc)
        return CheckResult("worker", False, f"cannot ping the workers ({type(exc).__name__})")
    answering = [name for reply in replies or [] for name in reply]
    if not answering:
        who = f"worker {destination}" if destination else "Celery worker"
        return CheckResult("worker", False, f"no {who} answered a ping within {wait:g} s")
    return CheckResult("worker", True, detail=f"{len(answering)} answering")


def readiness() -> list[CheckResult]:
    """Every check, in order. The workers are pinged through the broker: with the broker down that check is
    reported as failed without waiting for the ping's own retries."""
    results = [check_database(), check_broker(), check_artifact_storage()]
    if results[1].ok:
        results.append(check_worker())
    else:
        results.append(CheckResult("worker", False, "not checked: the task broker cannot be reached"))
    return results
