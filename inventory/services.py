"""Rules about the inventory itself that every job app applies before touching a datastore."""

from __future__ import annotations

import os
from collections.abc import Mapping

from django.utils.translation import gettext as _

from inventory.identity import (
    IdentityUnknown,
    TargetIdentity,
    broker_identity,
    console_database_identity,
    identity_from_env,
)
from inventory.models import Datastore, DatastoreHealth
from inventory.signals import datastore_active_jobs, datastore_configured, datastore_removed


class DatastoreRefused(Exception):
    """A datastore that no job may touch as configured; the message says why and what to change."""


def datastore_identity(
    datastore: Datastore, *, live: bool = True, stored: bool = True, timeout: float = 2
) -> TargetIdentity | None:
    """Which database the datastore reaches: asked of its server when its URL is set in this process (and `live`),
    else what the newest health check that got an answer found (if `stored`: not when the URL variable is being
    changed); None when neither is known."""
    if live and os.environ.get(datastore.url_env):
        try:
            return identity_from_env(datastore.kind, datastore.url_env, timeout=timeout)
        except IdentityUnknown:
            pass  # unreachable from here: the stored one, if any
    if not stored or datastore.pk is None:
        return None
    health = DatastoreHealth.objects.filter(datastore_id=datastore.pk).only("identity").first()
    return TargetIdentity.from_json(health.identity) if health is not None else None


def datastore_check_target(
    datastore: Datastore,
    identity: TargetIdentity | None,
    *,
    known: Mapping[int, TargetIdentity | None] | None = None,
) -> None:
    """Refuse a datastore whose URL reaches the console's own database or broker, or the same database as another
    datastore (one of them would escape the other's protection, locks and history). Compares identities asked of the
    servers (inventory.identity), not URL spellings; with no `identity` known (`datastore_identity`), only the URL
    variables. `known`: identities just found for other datastores (a health check's round), preferred to the stored
    ones; with it, no other server is asked."""
    values = {"datastore": datastore.name, "variable": datastore.url_env}
    if identity is not None:
        values["identity"] = identity.describe()
        if identity.same_database(broker_identity()):
            raise DatastoreRefused(
                _(
                    "%(datastore)s (%(variable)s) is the console's own task broker (%(identity)s); "
                    "point CELERY_BROKER_URL at another Redis or database number"
                )
                % values
            )
        if identity.same_database(console_database_identity()):
            raise DatastoreRefused(
                _(
                    "%(datastore)s (%(variable)s) is the console's own database (%(identity)s): a restore would "
                    "overwrite the console and its audit log; point %(variable)s at the database it protects"
                )
                % values
            )
    twins = datastore_twins(datastore, identity, known=known)
    if twins:
        values["others"] = ", ".join(f"{twin.name} ({twin.environment.name})" for twin in twins)
        raise DatastoreRefused(
            _(
                "%(datastore)s (%(variable)s) reaches the same database as %(others)s; one database must have one "
                "record (its protection, locks and history follow that record): remove or correct one of them"
            )
            % values
        )


def datastore_twins(
    datastore: Datastore, identity: TargetIdentity | None, *, known: Mapping[int, TargetIdentity | None] | None = None
) -> list[Datastore]:
    """The other datastores that reach the same database: the same URL variable, or the same identity (from `known`,
    else stored by their health checks, else asked of their servers here when their URL is set and `known` is not
    given)."""
    others = (
        Datastore.objects.filter(kind=datastore.kind)
        .exclude(pk=datastore.pk)
        .select_related("environment", "health")
        .order_by("name")
    )
    twins = []
    for other in others:
        if other.url_env == datastore.url_env:
            twins.append(other)
            continue
        if identity is None:
            continue
        if known is not None and known.get(other.pk) is not None:
            theirs = known[other.pk]
        else:
            stored = getattr(other, "health", None)
            theirs = TargetIdentity.from_json(stored.identity) if stored is not None else None
        if theirs is None and known is None and os.environ.get(other.url_env):
            try:
                theirs = identity_from_env(other.kind, other.url_env, timeout=2)
            except IdentityUnknown:
                theirs = None
        if identity.same_database(theirs):
            twins.append(other)
    return twins


def datastore_check_change(datastore: Datastore, changed: list[str]) -> None:
    """Refuse moving a datastore's URL variable, kind or environment while runs of it are active: an approved or
    running restore would otherwise touch another database (or another environment's) than the one it was
    requested for. The job apps say which runs are active (inventory.signals.datastore_active_jobs)."""
    moved = sorted(set(changed) & {"url_env", "environment", "kind"})
    if not moved or datastore.pk is None:
        return
    active = [
        label
        for _receiver, labels in datastore_active_jobs.send(sender=Datastore, datastore_id=datastore.pk)
        for label in labels or ()
    ]
    if active:
        raise DatastoreRefused(
            _("%(datastore)s has active runs (%(runs)s): its %(fields)s cannot change until they end or are cancelled")
            % {"datastore": datastore.name, "runs": ", ".join(active[:5]), "fields": ", ".join(moved)}
        )


def datastore_configured_notify(*, datastore: Datastore) -> None:
    """Tell the apps above that a datastore was created or changed (beat's backup and drill schedules follow)."""
    datastore_configured.send(sender=Datastore, datastore=datastore)


def datastore_removed_notify(*, datastore_id: int) -> None:
    datastore_removed.send(sender=Datastore, datastore_id=datastore_id)
