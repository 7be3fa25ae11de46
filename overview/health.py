"""/readyz: the console is ready when its database, the task broker, the artifact storage (written to) and at least
one worker answer. The generic checks are dr_console/health.py; the storage check writes through backups' storage
API, which is why readiness is composed here, above the job apps.

A check's `error` says what failed in plain words and never carries a URL, a host or a secret: the endpoint needs
no login, so anyone who can reach it reads it. The full exception goes to the log, without credentials.

Because anyone can call it, its cost is bounded (`readiness_cached`): the answer is kept READYZ_CACHE_SECONDS in
the process's cache, callers that arrive while a check runs wait for that check instead of starting their own, and
the worker ping ends at the first answer. A web process thus writes one probe file and sends one ping a period,
however many probes arrive.
"""

from __future__ import annotations

import logging
import threading
import uuid

from django.conf import settings
from django.core.cache import cache
from django.core.files.base import ContentFile

from backups.artifacts import TMP_PREFIX, artifact_storage
from dr_console.health import CheckResult, check_broker, check_database, check_worker

logger = logging.getLogger(__name__)


def check_artifact_storage() -> CheckResult:
    """Write a small probe file through the storage API and delete it: a read-only or full storage fails."""
    storage = artifact_storage()
    try:
        name = storage.save(f"{TMP_PREFIX}readyz-{uuid.uuid4().hex}", ContentFile(b"readyz\n"))
        storage.delete(name)
    except Exception as exc:
        logger.warning("readiness: the artifact storage is not writable: %s", exc)
        return CheckResult("artifact_storage", False, f"the artifact storage is not writable ({type(exc).__name__})")
    return CheckResult("artifact_storage", True)


def readiness() -> list[CheckResult]:
    """Every check, in order. The workers are pinged through the broker: with the broker down that check is
    reported as failed without waiting for the ping's own retries."""
    results = [check_database(), check_broker(), check_artifact_storage()]
    if results[1].ok:
        results.append(check_worker())
    else:
        results.append(CheckResult("worker", False, "not checked: the task broker cannot be reached"))
    return results


CACHE_KEY = "overview:readiness"
# One check at a time in this process: the callers that arrive while it runs wait here, then read its answer.
_checking = threading.Lock()


def readiness_cached() -> list[CheckResult]:
    """`readiness()` at most once per READYZ_CACHE_SECONDS in this process, failed answers included (a broker
    that is down makes every check wait for its timeout, the moment when a flood of probes would hurt most)."""
    period = settings.READYZ_CACHE_SECONDS
    if period <= 0:
        return readiness()
    results: list[CheckResult] | None = cache.get(CACHE_KEY)
    if results is None:
        with _checking:
            results = cache.get(CACHE_KEY)  # the check we waited for has just stored its answer
            if results is None:
                results = readiness()
                cache.set(CACHE_KEY, results, period)
    return results
