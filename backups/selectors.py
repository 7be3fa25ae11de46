"""Reads shared by the command line, the admin and the pages."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, timedelta
from enum import StrEnum
from typing import Any

from django.db.models import Prefetch, QuerySet

from backups.models import ArtifactCopy, BackupArtifact, BackupArtifactEvent, BackupVerification, ScheduledBackup
from dr_console.formatting import iso
from dr_console.history import PER_PAGE, Page, created_within_days, keyset_page
from dr_console.jobs import active_job_labels
from inventory.models import Datastore, Environment, StorageLocation


def backup_artifact_summary(artifact: BackupArtifact) -> dict[str, Any]:
    """One JSON-able object describing a backup, for `--json` and scripts."""
    return {
        "id": artifact.pk,
        "kind": "backup",
        "datastore": artifact.datastore.name,
        "environment": artifact.datastore.environment.name,
        "status": artifact.status,
        "verification": artifact.verification,
        "verification_error": artifact.verification_error,
        "verified_at": iso(artifact.verified_at),
        "format": artifact.format,
        "compression_level": artifact.compression_level,
        "sha256": artifact.sha256,
        "size_bytes": artifact.size_bytes,
        "storage_key": artifact.storage_key,
        "created_at": iso(artifact.created_at),
        "started_at": iso(artifact.started_at),
        "finished_at": iso(artifact.finished_at),
        "duration_seconds": artifact.duration_seconds,
        "tool_version": artifact.tool_version,
        "server_version": artifact.server_version,
        "archive_entries": artifact.archive_entries,
        "row_counts": artifact.row_counts,
        "trigger": artifact.trigger,
        "error": artifact.error,
        "location": artifact.location,
        "encrypted_to": list(artifact.recipients),
        "content_sha256": artifact.content_sha256,
        "locked_until": iso(artifact.retain_until),
        "origin": artifact.origin,
        "copies": [artifact_copy_summary(copy) for copy in artifact.copies.order_by("location", "-pk")],
    }


def artifact_copy_summary(copy: ArtifactCopy) -> dict[str, Any]:
    return {
        "id": copy.pk,
        "location": copy.location,
        "status": copy.status,
        "storage_key": copy.storage_key,
        "sha256": copy.sha256,
        "size_bytes": copy.size_bytes,
        "encrypted_to": list(copy.recipients),
        "locked_until": iso(copy.retain_until),
        "verified_at": iso(copy.verified_at),
        "error": copy.error,
    }


def artifact_copies_state(artifact: BackupArtifact, roles: dict[str, str] | None = None) -> tuple[int, int]:
    """(verified copies, copy locations the datastore names): "2 of 2 copies verified". `roles`: the locations'
    roles by name, when a page read them once for all its rows (and prefetched the copies)."""
    datastore = artifact.datastore
    wanted = datastore.copy_location_names if roles is None else datastore.copy_locations_given(roles)
    verified = {c.location for c in artifact.copies.all() if c.status == ArtifactCopy.Status.VERIFIED}
    return len(verified & set(wanted)), len(wanted)


def location_roles() -> dict[str, str]:
    return dict(StorageLocation.objects.values_list("name", "role"))


@dataclass(frozen=True)
class CopyRow:
    """One copy location of a backup on its page: the newest copy there (None: never asked for), and whether an
    operator may ask for one now (none verified or in progress there)."""

    location: str
    region: str
    copy: ArtifactCopy | None
    can_request: bool
    configured: bool = True  # False: the location was removed from the datastore's list since


def artifact_copy_rows(artifact: BackupArtifact) -> list[CopyRow]:
    """The backup's copies by location: each of its datastore's copy locations, then any other location that
    holds a copy of it."""
    newest: dict[str, ArtifactCopy] = {}  # per location: its verified copy, else its newest attempt
    for copy in artifact.copies.order_by("-created_at", "-pk"):
        if copy.location not in newest or copy.status == ArtifactCopy.Status.VERIFIED:
            newest[copy.location] = copy
    wanted = artifact.datastore.copy_location_names
    regions = dict(StorageLocation.objects.filter(name__in=[*wanted, *newest]).values_list("name", "region"))
    stored = artifact.status == BackupArtifact.Status.SUCCEEDED
    rows = []
    for name in [*wanted, *(n for n in sorted(newest) if n not in wanted)]:
        there = newest.get(name)
        busy = there is not None and (there.status == ArtifactCopy.Status.VERIFIED or there.is_active)
        rows.append(CopyRow(name, regions.get(name, ""), there, stored and not busy and name in wanted, name in wanted))
    return rows


# --- pages ------------------------------------------------------------------------------------------------------


class RpoState(StrEnum):
    OK = "ok"  # the newest verified backup is within the datastore's RPO target
    LATE = "late"  # older than the target
    VERY_LATE = "very_late"  # older than twice the target
    NONE = "none"  # no verified backup, and the first was due
    NEW = "new"  # no verified backup yet, but the datastore is younger than its RPO target: the first is not due


def backup_artifact_recovery_point(artifact: BackupArtifact) -> datetime:
    """When the data in the backup was read: pg_dump's snapshot is taken as the job starts."""
    return artifact.taken_at


def rpo_state(*, age: timedelta | None, target: timedelta, known_for: timedelta) -> RpoState:
    """`age`: of the newest verified backup (None: there is none); `known_for`: how long the console has known the
    datastore. A new datastore has one RPO period to take its first verified backup (the README says so, and
    objectives breaches follow this state)."""
    if age is None:
        return RpoState.NEW if known_for <= target else RpoState.NONE
    if age > 2 * target:
        return RpoState.VERY_LATE
    if age > target:
        return RpoState.LATE
    return RpoState.OK


def scheduled_backup_recent(datastore: Datastore, limit: int = 10) -> list[ScheduledBackup]:
    return list(datastore.scheduled_backups.select_related("artifact").order_by("-expected_at", "-pk")[:limit])


def backup_artifact_pinned(datastore: Datastore) -> list[BackupArtifact]:
    return list(datastore.artifacts.filter(pinned_at__isnull=False).select_related("pinned_by").order_by("-created_at"))


def backup_artifact_in_progress(artifact: BackupArtifact) -> bool:
    """A backup that is being taken or verified (its summary says verifying from the request of a verification
    to its end): its row and status on the pages keep polling."""
    return artifact.is_active or artifact.verification == BackupArtifact.Verification.VERIFYING


@dataclass
class BackupArtifactFilters:
    environment: Environment | None = None
    datastore: Datastore | None = None
    status: str = ""
    verification: str = ""
    date_from: date | None = None
    date_to: date | None = None


def backup_artifact_filter(filters: BackupArtifactFilters) -> QuerySet[BackupArtifact]:
    artifacts = BackupArtifact.objects.all()
    if filters.environment is not None:
        artifacts = artifacts.filter(datastore__environment=filters.environment)
    if filters.datastore is not None:
        artifacts = artifacts.filter(datastore=filters.datastore)
    if filters.status:
        artifacts = artifacts.filter(status=filters.status)
    if filters.verification:
        artifacts = artifacts.filter(verification=filters.verification)
    # Dates are days in the user's time zone: "to" includes the whole of that day.
    return created_within_days(artifacts, filters.date_from, filters.date_to)


LIST_DEFERRED_FIELDS = (
    "row_counts",
    "stderr_tail",
    "verification_error",
    "datastore__description",
    "datastore__environment__description",
    "datastore__environment__reprocess_query",
)


def backup_artifact_page(
    filters: BackupArtifactFilters, *, before: str = "", after: str = "", per_page: int = PER_PAGE
) -> Page[BackupArtifact]:
    """Newest first, by keyset (dr_console.history): any page of 100,000 backups costs what the first one does.
    The list never shows the per-table row counts or the logs, so they are not read (they can be large)."""
    artifacts = (
        backup_artifact_filter(filters)
        .select_related("datastore__environment", "triggered_by")
        .prefetch_related(Prefetch("copies", queryset=ArtifactCopy.objects.only("artifact", "location", "status")))
        .defer(*LIST_DEFERRED_FIELDS)
    )
    page = keyset_page(artifacts, before=before, after=after, per_page=per_page)
    if any(artifact.datastore.storage_locations for artifact in page.items):
        roles = location_roles()  # one query for the page, not two per row
        for artifact in page.items:
            artifact.copies_state = artifact_copies_state(artifact, roles)  # type: ignore[attr-defined]
    return page


def backup_artifact_detail_queryset() -> QuerySet[BackupArtifact]:
    """Backups with what their page shows beside them: datastore, environment, who triggered it (joined), and
    the events (prefetched). The restores and drills made from a backup are read through its reverse relations
    (`restore_runs`, `drill_runs`) by the page: backups imports neither app."""
    return BackupArtifact.objects.select_related("datastore__environment", "triggered_by").prefetch_related(
        Prefetch("events", queryset=BackupArtifactEvent.objects.order_by("created_at", "pk")),
    )


def datastore_active_backups(sender: object, *, datastore_id: int, **kwargs: object) -> list[str]:
    """The datastore's backups and verifications that have not ended (inventory.signals.datastore_active_jobs)."""
    return active_job_labels(BackupArtifact.objects.filter(datastore_id=datastore_id)) + active_job_labels(
        BackupVerification.objects.filter(artifact__datastore_id=datastore_id)
    )
