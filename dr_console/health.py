"""The checks of the console's own dependencies that any layer may run: its database, the task broker and the
workers. /readyz (overview/health.py) runs them with the artifact storage check; `manage.py checkworker` runs the
worker check alone for container health checks.

A check's `error` says what failed in plain words and never carries a URL, a host or a secret: /readyz needs no
login, so anyone who can reach it reads it. The full exception goes to the log, without credentials (broker_label).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from django.conf import settings
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


def check_worker(*, timeout: float | None = None, destination: str = "") -> CheckResult:
    """At least one Celery worker (or the named one) answers a ping within `timeout` seconds. The ping ends at
    the first answer (`limit=1`): without it, it would listen for the whole timeout whoever answers."""
    from dr_console.celery import app

    wait = settings.READYZ_WORKER_TIMEOUT if timeout is None else timeout
    try:
        replies = app.control.ping(timeout=wait, destination=[destination] if destination else None, limit=1)
    except Exception as exc:
        logger.warning("readiness: cannot ping the workers: %r", exc)
        return CheckResult("worker", False, f"cannot ping the workers ({type(exc).__name__})")
    answering = [name for reply in replies or [] for name in reply]
    if not answering:
        who = f"worker {destination}" if destination else "Celery worker"
        return CheckResult("worker", False, f"no {who} answered a ping within {wait:g} s")
    return CheckResult("worker", True, detail=f"{answering[0] if destination else 'a worker'} answered")
