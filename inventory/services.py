"""Rules about the inventory itself that every job app applies before touching a datastore."""

from __future__ import annotations

import os
from urllib.parse import urlsplit

from django.conf import settings
from django.utils.translation import gettext as _

from inventory.models import Datastore
from inventory.signals import datastore_configured, datastore_removed


class DatastoreRefused(Exception):
    """A datastore that no job may touch as configured; the message says why and what to change."""


def datastore_check_not_broker(datastore: Datastore) -> None:
    """The console's broker must never be the Redis it protects: losing that Redis would lose the very jobs
    that recover it. Compares host, port and database number (one Redis server may serve both, on
    different database numbers)."""
    if datastore.kind != Datastore.Kind.REDIS:
        return
    url = os.environ.get(datastore.url_env, "")
    if url and redis_identity(url) == redis_identity(settings.CELERY_BROKER_URL):
        raise DatastoreRefused(
            _(
                "%(datastore)s (%(variable)s) is the console's own task broker; "
                "point CELERY_BROKER_URL at another Redis or database number"
            )
            % {"datastore": datastore.name, "variable": datastore.url_env}
        )


def redis_identity(url: str) -> tuple[str, int, int] | None:
    parts = urlsplit(url)
    if parts.scheme not in ("redis", "rediss"):
        return None
    host = parts.hostname or "localhost"
    host = "127.0.0.1" if host in ("localhost", "::1") else host
    try:
        db = int((parts.path or "/0").strip("/") or 0)
    except ValueError:
        db = 0
    return host, parts.port or 6379, db


def datastore_configured_notify(*, datastore: Datastore) -> None:
    """Tell the apps above that a datastore was created or changed (beat's backup and drill schedules follow)."""
    datastore_configured.send(sender=Datastore, datastore=datastore)


def datastore_removed_notify(*, datastore_id: int) -> None:
    datastore_removed.send(sender=Datastore, datastore_id=datastore_id)
